//! What a connection sends back: errors and notices with their SQLSTATE, command tags, row
//! descriptions, and rows encoded from a statement's record batches as they arrive.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, IntervalMonthDayNanoArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, DurationNanosecondType, Field, IntervalMonthDayNano, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::error::ArrowError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire;
use futures::StreamExt;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::{DataRow, RowDescription};
use pgwire::messages::response::{CommandComplete, ErrorResponse, NoticeResponse};
use pgwire::types::format::FormatOptions;

use super::composite;
use crate::error::Error;
use crate::outcome::Change;
use crate::provider::Verb;

/// An error as a Postgres client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    /// The connection ends after it.
    pub fatal: bool,
    /// PostgreSQL's routine for the error, where drivers act on it (asyncpg prepares a
    /// statement again after `RevalidateCachedQuery`).
    pub routine: Option<&'static str>,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Failure {
        Failure { code: code.into(), message: message.into(), fatal: false, routine: None }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Failure {
        Failure { fatal: true, ..Failure::new(code, message) }
    }

    pub fn message(&self) -> PgWireBackendMessage {
        let severity = if self.fatal { "FATAL" } else { "ERROR" };
        let mut fields = fields(severity, &self.code, &self.message);
        fields.extend(self.routine.map(|routine| (b'R', routine.to_string())));
        PgWireBackendMessage::ErrorResponse(ErrorResponse::new(fields))
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let routine = matches!(error, Error::Stale(_)).then_some("RevalidateCachedQuery");
        Failure { routine, ..Failure::new(error.sqlstate(), error.to_string()) }
    }
}

fn fields(severity: &str, code: &str, message: &str) -> Vec<(u8, String)> {
    vec![(b'S', severity.into()), (b'V', severity.into()), (b'C', code.into()), (b'M', message.into())]
}

/// A notice: `severity` is WARNING or NOTICE.
pub fn notice(severity: &str, code: &str, message: &str) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(NoticeResponse::new(fields(severity, code, message)))
}

pub fn complete(tag: impl Into<String>) -> PgWireBackendMessage {
    PgWireBackendMessage::CommandComplete(CommandComplete::new(tag.into()))
}

pub fn description(fields: &[FieldInfo]) -> PgWireBackendMessage {
    PgWireBackendMessage::RowDescription(RowDescription::new(fields.iter().map(Into::into).collect()))
}

/// The columns of `schema` as a client is told of them, in `format`; `names` are the
/// names PostgreSQL gives them where the plan's must differ (they may repeat).
pub fn field_infos(
    schema: &SchemaRef,
    format: &Format,
    options: &FormatOptions,
    names: Option<&[String]>,
) -> Result<Vec<FieldInfo>, Failure> {
    let names: Vec<&str> = match names {
        Some(names) if names.len() == schema.fields().len() => names.iter().map(String::as_str).collect(),
        _ => schema.fields().iter().map(|f| f.name().as_str()).collect(),
    };
    // A column of nothing but NULLs is text, as PostgreSQL types an unknown in a result;
    // drivers have no reader for `unknown`.
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| match f.data_type() {
            DataType::Null => Field::new(name, DataType::Utf8, true),
            _ => f.as_ref().clone().with_name(name),
        })
        .collect();
    arrow_schema_to_pg_fields(&Schema::new(fields), format, Some(Arc::new(options.clone())))
        .map_err(|e| Failure::new("0A000", format!("a column cannot be sent: {e}")))
}

/// The command of a change's tag, as Postgres names them (REPLACE is an UPDATE).
pub fn change_tag(change: &Change, rows: Option<usize>) -> String {
    let count = rows.unwrap_or(change.count);
    match change.verb {
        Verb::Insert => format!("INSERT 0 {count}"),
        Verb::Replace => format!("UPDATE {count}"),
        Verb::Delete => format!("DELETE {count}"),
        Verb::Exec => format!("EXEC {count}"),
    }
}

type Encoded = Box<dyn Iterator<Item = pgwire::error::PgWireResult<DataRow>> + Send>;

