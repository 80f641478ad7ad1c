//! The `[gateway.bridge]` section: which external MQTT broker to take device messages from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The port of `mqtt://` when the URL names none.
const DEFAULT_PORT: u16 = 1883;
/// MQTT's keep-alive is a 16-bit number of seconds; rumqttc refuses less than one second.
const KEEP_ALIVE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(u16::MAX as u64);
/// MQTT packet ids are 16-bit, so no broker can have more unacknowledged messages in flight.
const MAX_INFLIGHT: usize = u16::MAX as usize;

/// Bridge mode: the gateway is a client of an existing MQTT broker (Mosquitto, EMQX, HiveMQ,
/// VerneMQ) instead of running its own MQTT server. When this section is present the embedded
/// server is not started (`gateway.mqtt_listen`, `max_connections`, `mqtt_buffer` and
/// `allow_anonymous` are ignored, and the device registry is not consulted): devices connect to
/// that broker, which authenticates them and enforces per-device topic ACLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The broker, `mqtt://HOST[:PORT]` (port 1883 when omitted), e.g. `"mqtt://10.0.0.5:1883"`.
    /// TLS (`mqtts://`) is not supported yet.
    pub url: String,
    /// The gateway's MQTT client id. Its session on the broker is persistent
    /// (clean_session = false): keep it stable across restarts and unique per gateway, so a
    /// restarted gateway resumes its session and receives what was queued for it meanwhile.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Subscribe to the shared subscription `$share/{share_group}/city/#` (true), so gateways
    /// with the same group split the messages; or to `city/#` itself (false: every gateway
    /// receives every message, for brokers without shared subscriptions or a single gateway).
    #[serde(default = "default_shared")]
    pub shared: bool,
    /// The shared subscription's group name.
    #[serde(default = "default_share_group")]
    pub share_group: String,
    /// User name the gateway logs in with; its ACL entry needs read access to `city/#`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// MQTT keep-alive: the broker drops the gateway after 1.5 times this without a packet.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Most received messages waiting for the forwarder besides the batch it is appending; at
    /// this many the gateway stops reading from the broker until the forwarder takes more. The broker decides how many
    /// unacknowledged messages it sends (an MQTT 3.1.1 client cannot ask for a limit): raise
    /// Mosquitto's `max_inflight_messages` (default 20) toward `gateway.max_batch` for throughput.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Longest wait between reconnection attempts; waits start at 100 ms and double up to it.
    #[serde(default = "default_max_reconnect_delay", with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
}

fn default_client_id() -> String {
    "polis-gateway".to_string()
}

fn default_shared() -> bool {
    true
}

