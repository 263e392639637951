//! A query is safe to run again: when a listing it reads changes under it, the query starts
//! over, as long as none of its rows has left yet. Once rows have gone to the client, the
//! change is reported instead, so that no answer ever mixes two versions of a list.

use datafusion::common::DataFusionError;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::api::ApiError;

/// Times a query starts over before the change is reported.
const RESTARTS: u32 = 3;

/// The rows of `frame`, whose first run is `stream`, started over when a list changed.
pub fn restarting(frame: DataFrame, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let state = Some(Run { frame, stream, restarts: 0, sent_rows: false });
    let batches = futures::stream::unfold(state, |state| async move {
        let mut run = state?;
        loop {
            match run.stream.next().await {
                None => return None,
                Some(Ok(batch)) => {
                    run.sent_rows |= batch.num_rows() > 0;
                    return Some((Ok(batch), Some(run)));
                }
                Some(Err(e)) if !run.sent_rows && run.restarts < RESTARTS && list_changed(&e) => {
                    run.restarts += 1;
                    match run.frame.clone().execute_stream().await {
                        Ok(stream) => run.stream = stream,
                        Err(e) => return Some((Err(e), None)),
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

struct Run {
    frame: DataFrame,
    stream: SendableRecordBatchStream,
    restarts: u32,
    sent_rows: bool,
}

fn list_changed(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::External(inner) => matches!(inner.downcast_ref::<ApiError>(), Some(ApiError::Changed { .. })),
        _ => false,
    }
}
