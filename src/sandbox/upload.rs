//! Receiving an image upload: the body is streamed through a gzip decoder on a blocking
//! thread, counting bytes on both sides; nothing is kept. Memory stays bounded whatever the
//! size or compression ratio of the data (a gzip bomb stops at the uncompressed limit).

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use flate2::write::MultiGzDecoder;
use futures::StreamExt;

use super::http::ApiError;

const GIB: u64 = 1 << 30;
/// The API's limits: 5 GB compressed, 6 GB uncompressed.
pub const MAX_COMPRESSED: u64 = 5 * GIB;
pub const MAX_UNCOMPRESSED: u64 = 6 * GIB;

/// Chunks in flight between the connection and the decoder.
const QUEUE: usize = 4;

fn refuse(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, reason)
}

/// Counts decompressed bytes and fails past the limit.
struct Counter {
    bytes: u64,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        if self.bytes > MAX_UNCOMPRESSED {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "uncompressed limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the whole upload and returns its uncompressed size in bytes.
pub async fn receive(body: Body, content_length: Option<u64>) -> Result<u64, ApiError> {
    if content_length.is_some_and(|n| n > MAX_COMPRESSED) {
        return Err(refuse("The compressed image must be 5 GB or less"));
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let decoder = tokio::task::spawn_blocking(move || {
        let mut decoder = MultiGzDecoder::new(Counter { bytes: 0 });
        while let Some(chunk) = receiver.blocking_recv() {
            decoder.write_all(&chunk).map_err(decode_error)?;
        }
        decoder.try_finish().map_err(decode_error)?;
        Ok::<u64, ApiError>(decoder.get_ref().bytes)
    });
    let mut stream = body.into_data_stream();
    let mut compressed: u64 = 0;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                failure = Some(refuse(format!("The upload was interrupted: {e}")));
                break;
            }
        };
        compressed += chunk.len() as u64;
        if compressed > MAX_COMPRESSED {
            failure = Some(refuse("The compressed image must be 5 GB or less"));
            break;
        }
        if sender.send(chunk).await.is_err() {
            // The decoder stopped: its error says why.
            break;
        }
    }
    drop(sender);
    let decoded = decoder.await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    if compressed == 0 {
        return Err(refuse("The upload is empty; send a gzip-compressed raw disk image"));
    }
    match decoded? {
        0 => Err(refuse("The image is empty")),
        bytes => Ok(bytes),
    }
}

fn decode_error(e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::FileTooLarge => refuse("The uncompressed image must be 6 GB or less"),
        // A truncated stream surfaces as a checksum mismatch.
        _ => refuse(format!("The upload is not a complete, valid gzip file ({e})")),
    }
}
