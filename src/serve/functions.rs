//! Functions Postgres clients call while connecting and inspecting that neither DataFusion
//! nor `datafusion-pg-catalog` provide, each answering as a PostgreSQL server without
//! extensions would for a database of tables that have no comments, indexes, sequences or
//! user functions.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, Signature, Volatility};
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::Type;
use postgres_types::Kind;

use super::settings::{SERVER_VERSION, Shared as SharedSettings};
use crate::engine::postgres::function;

/// A function of any arguments that always answers `value`.
fn constant(context: &SessionContext, name: &str, value: ScalarValue) {
    let returns = value.data_type();
    let signature = Signature::variadic_any(Volatility::Stable);
    let body = move |_: &[ColumnarValue], _: usize| Ok(ColumnarValue::Scalar(value.clone()));
    context.register_udf(function(name, signature, returns, Arc::new(body)));
}

/// A function of no arguments that always answers `value`.
fn constant_of_none(context: &SessionContext, name: &str, value: ScalarValue) {
    let returns = value.data_type();
    let body = move |_: &[ColumnarValue], _: usize| Ok(ColumnarValue::Scalar(value.clone()));
    context.register_udf(function(name, Signature::nullary(Volatility::Stable), returns, Arc::new(body)));
}

pub fn register(context: &SessionContext, pid: i32, settings: SharedSettings) {
    // SQLAlchemy parses the server's version from this text.
    let version = format!("PostgreSQL {SERVER_VERSION} (imageql {})", env!("CARGO_PKG_VERSION"));
    constant_of_none(context, "version", ScalarValue::Utf8(Some(version)));
    constant_of_none(context, "pg_backend_pid", ScalarValue::Int32(Some(pid)));
    // No session holds an advisory lock; pools release them all when a connection returns.
    constant_of_none(context, "pg_advisory_unlock_all", ScalarValue::Null);
    // No object has a comment, a default's or a function's definition, a sequence.
    for name in [
        "obj_description",
        "col_description",
        "shobj_description",
        "pg_get_serial_sequence",
        "pg_get_function_result",
        "pg_get_function_arguments",
        "pg_get_function_identity_arguments",
        "pg_get_indexdef",
        "pg_get_triggerdef",
        "pg_get_viewdef",
        "pg_get_ruledef",
        "pg_describe_object",
    ] {
        constant(context, name, ScalarValue::Utf8(None));
    }
    // Drivers probe for extension types (hstore) this way; there are none.
    constant(context, "to_regtype", ScalarValue::Int32(None));
    // Everything the catalog lists is in the search path.
    for name in [
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_collation_is_visible",
        "pg_operator_is_visible",
        "pg_opclass_is_visible",
        "pg_opfamily_is_visible",
        "pg_conversion_is_visible",
        "pg_statistics_obj_is_visible",
        "pg_ts_config_is_visible",
        "pg_ts_dict_is_visible",
        "pg_ts_parser_is_visible",
        "pg_ts_template_is_visible",
    ] {
        constant(context, name, ScalarValue::Boolean(Some(true)));
    }
    // Tables are the API's: they take no space here.
    for name in ["pg_table_size", "pg_indexes_size", "pg_database_size", "pg_tablespace_size"] {
        constant(context, name, ScalarValue::Int64(Some(0)));
    }
    constant(context, "pg_tablespace_location", ScalarValue::Utf8(Some(String::new())));
    let size = Signature::any(1, Volatility::Immutable);
    context.register_udf(function("pg_size_pretty", size, DataType::Utf8, Arc::new(size_pretty)));
    let expand = Signature::any(1, Volatility::Immutable);
    context.register_udf(function("_pg_expandarray", expand, expanded_type(), Arc::new(expand_array)));
    let object = Signature::variadic_any(Volatility::Immutable);
    context.register_udf(function("json_build_object", object, DataType::Utf8, Arc::new(json_object)));
    let read = settings.clone();
    context.register_udf(function(
        "current_setting",
        Signature::variadic_any(Volatility::Stable),
        DataType::Utf8,
        Arc::new(move |args, rows| current_setting(&read, args, rows)),
    ));
    context.register_udf(function(
        "set_config",
        Signature::any(3, Volatility::Volatile),
        DataType::Utf8,
        Arc::new(move |args, rows| set_config(&settings, args, rows)),
    ));
}

