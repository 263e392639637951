/*! Nested Arrow columns (lists, structs, maps) as JSON text: how CSV and text output and
`COPY … TO '….csv'` carry them, since CSV has no nested values. */

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
use serde_json::Value;

pub fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(_, _)
            | DataType::Struct(_)
            | DataType::Map(_, _)
    )
}

/// Replaces nested columns by their JSON text, which CSV can carry.
pub fn nested_as_json(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !is_nested(field.data_type()) {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let single = RecordBatch::try_new(Arc::new(Schema::new(vec![field.as_ref().clone()])), vec![column.clone()])?;
        let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(Vec::new());
        writer.write(&single)?;
        writer.finish()?;
        let text = writer.into_inner();
        let mut cells: Vec<Option<String>> = Vec::with_capacity(batch.num_rows());
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let row: Value = serde_json::from_slice(line).map_err(|e| ArrowError::JsonError(e.to_string()))?;
            cells.push(match row.get(field.name()) {
                None | Some(Value::Null) => None,
                Some(value) => Some(value.to_string()),
            });
        }
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(cells)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
