//! What the analytics integration tests share: waiting for a condition with a deadline, and
//! stopping a running analytics tier.

use std::future::Future;
use std::time::Duration;

use polis_analytics::Analytics;
use tokio_util::sync::CancellationToken;

/// How long any awaited condition may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, failing after [`LIMIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancels `shutdown` and waits, at most [`LIMIT`], for `analytics` to stop.
#[allow(dead_code, reason = "not every test file stops analytics gracefully")]
pub async fn stop(analytics: Analytics, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(LIMIT, analytics.join())
        .await
        .expect("analytics stops");
}
