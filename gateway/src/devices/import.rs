//! Parsing a CSV file of devices: `id,kind,district,secret`, header line first.

use std::collections::HashMap;

use polis_telemetry::DeviceKind;

use super::device::{NewDevice, check_name};
use super::error::ImportProblem;
use super::secret;

const HEADER: [&str; 4] = ["id", "kind", "district", "secret"];

/// Every good row with its line number, and every problem of every bad row.
pub(crate) fn parse(csv: &[u8]) -> (Vec<(u64, NewDevice)>, Vec<ImportProblem>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv);
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for (index, record) in reader.records().enumerate() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(problem(line, format!("not readable as CSV: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(index as u64 + 1, |p| p.line());
        let fields: Vec<&str> = record.iter().collect();
        if index == 0 {
            if fields != HEADER {
                problems.push(problem(
                    line,
                    format!(
                        "the first line must be the header `{}`, found `{}`",
                        HEADER.join(","),
                        fields.join(",")
                    ),
                ));
            }
            continue;
        }
        let [id, kind, district, secret] = fields[..] else {
            problems.push(problem(
                line,
                format!(
                    "{} column(s) where {} are expected ({})",
                    fields.len(),
                    HEADER.len(),
                    HEADER.join(",")
                ),
            ));
            continue;
        };
        match row(id, kind, district, secret) {
            Ok(device) => match first_line.get(id) {
                Some(earlier) => problems.push(problem(
                    line,
                    format!("device `{id}` is already on line {earlier}"),
                )),
                None => {
                    first_line.insert(id.to_string(), line);
                    rows.push((line, device));
                }
            },
            Err(messages) => problems.push(problem(line, messages.join("; "))),
        }
    }
    (rows, problems)
}

/// One data row as a device, or everything wrong with it.
fn row(id: &str, kind: &str, district: &str, secret: &str) -> Result<NewDevice, Vec<String>> {
    let kind = kind.parse::<DeviceKind>().map_err(|e| e.to_string());
    let messages: Vec<String> = [
        check_name("device id", id).err().map(|e| e.to_string()),
        kind.as_ref().err().cloned(),
        check_name("district", district)
            .err()
            .map(|e| e.to_string()),
        secret::check(secret).err().map(|e| e.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    match kind {
        Ok(kind) if messages.is_empty() => Ok(NewDevice {
            id: id.to_string(),
            kind,
            district: district.to_string(),
            secret: secret.to_string(),
        }),
        _ => Err(messages),
    }
}

fn problem(line: u64, message: String) -> ImportProblem {
    ImportProblem { line, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_row_with_its_line() {
        let (rows, problems) = parse(
            b"id,kind,district,secret\n\
              tc-1,traffic,harbour,secret-number-one-ok\n\
              \"em-2\", energy ,old-town,secret-number-two-ok\n",
        );
        assert_eq!(problems, []);
        let summary: Vec<_> = rows
            .iter()
            .map(|(line, d)| (*line, d.id.as_str(), d.kind, d.district.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (2, "tc-1", DeviceKind::Traffic, "harbour"),
                (3, "em-2", DeviceKind::Energy, "old-town"),
            ]
        );
    }

    #[test]
    fn reports_every_bad_row_by_line() {
        let (rows, problems) = parse(
            b"id,kind,district,secret\n\
              tc-1,traffic,harbour,secret-number-one-ok\n\
              tc 2,water,harbour,short\n\
              tc-3,traffic\n\
              tc-1,traffic,harbour,secret-number-one-ok\n",
        );
        assert_eq!(rows.len(), 1);
        let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 4, 5], "{problems:#?}");
        let bad = &problems[0].message;
        for expected in [
            "device id `tc 2`",
            "unknown device kind `water`",
            "5 characters",
        ] {
            assert!(bad.contains(expected), "{bad}");
        }
        assert!(
            problems[1].message.contains("2 column(s) where 4"),
            "{problems:#?}"
        );
        assert!(
            problems[2].message.contains("already on line 2"),
            "{problems:#?}"
        );
    }

    #[test]
    fn the_header_is_required() {
        let (_, problems) = parse(b"tc-1,traffic,harbour,secret-number-one-ok\n");
        assert_eq!(problems[0].line, 1);
        assert!(
            problems[0]
                .message
                .contains("header `id,kind,district,secret`")
        );
    }
}
