//! JSON rows → Arrow batches, typed by the provider's field descriptions.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DataFusionError, Result};
use serde_json::Value;

use crate::api::Page;
use crate::provider::{Derived, Kind, Resource};
use crate::xfilter::Filter;

/// Rows of `resource` (or rows shaped by `schema`) as one batch.
pub fn to_batch(resource: &Resource, schema: SchemaRef, rows: Vec<Value>) -> Result<RecordBatch> {
    RowDecoder::new(resource, schema, None).decode(Fetched { rows: Rows::Parsed(rows), params: vec![], keep: None })
}

/// Rows as a call returned them, and the parameter-column values they get.
#[derive(Debug)]
pub struct Fetched {
    pub rows: Rows,
    pub params: Vec<(String, Value)>,
    /// Only the rows this filter matches, when a wider listing stands in for a filtered one.
    pub keep: Option<Filter>,
}

#[derive(Debug)]
pub enum Rows {
    Parsed(Vec<Value>),
    /// A listing page, its rows still JSON text: decoded straight into Arrow.
    Page(Page),
}

#[derive(Debug)]
pub struct RowDecoder {
    resource: String,
    /// The columns a scan returns: only those are decoded.
    schema: SchemaRef,
    /// Free-form fields among them, passed on as JSON text.
    json_fields: Vec<String>,
    /// Derived fields among them, computed from the row.
    derived: Vec<(String, Derived)>,
}

impl RowDecoder {
    pub fn new(resource: &Resource, schema: SchemaRef, projection: Option<Vec<usize>>) -> Self {
        let schema = match projection {
            Some(indices) => SchemaRef::new(schema.project(&indices).expect("the projection is of this schema")),
            None => schema,
        };
        let json_fields = resource
            .fields
            .iter()
            .filter(|f| f.kind == Kind::Json && schema.field_with_name(&f.name).is_ok())
            .map(|f| f.name.clone())
            .collect();
        let derived = resource
            .fields
            .iter()
            .filter(|f| schema.field_with_name(&f.name).is_ok())
            .filter_map(|f| Some((f.name.clone(), f.derived.clone()?)))
            .collect();
        RowDecoder { resource: resource.full_name.clone(), schema, json_fields, derived }
    }

    pub fn decode(&self, fetched: Fetched) -> Result<RecordBatch> {
        let Fetched { rows, params, keep } = fetched;
        let rows = match (rows, keep) {
            (Rows::Page(page), Some(filter)) => Rows::Parsed(self.matching(&page, &filter)?),
            (rows, _) => rows,
        };
        let count = match &rows {
            Rows::Parsed(values) => values.len(),
            Rows::Page(page) => page.len(),
        };
        // count(*) and the like need no column at all.
        if self.schema.fields().is_empty() {
            let options = RecordBatchOptions::new().with_row_count(Some(count));
            return Ok(RecordBatch::try_new_with_options(self.schema.clone(), vec![], &options)?);
        }
        let mut decoder = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(count.max(1))
            .build_decoder()
            .map_err(|e| self.mismatch(e))?;
        match rows {
            Rows::Page(page) if self.json_fields.is_empty() && self.derived.is_empty() && params.is_empty() => {
                for row in page.rows() {
                    decoder.decode(row).map_err(|e| self.mismatch(e))?;
                }
            }
            Rows::Page(page) => {
                for row in page.rows() {
                    let value = serde_json::from_slice(row).map_err(|e| self.mismatch(e))?;
                    self.serialize(&mut decoder, value, &params)?;
                }
            }
            Rows::Parsed(values) => {
                for value in values {
                    self.serialize(&mut decoder, value, &params)?;
                }
            }
        }
        Ok(decoder
            .flush()
            .map_err(|e| self.mismatch(e))?
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }

    fn matching(&self, page: &Page, filter: &Filter) -> Result<Vec<Value>> {
        let mut kept = vec![];
        for row in page.rows() {
            let value: Value = serde_json::from_slice(row).map_err(|e| self.mismatch(e))?;
            if value.as_object().is_some_and(|object| filter.matches(object)) {
                kept.push(value);
            }
        }
        Ok(kept)
    }

    /// A row that needs changes first: parameter values and derived fields added, free-form
    /// fields as text.
    fn serialize(&self, decoder: &mut Decoder, mut row: Value, params: &[(String, Value)]) -> Result<()> {
        let Value::Object(object) = &mut row else {
            return Err(self.mismatch(format!("a row is not an object: {row}")));
        };
        for (name, value) in params {
            object.insert(name.clone(), value.clone());
        }
        for (name, derived) in &self.derived {
            let value = derived.value(object);
            object.insert(name.clone(), value);
        }
        for name in &self.json_fields {
            if let Some(value) = object.get_mut(name).filter(|v| !v.is_null()) {
                *value = Value::String(value.to_string());
            }
        }
        decoder.serialize(&[row]).map_err(|e| self.mismatch(e))
    }

    fn mismatch(&self, detail: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::Execution(format!(
            "the API's response does not match the description of {} in its provider file: {detail}",
            self.resource
        ))
    }
}
