//! The query runtime: a multi-thread tokio runtime of its own on which DataFusion plans run, so
//! a heavy query competes only with other queries, never with network I/O.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio_util::task::AbortOnDropHandle;

/// Owns the query threads; they stop when the last handle is dropped.
pub(crate) struct CpuRuntime {
    /// Always `Some` until dropped: taken to shut down without blocking the caller.
    runtime: Option<Runtime>,
}

impl CpuRuntime {
    pub(crate) fn new(threads: usize) -> std::io::Result<CpuRuntime> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("polis-query")
            .enable_time()
            .build()?;
        Ok(CpuRuntime {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the query threads. Dropping the handle cancels the work at its next
    /// yield point, dropping whatever streams it holds.
    pub(crate) fn spawn<F>(&self, work: F) -> AbortOnDropHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("present until dropped");
        AbortOnDropHandle::new(runtime.spawn(work))
    }

    /// Tasks still alive on the query threads, including those a plan spawned itself.
    #[cfg(test)]
    pub(crate) fn alive_tasks(&self) -> usize {
        let runtime = self.runtime.as_ref().expect("present until dropped");
        runtime.metrics().num_alive_tasks()
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
