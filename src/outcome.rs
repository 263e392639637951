//! What a statement gives back: rows to show, a summary of a change, or nothing. Front ends
//! turn outcomes into text (the printer), wire messages or values; the engine never prints.

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::memory::MemoryStream;

use crate::provider::Verb;

pub enum Outcome {
    /// Rows of a query, SHOW or DESCRIBE, EXPLAIN, the RETURNING rows of a change or the
    /// response rows of an EXEC; `changed` says what the change did, when there was one.
    Rows { stream: SendableRecordBatchStream, changed: Option<Change> },
    /// A change without RETURNING.
    Changed(Change),
    /// A `COPY … TO 'file'`: the rows it wrote there.
    Copied(u64),
    /// Nothing to show (CREATE VIEW, SET).
    Done,
}

impl Outcome {
    /// Rows already in memory.
    pub fn batch(batch: RecordBatch, changed: Option<Change>) -> Outcome {
        let schema = batch.schema();
        let stream = MemoryStream::try_new(vec![batch], schema, None).expect("no projection, nothing to check");
        Outcome::Rows { stream: Box::pin(stream), changed }
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Rows { stream, changed } => {
                f.debug_struct("Rows").field("schema", &stream.schema()).field("changed", changed).finish()
            }
            Outcome::Changed(change) => f.debug_tuple("Changed").field(change).finish(),
            Outcome::Copied(rows) => f.debug_tuple("Copied").field(rows).finish(),
            Outcome::Done => f.write_str("Done"),
        }
    }
}

/// What a change did: one call per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub verb: Verb,
    pub resource: String,
    pub method: String,
    /// Calls made.
    pub count: usize,
    /// The ids of the rows created or changed, where the responses or the statement tell them.
    pub ids: Vec<String>,
}