fn default_share_group() -> String {
    "polis".to_string()
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_max_inflight() -> usize {
    1_000
}

fn default_max_reconnect_delay() -> Duration {
    Duration::from_secs(30)
}

/// Where the broker is, from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

impl BridgeConfig {
    /// The broker at `url`, every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        BridgeConfig {
            url: url.into(),
            client_id: default_client_id(),
            shared: default_shared(),
            share_group: default_share_group(),
            username: None,
            password: None,
            keep_alive: default_keep_alive(),
            max_inflight: default_max_inflight(),
            max_reconnect_delay: default_max_reconnect_delay(),
        }
    }

    /// The topic filter the gateway subscribes to.
    pub fn topic_filter(&self) -> String {
        let filter = polis_telemetry::topics::MQTT_FILTER;
        if self.shared {
            format!("$share/{}/{filter}", self.share_group)
        } else {
            filter.to_string()
        }
    }

    pub(crate) fn address(&self) -> Result<BrokerAddress, String> {
        let wrong = |why: &str| {
            format!(
                "gateway.bridge.url = {:?} {why}: use mqtt://HOST[:PORT], e.g. \"mqtt://127.0.0.1:1883\"",
                self.url
            )
        };
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return Err(wrong("has no scheme"));
        };
        match scheme {
            "mqtt" | "tcp" => {}
            "mqtts" | "ssl" | "ws" | "wss" => {
                return Err(wrong(&format!(
                    "uses {scheme}://, which bridge mode does not support (plain MQTT only)"
                )));
            }
            other => return Err(wrong(&format!("has the unknown scheme {other:?}"))),
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(wrong(
                "has a path, query or user part (give credentials as username and password)",
            ));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| wrong("has no valid host"))?;
        let port = match port {
            None => DEFAULT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(wrong(&format!("has the invalid port {text:?}"))),
            },
        };
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
        })
    }

    /// Every problem with the section, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(problem) = self.address() {
            problems.push(problem);
        }
        if self.client_id.trim().is_empty() {
            problems.push(
                "gateway.bridge.client_id is empty: a persistent session needs a stable id, e.g. \"polis-gateway-1\"".to_string(),
            );
        } else if self.client_id.len() > u16::MAX as usize
            || self.client_id.contains(['/', '+', '#'])
        {
            problems.push(format!(
                "gateway.bridge.client_id = {:?} is not usable: use up to 65535 bytes without '/', '+' or '#'",
                self.client_id
            ));
        }
        if self.shared
            && (self.share_group.is_empty() || self.share_group.contains(['/', '+', '#']))
        {
            problems.push(format!(
                "gateway.bridge.share_group = {:?} is not a valid group name: use a non-empty name without '/', '+' or '#', e.g. \"polis\"",
                self.share_group
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push(
                "gateway.bridge.password is set without gateway.bridge.username: MQTT 3.1.1 sends a password only with a user name, so set both".to_string(),
            );
        }
        if !KEEP_ALIVE_RANGE.contains(&self.keep_alive) {
            problems.push(format!(
                "gateway.bridge.keep_alive = {:?} is out of range: use 1s to 65535s",
                self.keep_alive
            ));
        }
        if !(1..=MAX_INFLIGHT).contains(&self.max_inflight) {
            problems.push(format!(
                "gateway.bridge.max_inflight = {} is out of range: use 1 to {MAX_INFLIGHT}",
                self.max_inflight
            ));
        }
        if self.max_reconnect_delay < Duration::from_millis(100) {
            problems.push(format!(
                "gateway.bridge.max_reconnect_delay = {:?} is too short: use at least 100ms",
                self.max_reconnect_delay
            ));
        }
        problems
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    (!host.is_empty() && !host.contains(['[', ']', ' '])).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(change: impl FnOnce(&mut BridgeConfig)) -> Vec<String> {
        let mut config = BridgeConfig::new("mqtt://127.0.0.1:1883");
        change(&mut config);
        config.problems()
    }

    #[test]
    fn the_defaults_and_a_plain_url_are_valid() {
        assert_eq!(problems_of(|_| {}), Vec::<String>::new());
        let config = BridgeConfig::new("mqtt://broker.city.example");
        assert_eq!(
            config.address(),
            Ok(BrokerAddress {
                host: "broker.city.example".into(),
                port: 1883
            })
        );
        assert_eq!(
            BridgeConfig::new("tcp://[::1]:2883/").address(),
            Ok(BrokerAddress {
                host: "::1".into(),
                port: 2883
            })
        );
        assert_eq!(config.topic_filter(), "$share/polis/city/#");
        let direct = BridgeConfig {
            shared: false,
            ..config
        };
        assert_eq!(direct.topic_filter(), "city/#");
    }

    #[test]
    fn bad_urls_are_refused_saying_what_would_be_right() {
        for (url, why) in [
            ("127.0.0.1:1883", "has no scheme"),
            ("http://127.0.0.1:1883", "has the unknown scheme \"http\""),
            (
                "mqtts://127.0.0.1:8883",
                "uses mqtts://, which bridge mode does not support (plain MQTT only)",
            ),
            ("mqtt://", "has no valid host"),
            ("mqtt://:1883", "has no valid host"),
            ("mqtt://127.0.0.1:0", "has the invalid port \"0\""),
            ("mqtt://127.0.0.1:70000", "has the invalid port \"70000\""),
            (
                "mqtt://user:pw@127.0.0.1",
                "has a path, query or user part (give credentials as username and password)",
            ),
        ] {
            assert_eq!(
                problems_of(|c| c.url = url.to_string()),
                vec![format!(
                    "gateway.bridge.url = {url:?} {why}: use mqtt://HOST[:PORT], e.g. \"mqtt://127.0.0.1:1883\""
                )],
                "{url}"
            );
        }
    }

    #[test]
    fn every_other_problem_names_its_key_and_the_fix() {
        let problems = problems_of(|c| {
            c.client_id = " ".into();
            c.share_group = "a/b".into();
            c.password = Some("secret".into());
            c.keep_alive = Duration::from_millis(500);
            c.max_inflight = 0;
            c.max_reconnect_delay = Duration::from_millis(10);
        });
        assert_eq!(
            problems,
            vec![
                "gateway.bridge.client_id is empty: a persistent session needs a stable id, e.g. \"polis-gateway-1\"",
                "gateway.bridge.share_group = \"a/b\" is not a valid group name: use a non-empty name without '/', '+' or '#', e.g. \"polis\"",
                "gateway.bridge.password is set without gateway.bridge.username: MQTT 3.1.1 sends a password only with a user name, so set both",
                "gateway.bridge.keep_alive = 500ms is out of range: use 1s to 65535s",
                "gateway.bridge.max_inflight = 0 is out of range: use 1 to 65535",
                "gateway.bridge.max_reconnect_delay = 10ms is too short: use at least 100ms",
            ]
        );
        assert_eq!(
            problems_of(|c| c.client_id = "gw/1".into()),
            vec![
                "gateway.bridge.client_id = \"gw/1\" is not usable: use up to 65535 bytes without '/', '+' or '#'"
            ]
        );
        assert_eq!(
            problems_of(|c| {
                c.shared = false;
                c.share_group = String::new();
            }),
            Vec::<String>::new(),
            "the group does not matter without a shared subscription"
        );
    }
}
