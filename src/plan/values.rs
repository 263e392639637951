//! Values for request bodies: query results as JSON rows, and SQL values coerced to the
//! type a body field declares (JSON text is accepted for lists and objects).

use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use crate::provider::{Field, Kind};

/// Every row of `batches` as a list of values in column order.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>, String> {
    let mut out = Vec::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(Vec::new());
        writer.write(batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        for line in writer.into_inner().split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut object: Map<String, Value> = serde_json::from_slice(line).map_err(|e| e.to_string())?;
            out.push(names.iter().map(|n| object.remove(n).unwrap_or(Value::Null)).collect());
        }
    }
    Ok(out)
}

/// `value` as `field` wants it: JSON text becomes the list or object it spells.
pub fn coerce(field: &Field, value: Value) -> Result<Value, String> {
    match (field.kind, value) {
        (Kind::Array | Kind::Object | Kind::Json, Value::String(text)) => serde_json::from_str(&text).map_err(|e| {
            format!("{}: {text:?} is not valid JSON ({e}); write a list as '[\"a\", \"b\"]' or ['a', 'b']", field.name)
        }),
        (_, value) => Ok(value),
    }
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
