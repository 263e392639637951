//! JSON rows → Arrow batches, typed by the provider's field descriptions.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DataFusionError, Result};
use serde_json::Value;

use crate::api::Page;
use crate::provider::{Derived, Kind, Resource, resource_schema};
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
    /// The columns a scan returns.
    schema: SchemaRef,
    /// The columns decoded from the JSON: those returned, but a derived column's source
    /// instead of it.
    decoded: SchemaRef,
    /// Free-form fields among them, passed on as JSON text.
    json_fields: Vec<String>,
    /// Derived fields among those returned, computed from the decoded columns.
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
        let derived: Vec<(String, Derived)> = resource
            .fields
            .iter()
            .filter(|f| schema.field_with_name(&f.name).is_ok())
            .filter_map(|f| Some((f.name.clone(), f.derived.clone()?)))
            .collect();
        let mut decoded: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| !derived.iter().any(|(name, _)| name == f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        let full = resource_schema(resource);
        for (_, source) in &derived {
            if !decoded.iter().any(|f| f.name() == &source.from) {
                decoded.push(full.field_with_name(&source.from).expect("checked when the files load").clone());
            }
        }
        let decoded = SchemaRef::new(Schema::new(decoded));
        RowDecoder { resource: resource.full_name.clone(), schema, decoded, json_fields, derived }
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
        let mut decoder = ReaderBuilder::new(self.decoded.clone())
            .with_batch_size(count.max(1))
            .build_decoder()
            .map_err(|e| self.mismatch(e))?;
        match rows {
            Rows::Page(page) if self.json_fields.is_empty() && params.is_empty() => {
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
        match decoder.flush().map_err(|e| self.mismatch(e))? {
            Some(batch) => self.with_derived(batch),
            None => Ok(RecordBatch::new_empty(self.schema.clone())),
        }
    }

    /// The returned columns, derived ones computed from their decoded sources.
    fn with_derived(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.derived.is_empty() {
            return Ok(batch);
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let column = batch.column_by_name(field.name()).cloned();
            columns.push(match self.derived.iter().find(|(name, _)| name == field.name()) {
                Some((_, derived)) => self.derive(&batch, derived, field)?,
                None => column.expect("every column but the derived ones is decoded"),
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }

    /// `item` of each object in the list `derived.from`, a list with the same offsets.
    fn derive(&self, batch: &RecordBatch, derived: &Derived, field: &Field) -> Result<ArrayRef> {
        let source = batch.column_by_name(&derived.from).expect("the source is decoded");
        let (Some(list), DataType::List(item)) = (source.as_list_opt::<i32>(), field.data_type()) else {
            return Err(self.mismatch(format!("{} is not a list", derived.from)));
        };
        let names = list
            .values()
            .as_struct_opt()
            .and_then(|objects| objects.column_by_name(&derived.item))
            .ok_or_else(|| self.mismatch(format!("{} has no {}", derived.from, derived.item)))?;
        Ok(Arc::new(ListArray::try_new(item.clone(), list.offsets().clone(), names.clone(), list.nulls().cloned())?))
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

    /// A row that needs changes first: parameter values added, free-form fields as text.
    fn serialize(&self, decoder: &mut Decoder, mut row: Value, params: &[(String, Value)]) -> Result<()> {
        let Value::Object(object) = &mut row else {
            return Err(self.mismatch(format!("a row is not an object: {row}")));
        };
        for (name, value) in params {
            object.insert(name.clone(), value.clone());
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