fn arrays(args: &[ColumnarValue], rows: usize) -> Result<Vec<ArrayRef>> {
    args.iter().map(|a| a.to_array(rows)).collect()
}

/// The answer as an array, or as a scalar when every argument was one.
fn shaped(args: &[ColumnarValue], out: ArrayRef) -> Result<ColumnarValue> {
    match args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        true => Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)),
        false => Ok(ColumnarValue::Array(out)),
    }
}

/// `pg_size_pretty(bytes)`: `123 bytes`, `10 kB`, `3 MB`, … as PostgreSQL rounds them.
fn size_pretty(args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
    let array = datafusion::arrow::compute::cast(&arrays(args, rows)?[0], &DataType::Int64)?;
    let out: StringArray = array.as_primitive::<Int64Type>().iter().map(|n| n.map(pretty)).collect();
    shaped(args, Arc::new(out))
}

fn pretty(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes;
    let mut unit = 0;
    // Each step divides by 1024 once the value reaches 10 240 (PostgreSQL's half-rounding).
    while unit + 1 < UNITS.len() && size.abs() >= 10 * 1024 {
        size = (size + size.signum() * 512) / 1024;
        unit += 1;
    }
    format!("{size} {}", UNITS[unit])
}

fn expanded_type() -> DataType {
    DataType::Struct(Fields::from(vec![Field::new("x", DataType::Int32, true), Field::new("n", DataType::Int32, true)]))
}

/// `information_schema._pg_expandarray(array)` for the catalog's lists, which here are all
/// empty (no index has keys): the first element and its position, or nulls.
fn expand_array(args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
    let array = &arrays(args, rows)?[0];
    let first = |i: usize| -> Option<i32> {
        match array.data_type() {
            DataType::List(_) if !array.is_null(i) => {
                let items =
                    datafusion::arrow::compute::cast(&array.as_list::<i32>().value(i), &DataType::Int32).ok()?;
                let items = items.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
                (!items.is_empty() && !items.is_null(0)).then(|| items.value(0))
            }
            _ => None,
        }
    };
    let x: Int32Array = (0..array.len()).map(first).collect();
    let n: Int32Array = x.iter().map(|v| v.map(|_| 1)).collect();
    let DataType::Struct(fields) = expanded_type() else { unreachable!("a struct") };
    let out = StructArray::try_new(fields, vec![Arc::new(x), Arc::new(n)], None)?;
    shaped(args, Arc::new(out))
}

/// `json_build_object(key, value, …)` as JSON text.
fn json_object(args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
    if args.len() % 2 != 0 {
        return exec_err!("json_build_object takes keys and values in pairs");
    }
    let arrays = arrays(args, rows)?;
    let out: StringArray = (0..rows.max(1))
        .map(|row| {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row).map(|k| k.to_string()).unwrap_or_default();
                let value = ScalarValue::try_from_array(&pair[1], row).ok();
                object.insert(key, json_value(value));
            }
            Some(serde_json::Value::Object(object).to_string())
        })
        .collect();
    shaped(args, Arc::new(out))
}

fn json_value(value: Option<ScalarValue>) -> serde_json::Value {
    match value {
        None => serde_json::Value::Null,
        Some(v) if v.is_null() => serde_json::Value::Null,
        Some(ScalarValue::Boolean(Some(b))) => serde_json::Value::Bool(b),
        Some(v @ (ScalarValue::Int8(_) | ScalarValue::Int16(_) | ScalarValue::Int32(_) | ScalarValue::Int64(_))) => {
            serde_json::from_str(&v.to_string()).unwrap_or(serde_json::Value::Null)
        }
        Some(v) => serde_json::Value::String(v.to_string()),
    }
}

