//! Functions drivers call while connecting or inspecting that `pg_catalog` does not provide:
//! each answers as a Postgres server without extensions would.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// A function of `inputs` that always answers `value`.
fn constant(context: &SessionContext, name: &str, inputs: Vec<DataType>, value: ScalarValue) {
    let output = value.data_type();
    let answer = move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()));
    context.register_udf(create_udf(name, inputs, output, Volatility::Stable, Arc::new(answer)));
}

pub fn register(context: &SessionContext) {
    // SQLAlchemy parses the server's version from this text.
    let version = format!("PostgreSQL 16.0 (imageql {})", env!("CARGO_PKG_VERSION"));
    constant(context, "version", vec![], ScalarValue::Utf8(Some(version)));
    // Drivers probe for extension types (hstore) this way; there are none.
    constant(context, "to_regtype", vec![DataType::Utf8], ScalarValue::Int32(None));
    // Every type the catalog lists is in the search path.
    constant(context, "pg_type_is_visible", vec![DataType::Int32], ScalarValue::Boolean(Some(true)));
}
