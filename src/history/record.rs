//! A recording: each recorded table read once through the session (its cache and rate
//! budget), compared row by row with the last observation of each row in the store, and
//! only what differs appended: new and changed rows, and for each row gone since, its last
//! observation again marked `deleted`. An unchanged account writes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use futures::TryStreamExt;
use serde_json::Value;

use super::store::Store;
use super::stored_schema;
use crate::engine::Session;
use crate::error::Error;
use crate::mutate::rows_of_batches;
use crate::outcome::Outcome;
use crate::provider::Resource;

/// What one recording of one account's table did.
#[derive(Debug)]
pub struct Recorded {
    pub account: String,
    pub table: String,
    /// Rows the table holds now.
    pub rows: usize,
    /// Rows appended: new, changed and gone.
    pub written: usize,
    pub file: Option<PathBuf>,
}

/// Records every recorded table of the session's accounts (`single`: the name a session of
/// one account records under), then compacts what it wrote to; with `keep`, what is older
/// is folded into each row's last observation.
pub async fn record(
    session: &Session,
    store: &Store,
    single: &str,
    keep: Option<chrono::Duration>,
) -> Result<Vec<Recorded>, Error> {
    let mut recorded = Vec::new();
    for resource in session.registry().recorded() {
        let filter = resource.history.as_ref().and_then(|h| h.filter.as_deref());
        let sql = match filter {
            Some(filter) => format!("SELECT * FROM {} WHERE {filter}", resource.full_name),
            None => format!("SELECT * FROM {}", resource.full_name),
        };
        let batches = match session.execute(&sql).await? {
            Outcome::Rows { stream, .. } => stream.try_collect::<Vec<_>>().await?,
            _ => vec![],
        };
        let observed_at = session.server_time().unwrap_or_else(Utc::now);
        for (account, now) in by_account(&resource, batches, session.accounts(), single)? {
            recorded.push(record_table(store, &resource, &account, now, observed_at)?);
            let keep_from = keep.map(|keep| (observed_at - keep).date_naive());
            super::compact::compact(store, &resource, &account, observed_at.date_naive(), keep_from)?;
        }
    }
    Ok(recorded)
}

/// The rows each account holds now, as the resource's columns.
fn by_account(
    resource: &Resource,
    batches: Vec<RecordBatch>,
    accounts: &[String],
    single: &str,
) -> Result<Vec<(String, RecordBatch)>, Error> {
    let schema = crate::provider::sent_schema(resource);
    let all = concat_batches(&batches.first().map(|b| b.schema()).unwrap_or(schema.clone()), &batches)?;
    if accounts.is_empty() {
        return Ok(vec![(single.to_string(), all.project(&own_columns(&all, &schema))?)]);
    }
    let names = rows_of_batches(&[all.project(&[0])?])?;
    let columns = own_columns(&all, &schema);
    accounts
        .iter()
        .map(|account| {
            let rows: Vec<u32> = names
                .iter()
                .enumerate()
                .filter(|(_, name)| name.first().and_then(Value::as_str) == Some(account.as_str()))
                .map(|(i, _)| i as u32)
                .collect();
            let taken = take_record_batch(&all, &UInt32Array::from(rows))?;
            Ok((account.clone(), taken.project(&columns)?))
        })
        .collect()
}

/// The positions of the resource's own columns in a batch (without `account`).
fn own_columns(batch: &RecordBatch, schema: &SchemaRef) -> Vec<usize> {
    schema.fields().iter().filter_map(|f| batch.schema().index_of(f.name()).ok()).collect()
}

/// The last observation of a row: whether it said the row was gone, its values, and where
/// it is among the stored rows.
struct Last {
    deleted: bool,
    values: Vec<Value>,
    at: usize,
}

fn record_table(
    store: &Store,
    resource: &Resource,
    account: &str,
    now: RecordBatch,
    observed_at: DateTime<Utc>,
) -> Result<Recorded, Error> {
    let table = resource.full_name.clone();
    let schema = stored_schema(resource);
    let key = resource.key().map(|k| k.column).unwrap_or("id");
    let key_at = now.schema().index_of(key)?;
    let stored = conformed(&schema, store.read(account, &table)?)?;
    let stored_values = rows_of_batches(&[stored.project(&(2..schema.fields().len()).collect::<Vec<_>>())?])?;
    let stored_flags = rows_of_batches(&[stored.project(&[1])?])?;
    let mut last: HashMap<String, Last> = HashMap::new();
    for (at, (values, flag)) in stored_values.into_iter().zip(stored_flags).enumerate() {
        let deleted = flag.first() == Some(&Value::Bool(true));
        last.insert(text(&values[key_at]), Last { deleted, values, at });
    }
    let current = rows_of_batches(std::slice::from_ref(&now))?;
    let mut changed: Vec<u32> = Vec::new();
    let mut present = std::collections::HashSet::new();
    for (i, values) in current.iter().enumerate() {
        let id = text(&values[key_at]);
        let same = last.get(&id).is_some_and(|l| !l.deleted && &l.values == values);
        if !same {
            changed.push(i as u32);
        }
        present.insert(id);
    }
    let mut gone: Vec<(&String, &Last)> = last.iter().filter(|(id, l)| !l.deleted && !present.contains(*id)).collect();
    gone.sort_by_key(|(_, l)| l.at);
    let gone: Vec<u32> = gone.iter().map(|(_, l)| l.at as u32).collect();
    let written = changed.len() + gone.len();
    let mut file = None;
    if written > 0 {
        let fresh = observed(&schema, &take_record_batch(&now, &UInt32Array::from(changed))?, observed_at, false)?;
        let own = stored.project(&(2..schema.fields().len()).collect::<Vec<_>>())?;
        let ended = observed(&schema, &take_record_batch(&own, &UInt32Array::from(gone))?, observed_at, true)?;
        let batch = concat_batches(&schema, &[fresh, ended])?;
        file = Some(store.append(account, &table, observed_at, &batch)?);
    }
    Ok(Recorded { account: account.to_string(), table, rows: now.num_rows(), written, file })
}

/// The stored batches as one, in the schema recordings write now.
pub(super) fn conformed(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<RecordBatch, Error> {
    let mut conformed = Vec::with_capacity(batches.len());
    for batch in batches {
        let columns = schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
                Some(column) => Ok(cast(column, field.data_type())?),
                None => Ok(datafusion::arrow::array::new_null_array(field.data_type(), batch.num_rows())),
            })
            .collect::<Result<Vec<ArrayRef>, Error>>()?;
        conformed.push(RecordBatch::try_new(lenient(schema), columns)?);
    }
    Ok(concat_batches(&lenient(schema), &conformed)?)
}

/// Every column nullable: a file written before a field was declared has none of it.
fn lenient(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>()))
}

/// The resource's rows as stored: `observed_at`, `deleted`, then their columns.
fn observed(
    schema: &SchemaRef,
    rows: &RecordBatch,
    observed_at: DateTime<Utc>,
    deleted: bool,
) -> Result<RecordBatch, Error> {
    let n = rows.num_rows();
    let at = TimestampMicrosecondArray::from(vec![observed_at.timestamp_micros(); n]);
    let mut columns: Vec<ArrayRef> = vec![Arc::new(at), Arc::new(BooleanArray::from(vec![deleted; n]))];
    for (field, column) in schema.fields().iter().skip(2).zip(rows.columns()) {
        columns.push(if column.data_type() == field.data_type() {
            column.clone()
        } else {
            cast(column, field.data_type())?
        });
    }
    Ok(RecordBatch::try_new(lenient(schema), columns)?)
}

fn text(value: &Value) -> String {
    value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())
}
