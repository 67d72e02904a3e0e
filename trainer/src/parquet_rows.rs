//! Parquet files as training data: what Hugging Face `datasets` stores (`Dataset.to_parquet`,
//! the hub's `refs/convert/parquet` and `data/train-0000N-of-0000M.parquet` shards).
//!
//! # Format
//!
//! Each row of the file becomes the JSON object [`crate::data`] reads from a JSONL line, column
//! by column: a UTF-8 string column is a string, a null is `null`, a list is a list, a struct
//! is an object with its fields, booleans and numbers are themselves, and any other type (binary
//! without a UTF-8 annotation, decimal, date, time, map) is `null`, so the columns
//! * `text` (string), or
//! * `prompt` and `completion` (strings), or
//! * `messages` (a list of structs with `role` and `content` strings, `datasets`'
//!   `[{"role": Value("string"), "content": Value("string")}]` feature)
//!
//! give exactly the examples of the same rows written as JSONL (`trainer/tests/chat.rs` checks
//! tokens and trained adapter bytes). Other columns are read and ignored, as other keys of a
//! JSONL line are. Rows are numbered from 1 in file order across row groups; that number takes
//! the place of the JSONL line in errors (`file:row: message`).
//!
//! # Reader
//!
//! The `parquet` crate of Apache arrow-rs, through its row (record) API, without the `arrow`
//! feature (no Arrow arrays are built, which keeps the build small), with the snappy (pyarrow's
//! and `datasets`' default), zstd (Polars') and gzip codecs, the ones the data check reads too.
//! A file compressed otherwise (brotli, lz4, ...), truncated, or not Parquet at all is refused
//! with one line naming the file.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Map, Value};

use crate::error::TrainerError;

/// Calls `f(row_number, row_as_json)` for each row of the Parquet file at `path`, in order.
pub fn for_each_row<F>(path: &Path, mut f: F) -> Result<(), TrainerError>
where
    F: FnMut(usize, Value) -> Result<(), TrainerError>,
{
    let file = fs_err::File::open(path)?;
    let bad = |message: String| TrainerError::Config {
        file: path.to_path_buf(),
        message,
    };
    let reader = SerializedFileReader::new(file.into_parts().0)
        .map_err(|e| bad(format!("not a readable Parquet file: {}", one_line(&e))))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| bad(format!("not a readable Parquet file: {}", one_line(&e))))?;
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| TrainerError::Data {
            file: path.to_path_buf(),
            line: i + 1,
            message: format!("unreadable Parquet row: {}", one_line(&e)),
        })?;
        let obj: Map<String, Value> = row
            .get_column_iter()
            .map(|(name, field)| (name.clone(), to_json(field)))
            .collect();
        f(i + 1, Value::Object(obj))?;
    }
    Ok(())
}

fn one_line(e: &parquet::errors::ParquetError) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Parquet value as JSON (see the module doc).
fn to_json(field: &Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Str(s) => Value::String(s.clone()),
        Field::Group(row) => Value::Object(
            row.get_column_iter()
                .map(|(name, field)| (name.clone(), to_json(field)))
                .collect(),
        ),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(to_json).collect()),
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float(x) => Value::from(f64::from(*x)),
        Field::Double(x) => Value::from(*x),
        // Bytes without a UTF-8 annotation, decimals, dates, times, maps: read as null, so such
        // a column in the place of a text field is refused by the row reader ("must be a
        // string") and elsewhere ignored like any other column.
        _ => Value::Null,
    }
}
