//! Dashboard configuration: the `[dashboard]` section of the Polis config file.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use serde::{Deserialize, Serialize};

/// The shortest history that holds one 10-second metric window.
const MIN_HISTORY: Duration = Duration::from_secs(10);
/// The longest history: charts over more than a day belong in reports, not on the live page.
const MAX_HISTORY: Duration = Duration::from_secs(24 * 60 * 60);

/// How the dashboard serves operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Address of the HTTP + WebSocket server. The caller binds it and hands the listener to
    /// [`serve`](crate::serve), so a port already in use is reported by the caller.
    pub listen: SocketAddr,
    /// How far back the charts reach, counted from the newest metric window ("30m", "2h").
    /// Older windows are forgotten.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    /// Concurrent WebSocket viewers; one more is refused with HTTP 503.
    pub max_viewers: usize,
    /// Updates buffered per viewer. A viewer that falls this far behind has its pending updates
    /// dropped and receives one fresh snapshot instead, so it never slows the others.
    pub viewer_queue: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            history: Duration::from_secs(30 * 60),
            max_viewers: 1000,
            viewer_queue: 16,
        }
    }
}

impl DashboardConfig {
    /// Every problem with the configuration, each naming its key and what would be right.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(MIN_HISTORY..=MAX_HISTORY).contains(&self.history) {
            problems.push(format!(
                "dashboard.history = {} is out of range: use {} to {}",
                format_duration(self.history),
                format_duration(MIN_HISTORY),
                format_duration(MAX_HISTORY),
            ));
        }
        if self.max_viewers == 0 {
            problems
                .push("dashboard.max_viewers = 0 refuses every viewer: use at least 1".to_string());
        }
        if self.viewer_queue == 0 {
            problems.push(
                "dashboard.viewer_queue = 0 leaves no room for a single update: use at least 1"
                    .to_string(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_has_no_problems() {
        assert_eq!(DashboardConfig::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_invalid_value_is_reported_with_its_key() {
        let config = DashboardConfig {
            history: Duration::from_secs(1),
            max_viewers: 0,
            viewer_queue: 0,
            ..Default::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        for key in [
            "dashboard.history",
            "dashboard.max_viewers",
            "dashboard.viewer_queue",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "no problem names {key}: {problems:?}"
            );
        }
    }

    #[test]
    fn durations_are_human_and_unknown_keys_are_refused() {
        let config: DashboardConfig =
            serde_json::from_str(r#"{"history": "2h", "viewer_queue": 4}"#).unwrap();
        assert_eq!(config.history, Duration::from_secs(2 * 60 * 60));
        assert_eq!(config.viewer_queue, 4);
        assert_eq!(config.max_viewers, 1000);
        assert!(serde_json::from_str::<DashboardConfig>(r#"{"viewers": 4}"#).is_err());
    }
}
