//! Stop points in every plan, so the query time limit stops the work itself.
//!
//! A query's work runs in tasks on the query runtime, and a task can only be cancelled between
//! two polls. DataFusion yields only where a scan hands out a batch, so an operator that makes
//! many batches out of one (a cross join), or one that consumes many before emitting (an
//! aggregate over such a join), could keep a query thread busy long past the limit. So before a
//! plan runs, [`stoppable`] puts a [`StopExec`] above every operator: before each batch it checks
//! the query's stop token and fails the stream once it is cancelled, and it takes part in
//! tokio's cooperative scheduling so queries share the query threads fairly. (EXPLAIN shows the
//! plan without them.)

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::SchedulingType;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// `plan` with a [`StopExec`] above every operator, each ending its stream once `stop` is
/// cancelled.
pub(crate) fn stoppable(
    plan: Arc<dyn ExecutionPlan>,
    stop: &CancellationToken,
) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    plan.transform_up(|node| {
        Ok(Transformed::yes(
            Arc::new(StopExec::new(node, stop.clone())) as Arc<dyn ExecutionPlan>,
        ))
    })
    .map(|t| t.data)
}

/// Passes its input's batches on until the query is stopped.
#[derive(Debug)]
struct StopExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    stop: CancellationToken,
}

impl StopExec {
    fn new(input: Arc<dyn ExecutionPlan>, stop: CancellationToken) -> StopExec {
        let properties = PlanProperties::clone(input.properties())
            .with_scheduling_type(SchedulingType::Cooperative)
            .into();
        StopExec {
            input,
            properties,
            stop,
        }
    }
}

impl DisplayAs for StopExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StopExec")
    }
}

impl ExecutionPlan for StopExec {
    fn name(&self) -> &str {
        "StopExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion, DataFusionError>,
    ) -> Result<TreeNodeRecursion, DataFusionError> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(StopExec::new(input, self.stop.clone()))),
            _ => Err(DataFusionError::Internal(
                "StopExec has exactly one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let input = make_cooperative(self.input.execute(partition, context)?);
        Ok(Box::pin(Stoppable {
            input,
            stop: self.stop.clone(),
        }))
    }
}

struct Stoppable {
    input: SendableRecordBatchStream,
    stop: CancellationToken,
}

impl Stream for Stoppable {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stop.is_cancelled() {
            return Poll::Ready(Some(Err(DataFusionError::Execution(
                "the query was stopped".into(),
            ))));
        }
        self.input.poll_next_unpin(cx)
    }
}

impl RecordBatchStream for Stoppable {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
