//! `polis devices list`: the registered devices as an aligned table, secrets left out.

use super::device::Device;

/// One line per device (id, kind, district, when added) under a header, then a count.
pub fn render_table(devices: &[Device]) -> String {
    let rows: Vec<[String; 4]> = devices
        .iter()
        .map(|d| {
            [
                d.id.clone(),
                d.kind.to_string(),
                d.district.clone(),
                d.added_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            ]
        })
        .collect();
    let header = ["ID", "KIND", "DISTRICT", "ADDED"].map(String::from);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String; 4]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(row));
    }
    let n = devices.len();
    out.push_str(&format!("({n} device{})\n", if n == 1 { "" } else { "s" }));
    out
}

#[cfg(test)]
mod tests {
    use polis_telemetry::DeviceKind;

    use super::*;

    #[test]
    fn lists_devices_without_their_secret_hash() {
        let device = Device {
            id: "tc-harbour-1".into(),
            kind: DeviceKind::Traffic,
            district: "harbour".into(),
            secret_hash: "$argon2id$v=19$m=4096,t=1,p=1$c2FsdA$aGFzaA".into(),
            added_at: "2026-11-25T16:00:00Z".parse().unwrap(),
        };
        assert_eq!(
            render_table(&[device]),
            "ID            KIND     DISTRICT  ADDED\n\
             tc-harbour-1  traffic  harbour   2026-11-25 16:00:00Z\n\
             (1 device)\n"
        );
        assert_eq!(
            render_table(&[]),
            "ID  KIND  DISTRICT  ADDED\n(0 devices)\n"
        );
    }
}
