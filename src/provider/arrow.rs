//! Field descriptions → Arrow types. Timestamps are UTC without a zone, as the API sends them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Fields, Schema, SchemaRef, TimeUnit};

use super::{Field, Kind, Resource};

pub fn resource_schema(resource: &Resource) -> SchemaRef {
    Arc::new(Schema::new(resource.fields.iter().map(arrow_field).collect::<Vec<_>>()))
}

fn arrow_field(f: &Field) -> ArrowField {
    ArrowField::new(&f.name, data_type(f), f.nullable)
}

fn data_type(f: &Field) -> DataType {
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
