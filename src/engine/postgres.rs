//! Functions a session in the Postgres dialect needs for the forms `sql::postgres` rewrites
//! Postgres SQL into: `LIKE … ESCAPE` with another escape character, `regexp_split_to_table`,
//! and `::regtype[]` over the catalog's lists of type oids.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::Type;

use crate::sql::postgres::{LIKE_ESCAPE, REGEXP_SPLIT, REGTYPE_NAMES};

pub fn register(context: &SessionContext) {
    let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    let functions: [ScalarUDF; 3] = [
        create_udf(
            LIKE_ESCAPE,
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(|args| map_strings(args, like_with_backslash)),
        ),
        create_udf(
            REGEXP_SPLIT,
            vec![DataType::Utf8, DataType::Utf8],
            list.clone(),
            Volatility::Immutable,
            Arc::new(regexp_split),
        ),
        function(REGTYPE_NAMES, Signature::any(1, Volatility::Stable), list, Arc::new(|args, _| regtype_names(args))),
    ];
    for function in functions {
        context.register_udf(function);
    }
}

type Body = Arc<dyn Fn(&[ColumnarValue], usize) -> Result<ColumnarValue> + Send + Sync>;

/// A function of its own signature and body, called with its arguments and the number of
/// rows; for what `create_udf`'s fixed argument types cannot say (any types, any number).
pub fn function(name: &str, signature: Signature, returns: DataType, body: Body) -> ScalarUDF {
    ScalarUDF::new_from_impl(Declared { name: name.to_string(), signature, returns, body })
}

struct Declared {
    name: String,
    signature: Signature,
    returns: DataType,
    body: Body,
}

impl std::fmt::Debug for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}()", self.name)
    }
}

// Functions are told apart by name, as DataFusion's registry does.
impl PartialEq for Declared {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Declared {}

impl std::hash::Hash for Declared {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for Declared {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.body)(&args.args, args.number_rows)
    }
}

/// Applies `f(value, second)` row by row over two string arguments.
fn map_strings(args: &[ColumnarValue], f: fn(&str, &str) -> String) -> Result<ColumnarValue> {
    let rows = args.iter().find_map(|a| match a {
        ColumnarValue::Array(a) => Some(a.len()),
        _ => None,
    });
    let arrays: Vec<ArrayRef> = args.iter().map(|a| a.to_array(rows.unwrap_or(1))).collect::<Result<_>>()?;
    let (values, seconds) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
    let out: datafusion::arrow::array::StringArray = (0..values.len())
        .map(|i| (!values.is_null(i) && !seconds.is_null(i)).then(|| f(values.value(i), seconds.value(i))))
        .collect();
    let out: ArrayRef = Arc::new(out);
    match rows {
        Some(_) => Ok(ColumnarValue::Array(out)),
        None => Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)),
    }
}

/// A LIKE pattern escaped with `escape` as one escaped with a backslash.
fn like_with_backslash(pattern: &str, escape: &str) -> String {
    let escape = escape.chars().next();
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            c if Some(c) == escape => match chars.next() {
                Some(next @ ('%' | '_')) => {
                    out.push('\\');
                    out.push(next);
                }
                Some('\\') => out.push_str("\\\\"),
                Some(next) => out.push(next),
                None => {}
            },
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// `regexp_split_to_array(text, pattern)`: the parts of `text` between the matches.
fn regexp_split(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let rows = args.iter().find_map(|a| match a {
        ColumnarValue::Array(a) => Some(a.len()),
        _ => None,
    });
    let arrays: Vec<ArrayRef> = args.iter().map(|a| a.to_array(rows.unwrap_or(1))).collect::<Result<_>>()?;
    let (texts, patterns) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
    let mut out = ListBuilder::new(StringBuilder::new());
    for i in 0..texts.len() {
        if texts.is_null(i) || patterns.is_null(i) {
            out.append_null();
            continue;
        }
        let pattern = match regex::Regex::new(patterns.value(i)) {
            Ok(pattern) => pattern,
            Err(e) => return exec_err!("invalid regular expression {:?}: {e}", patterns.value(i)),
        };
        for part in pattern.split(texts.value(i)) {
            out.values().append_value(part);
        }
        out.append(true);
    }
    let out: ArrayRef = Arc::new(out.finish());
    match rows {
        Some(_) => Ok(ColumnarValue::Array(out)),
        None => Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)),
    }
}

/// Type oids, as text (`2275 26 23`, `{1,2}`) or as a list, as the types' names.
fn regtype_names(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let rows = match &args[0] {
        ColumnarValue::Array(a) => Some(a.len()),
        _ => None,
    };
    let array = args[0].to_array(rows.unwrap_or(1))?;
    let oids_of = |i: usize| -> Result<Vec<u32>> {
        Ok(match array.data_type() {
            DataType::Utf8 => {
                let text = array.as_string::<i32>().value(i);
                text.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
            }
            DataType::List(_) => {
                let ints = datafusion::arrow::compute::cast(&array.as_list::<i32>().value(i), &DataType::Int64)?;
                ints.as_primitive::<Int64Type>().iter().flatten().map(|n| n as u32).collect()
            }
            other => return exec_err!("{REGTYPE_NAMES} takes type oids as text or a list, not {other}"),
        })
    };
    let mut out = ListBuilder::new(StringBuilder::new());
    for i in 0..array.len() {
        if array.is_null(i) {
            out.append_null();
            continue;
        }
        for oid in oids_of(i)? {
            match Type::from_oid(oid) {
                Some(ty) => out.values().append_value(ty.name()),
                None => out.values().append_value(oid.to_string()),
            }
        }
        out.append(true);
    }
    let out: ArrayRef = Arc::new(out.finish());
    match rows {
        Some(_) => Ok(ColumnarValue::Array(out)),
        None => Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_the_backslash_as_their_escape() {
        assert_eq!(like_with_backslash("pg/_%", "/"), "pg\\_%");
        assert_eq!(like_with_backslash("a//b\\c", "/"), "a/b\\\\c");
        assert_eq!(like_with_backslash("100!%", "!"), "100\\%");
    }
}
