//! The dashboard's view of the city: a bounded history of metric windows, kept current by a task
//! that follows the `metrics` topic and publishes each change to the viewers.

mod follow;
mod history;

pub(crate) use follow::{FollowStats, follow_metrics};
pub(crate) use history::MetricHistory;