/// `current_setting(name [, missing_ok])`: the connection's setting.
fn current_setting(settings: &SharedSettings, args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
    let arrays = arrays(args, rows)?;
    let names = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
    let missing_ok = arrays
        .get(1)
        .and_then(|a| ScalarValue::try_from_array(a, 0).ok())
        .is_some_and(|v| v == ScalarValue::Boolean(Some(true)));
    let names = names.as_string::<i32>();
    let mut out = Vec::with_capacity(names.len());
    for name in names.iter() {
        out.push(match name.map(|n| settings.get(n)) {
            Some(Some(value)) => Some(value),
            Some(None) if missing_ok => None,
            Some(None) => {
                let unknown = crate::error::Error::UnknownSetting(name.unwrap_or_default().to_string());
                return Err(DataFusionError::External(Box::new(unknown)));
            }
            None => None,
        });
    }
    shaped(args, Arc::new(StringArray::from(out)))
}

/// `set_config(name, value, is_local)`: sets the connection's setting and answers the value.
fn set_config(settings: &SharedSettings, args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
    let arrays = arrays(args, rows)?;
    let (names, values) = (
        datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?,
        datafusion::arrow::compute::cast(&arrays[1], &DataType::Utf8)?,
    );
    let (names, values) = (names.as_string::<i32>(), values.as_string::<i32>());
    // imageql's own settings act on the session: only SET changes them, where they are checked.
    if let Some(own) = names.iter().flatten().find(|name| name.to_lowercase().starts_with("imageql.")) {
        return Err(DataFusionError::External(Box::new(crate::error::Error::Refused(format!(
            "{own} is set with SET {own} = …, not set_config"
        )))));
    }
    let out: StringArray = names
        .iter()
        .zip(values.iter())
        .map(|(name, value)| {
            if let (Some(name), Some(value)) = (name, value) {
                settings.set(name, value);
            }
            value
        })
        .collect();
    shaped(args, Arc::new(out))
}

/// `format_type(oid, typmod)` as `known` answers it, and for the types it does not know (a
/// record, an array of records: columns the wire sends as such) the name `pg_type` gives.
pub fn format_type(known: ScalarUDF) -> ScalarUDF {
    let signature = known.signature().clone();
    let body = move |args: &[ColumnarValue], rows: usize| -> Result<ColumnarValue> {
        let arg_fields = args.iter().map(|a| Arc::new(Field::new("argument", a.data_type(), true))).collect();
        let names = known.invoke_with_args(ScalarFunctionArgs {
            args: args.to_vec(),
            arg_fields,
            number_rows: rows,
            return_field: Arc::new(Field::new("format_type", DataType::Utf8, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })?;
        let names = names.to_array(rows)?;
        let oids = datafusion::arrow::compute::cast(&arrays(args, rows)?[0], &DataType::Int64)?;
        let out: StringArray = names
            .as_string::<i32>()
            .iter()
            .zip(oids.as_primitive::<Int64Type>().iter())
            .map(|(name, oid)| match (name, oid) {
                // No type (an element type of a non-array) is `-` in PostgreSQL.
                (Some(_), Some(0)) => Some("-".to_string()),
                (Some(name), Some(oid)) if name.starts_with("oid(") => Some(type_name(oid).unwrap_or(name.into())),
                (name, _) => name.map(String::from),
            })
            .collect();
        shaped(args, Arc::new(out))
    };
    function("format_type", signature, DataType::Utf8, Arc::new(body))
}

fn type_name(oid: i64) -> Option<String> {
    let known = Type::from_oid(u32::try_from(oid).ok()?)?;
    // `_record` is a pseudo-type, not an array kind, but Postgres names it `record[]` too.
    Some(match (known.kind(), known.name().strip_prefix('_')) {
        (Kind::Array(element), _) => format!("{}[]", element.name()),
        (_, Some(element)) => format!("{element}[]"),
        _ => known.name().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_pretty_as_postgres_prints_them() {
        assert_eq!(pretty(0), "0 bytes");
        assert_eq!(pretty(10239), "10239 bytes");
        assert_eq!(pretty(10240), "10 kB");
        assert_eq!(pretty(5 * 1024 * 1024 * 1024), "5120 MB");
        assert_eq!(pretty(20 * 1024 * 1024 * 1024), "20 GB");
    }
}
