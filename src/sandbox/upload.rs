//! Receiving an image upload: the body is streamed through a gzip decoder on a blocking
//! thread, counting bytes on both sides; nothing is kept. Memory stays bounded whatever the
//! size or compression ratio of the data (a gzip bomb stops at the uncompressed limit).

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures::StreamExt;

use super::wire::ApiError;
use crate::gzip;

/// Chunks in flight between the connection and the decoder.
const QUEUE: usize = 4;

fn refuse(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, reason)
}

/// Limits on an upload, from the provider file's description of the upload method.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub compressed: u64,
    pub uncompressed: u64,
}

fn gigabytes(bytes: u64) -> String {
    format!("{} GB", bytes as f64 / (1u64 << 30) as f64)
}

/// Reads the whole upload and returns its uncompressed size in bytes.
pub async fn receive(body: Body, content_length: Option<u64>, limits: Limits) -> Result<u64, ApiError> {
    let too_big = || refuse(format!("The compressed image must be {} or less", gigabytes(limits.compressed)));
    if content_length.is_some_and(|n| n > limits.compressed) {
        return Err(too_big());
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let decoder = tokio::task::spawn_blocking(move || {
        let decode_error = |e: std::io::Error| match gzip::is_over_limit(&e) {
            true => refuse(format!("The uncompressed image must be {} or less", gigabytes(limits.uncompressed))),
            // A truncated stream surfaces as a checksum mismatch.
            false => refuse(format!("The upload is not a complete, valid gzip file ({e})")),
        };
        let mut decoder = gzip::measuring_decoder(limits.uncompressed);
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
        if compressed > limits.compressed {
            failure = Some(too_big());
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
