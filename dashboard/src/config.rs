//! Dashboard configuration: the `[dashboard]` section of the Polis config file.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use serde::{Deserialize, Serialize};

/// The shortest history that holds one 10-second metric window.
const MIN_HISTORY: Duration = Duration::from_secs(10);
/// The longest history: charts over more than a day belong in reports, not on the live page.
const MAX_HISTORY: Duration = Duration::from_secs(24 * 60 * 60);
/// The shortest access token: anything shorter can be guessed.
const MIN_TOKEN_CHARS: usize = 16;

/// How the dashboard serves operators.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// How long one message to a viewer may take to send. A viewer whose connection accepts
    /// nothing for this long (a stalled network, a frozen tab) is closed.
    #[serde(with = "humantime_serde")]
    pub viewer_send_timeout: Duration,
    /// The token that lets a viewer see the page, its charts and live updates and run SQL
    /// (`Authorization: Bearer TOKEN` or `?token=TOKEN`). Unset, viewing needs no token; required
    /// when `listen` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer_token: Option<String>,
    /// The token that also lets an operator acknowledge and clear alarms (and anything else that
    /// changes state); it grants everything the viewer token does. Unset, those need only what
    /// viewing needs; required when `listen` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
}

/// Debug output never shows the tokens, so a logged configuration gives no access away.
impl fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |token: &Option<String>| token.as_ref().map(|_| "<redacted>");
        f.debug_struct("DashboardConfig")
            .field("listen", &self.listen)
            .field("history", &self.history)
            .field("max_viewers", &self.max_viewers)
            .field("viewer_queue", &self.viewer_queue)
            .field("viewer_send_timeout", &self.viewer_send_timeout)
            .field("viewer_token", &redacted(&self.viewer_token))
            .field("operator_token", &redacted(&self.operator_token))
            .finish()
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            history: Duration::from_secs(30 * 60),
            max_viewers: 1000,
            viewer_queue: 16,
            viewer_send_timeout: Duration::from_secs(30),
            viewer_token: None,
            operator_token: None,
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
        if self.viewer_send_timeout.is_zero() {
            problems.push(
                "dashboard.viewer_send_timeout = 0s would close every viewer: use e.g. 30s"
                    .to_string(),
            );
        }
        self.token_problems(&mut problems);
        problems
    }

    fn token_problems(&self, problems: &mut Vec<String>) {
        if !self.listen.ip().is_loopback()
            && (self.viewer_token.is_none() || self.operator_token.is_none())
        {
            problems.push(format!(
                "dashboard.listen = {} is reachable from other machines, so the dashboard needs \
                 dashboard.viewer_token and dashboard.operator_token: set both, or listen on \
                 127.0.0.1",
                self.listen
            ));
        }
        for (key, token) in [
            ("dashboard.viewer_token", &self.viewer_token),
            ("dashboard.operator_token", &self.operator_token),
        ] {
            let Some(token) = token else { continue };
            let length = token.chars().count();
            if length < MIN_TOKEN_CHARS {
                problems.push(format!(
                    "{key} is {length} characters long, too easy to guess: use at least \
                     {MIN_TOKEN_CHARS} random characters (for example `openssl rand -hex 16`)"
                ));
            }
            if !token.bytes().all(token_byte) {
                problems.push(format!(
                    "{key} has a character that does not travel unchanged in a URL, a header \
                     and a cookie: use only ASCII letters, digits and - . _ ~"
                ));
            }
        }
        if self.viewer_token.is_some() && self.viewer_token == self.operator_token {
            problems.push(
                "dashboard.viewer_token and dashboard.operator_token are the same, so every \
                 viewer could acknowledge and clear alarms: use two different tokens"
                    .to_string(),
            );
        }
    }
}

/// Whether `byte` may appear in a token: the characters a URL typed by hand (`/?token=…`), a
/// header and a cookie value all carry unchanged.
fn token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
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

    const VIEWER: &str = "viewer-0123456789abcdef";
    const OPERATOR: &str = "operator-0123456789abcdef";

    fn with_tokens(listen: &str, viewer: Option<&str>, operator: Option<&str>) -> DashboardConfig {
        DashboardConfig {
            listen: listen.parse().unwrap(),
            viewer_token: viewer.map(str::to_string),
            operator_token: operator.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn listening_beyond_loopback_needs_both_tokens() {
        for (viewer, operator) in [(None, None), (Some(VIEWER), None), (None, Some(OPERATOR))] {
            let problems = with_tokens("0.0.0.0:8080", viewer, operator).problems();
            assert_eq!(
                problems,
                vec![
                    "dashboard.listen = 0.0.0.0:8080 is reachable from other machines, so the \
                     dashboard needs dashboard.viewer_token and dashboard.operator_token: set \
                     both, or listen on 127.0.0.1"
                        .to_string()
                ],
                "viewer {viewer:?}, operator {operator:?}"
            );
        }
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.168.1.20:8080"] {
            assert_eq!(
                with_tokens(listen, Some(VIEWER), Some(OPERATOR)).problems(),
                Vec::<String>::new(),
                "{listen}"
            );
        }
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            assert_eq!(
                with_tokens(listen, None, None).problems(),
                Vec::<String>::new(),
                "{listen}"
            );
            assert_eq!(
                with_tokens(listen, None, Some(OPERATOR)).problems(),
                Vec::<String>::new(),
                "{listen}"
            );
        }
    }

    #[test]
    fn short_odd_and_equal_tokens_are_reported_with_their_keys() {
        let problems = with_tokens("127.0.0.1:8080", Some(""), Some("short")).problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("dashboard.viewer_token is 0 characters long"));
        assert!(problems[1].starts_with("dashboard.operator_token is 5 characters long"));

        let spaced = "a token with spaces in it";
        let problems = with_tokens("127.0.0.1:8080", Some(spaced), Some(OPERATOR)).problems();
        assert_eq!(
            problems,
            vec![
                "dashboard.viewer_token has a character that does not travel unchanged in a \
                 URL, a header and a cookie: use only ASCII letters, digits and - . _ ~"
                    .to_string()
            ]
        );

        let problems = with_tokens("0.0.0.0:8080", Some(VIEWER), Some(VIEWER)).problems();
        assert_eq!(
            problems,
            vec![
                "dashboard.viewer_token and dashboard.operator_token are the same, so every \
                 viewer could acknowledge and clear alarms: use two different tokens"
                    .to_string()
            ]
        );
    }

    #[test]
    fn tokens_are_optional_keys_and_never_debug_printed() {
        let config: DashboardConfig = serde_json::from_str(&format!(
            r#"{{"viewer_token": "{VIEWER}", "operator_token": "{OPERATOR}"}}"#
        ))
        .unwrap();
        assert_eq!(config.viewer_token.as_deref(), Some(VIEWER));
        assert_eq!(config.operator_token.as_deref(), Some(OPERATOR));
        let printed = format!("{config:?}");
        assert!(
            !printed.contains(VIEWER) && !printed.contains(OPERATOR),
            "{printed}"
        );
        assert!(
            printed.contains(r#"viewer_token: Some("<redacted>")"#),
            "{printed}"
        );

        let defaults = serde_json::to_value(DashboardConfig::default()).unwrap();
        assert!(defaults.get("viewer_token").is_none(), "{defaults}");
        assert!(defaults.get("operator_token").is_none(), "{defaults}");
    }
}
