/*! The one printing path: statement outcomes as `table`, `json` (one array), `ndjson`, `csv`
and `text` (tab-separated, no header). All but `table` write each batch as it arrives. In
`csv` and `text`, lists and structs are written as JSON text so that the cell can be parsed
again; `table` and `text` escape what would break their lines or drive the terminal
([`escape`]). A change without rows prints a one-line summary in `table` and `text`, and one row
elsewhere so that the output stays parseable. [`progress`] draws the engine's progress on a
terminal. */

mod escape;
pub mod progress;

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, ListBuilder, StringBuilder};
use futures::StreamExt;

use crate::error::Error;
use crate::outcome::{Change, Outcome};
use crate::provider::Verb;
use escape::Escape;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{JsonArray, LineDelimited, WriterBuilder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Ndjson,
    Csv,
    Text,
}

/// Prints an outcome; returns the number of rows when it printed rows.
pub async fn print(outcome: Outcome, format: Format, out: &mut dyn Write) -> Result<Option<usize>, Error> {
    match outcome {
        Outcome::Rows { mut stream, .. } => {
            let mut printer = Printer::new(format, stream.schema(), out)?;
            while let Some(batch) = stream.next().await {
                printer.write(batch?)?;
            }
            let rows = printer.rows();
            printer.finish()?;
            Ok(Some(rows))
        }
        Outcome::Changed(change) => {
            summary(&change, format, out)?;
            Ok(None)
        }
        Outcome::Done => Ok(None),
    }
}

fn summary(change: &Change, format: Format, out: &mut dyn Write) -> Result<(), Error> {
    let (count, resource) = (change.count, &change.resource);
    let what = match change.verb {
        Verb::Insert => format!("inserted {count} into {resource}"),
        Verb::Replace => format!("replaced {count} in {resource}"),
        Verb::Delete => format!("deleted {count} from {resource}"),
        Verb::Exec => format!("EXEC {resource}.{}: done", change.method),
    };
    if matches!(format, Format::Table | Format::Text) {
        let listed = if change.ids.is_empty() { String::new() } else { format!(": {}", change.ids.join(", ")) };
        writeln!(out, "{what}{listed}").map_err(|e| Error::Output(e.into()))?;
        return Ok(());
    }
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("statement", DataType::Utf8, false),
        Field::new("resource", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("ids", DataType::List(item.clone()), false),
    ]));
    let mut ids = ListBuilder::new(StringBuilder::new()).with_field(item);
    ids.append_value(change.ids.iter().map(Some));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![change.verb.keyword()])),
            Arc::new(StringArray::from(vec![resource.as_str()])),
            Arc::new(Int64Array::from(vec![count as i64])),
            Arc::new(ids.finish()),
        ],
    )?;
    let mut printer = Printer::new(format, schema, out)?;
    printer.write(batch)?;
    printer.finish()?;
    Ok(())
}

/// Writes one statement's result.
struct Printer<'w> {
    format: Format,
    out: &'w mut dyn Write,
    schema: SchemaRef,
    /// Table output needs every row before it can size its columns.
    held: Vec<RecordBatch>,
    json: Option<datafusion::arrow::json::Writer<Vec<u8>, JsonArray>>,
    rows: usize,
}

impl<'w> Printer<'w> {
    fn new(format: Format, schema: SchemaRef, out: &'w mut dyn Write) -> Result<Self, ArrowError> {
        let mut printer = Printer { format, out, schema, held: vec![], json: None, rows: 0 };
        match format {
            Format::Json => {
                printer.json = Some(WriterBuilder::new().with_explicit_nulls(true).build(Vec::new()));
            }
            Format::Csv => {
                let names: Vec<String> = printer.schema.fields().iter().map(|f| csv_escape(f.name())).collect();
                writeln!(printer.out, "{}", names.join(","))?;
            }
            _ => {}
        }
        Ok(printer)
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn write(&mut self, batch: RecordBatch) -> Result<(), ArrowError> {
        self.rows += batch.num_rows();
        match self.format {
            Format::Table => self.held.push(Escape::Controls.batch(&batch)?),
            Format::Json => {
                let writer = self.json.as_mut().expect("created for json");
                writer.write(&batch)?;
                let buffer = writer.get_mut();
                self.out.write_all(buffer)?;
                buffer.clear();
            }
            Format::Ndjson => {
                let mut writer =
                    WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(&mut *self.out);
                writer.write(&batch)?;
                writer.finish()?;
            }
            Format::Csv => {
                let batch = nested_as_json(&batch)?;
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(false).build(&mut *self.out);
                writer.write(&batch)?;
            }
            Format::Text => {
                let batch = Escape::Text.batch(&nested_as_json(&batch)?)?;
                let options = FormatOptions::default().with_null("");
                let formatters = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<Vec<_>, _>>()?;
                for row in 0..batch.num_rows() {
                    let cells: Vec<String> = formatters.iter().map(|f| f.value(row).to_string()).collect();
                    writeln!(self.out, "{}", cells.join("\t"))?;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), ArrowError> {
        match self.format {
            Format::Table => {
                let table = pretty_format_batches_with_schema(self.schema.clone(), &self.held)?;
                writeln!(self.out, "{table}")?;
            }
            Format::Json => {
                let mut writer = self.json.take().expect("created for json");
                writer.finish()?;
                self.out.write_all(&writer.into_inner())?;
                writeln!(self.out)?;
            }
            _ => {}
        }
        self.out.flush()?;
        Ok(())
    }
}

fn csv_escape(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

fn is_nested(data_type: &DataType) -> bool {
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
fn nested_as_json(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
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
