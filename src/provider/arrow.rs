//! Field descriptions → Arrow types. Timestamps are UTC without a zone, as the API sends them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Fields, Schema, SchemaRef, TimeUnit};

use super::{Field, Kind, Resource};

/// The table's columns: the response fields, then the parameter columns.
pub fn resource_schema(resource: &Resource) -> SchemaRef {
    let mut fields: Vec<ArrowField> = resource.fields.iter().map(arrow_field).collect();
    fields.extend(resource.param_columns().into_iter().map(|p| ArrowField::new(&p.name, scalar_type(p.kind), false)));
    Arc::new(Schema::new(fields))
}

/// The columns the API sends: the table's without its derived ones (what the history keeps).
pub fn sent_schema(resource: &Resource) -> SchemaRef {
    let schema = resource_schema(resource);
    let derived = |name: &str| resource.fields.iter().any(|f| f.name == name && f.derived.is_some());
    Arc::new(Schema::new(
        schema.fields().iter().filter(|f| !derived(f.name())).map(|f| f.as_ref().clone()).collect::<Vec<_>>(),
    ))
}

/// The column type of a parameter of `kind`.
pub fn scalar_type(kind: Kind) -> DataType {
    match kind {
        Kind::Integer => DataType::Int64,
        Kind::Number => DataType::Float64,
        Kind::Boolean => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

fn arrow_field(f: &Field) -> ArrowField {
    ArrowField::new(&f.name, data_type(f), f.nullable)
}

/// The column type of a field.
pub fn data_type(f: &Field) -> DataType {
    match f.kind {
        Kind::String | Kind::Json => DataType::Utf8,
        Kind::Integer => DataType::Int64,
        Kind::Number => DataType::Float64,
        Kind::Boolean => DataType::Boolean,
        Kind::Datetime => DataType::Timestamp(TimeUnit::Second, None),
        Kind::Array => {
            let items = f.items.as_deref().expect("validated on load");
            DataType::List(Arc::new(ArrowField::new("item", data_type(items), true)))
        }
        Kind::Object => DataType::Struct(Fields::from(f.fields.iter().map(arrow_field).collect::<Vec<_>>())),
    }
}
