/*! The one printing path: statement outcomes as `table`, `json` (one array), `ndjson`, `csv`
and `text` (tab-separated, no header). All but `table` write each batch as it arrives, every
format with timestamps and intervals as [`readable`](crate::readable) gives them. In
`csv` and `text`, lists and structs are written as JSON text so that the cell can be parsed
again; `table` and `text` escape what would break their lines or drive the terminal
([`escape`]). A change without rows prints a one-line summary in `table` and `text`, and one row
elsewhere so that the output stays parseable. [`progress`] draws the engine's progress on a
terminal. */

pub mod dir;
mod escape;
pub mod progress;

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, ListBuilder, StringBuilder};
use futures::{StreamExt, TryStreamExt};

use crate::error::Error;
use crate::json_text::nested_as_json;
use crate::outcome::{Change, Outcome};
use crate::provider::Verb;
use crate::readable::{readable, readable_type};
use escape::Escape;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{JsonArray, LineDelimited, WriterBuilder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;

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
        // The file is the result: data formats get nothing that would mix with other results.
        Outcome::Copied(rows) => {
            if matches!(format, Format::Table | Format::Text) {
                writeln!(out, "COPY {rows}").map_err(|e| Error::Output(e.into()))?;
            }
            Ok(None)
        }
        Outcome::Done => Ok(None),
    }
}

/// psql's line after a table: `(3 rows)`, with `detail` (a time) inside the parentheses.
pub fn row_count(rows: usize, detail: &str) -> String {
    format!("({rows} row{}{detail})", if rows == 1 { "" } else { "s" })
}

/// Table output, or psql's expanded display (a `-[ RECORD n ]-` block of `column | value`
/// lines per row) when the table would be wider than `width` columns; 0 means always.
pub async fn print_expanded(outcome: Outcome, width: usize, out: &mut dyn Write) -> Result<Option<usize>, Error> {
    let Outcome::Rows { stream, .. } = outcome else { return print(outcome, Format::Table, out).await };
    let schema = stream.schema();
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let batches = batches.iter().map(readable).collect::<Result<Vec<_>, _>>()?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);
    let table = pretty_format_batches_with_schema(schema.clone(), &batches)?.to_string();
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let widest = table.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    if width > 0 && widest <= width {
        writeln!(out, "{table}").map_err(|e| Error::Output(e.into()))?;
        return Ok(Some(rows));
    }
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let options = FormatOptions::default().with_null("");
    let mut record = 0;
    for batch in &batches {
        let formatters = cell_formatters(batch, &options)?;
        for row in 0..batch.num_rows() {
            record += 1;
            let mut text = format!("-[ RECORD {record} ]-\n");
            for (name, formatter) in names.iter().zip(&formatters) {
                text.push_str(&format!("{name:<name_width$} | {}\n", formatter.value(row)));
            }
            out.write_all(text.as_bytes()).map_err(|e| Error::Output(e.into()))?;
        }
    }
    out.flush().map_err(|e| Error::Output(e.into()))?;
    Ok(Some(rows))
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
        let fields: Vec<Field> =
            schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(readable_type(f.data_type()))).collect();
        let schema = Arc::new(Schema::new(fields));
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
        let batch = readable(&batch)?;
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
                let formatters = cell_formatters(&batch, &options)?;
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

/// One formatter per column of `batch`, for writing its cells as text.
fn cell_formatters<'a>(
    batch: &'a RecordBatch,
    options: &'a FormatOptions,
) -> Result<Vec<ArrayFormatter<'a>>, ArrowError> {
    batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), options)).collect()
}

fn csv_escape(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}
