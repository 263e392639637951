//! JSON rows → Arrow batches, typed by the provider's field descriptions.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use serde_json::Value;

use crate::provider::{Kind, Resource};

/// Rows of `resource` (or rows shaped by `schema`) as one batch.
pub fn to_batch(resource: &Resource, schema: SchemaRef, rows: Vec<Value>) -> Result<RecordBatch> {
    RowDecoder::new(resource, schema, None).decode(rows)
}

#[derive(Debug)]
pub struct RowDecoder {
    resource: String,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    /// Free-form fields, passed on as JSON text.
    json_fields: Vec<String>,
}

impl RowDecoder {
    pub fn new(resource: &Resource, schema: SchemaRef, projection: Option<Vec<usize>>) -> Self {
        let json_fields = resource.fields.iter().filter(|f| f.kind == Kind::Json).map(|f| f.name.clone()).collect();
        RowDecoder { resource: resource.full_name.clone(), schema, projection, json_fields }
    }

    pub fn decode(&self, mut rows: Vec<Value>) -> Result<RecordBatch> {
        for row in rows.iter_mut() {
            let Value::Object(object) = row else {
                return Err(self.mismatch(format!("a row is not an object: {row}")));
            };
            for name in &self.json_fields {
                if let Some(value) = object.get_mut(name).filter(|v| !v.is_null()) {
                    *value = Value::String(value.to_string());
                }
            }
        }
        let mut decoder = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows.len().max(1))
            .build_decoder()
            .map_err(|e| self.mismatch(e))?;
        decoder.serialize(&rows).map_err(|e| self.mismatch(e))?;
        let batch = decoder
            .flush()
            .map_err(|e| self.mismatch(e))?
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()));
        match &self.projection {
            Some(indices) => Ok(batch.project(indices)?),
            None => Ok(batch),
        }
    }

    fn mismatch(&self, detail: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::Execution(format!(
            "the API's response does not match the description of {} in its provider file: {detail}",
            self.resource
        ))
    }
}
