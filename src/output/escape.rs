//! Making text from the API safe to print: values come from whoever wrote an image's label
//! or description, and a terminal would obey escape sequences in them. `text` output keeps
//! one line per row and one tab between cells, so tabs, newlines and backslashes in values
//! are escaped the way PostgreSQL's text format does (`\t`, `\n`, `\\`); in `table` output
//! control characters are shown as escapes too. Strings inside lists and structs are escaped
//! like the rest.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, LargeStringArray, ListArray, RecordBatch, StringArray, StringViewArray, StructArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

/// How a printer shows characters that would disturb its layout or the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Control characters only (ANSI escape sequences, tabs, newlines).
    Controls,
    /// Control characters and backslashes, so that the text can be unescaped again.
    Text,
}

impl Escape {
    pub fn apply(self, text: &str) -> Cow<'_, str> {
        let needs = |c: char| c.is_control() || (self == Escape::Text && c == '\\');
        if !text.chars().any(needs) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            match c {
                '\\' if self == Escape::Text => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() && (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        Cow::Owned(out)
    }

    /// The batch with every string, at any depth, escaped.
    pub fn batch(self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let columns = batch.columns().iter().map(|c| self.array(c)).collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(batch.schema(), columns)
    }

    fn array(self, array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        Ok(match array.data_type() {
            DataType::Utf8 => {
                Arc::new(array.as_string::<i32>().iter().map(|v| v.map(|s| self.apply(s))).collect::<StringArray>())
            }
            DataType::LargeUtf8 => Arc::new(
                array.as_string::<i64>().iter().map(|v| v.map(|s| self.apply(s))).collect::<LargeStringArray>(),
            ),
            DataType::Utf8View => {
                Arc::new(array.as_string_view().iter().map(|v| v.map(|s| self.apply(s))).collect::<StringViewArray>())
            }
            DataType::List(field) => {
                let list = array.as_list::<i32>();
                Arc::new(ListArray::try_new(
                    field.clone(),
                    list.offsets().clone(),
                    self.array(list.values())?,
                    list.nulls().cloned(),
                )?)
            }
            DataType::Struct(fields) => {
                let parts = array.as_struct();
                let columns = parts.columns().iter().map(|c| self.array(c)).collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new(fields.clone(), columns, parts.nulls().cloned())?)
            }
            _ => array.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_would_break_a_line_or_drive_the_terminal() {
        assert_eq!(Escape::Text.apply("a\tb\nc\\d\u{1b}[31m"), "a\\tb\\nc\\\\d\\x1b[31m");
        assert_eq!(Escape::Controls.apply("a\\b\u{9b}2J"), "a\\b\\u009b2J");
        assert!(matches!(Escape::Text.apply("café"), Cow::Borrowed(_)));
    }
}
