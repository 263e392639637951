//! Values for request bodies: query rows as JSON values (straight from Arrow, no text in
//! between), and SQL values coerced to the type a body field declares (JSON text is accepted
//! for lists and objects).

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::ScalarValue;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::provider::{Field, Kind};

/// Every row of `batches` as a list of values in column order.
pub fn rows_of_batches(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>, Error> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values =
                batch.columns().iter().map(|column| json_of(column.as_ref(), row)).collect::<Result<_, _>>()?;
            rows.push(values);
        }
    }
    Ok(rows)
}

fn json_of(array: &dyn Array, row: usize) -> Result<Value, Error> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    match array.data_type() {
        // As the API writes them: `2024-05-01T10:00:00`.
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Time32(_) | DataType::Time64(_) => {
            Ok(Value::String(array_value_to_string(array, row)?))
        }
        _ => Ok(scalar_json(&ScalarValue::try_from_array(array, row)?)),
    }
}

fn scalar_json(scalar: &ScalarValue) -> Value {
    if scalar.is_null() {
        return Value::Null;
    }
    let number = |text: String| serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    match scalar {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Decimal128(..)
        | ScalarValue::Decimal256(..) => number(scalar.to_string()),
        ScalarValue::Float32(Some(f)) => serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        ScalarValue::Float64(Some(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Value::String(s.clone())
        }
        ScalarValue::List(list) => items(list.value(0).as_ref()),
        ScalarValue::LargeList(list) => items(list.value(0).as_ref()),
        ScalarValue::FixedSizeList(list) => items(list.value(0).as_ref()),
        ScalarValue::Struct(fields) => {
            let mut object = Map::new();
            for (field, column) in fields.fields().iter().zip(fields.columns()) {
                object.insert(field.name().clone(), json_of(column.as_ref(), 0).unwrap_or(Value::Null));
            }
            Value::Object(object)
        }
        other => Value::String(other.to_string()),
    }
}

fn items(array: &dyn Array) -> Value {
    Value::Array((0..array.len()).map(|i| json_of(array, i).unwrap_or(Value::Null)).collect())
}

/// `value` as `field` wants it: JSON text becomes the list or object it spells.
pub fn coerce(field: &Field, value: Value) -> Result<Value, String> {
    match (field.kind, value) {
        // A PostgreSQL array literal, as drivers write a list they bind on the client side.
        (Kind::Array, Value::String(text)) if let Some(items) = postgres_array(&text) => {
            Ok(Value::Array(items.into_iter().map(Value::String).collect()))
        }
        (Kind::Array | Kind::Object | Kind::Json, Value::String(text)) => serde_json::from_str(&text).map_err(|e| {
            format!("{text:?} is not valid JSON ({e}); write a list as '[\"a\", \"b\"]', ['a', 'b'] or '{{a,b}}'")
        }),
        (_, value) => Ok(value),
    }
}

/// The items of a one-dimensional PostgreSQL array literal (`{a,"b c",d}`), or `None` when
/// `text` is not one.
fn postgres_array(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            match chars.next() {
                None | Some(',') => {}
                Some(_) => return None,
            }
        } else {
            for c in chars.by_ref() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => return None,
                    c => item.push(c),
                }
            }
            item = item.trim().to_string();
        }
        items.push(item);
    }
    Some(items)
}

/// A SQL literal of an EXEC parameter (`@name='x'`, `@n=3`, `@flag=true`).
pub fn literal(expr: &datafusion::sql::sqlparser::ast::Expr) -> Option<Value> {
    use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator, Value as Sql};
    match expr {
        Expr::Value(v) => match &v.value {
            Sql::SingleQuotedString(s) | Sql::DoubleQuotedString(s) => Some(Value::String(s.clone())),
            Sql::Number(n, _) => serde_json::from_str(n).ok(),
            Sql::Boolean(b) => Some(Value::Bool(*b)),
            Sql::Null => Some(Value::Null),
            _ => None,
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match literal(expr)? {
            Value::Number(n) => serde_json::from_str(&format!("-{n}")).ok(),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::postgres_array;

    #[test]
    fn postgres_array_literals_are_read_as_lists() {
        assert_eq!(postgres_array("{aaa,bbb}"), Some(vec!["aaa".to_string(), "bbb".to_string()]));
        assert_eq!(postgres_array(r#"{"a b","c,d",e}"#), Some(vec!["a b".into(), "c,d".into(), "e".into()]));
        assert_eq!(postgres_array(r#"{"x\"y"}"#), Some(vec!["x\"y".into()]));
        assert_eq!(postgres_array("{}"), Some(vec![]));
        assert_eq!(postgres_array("[1]"), None);
        assert_eq!(postgres_array("{a{b}"), None);
    }
}
