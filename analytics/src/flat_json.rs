//! The fast path of [`crate::decode`]: telemetry values the way the gateway writes them — one flat
//! JSON object per record, every key a column of the table, plain strings, canonical numbers and
//! `YYYY-MM-DDTHH:MM:SS[.mmm]Z` timestamps — decoded in a single pass straight into Arrow
//! builders. Anything else (escapes, nesting, unknown or repeated keys, other spellings of a
//! number or a time) makes [`decode`] give up on the whole batch, which arrow-json then decodes, so
//! the two decoders never disagree about a record both accept.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringViewBuilder,
    TimestampMillisecondBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use polis_broker::ConsumedRecord;

/// Tables wider than this take the general path: a record's seen keys are one `u64`.
const MAX_COLUMNS: usize = 64;

/// Decodes `records` into a batch of `values`, or `None` if any record is not in the flat form.
pub(crate) fn decode(values: &SchemaRef, records: &[&ConsumedRecord]) -> Option<RecordBatch> {
    let fields = values.fields();
    if fields.len() > MAX_COLUMNS {
        return None;
    }
    let mut columns = fields
        .iter()
        .map(|f| Column::new(f.data_type(), records.len()))
        .collect::<Option<Vec<_>>>()?;
    let names: Vec<&[u8]> = fields.iter().map(|f| f.name().as_bytes()).collect();
    let nullable: Vec<bool> = fields.iter().map(|f| f.is_nullable()).collect();
    for r in records {
        let mut cursor = Cursor::new(&r.record.value);
        let seen = object(&mut cursor, &names, &nullable, &mut columns)?;
        cursor.skip_whitespace();
        if !cursor.is_done() {
            return None;
        }
        for (i, column) in columns.iter_mut().enumerate() {
            if seen & (1 << i) == 0 {
                if !nullable[i] {
                    return None;
                }
                column.append_null();
            }
        }
    }
    let arrays = columns.iter_mut().map(Column::finish).collect();
    RecordBatch::try_new(values.clone(), arrays).ok()
}

/// Appends one object's values to `columns`; returns which columns it had.
fn object(
    cursor: &mut Cursor,
    names: &[&[u8]],
    nullable: &[bool],
    columns: &mut [Column],
) -> Option<u64> {
    cursor.skip_whitespace();
    cursor.expect(b'{')?;
    cursor.skip_whitespace();
    let mut seen = 0u64;
    if cursor.peek() == Some(b'}') {
        cursor.advance(1);
        return Some(seen);
    }
    let mut hint = 0;
    loop {
        let i = match names.get(hint) {
            Some(name) if cursor.key(name) => hint,
            _ => position(names, cursor.plain_bytes()?)?,
        };
        if seen & (1 << i) != 0 {
            return None;
        }
        seen |= 1 << i;
        hint = i + 1;
        cursor.skip_whitespace();
        cursor.expect(b':')?;
        cursor.skip_whitespace();
        if cursor.literal(b"null") {
            if !nullable[i] {
                return None;
            }
            columns[i].append_null();
        } else {
            columns[i].append(cursor)?;
        }
        cursor.skip_whitespace();
        match cursor.next()? {
            b',' => cursor.skip_whitespace(),
            b'}' => return Some(seen),
            _ => return None,
        }
    }
}

fn position(names: &[&[u8]], key: &[u8]) -> Option<usize> {
    names.iter().position(|n| *n == key)
}

