//! Alarm rules: TOML files of `[[threshold]]` and `[[silence]]` tables.
//!
//! The shipped files live in `analytics/rules/`; files in `analytics.rules_dir` are added to them,
//! and one with a shipped file's name replaces it. Every rule is checked at start-up; a problem
//! names the file, the rule and the key.

use std::path::Path;
use std::time::Duration;

use polis_telemetry::{DeviceKind, Severity};
use serde::Deserialize;

use crate::error::AnalyticsError;

const SHIPPED: [(&str, &str); 3] = [
    ("traffic.toml", include_str!("../../rules/traffic.toml")),
    ("energy.toml", include_str!("../../rules/energy.toml")),
    ("transport.toml", include_str!("../../rules/transport.toml")),
];

/// The placeholders a message template may use.
const PLACEHOLDERS: [&str; 5] = ["rule", "entity", "metric", "value", "threshold"];

/// Which side of the threshold raises the alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
}

impl Condition {
    pub fn threshold(self) -> f64 {
        match self {
            Condition::Above(t) | Condition::Below(t) => t,
        }
    }

    pub fn holds(self, value: f64) -> bool {
        match self {
            Condition::Above(t) => value > t,
            Condition::Below(t) => value < t,
        }
    }
}

/// Raises when a metric is past a threshold for `raise_after` consecutive windows.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRule {
    pub name: String,
    /// The metric watched, e.g. `traffic.congestion_index`.
    pub metric: String,
    pub condition: Condition,
    pub severity: Severity,
    pub raise_after: u32,
    pub clear_after: u32,
    /// Only this entity, if set.
    pub entity: Option<String>,
    /// With `{rule}`, `{entity}`, `{metric}`, `{value}` and `{threshold}` filled in.
    pub message: String,
}

impl ThresholdRule {
    /// The metric's domain: the windows of the metric file the rule is evaluated on.
    pub fn domain(&self) -> &str {
        self.metric.split('.').next().unwrap_or(&self.metric)
    }
}

/// Raises when a device of `kind` has not reported for `silent_after` of event time.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceRule {
    pub name: String,
    pub kind: DeviceKind,
    pub silent_after: Duration,
    pub severity: Severity,
    pub message: String,
}

/// Every rule in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    pub threshold: Vec<ThresholdRule>,
    pub silence: Vec<SilenceRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    threshold: Vec<RawThreshold>,
    #[serde(default)]
    silence: Vec<RawSilence>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    name: String,
    metric: String,
    above: Option<f64>,
    below: Option<f64>,
    severity: String,
    raise_after: Option<i64>,
    clear_after: Option<i64>,
    entity: Option<String>,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    name: String,
    kind: String,
    silent_after: String,
    severity: String,
    message: Option<String>,
}

/// The shipped rules plus those in `dir`.
pub fn load(dir: Option<&Path>) -> Result<Rules, AnalyticsError> {
    let mut files: Vec<(String, String)> = SHIPPED
        .iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect();
    if let Some(dir) = dir {
        let io = |source| AnalyticsError::RulesDir {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let text = std::fs::read_to_string(&path).map_err(io)?;
            files.retain(|(n, _)| *n != name);
            files.push((name, text));
        }
    }
    let mut rules = Rules::default();
    for (file, text) in &files {
        let parsed = parse(file, text)?;
        rules.threshold.extend(parsed.threshold);
        rules.silence.extend(parsed.silence);
    }
    let mut names: Vec<&str> = rules
        .threshold
        .iter()
        .map(|r| r.name.as_str())
        .chain(rules.silence.iter().map(|r| r.name.as_str()))
        .collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(AnalyticsError::AlertRule {
            file: "(all rule files)".into(),
            reason: format!(
                "rule `{}` is defined twice: rule names must be unique across files",
                twice[0]
            ),
        });
    }
    Ok(rules)
}

