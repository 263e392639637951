/*! The history store: what the accounts held over time, recorded by `imageql record` and
queried in SQL.

The provider files say which resources are recorded (`history:`, with which of their rows).
A recording appends only what changed since the last observation of each row ([`record`]),
as plain Parquet files ([`store`]). In SQL, for each recorded resource (`images`):

- `provider.history.images`: every observation, with `account`, `observed_at` and `deleted`
  (a row's last observation again, when it was gone);
- `provider.history.images_versions`: each version of each row, `valid_from` to `valid_to`
  (null while it is the current one);
- `provider.history.images_at(ts)`: the rows as they were at `ts`;

and `provider.history.changes(from, to)`: every row created, changed (with the fields that
changed) or deleted in `[from, to)`, of every recorded table. A session reads the history of
its own accounts only. */

mod compact;
mod record;
mod store;
mod tables;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use record::{Recorded, record};
pub use store::Store;
pub use tables::{HistoryTable, TransitionsTable};

use crate::provider::{Resource, sent_schema};

/// When a recording saw the row (UTC, the API's time from its `Date` header).
pub const OBSERVED_AT: &str = "observed_at";
/// Whether the observation says the row was gone (it then repeats its last values).
pub const DELETED: &str = "deleted";

/// The columns of a recorded resource's files: `observed_at`, `deleted`, then those the API
/// sends (a derived column, such as `region_names`, is not kept).
pub fn stored_schema(resource: &Resource) -> SchemaRef {
    let mut fields = vec![
        Field::new(OBSERVED_AT, DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new(DELETED, DataType::Boolean, true),
    ];
    fields.extend(sent_schema(resource).fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
    Arc::new(Schema::new(fields))
}

/// The SQL of the views over a recorded resource's history table `table`
/// (`provider.history.images`), by name: its versions, and its rows at a moment.
pub fn views(resource: &Resource, table: &str) -> Vec<(String, String, bool)> {
    let key = resource.key().map(|k| k.column).unwrap_or("id");
    let columns: Vec<String> = sent_schema(resource).fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
    let columns = columns.join(", ");
    let versions = format!(
        "SELECT account, valid_from, valid_to, {columns} FROM (\
           SELECT *, observed_at AS valid_from, \
                  lead(observed_at) OVER (PARTITION BY account, \"{key}\" ORDER BY observed_at) AS valid_to \
           FROM {table}) AS observations \
         WHERE NOT deleted"
    );
    let at = format!(
        "SELECT account, {columns} FROM ({versions}) AS versions \
         WHERE valid_from <= CAST($at AS TIMESTAMP) AND (valid_to IS NULL OR valid_to > CAST($at AS TIMESTAMP))"
    );
    vec![(format!("{table}_versions"), versions, false), (format!("{table}_at"), at, true)]
}
