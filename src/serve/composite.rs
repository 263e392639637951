//! Records and arrays of records (`image_sharing`, `regions`) in PostgreSQL's text form, as
//! `record_out` and `array_out` write them: a NULL field is nothing (`(a,)`), an empty text is
//! `""`, and a value with a delimiter, a quote, a backslash or a space is quoted.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Whether a column of `data_type` is sent through [`texts`] in the text format.
pub fn is_composite(data_type: &DataType) -> bool {
    match data_type {
        DataType::Struct(_) => true,
        DataType::List(item) | DataType::LargeList(item) => is_composite(item.data_type()),
        _ => false,
    }
}

/// Each row of `array` in PostgreSQL's text form; NULL rows stay NULL.
pub fn texts(array: &ArrayRef) -> Result<StringArray, ArrowError> {
    (0..array.len()).map(|row| text(array, row)).collect()
}

fn text(array: &dyn Array, row: usize) -> Result<Option<String>, ArrowError> {
    if array.is_null(row) {
        return Ok(None);
    }
    Ok(Some(match array.data_type() {
        DataType::Struct(_) => {
            let fields = array.as_struct().columns().iter().map(|field| {
                Ok(match text(field.as_ref(), row)? {
                    Some(value) => quoted(&value, needs_record_quotes(&value), '"'),
                    None => String::new(),
                })
            });
            format!("({})", fields.collect::<Result<Vec<_>, ArrowError>>()?.join(","))
        }
        DataType::List(_) => items(&array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => items(&array.as_list::<i64>().value(row))?,
        DataType::Boolean => if array.as_boolean().value(row) { "t" } else { "f" }.to_string(),
        DataType::Timestamp(..) => scalar(array, row)?.replacen('T', " ", 1),
        _ => scalar(array, row)?,
    }))
}

fn items(items: &ArrayRef) -> Result<String, ArrowError> {
    let texts = (0..items.len()).map(|i| {
        Ok(match text(items.as_ref(), i)? {
            Some(value) => quoted(&value, needs_array_quotes(&value), '\\'),
            None => "NULL".to_string(),
        })
    });
    Ok(format!("{{{}}}", texts.collect::<Result<Vec<_>, ArrowError>>()?.join(",")))
}

fn scalar(array: &dyn Array, row: usize) -> Result<String, ArrowError> {
    Ok(ArrayFormatter::try_new(array, &FormatOptions::default())?.value(row).to_string())
}

fn needs_record_quotes(value: &str) -> bool {
    value.is_empty() || value.chars().any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || c.is_whitespace())
}

fn needs_array_quotes(value: &str) -> bool {
    value.is_empty()
        || value.eq_ignore_ascii_case("NULL")
        || value.chars().any(|c| matches!(c, '"' | '\\' | '{' | '}' | ',') || c.is_whitespace())
}

/// `value` in double quotes where `quote` says, its quotes and backslashes escaped with
/// `escape` (a record doubles them, an array puts a backslash before them).
fn quoted(value: &str, quote: bool, escape: char) -> String {
    if !quote {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push(if escape == '"' { c } else { escape });
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, StructArray};
    use datafusion::arrow::buffer::OffsetBuffer;
    use datafusion::arrow::datatypes::{Field, Fields};

    use super::*;

    fn record(ids: Vec<Option<i64>>, names: Vec<Option<&str>>) -> StructArray {
        let fields =
            Fields::from(vec![Field::new("id", DataType::Int64, true), Field::new("name", DataType::Utf8, true)]);
        let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))];
        StructArray::new(fields, columns, None)
    }

    #[test]
    fn records_write_null_fields_as_nothing_and_quote_what_needs_it() {
        let records: ArrayRef = Arc::new(record(
            vec![Some(1), None, Some(3), Some(4)],
            vec![None, Some(""), Some("a \"b\", (c)"), Some("plain")],
        ));
        let texts = texts(&records).unwrap();
        let got: Vec<_> = texts.iter().map(|t| t.unwrap()).collect();
        assert_eq!(got, ["(1,)", "(,\"\")", "(3,\"a \"\"b\"\", (c)\")", "(4,plain)"]);
    }

    #[test]
    fn arrays_of_records_quote_each_record_and_write_null_items_as_null() {
        let items = record(vec![Some(1), Some(2), None], vec![Some("x"), None, None]);
        let items =
            StructArray::new(items.fields().clone(), items.columns().to_vec(), Some(vec![true, true, false].into()));
        let field = Arc::new(Field::new_list_field(items.data_type().clone(), true));
        let lists: ArrayRef = Arc::new(ListArray::new(
            field,
            OffsetBuffer::from_lengths([3, 0]),
            Arc::new(items),
            Some(vec![true, false].into()),
        ));
        let texts = texts(&lists).unwrap();
        assert_eq!(texts.value(0), "{\"(1,x)\",\"(2,)\",NULL}");
        assert!(texts.is_null(1));
    }
}
