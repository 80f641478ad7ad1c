//! `polis sql`: send one statement to `POST /api/sql` and print the rows as a table or JSON.
//! [`post_sql`] is also how `polis report` fetches its metric windows.

use anyhow::Context;
use indexmap::IndexMap;
use serde_json::Value;

pub async fn run(url: &str, token: Option<&str>, query: &str, json: bool) -> anyhow::Result<()> {
    let body = post_sql(url, token, query).await?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let rows: Vec<IndexMap<String, Value>> = serde_json::from_str(&body)
        .context("the server answered with something that is not rows")?;
    print!("{}", render_table(&rows));
    Ok(())
}

/// Sends `query` to `{url}/api/sql` (with the dashboard `token`, if given) and returns the JSON
/// rows as text, or the server's error.
pub async fn post_sql(url: &str, token: Option<&str>, query: &str) -> anyhow::Result<String> {
    let endpoint = format!("{}/api/sql", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .post(&endpoint)
        .body(query.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach Polis at {endpoint}: is `polis up` running? (use --url to point elsewhere)"))?;
    let status = response.status();
    let body = response.text().await.context("reading the response")?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            " (give the dashboard's viewer token with --token or POLIS_TOKEN)"
        } else {
            ""
        };
        anyhow::bail!("query failed ({status}): {message}{hint}");
    }
    Ok(body)
}

/// Renders rows as an aligned text table with a row count.
fn render_table(rows: &[IndexMap<String, Value>]) -> String {
    let Some(first) = rows.first() else {
        return "(0 rows)\n".to_string();
    };
    let columns: Vec<&String> = first.keys().collect();
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(r.get(*c))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.chars().count())
        })
        .collect();
    let line = |values: Vec<&str>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!(" {}\n", padded.join(" | ").trim_end())
    };
    let mut out = line(columns.iter().map(|c| c.as_str()).collect());
    out.push_str(&format!(
        "-{}-\n",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    ));
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_columns_in_server_order_with_nulls_blank() {
        let rows: Vec<IndexMap<String, Value>> = serde_json::from_str(
            r#"[{"district":"harbour","n":12,"x":null},{"district":"old-town","n":3,"x":1.5}]"#,
        )
        .unwrap();
        assert_eq!(
            render_table(&rows),
            " district | n  | x\n----------+----+-----\n harbour  | 12 |\n old-town | 3  | 1.5\n(2 rows)\n"
        );
    }
}
