//! Result formats of the SQL endpoint — JSON (an array of row objects, the default), CSV with a
//! header row, NDJSON (one object per line) and the Arrow IPC stream format — and the choice
//! between them: `?format=NAME` wins, else the `Accept` header, else JSON.

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use arrow::json::writer::{JsonArray, JsonFormat, LineDelimited, WriterBuilder};

use crate::sql::QueryResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
    Ndjson,
    Arrow,
}

const FORMATS: [Format; 4] = [Format::Json, Format::Csv, Format::Ndjson, Format::Arrow];

/// Why no format could be chosen.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("unknown format `{0}`: use format=json, csv, ndjson or arrow")]
    UnknownName(String),
    #[error(
        "cannot answer in any of `{0}`: accept application/json, text/csv, application/x-ndjson or application/vnd.apache.arrow.stream"
    )]
    NotAcceptable(String),
}

impl Format {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Arrow => "arrow",
        }
    }

    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv",
            Format::Ndjson => "application/x-ndjson",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// The format asked for by name (`?format=`) or, failing that, by the `Accept` header.
    pub(crate) fn choose(name: Option<&str>, accept: Option<&str>) -> Result<Format, FormatError> {
        if let Some(name) = name {
            return FORMATS
                .into_iter()
                .find(|f| f.name().eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| FormatError::UnknownName(name.to_string()));
        }
        match accept.map(str::trim) {
            None | Some("") => Ok(Format::Json),
            Some(accept) => {
                from_accept(accept).ok_or_else(|| FormatError::NotAcceptable(accept.to_string()))
            }
        }
    }

    /// The result in this format; CSV and Arrow carry the columns even when there are no rows.
    pub(crate) fn encode(self, result: &QueryResult) -> Result<Vec<u8>, ArrowError> {
        let batches: Vec<&RecordBatch> =
            result.batches.iter().filter(|b| b.num_rows() > 0).collect();
        match self {
            Format::Json if batches.is_empty() => Ok(b"[]".to_vec()),
            Format::Json => json::<JsonArray>(&batches),
            Format::Ndjson => json::<LineDelimited>(&batches),
            Format::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new());
                if batches.is_empty() {
                    writer.write(&RecordBatch::new_empty(result.schema.clone()))?;
                }
                for batch in batches {
                    writer.write(batch)?;
                }
                Ok(writer.into_inner())
            }
            Format::Arrow => {
                let mut writer =
                    arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &result.schema)?;
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                writer.into_inner()
            }
        }
    }
}

fn json<F: JsonFormat>(batches: &[&RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, F>(Vec::new());
    writer.write_batches(batches)?;
    writer.finish()?;
    Ok(writer.into_inner())
}

/// The most preferred media range of an `Accept` header that names a format; `*/*` and
/// `application/*` mean JSON, `text/*` CSV; ranges with `q=0` are refusals.
fn from_accept(accept: &str) -> Option<Format> {
    let mut ranges: Vec<(f32, &str)> = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?;
            let quality = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((quality, media))
        })
        .filter(|(quality, _)| *quality > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranges.into_iter().find_map(|(_, media)| {
        let media = media.to_ascii_lowercase();
        match media.as_str() {
            "*/*" | "application/*" => Some(Format::Json),
            "text/*" => Some(Format::Csv),
            _ => FORMATS.into_iter().find(|f| f.media_type() == media),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn result(rows: usize) -> QueryResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new("district", DataType::Utf8, false),
            Field::new("vehicles", DataType::Int64, true),
            Field::new("speed", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["harbour", "old town, east"])),
                Arc::new(Int64Array::from(vec![Some(12), None])),
                Arc::new(Float64Array::from(vec![Some(38.5), Some(0.25)])),
            ],
        )
        .unwrap();
        QueryResult {
            schema,
            batches: vec![batch.slice(0, rows)],
        }
    }

    fn text(format: Format, rows: usize) -> String {
        String::from_utf8(format.encode(&result(rows)).unwrap()).unwrap()
    }

    #[test]
    fn text_formats_have_exact_bytes() {
        assert_eq!(
            text(Format::Json, 2),
            r#"[{"district":"harbour","vehicles":12,"speed":38.5},{"district":"old town, east","vehicles":null,"speed":0.25}]"#
        );
        assert_eq!(
            text(Format::Ndjson, 2),
            "{\"district\":\"harbour\",\"vehicles\":12,\"speed\":38.5}\n{\"district\":\"old town, east\",\"vehicles\":null,\"speed\":0.25}\n"
        );
        assert_eq!(
            text(Format::Csv, 2),
            "district,vehicles,speed\nharbour,12,38.5\n\"old town, east\",,0.25\n"
        );
    }

    #[test]
    fn no_rows_still_describe_the_columns() {
        assert_eq!(text(Format::Json, 0), "[]");
        assert_eq!(text(Format::Ndjson, 0), "");
        assert_eq!(text(Format::Csv, 0), "district,vehicles,speed\n");
        let bytes = Format::Arrow.encode(&result(0)).unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
        assert_eq!(reader.schema(), result(0).schema);
        assert_eq!(reader.count(), 0);
    }

    #[test]
    fn arrow_reads_back_as_the_same_batches() {
        let bytes = Format::Arrow.encode(&result(2)).unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches, result(2).batches);
    }

    #[test]
    fn the_name_wins_then_the_accept_header_then_json() {
        assert_eq!(Format::choose(None, None), Ok(Format::Json));
        assert_eq!(
            Format::choose(Some("CSV"), Some("application/json")),
            Ok(Format::Csv)
        );
        assert_eq!(
            Format::choose(Some("xml"), None),
            Err(FormatError::UnknownName("xml".into()))
        );
        for (accept, format) in [
            ("text/csv", Format::Csv),
            ("application/x-ndjson", Format::Ndjson),
            ("application/vnd.apache.arrow.stream", Format::Arrow),
            ("text/html, application/xhtml+xml, */*;q=0.8", Format::Json),
            ("application/json;q=0.5, text/csv", Format::Csv),
            ("text/csv;q=0, application/x-ndjson", Format::Ndjson),
            ("text/*", Format::Csv),
        ] {
            assert_eq!(Format::choose(None, Some(accept)), Ok(format), "{accept}");
        }
        assert_eq!(
            Format::choose(None, Some("text/html")),
            Err(FormatError::NotAcceptable("text/html".into()))
        );
    }
}
