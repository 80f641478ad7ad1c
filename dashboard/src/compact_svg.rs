//! Plotters' SVG made smaller for the wire, drawing unchanged: every
//! `<polyline … points="x,y x,y …"/>` becomes a `<path … d="Mx ylDx Dy …"/>` of relative steps,
//! and the default `opacity="1"` plotters writes on every element is dropped. A chart of a dozen
//! 30-minute lines shrinks by about a third, and every viewer receives every chart each update.

const POLYLINE: &str = "<polyline";
const POINTS: &str = " points=\"";
const END: &str = "/>";

/// `svg` with its polylines as relative paths and without `opacity="1"`.
pub(crate) fn compact(svg: &str) -> String {
    let svg = svg.replace(" opacity=\"1\"", "");
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg.as_str();
    while let Some(start) = rest.find(POLYLINE) {
        out.push_str(&rest[..start]);
        let element = &rest[start..];
        let Some(end) = element.find(END) else {
            rest = element;
            break;
        };
        let tag = &element[..end];
        match as_path(tag) {
            Some(path) => out.push_str(&path),
            None => out.push_str(tag),
        }
        rest = &element[end..];
    }
    out.push_str(rest);
    out
}

/// The opening of a `<polyline …` element (up to its `/>`) as a `<path …`, or `None` when its
/// points are not the integer pairs plotters writes.
fn as_path(tag: &str) -> Option<String> {
    let attributes = &tag[POLYLINE.len()..];
    let at = attributes.find(POINTS)?;
    let after = &attributes[at + POINTS.len()..];
    let close = after.find('"')?;
    let points = parse_points(&after[..close])?;
    Some(format!(
        "<path{}{} d=\"{}\"",
        &attributes[..at],
        &after[close + 1..],
        relative_steps(&points)?
    ))
}

fn parse_points(points: &str) -> Option<Vec<(i64, i64)>> {
    points
        .split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

/// `M x y` to the first point, then one relative line step to each next point. A number is
/// separated from the one before by a space, or by its own minus sign.
fn relative_steps(points: &[(i64, i64)]) -> Option<String> {
    let (&(x0, y0), steps) = points.split_first()?;
    let mut d = format!("M{x0} {y0}");
    let mut previous = (x0, y0);
    for (i, &(x, y)) in steps.iter().enumerate() {
        let (dx, dy) = (x - previous.0, y - previous.1);
        if i == 0 {
            d.push('l');
        } else if dx >= 0 {
            d.push(' ');
        }
        d.push_str(&dx.to_string());
        if dy >= 0 {
            d.push(' ');
        }
        d.push_str(&dy.to_string());
        previous = (x, y);
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polylines_become_relative_paths_with_their_other_attributes() {
        let svg = "<svg>\n<rect x=\"0\" opacity=\"1\" fill=\"#121A26\"/>\n\
                   <polyline fill=\"none\" opacity=\"1\" stroke=\"#4FC3F7\" stroke-width=\"2\" points=\"73,34 77,30 81,41 85,41 \"/>\n\
                   <polyline points=\"5,5 9,1\" fill=\"none\"/>\n</svg>\n";
        assert_eq!(
            compact(svg),
            "<svg>\n<rect x=\"0\" fill=\"#121A26\"/>\n\
             <path fill=\"none\" stroke=\"#4FC3F7\" stroke-width=\"2\" d=\"M73 34l4-4 4 11 4 0\"/>\n\
             <path fill=\"none\" d=\"M5 5l4-4\"/>\n</svg>\n"
        );
    }

    #[test]
    fn polylines_it_cannot_read_are_kept_as_they_are() {
        for svg in [
            "<polyline points=\"1.5,2 3,4\"/>",
            "<polyline points=\"\"/>",
            "<polyline fill=\"none\"/>",
            "<polyline points=\"1,2 3,4\"",
        ] {
            assert_eq!(compact(svg), svg);
        }
    }
}