enum Column {
    Text(StringViewBuilder),
    Int64(Int64Builder),
    UInt32(UInt32Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

impl Column {
    fn new(data_type: &DataType, rows: usize) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8View => Column::Text(StringViewBuilder::with_capacity(rows)),
            DataType::Int64 => Column::Int64(Int64Builder::with_capacity(rows)),
            DataType::UInt32 => Column::UInt32(UInt32Builder::with_capacity(rows)),
            DataType::Float64 => Column::Float64(Float64Builder::with_capacity(rows)),
            DataType::Boolean => Column::Boolean(BooleanBuilder::with_capacity(rows)),
            DataType::Timestamp(TimeUnit::Millisecond, tz) => Column::Timestamp(
                TimestampMillisecondBuilder::with_capacity(rows).with_timezone_opt(tz.clone()),
            ),
            _ => return None,
        })
    }

    fn append(&mut self, cursor: &mut Cursor) -> Option<()> {
        match self {
            Column::Text(b) => b.append_value(cursor.plain_string()?),
            Column::Int64(b) => b.append_value(cursor.integer()?),
            Column::UInt32(b) => b.append_value(cursor.integer()?.try_into().ok()?),
            Column::Float64(b) => {
                let value = cursor.number()?;
                b.append_value(value.is_finite().then_some(value)?);
            }
            Column::Boolean(b) => {
                let value = if cursor.literal(b"true") {
                    true
                } else if cursor.literal(b"false") {
                    false
                } else {
                    return None;
                };
                b.append_value(value);
            }
            Column::Timestamp(b) => b.append_value(utc_millis(cursor.plain_bytes()?)?),
        }
        Some(())
    }

    fn append_null(&mut self) {
        match self {
            Column::Text(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::UInt32(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Boolean(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Text(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::UInt32(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Boolean(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_millis(text: &[u8]) -> Option<i64> {
    let (time, millis) = match text.len() {
        20 => (text, 0),
        24 if text[19] == b'.' => (text, digits(&text[20..23])?),
        _ => return None,
    };
    let shape_holds = time[4] == b'-'
        && time[7] == b'-'
        && time[10] == b'T'
        && time[13] == b':'
        && time[16] == b':'
        && text[text.len() - 1] == b'Z';
    if !shape_holds {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(&time[0..4])? as i32,
        digits(&time[5..7])?,
        digits(&time[8..10])?,
    )?;
    // Seconds stop at 59 here: a leap second is left to arrow-json.
    let moment = date.and_hms_milli_opt(
        digits(&time[11..13])?,
        digits(&time[14..16])?,
        digits(&time[17..19])?,
        millis,
    )?;
    Some(moment.and_utc().timestamp_millis())
}

/// The value of an all-ASCII-digit slice.
fn digits(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0u32, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// Where `bytes` first hold a quote, a backslash or a control character: eight bytes at a time.
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_in = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let special = zero_in(word ^ (ONES * u64::from(b'"')))
            | zero_in(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
        if special != 0 {
            // The lowest flagged byte is exact: borrows only ever flag bytes above a true hit.
            return Some(at + special.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// Exact powers of ten, up to the largest [`short_decimal`] divides by.
const POWERS_OF_TEN: [f64; SHORT_DIGITS + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// Decimals of at most this many digits are below 2^53, so an `f64` holds them exactly.
const SHORT_DIGITS: usize = 15;

/// The decimal `integer.fraction` (digits only), if it has at most [`SHORT_DIGITS`] digits. Both
/// its digits as an integer and the power of ten are exact, so their quotient is the one
/// correctly rounded result, the `f64` that parsing the text gives.
fn short_decimal(integer: &[u8], fraction: &[u8]) -> Option<f64> {
    if integer.len() + fraction.len() > SHORT_DIGITS {
        return None;
    }
    let digits = integer.iter().chain(fraction);
    let value = digits.fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(value as f64 / POWERS_OF_TEN[fraction.len()])
}

/// `a == b` for slices of the same length, eight bytes at a time. Keys are short, and comparing
/// them inline costs less than a call to `memcmp` per key.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let word = |chunk: &[u8]| u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
    let (mut a, mut b) = (a.chunks_exact(8), b.chunks_exact(8));
    a.by_ref().zip(b.by_ref()).all(|(x, y)| word(x) == word(y))
        && a.remainder().iter().zip(b.remainder()).all(|(x, y)| x == y)
}

/// A position in one record's bytes. Only text values are checked for UTF-8: keys are compared
/// as bytes, and numbers and times are ASCII by their grammar.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn advance(&mut self, n: usize) {
        self.at += n;
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.advance(1);
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.advance(1);
        }
    }

    /// Consumes `word` if the bytes here are exactly it.
    fn literal(&mut self, word: &[u8]) -> bool {
        let matches = self.bytes[self.at..].starts_with(word);
        if matches {
            self.advance(word.len());
        }
        matches
    }

    /// Consumes the key `name` (quoted) if it is the one here. The gateway writes keys in column
    /// order, so the key after column i is tried as column i + 1 before any other.
    fn key(&mut self, name: &[u8]) -> bool {
        let Some(quoted) = self.bytes.get(self.at..self.at + name.len() + 2) else {
            return false;
        };
        let matches = quoted[0] == b'"'
            && quoted[name.len() + 1] == b'"'
            && same_bytes(&quoted[1..=name.len()], name);
        if matches {
            self.advance(name.len() + 2);
        }
        matches
    }

    /// The bytes of a string without escapes or control characters.
    fn plain_bytes(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        let length = string_end(&self.bytes[start..])?;
        self.at = start + length;
        self.expect(b'"')?;
        Some(&self.bytes[start..start + length])
    }

    /// A string without escapes or control characters, in UTF-8.
    fn plain_string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.plain_bytes()?).ok()
    }

    /// An integer in JSON's grammar that fits an `i64`, not followed by a fraction or an
    /// exponent.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.literal(b"-");
        let start = self.at;
        self.integer_digits()?;
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.bytes[start..self.at].iter().try_fold(0i64, |n, d| {
            let digit = i64::from(d - b'0');
            let n = n.checked_mul(10)?;
            if negative {
                n.checked_sub(digit)
            } else {
                n.checked_add(digit)
            }
        })
    }

    /// A number in JSON's grammar, rounded to the nearest `f64`.
    fn number(&mut self) -> Option<f64> {
        let start = self.at;
        let negative = self.literal(b"-");
        let integer = self.at;
        self.integer_digits()?;
        let integer = &self.bytes[integer..self.at];
        let mut fraction: &[u8] = &[];
        if self.literal(b".") {
            let digits = self.at;
            self.some_digits()?;
            fraction = &self.bytes[digits..self.at];
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.advance(1);
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.advance(1);
            }
            self.some_digits()?;
        } else if let Some(value) = short_decimal(integer, fraction) {
            return Some(if negative { -value } else { value });
        }
        self.text_from(start)?.parse().ok()
    }

    /// `0` or a digit sequence without a leading zero.
    fn integer_digits(&mut self) -> Option<()> {
        if self.literal(b"0") {
            return Some(());
        }
        self.some_digits()
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.advance(1);
        }
        (self.at > start).then_some(())
    }

    /// The ASCII text from `start` to here.
    fn text_from(&self, start: usize) -> Option<&'a str> {
        std::str::from_utf8(&self.bytes[start..self.at]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json_values;
    use crate::decode::tests::consumed;
    use polis_telemetry::schema;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn decode_both(table: &str, values: &[String]) -> (Option<RecordBatch>, Option<RecordBatch>) {
        let schema = schema::value_schema(table).unwrap();
        let records: Vec<ConsumedRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| consumed("t", i as i64, v))
            .collect();
        let records: Vec<&ConsumedRecord> = records.iter().collect();
        (
            decode(&schema, &records),
            json_values(&schema, &records).ok(),
        )
    }

    /// A value for a column as the gateway would write it, or a spelling only arrow-json takes.
    fn column_value(data_type: &DataType, odd: bool) -> BoxedStrategy<Value> {
        match (data_type, odd) {
            (DataType::Utf8View, false) => "[a-z0-9 ./-]{0,20}".prop_map(Value::from).boxed(),
            (DataType::Utf8View, true) => "[a-z\"\\\\\u{e9}\n]{1,4}".prop_map(Value::from).boxed(),
            (DataType::Int64, false) => any::<i64>().prop_map(Value::from).boxed(),
            (DataType::UInt32, false) => any::<u32>().prop_map(Value::from).boxed(),
            (DataType::Int64 | DataType::UInt32, true) => prop_oneof![
                (0..1000i64).prop_map(|n| Value::from(n as f64 + 0.5)),
                Just(Value::from(7.0)),
                Just(Value::from("7")),
            ]
            .boxed(),
            (DataType::Float64, false) => prop_oneof![
                any::<f64>().prop_filter("finite", |f| f.is_finite()),
                -1e3..1e3f64,
                (0..100i64).prop_map(|n| n as f64),
            ]
            .prop_map(Value::from)
            .boxed(),
            (DataType::Float64, true) => {
                prop_oneof![Just(Value::from("1.5")), Just(Value::Bool(true))].boxed()
            }
            (DataType::Boolean, false) => any::<bool>().prop_map(Value::from).boxed(),
            (DataType::Boolean, true) => Just(Value::from(1)).boxed(),
            (DataType::Timestamp(..), false) => (-62_135_596_800_000..253_402_300_799_999i64)
                .prop_map(|ms| {
                    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
                    Value::from(polis_telemetry::reading::format_time(t))
                })
                .boxed(),
            (DataType::Timestamp(..), true) => prop_oneof![
                Just(Value::from("2026-11-01T00:00:00.123456Z")),
                Just(Value::from("2026-11-01 00:00:00Z")),
                Just(Value::from("2026-11-01T00:00:00+01:00")),
                Just(Value::from("2026-02-30T00:00:00.000Z")),
                Just(Value::from("2026-11-01T24:00:00.000Z")),
                Just(Value::from(1_700_000_000_000i64)),
            ]
            .boxed(),
            (other, _) => panic!("no values for {other}"),
        }
    }

    /// Objects of `table` with keys absent, null, canonical or (with `odd`) unusual.
    fn objects(table: &str, odd: bool) -> impl Strategy<Value = Vec<String>> {
        let schema = schema::value_schema(table).unwrap();
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| {
                let value = column_value(f.data_type(), false);
                let choice = if odd {
                    prop_oneof![
                        4 => value.prop_map(Some),
                        1 => Just(Some(Value::Null)),
                        1 => Just(None),
                        1 => column_value(f.data_type(), true).prop_map(Some),
                    ]
                    .boxed()
                } else if f.is_nullable() {
                    prop_oneof![
                        3 => value.prop_map(Some),
                        1 => Just(Some(Value::Null)),
                        1 => Just(None),
                    ]
                    .boxed()
                } else {
                    value.prop_map(Some).boxed()
                };
                (Just(f.name().clone()), choice)
            })
            .collect();
        let object = (fields, any::<bool>()).prop_map(move |(fields, extra_key)| {
            let mut object: Map<String, Value> = fields
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
            if odd && extra_key {
                object.insert("firmware".into(), Value::from("1.2"));
            }
            serde_json::to_string(&object).unwrap()
        });
        prop::collection::vec(object, 1..8)
    }

    fn table() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("traffic"),
            Just("energy"),
            Just("transport"),
            Just("metrics"),
            Just("alerts"),
            Just("devices"),
        ]
    }

    proptest! {
        #[test]
        fn gateway_output_takes_the_fast_path_and_matches_arrow_json(
            (table, values) in table().prop_flat_map(|t| (Just(t), objects(t, false)))
        ) {
            let (fast, general) = decode_both(table, &values);
            prop_assert!(fast.is_some(), "fast path refused {values:?}");
            prop_assert_eq!(fast, general);
        }

        #[test]
        fn whatever_the_fast_path_takes_it_decodes_as_arrow_json_does(
            (table, values) in table().prop_flat_map(|t| (Just(t), objects(t, true)))
        ) {
            let (fast, general) = decode_both(table, &values);
            if fast.is_some() {
                prop_assert_eq!(fast, general);
            }
        }
    }

    proptest! {
        #[test]
        fn short_decimals_are_the_floats_their_text_parses_to(
            integer in "0|[1-9][0-9]{0,9}",
            fraction in "[0-9]{1,8}",
        ) {
            let text = format!("{integer}.{fraction}");
            let parsed: f64 = text.parse().unwrap();
            if integer.len() + fraction.len() <= SHORT_DIGITS {
                let short = short_decimal(integer.as_bytes(), fraction.as_bytes());
                prop_assert_eq!(short.map(f64::to_bits), Some(parsed.to_bits()));
            }
            let negative = format!("-{text}");
            prop_assert_eq!(Cursor::new(negative.as_bytes()).number(), Some(-parsed));
        }
    }

    proptest! {
        #[test]
        fn string_ends_are_found_where_a_byte_scan_finds_them(
            bytes in prop::collection::vec(prop_oneof![
                8 => 0x20u8..=0xff,
                1 => Just(b'"'),
                1 => Just(b'\\'),
                1 => 0u8..0x20,
            ], 0..40)
        ) {
            let scanned = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(string_end(&bytes), scanned);
        }
    }

    #[test]
    fn unusual_records_are_left_to_arrow_json() {
        let good = r#"{"device_id":"tc-1","district":"centre","observed_at":"2026-11-01T00:00:00.000Z","ingested_at":"2026-11-01T00:00:00Z","vehicles":3,"occupancy_ratio":0.5,"average_speed_kmh":40}"#;
        assert!(decode_both("traffic", &[good.to_string()]).0.is_some());
        for bad in [
            good.replace("tc-1", r"tc-\u0031"),
            good.replace(r#""vehicles":3"#, r#""vehicles":3.0"#),
            good.replace(r#""vehicles":3"#, r#""vehicles":03"#),
            good.replace(r#""vehicles":3"#, r#""vehicles":9223372036854775808"#),
            good.replace(r#""vehicles":3"#, r#""vehicles":-9223372036854775809"#),
            good.replace(r#""vehicles":3"#, r#""vehicles":3,"vehicles":4"#),
            good.replace(r#""vehicles":3"#, r#""vehicles":{"cars":3}"#),
            good.replace(r#""vehicles":3,"#, ""),
            good.replace(r#"40}"#, r#"40,"extra":1}"#),
            good.replace("00.000Z", "00.000+00:00"),
            good.replace("T00:00:00Z", "T00:00:60Z"),
            format!("{good} {good}"),
            format!("{good}x"),
            good[..good.len() - 1].to_string(),
            String::new(),
        ] {
            assert!(
                decode_both("traffic", std::slice::from_ref(&bad))
                    .0
                    .is_none(),
                "took {bad}"
            );
        }
    }
}
