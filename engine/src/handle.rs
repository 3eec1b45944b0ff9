//! Self-contained statement handles: everything a worker needs to run a statement, so any
//! worker of a pool can serve any handle or ticket.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Longest handle accepted; larger ones are refused before parsing.
const MAX_HANDLE_BYTES: usize = 16 * 1024 * 1024;

/// A statement to run: SQL, the session defaults it was prepared under, and bound parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementHandle {
    /// The SQL text as the client sent it.
    pub sql: String,
    /// Default catalog for unqualified names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// Default schema for unqualified names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Bound parameters: an Arrow IPC stream of one batch, one row per execution.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64")]
    pub params: Option<Vec<u8>>,
    /// What the gateway authorized this statement against. When present the worker runs the
    /// statement only if it still reads exactly those objects (see [`crate::authorized`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized: Option<Authorized>,
}

/// The objects a statement was authorized against: every table it may read, with the columns
/// it may read from each and a fingerprint of the table's columns as the gateway saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorized {
    /// The tables, each once.
    pub tables: Vec<AuthorizedTable>,
}

/// One table of [`Authorized`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizedTable {
    /// Its fully qualified name.
    pub name: crate::reads::QualifiedName,
    /// [`crate::reads::schema_fingerprint`] of its columns.
    pub fingerprint: String,
    /// The columns that may be read (by the statement or by the policy expressions applied).
    pub columns: Vec<String>,
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom)).transpose()
    }
}

impl StatementHandle {
    /// A handle for `sql` with no parameters.
    pub fn new(sql: impl Into<String>, catalog: Option<String>, schema: Option<String>) -> Self {
        StatementHandle { sql: sql.into(), catalog, schema, params: None, authorized: None }
    }

    /// Encodes as bytes for a ticket or a prepared-statement handle.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes bytes from a ticket or handle; garbage is an invalid request.
    pub fn decode(bytes: &[u8]) -> Result<Self, EngineError> {
        if bytes.len() > MAX_HANDLE_BYTES {
            return Err(EngineError::InvalidRequest("statement handle too large".into()));
        }
        serde_json::from_slice(bytes).map_err(|_| EngineError::InvalidRequest("invalid statement handle".into()))
    }

    /// The bound parameter rows, if any.
    pub fn param_rows(&self) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
        match &self.params {
            None => Ok(Vec::new()),
            Some(bytes) => batches_to_rows(&ipc_to_batches(bytes)?),
        }
    }
}

/// Serializes parameter batches as one Arrow IPC stream.
pub fn batches_to_ipc(batches: &[RecordBatch]) -> Result<Vec<u8>, EngineError> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, first.schema_ref())
        .map_err(|e| EngineError::InvalidRequest(format!("parameters: {e}")))?;
    for batch in batches {
        writer.write(batch).map_err(|e| EngineError::InvalidRequest(format!("parameters: {e}")))?;
    }
    writer.finish().map_err(|e| EngineError::InvalidRequest(format!("parameters: {e}")))?;
    drop(writer);
    Ok(out)
}

fn ipc_to_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>, EngineError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| EngineError::InvalidRequest(format!("invalid parameters: {e}")))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| EngineError::InvalidRequest(format!("invalid parameters: {e}")))
}

/// One vector of values per parameter row, columns in order ($1, $2, ...).
pub fn batches_to_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|col| ScalarValue::try_from_array(col.as_ref(), row))
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(values);
        }
    }
    Ok(rows)
}

/// Checks that parameter batches have one column per placeholder.
pub fn check_param_count(batches: &[RecordBatch], expected: usize) -> Result<(), EngineError> {
    if let Some(b) = batches.first()
        && b.num_columns() != expected
    {
        return Err(EngineError::InvalidRequest(format!(
            "the statement has {expected} parameter(s) but {} value(s) were bound",
            b.num_columns()
        )));
    }
    Ok(())
}

/// Shared empty schema for statements that return nothing.
pub fn empty_schema() -> Arc<datafusion::arrow::datatypes::Schema> {
    Arc::new(datafusion::arrow::datatypes::Schema::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn handles_round_trip_with_parameters() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![7])), Arc::new(StringArray::from(vec!["x"]))],
        )
        .expect("batch");
        let mut handle = StatementHandle::new("SELECT $1, $2", Some("tpch".into()), None);
        handle.params = Some(batches_to_ipc(&[batch]).expect("ipc"));
        let back = StatementHandle::decode(&handle.encode()).expect("decode");
        assert_eq!(back, handle);
        assert_eq!(back.param_rows().expect("rows"), vec![vec![ScalarValue::Int64(Some(7)), ScalarValue::from("x")]]);
    }

    #[test]
    fn garbage_handles_are_invalid_requests() {
        assert!(matches!(StatementHandle::decode(b"\x00\x01garbage"), Err(EngineError::InvalidRequest(_))));
        let bad_params = StatementHandle { params: Some(b"not ipc".to_vec()), ..StatementHandle::new("x", None, None) };
        assert!(matches!(bad_params.param_rows(), Err(EngineError::InvalidRequest(_))));
    }
}