/// Durations as intervals of days and time (`2 days 23:59:52`, not `71:59:52`).
fn days_and_time(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    const NANOS_PER_DAY: i64 = 86_400_000_000_000;
    let nanos = cast(column, &DataType::Duration(TimeUnit::Nanosecond))?;
    let intervals: IntervalMonthDayNanoArray = nanos
        .as_primitive::<DurationNanosecondType>()
        .iter()
        .map(|v| v.map(|v| IntervalMonthDayNano::new(0, (v / NANOS_PER_DAY) as i32, v % NANOS_PER_DAY)))
        .collect();
    Ok(Arc::new(intervals))
}

/// Rows on their way to a client: the record batches of a statement, encoded one batch at a
/// time, never all held at once.
pub struct Rows {
    pub fields: Arc<Vec<FieldInfo>>,
    /// The columns sent in PostgreSQL's text form of records (see [`composite`]), and the
    /// fields they are encoded with: as text already rendered.
    rendered: Vec<usize>,
    encoding: Arc<Vec<FieldInfo>>,
    /// The columns as the plan has them.
    pub schema: SchemaRef,
    stream: SendableRecordBatchStream,
    batch: Option<Encoded>,
    /// Rows sent so far.
    pub sent: usize,
    /// The tag once every row is sent: a change's, or `SELECT n`.
    pub change: Option<Change>,
    pub command: &'static str,
}

impl Rows {
    pub fn new(
        stream: SendableRecordBatchStream,
        format: &Format,
        options: &FormatOptions,
        names: Option<&[String]>,
        change: Option<Change>,
        command: &'static str,
    ) -> Result<Rows, Failure> {
        let schema = stream.schema();
        let fields = Arc::new(field_infos(&schema, format, options, names)?);
        // Records, and timestamps (`2024-03-11 09:14:22`, without the `.000000` of the
        // encoder), as PostgreSQL writes them.
        let rendered: Vec<usize> = (0..fields.len())
            .filter(|&i| {
                let data_type = schema.field(i).data_type();
                fields[i].format() == FieldFormat::Text
                    && (composite::is_composite(data_type) || matches!(data_type, DataType::Timestamp(_, None)))
            })
            .collect();
        let mut encoding = fields.as_ref().clone();
        for &i in &rendered {
            encoding[i] = FieldInfo::new(fields[i].name().to_string(), None, None, Type::TEXT, FieldFormat::Text);
        }
        let encoding = Arc::new(encoding);
        Ok(Rows { fields, rendered, encoding, schema, stream, batch: None, sent: 0, change, command })
    }

    /// `batch` with its record and timestamp columns rendered as text, and its durations
    /// (differences of timestamps) in days and time, as PostgreSQL justifies them.
    fn rendered(&self, batch: RecordBatch) -> Result<RecordBatch, Failure> {
        let durations = |batch: &RecordBatch| {
            batch.schema().fields().iter().any(|f| matches!(f.data_type(), DataType::Duration(_)))
        };
        if self.rendered.is_empty() && !durations(&batch) {
            return Ok(batch);
        }
        let failed = |e: ArrowError| Failure::new("XX000", format!("a row cannot be sent: {e}"));
        let mut columns = batch.columns().to_vec();
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        for (column, field) in columns.iter_mut().zip(fields.iter_mut()) {
            if matches!(field.data_type(), DataType::Duration(_)) {
                *column = days_and_time(column).map_err(failed)?;
                *field = field.clone().with_data_type(column.data_type().clone());
            }
        }
        for &i in &self.rendered {
            columns[i] = Arc::new(composite::texts(&columns[i]).map_err(failed)?);
            fields[i] = Field::new(fields[i].name(), DataType::Utf8, true);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(failed)
    }

    /// The next row, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<DataRow>, Failure> {
        loop {
            if let Some(row) = self.batch.as_mut().and_then(Iterator::next) {
                self.sent += 1;
                return row.map(Some).map_err(|e| Failure::new("XX000", format!("a row cannot be sent: {e}")));
            }
            match self.stream.next().await {
                None => return Ok(None),
                Some(Ok(batch)) => {
                    let batch = self.rendered(batch)?;
                    self.batch = Some(Box::new(encode_recordbatch(self.encoding.clone(), batch)));
                }
                Some(Err(e)) => return Err(Error::from(e).into()),
            }
        }
    }

    /// The tag that ends them.
    pub fn tag(&self) -> String {
        match &self.change {
            Some(change) => change_tag(change, Some(self.sent)),
            None if self.command == "SELECT" => format!("SELECT {}", self.sent),
            None => self.command.to_string(),
        }
    }
}
