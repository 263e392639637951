//! The history store as DataFusion tables: the observations of a recorded resource, and
//! the transitions (created, changed, deleted) of every recorded resource. Both read the
//! store when scanned, for the session's own accounts only.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::Result;
use serde_json::Value;

use super::store::Store;
use super::{OBSERVED_AT, stored_schema};
use crate::error::Error;
use crate::mutate::rows_of_batches;
use crate::provider::Resource;
use crate::scan::{ACCOUNT, Computed};

/// Every observation of a recorded resource, `account` first.
#[derive(Debug)]
pub struct HistoryTable {
    store: Store,
    resource: Arc<Resource>,
    accounts: Vec<String>,
    schema: SchemaRef,
}

impl HistoryTable {
    pub fn new(store: Store, resource: Arc<Resource>, accounts: Vec<String>) -> HistoryTable {
        let mut fields = vec![Field::new(ACCOUNT, DataType::Utf8, false)];
        fields.extend(stored_schema(&resource).fields().iter().map(|f| f.as_ref().clone()));
        HistoryTable { store, resource, accounts, schema: Arc::new(Schema::new(fields)) }
    }

    fn observations(&self) -> Result<Vec<RecordBatch>, Error> {
        let stored = stored_schema(&self.resource);
        let mut batches = Vec::new();
        for account in &self.accounts {
            let observations = super::record::conformed(&stored, self.store.read(account, &self.resource.full_name)?)?;
            let n = observations.num_rows();
            let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![account.as_str(); n]))];
            columns.extend(observations.columns().iter().cloned());
            batches.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        Ok(batches)
    }
}

/// Every row created, changed or deleted, of every recorded resource: `changes(from, to)`
/// is this table in a period.
#[derive(Debug)]
pub struct TransitionsTable {
    store: Store,
    resources: Vec<Arc<Resource>>,
    accounts: Vec<String>,
    schema: SchemaRef,
}

impl TransitionsTable {
    pub fn new(store: Store, resources: Vec<Arc<Resource>>, accounts: Vec<String>) -> TransitionsTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new(ACCOUNT, DataType::Utf8, false),
            Field::new("table", DataType::Utf8, false),
            Field::new("id", DataType::Utf8, false),
            Field::new("change", DataType::Utf8, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("fields", DataType::Utf8, true),
        ]));
        TransitionsTable { store, resources, accounts, schema }
    }

    fn transitions_now(&self) -> Result<RecordBatch, Error> {
        let mut rows: Vec<Transition> = Vec::new();
        for account in &self.accounts {
            for resource in &self.resources {
                rows.extend(self.transitions(account, resource)?);
            }
        }
        rows.sort_by(|a, b| (a.at, &a.account, &a.table, &a.id).cmp(&(b.at, &b.account, &b.table, &b.id)));
        let text = |f: &dyn Fn(&Transition) -> String| -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        let mut at = TimestampMicrosecondBuilder::new();
        rows.iter().for_each(|r| at.append_value(r.at));
        let fields: StringArray = rows.iter().map(|r| r.fields.clone()).collect();
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                text(&|r| r.account.clone()),
                text(&|r| r.table.clone()),
                text(&|r| r.id.clone()),
                text(&|r| r.change.to_string()),
                Arc::new(at.finish()),
                Arc::new(fields),
            ],
        )?)
    }

    /// One resource's transitions in one account: each observation against the one before
    /// it of the same row.
    fn transitions(&self, account: &str, resource: &Resource) -> Result<Vec<Transition>, Error> {
        let schema = stored_schema(resource);
        let stored = super::record::conformed(&schema, self.store.read(account, &resource.full_name)?)?;
        let names: Vec<String> = schema.fields().iter().skip(2).map(|f| f.name().clone()).collect();
        let key = resource.key().map(|k| k.column).unwrap_or("id");
        let key_at = names.iter().position(|n| n == key).unwrap_or(0);
        let times = stored
            .column_by_name(OBSERVED_AT)
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>().cloned());
        let Some(times) = times else { return Ok(vec![]) };
        let values = rows_of_batches(&[stored.project(&(2..schema.fields().len()).collect::<Vec<_>>())?])?;
        let flags = rows_of_batches(&[stored.project(&[1])?])?;
        // Each row's observations in time order.
        let mut by_row: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for (i, row) in values.iter().enumerate() {
            let id = row[key_at].as_str().map(str::to_string).unwrap_or_else(|| row[key_at].to_string());
            let deleted = flags[i].first() == Some(&Value::Bool(true));
            by_row.entry(id).or_default().push((times.value(i), deleted, row));
        }
        let mut found = Vec::new();
        for (id, mut seen) in by_row {
            seen.sort_by_key(|(at, ..)| *at);
            let mut before: Option<(bool, &Vec<Value>)> = None;
            for (at, deleted, row) in seen {
                let (change, fields) = match (before, deleted) {
                    (None | Some((true, _)), false) => (Change::Created, None),
                    (Some((false, _)), true) => (Change::Deleted, None),
                    (Some((false, old)), false) => {
                        let changed: Vec<&str> = names
                            .iter()
                            .zip(old.iter().zip(row.iter()))
                            .filter(|(_, (a, b))| a != b)
                            .map(|(name, _)| name.as_str())
                            .collect();
                        (Change::Changed, Some(changed.join(", ")))
                    }
                    (_, true) => {
                        before = Some((true, row));
                        continue;
                    }
                };
                let table = resource.full_name.clone();
                found.push(Transition { account: account.to_string(), table, id: id.clone(), change, at, fields });
                before = Some((deleted, row));
            }
        }
        Ok(found)
    }
}

impl Computed for HistoryTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn rows(&self) -> Result<RecordBatch> {
        Ok(concat_batches(&self.schema, &self.observations().map_err(failed)?)?)
    }
}

impl Computed for TransitionsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn rows(&self) -> Result<RecordBatch> {
        self.transitions_now().map_err(failed)
    }
}

fn failed(error: Error) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(error))
}

/// One observation of a row: when (microseconds), whether it said the row was gone, its values.
type Seen<'a> = (i64, bool, &'a Vec<Value>);

#[derive(Debug, Clone, Copy)]
enum Change {
    Created,
    Changed,
    Deleted,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Changed => "changed",
            Change::Deleted => "deleted",
        })
    }
}

struct Transition {
    account: String,
    table: String,
    id: String,
    change: Change,
    /// Microseconds since the epoch, UTC.
    at: i64,
    fields: Option<String>,
}