/// The rules of one file, every value checked.
pub fn parse(file: &str, text: &str) -> Result<Rules, AnalyticsError> {
    let refuse = |reason: String| AnalyticsError::AlertRule {
        file: file.to_string(),
        reason,
    };
    let raw: RuleFile = toml::from_str(text).map_err(|e| refuse(e.to_string()))?;
    let mut rules = Rules::default();
    for r in raw.threshold {
        let bad = |key: &str, why: String| refuse(format!("rule `{}`: `{key}` {why}", r.name));
        check_name(&r.name).map_err(|why| bad("name", why))?;
        if r.metric
            .split_once('.')
            .is_none_or(|(d, m)| d.is_empty() || m.is_empty())
        {
            return Err(bad(
                "metric",
                format!(
                    "= `{}` is not `{{domain}}.{{measure}}`, e.g. `traffic.congestion_index`",
                    r.metric
                ),
            ));
        }
        let condition = match (r.above, r.below) {
            (Some(t), None) => Condition::Above(t),
            (None, Some(t)) => Condition::Below(t),
            _ => {
                return Err(bad(
                    "above/below",
                    "must be given exactly once: either `above = 0.7` or `below = 207.0`".into(),
                ));
            }
        };
        if !condition.threshold().is_finite() {
            return Err(bad("above/below", "must be a finite number".into()));
        }
        let count = |key: &str, value: Option<i64>| match value {
            None => Ok(1),
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Ok(n as u32),
            Some(n) => Err(bad(
                key,
                format!("= {n}: use a number of windows, at least 1"),
            )),
        };
        let raise_after = count("raise_after", r.raise_after)?;
        let clear_after = count("clear_after", r.clear_after)?;
        check_template(&r.message).map_err(|why| bad("message", why))?;
        if r.entity.as_deref() == Some("") {
            return Err(bad(
                "entity",
                "is empty: name one entity or remove the key".into(),
            ));
        }
        rules.threshold.push(ThresholdRule {
            severity: severity(&r.severity).map_err(|why| bad("severity", why))?,
            name: r.name,
            metric: r.metric,
            condition,
            raise_after,
            clear_after,
            entity: r.entity,
            message: r.message,
        });
    }
    for r in raw.silence {
        let bad = |key: &str, why: String| refuse(format!("rule `{}`: `{key}` {why}", r.name));
        check_name(&r.name).map_err(|why| bad("name", why))?;
        let kind: DeviceKind = r.kind.parse().map_err(|e| bad("kind", format!("{e}")))?;
        let silent_after = humantime_serde::re::humantime::parse_duration(&r.silent_after)
            .map_err(|e| {
                bad(
                    "silent_after",
                    format!(
                        "= `{}` is not a duration like 60s or 5m: {e}",
                        r.silent_after
                    ),
                )
            })?;
        if silent_after < Duration::from_secs(1) {
            return Err(bad("silent_after", "must be at least 1s, e.g. 60s".into()));
        }
        let message = r
            .message
            .unwrap_or_else(|| "{entity} silent for more than {threshold} s".to_string());
        check_template(&message).map_err(|why| bad("message", why))?;
        rules.silence.push(SilenceRule {
            severity: severity(&r.severity).map_err(|why| bad("severity", why))?,
            name: r.name,
            kind,
            silent_after,
            message,
        });
    }
    Ok(rules)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!("= `{name}`: use a-z, 0-9 and _ only"));
    }
    Ok(())
}

fn severity(s: &str) -> Result<Severity, String> {
    Severity::ALL
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("= `{s}`: use critical, major, minor or warning"))
}

fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("has a `{{` without `}}` in \"{template}\""))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "has an unknown placeholder `{{{name}}}`: use {{rule}}, {{entity}}, {{metric}}, {{value}} or {{threshold}}"
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Fills a checked template.
pub(crate) fn render(template: &str, fields: [(&str, &str); 5]) -> String {
    let mut out = template.to_string();
    for (name, value) in fields {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// A number as messages show it: at most two decimals, no trailing zeros.
pub(crate) fn number(value: f64) -> String {
    let s = format!("{value:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_load() {
        let rules = load(None).unwrap();
        let names: Vec<&str> = rules.threshold.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["congestion", "low_voltage", "bus_delay"]);
        let voltage = &rules.threshold[1];
        assert_eq!(voltage.condition, Condition::Below(207.0));
        assert_eq!((voltage.raise_after, voltage.clear_after), (1, 2));
        assert_eq!(voltage.severity, Severity::Critical);
        assert_eq!(rules.silence.len(), 1);
        assert_eq!(rules.silence[0].silent_after, Duration::from_secs(60));
        assert_eq!(rules.silence[0].kind, DeviceKind::Energy);
    }

    fn refused(text: &str) -> String {
        parse("ops.toml", text).unwrap_err().to_string()
    }

    const GOOD: &str = "name = \"hot\"\nmetric = \"energy.load_kw\"\nseverity = \"minor\"\nmessage = \"{value}\"\n";

    #[test]
    fn bad_rules_are_refused_naming_file_rule_and_key() {
        for (text, expected) in [
            (
                format!("[[threshold]]\n{GOOD}above = 1.0\nbelow = 0.5\n"),
                "`above/below` must be given exactly once",
            ),
            (
                format!("[[threshold]]\n{GOOD}"),
                "`above/below` must be given exactly once",
            ),
            (
                format!("[[threshold]]\n{GOOD}above = 1.0\nraise_after = 0\n"),
                "`raise_after` = 0: use a number of windows, at least 1",
            ),
            (
                format!("[[threshold]]\n{}above = 1.0\n", GOOD.replace("minor", "urgent")),
                "`severity` = `urgent`: use critical, major, minor or warning",
            ),
            (
                format!("[[threshold]]\n{}above = 1.0\n", GOOD.replace("{value}", "{val}")),
                "`message` has an unknown placeholder `{val}`",
            ),
            (
                "[[silence]]\nname = \"quiet\"\nkind = \"water\"\nsilent_after = \"60s\"\nseverity = \"major\"\n".to_string(),
                "`kind` unknown device kind `water`",
            ),
            (
                "[[silence]]\nname = \"quiet\"\nkind = \"energy\"\nsilent_after = \"soon\"\nseverity = \"major\"\n".to_string(),
                "`silent_after` = `soon` is not a duration",
            ),
        ] {
            let message = refused(&text);
            assert!(message.contains("ops.toml"), "{message}");
            assert!(message.contains("rule `"), "{message}");
            assert!(message.contains(expected), "{expected} missing from: {message}");
        }
        assert!(
            refused("[[threshold]]\nname = \"x\"\nwhat = 1\n").contains("unknown field `what`")
        );
    }

    #[test]
    fn an_operator_file_with_a_shipped_name_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("traffic.toml"),
            format!("[[threshold]]\n{GOOD}above = 900.0\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let rules = load(Some(dir.path())).unwrap();
        let names: Vec<&str> = rules.threshold.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["low_voltage", "bus_delay", "hot"]);
        std::fs::write(
            dir.path().join("more.toml"),
            format!(
                "[[threshold]]\n{}above = 1.0\n",
                GOOD.replace("hot", "bus_delay")
            ),
        )
        .unwrap();
        assert!(
            load(Some(dir.path()))
                .unwrap_err()
                .to_string()
                .contains("rule `bus_delay` is defined twice")
        );
    }

    #[test]
    fn messages_fill_their_placeholders() {
        assert_eq!(number(0.8234), "0.82");
        assert_eq!(number(207.0), "207");
        assert_eq!(
            render(
                "{metric} {value} above {threshold} in {entity} ({rule})",
                [
                    ("rule", "r"),
                    ("entity", "centre"),
                    ("metric", "m"),
                    ("value", "1"),
                    ("threshold", "0.7")
                ]
            ),
            "m 1 above 0.7 in centre (r)"
        );
    }
}
