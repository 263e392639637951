//! Fault injection (`--fail-rate P`): a fraction of API requests meet one of the failures a
//! real network and API produce, picked evenly from this mix:
//!
//! - before the handler runs, so nothing changes: 429 with and without `Retry-After`; 500,
//!   502, 503 and 504; a stall longer than clients wait (`--stall-ms`), then a 504;
//! - after the handler ran, so a change happened but its answer is lost: the connection reset
//!   half-way through the body; a body cut short (truncated JSON, well-formed HTTP);
//! - on a later page of a list (`page` ≥ 2): the list as if a row had been created or
//!   deleted since the first page (`results` and the rows shifted by one). Elsewhere this
//!   fault is a 503.
//!
//! A request carrying `X-Sandbox-Faults: off` meets none, so tests can check the state.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::wire::ApiError;
use crate::random::unit as random_unit;

/// What `--fail-rate` and `--stall-ms` ask for.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub rate: f64,
    pub stall: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttled { retry_after: bool },
    Status(StatusCode),
    Stall,
    Reset,
    Truncated,
    ListChanged { grew: bool },
}

/// The faults to pick from, evenly.
const MIX: [Fault; 11] = [
    Fault::Throttled { retry_after: true },
    Fault::Throttled { retry_after: false },
    Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    Fault::Status(StatusCode::BAD_GATEWAY),
    Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
    Fault::Status(StatusCode::GATEWAY_TIMEOUT),
    Fault::Stall,
    Fault::Reset,
    Fault::Truncated,
    Fault::ListChanged { grew: true },
    Fault::ListChanged { grew: false },
];

impl Faults {
    /// The fault a request meets, if any. `page` is the page a list request asks for.
    pub fn pick(&self, headers: &HeaderMap, page: Option<u64>) -> Option<Fault> {
        let opted_out = headers.get("x-sandbox-faults").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"off"));
        if self.rate <= 0.0 || opted_out || random_unit() >= self.rate {
            return None;
        }
        match MIX[((random_unit() * MIX.len() as f64) as usize).min(MIX.len() - 1)] {
            Fault::ListChanged { .. } if page.is_none_or(|p| p < 2) => {
                Some(Fault::Status(StatusCode::SERVICE_UNAVAILABLE))
            }
            fault => Some(fault),
        }
    }

    /// The answer of a fault that strikes before the handler; `None` lets the handler run.
    pub async fn before(&self, fault: Fault) -> Option<Response> {
        let (status, reason) = match fault {
            Fault::Throttled { retry_after } => {
                let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
                if retry_after {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
                }
                return Some(response);
            }
            Fault::Status(status) => (status, status.canonical_reason().unwrap_or("Server error")),
            Fault::Stall => {
                tokio::time::sleep(self.stall).await;
                (StatusCode::GATEWAY_TIMEOUT, "Gateway timeout")
            }
            Fault::Reset | Fault::Truncated | Fault::ListChanged { .. } => return None,
        };
        Some(ApiError::new(status, reason).into_response())
    }
}

/// The page and page size a GET asks for (`page=`, `page_size=`), as far as faults care.
pub fn paging(query: Option<&str>) -> (Option<u64>, u64) {
    let param =
        |name: &str| query?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok());
    (param("page"), param("page_size").filter(|n| *n > 0).unwrap_or(100))
}

/// A fault that strikes after the handler answered: the answer as the client receives it.
pub async fn after(fault: Fault, response: Response, page_size: u64) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("the sandbox could not read its own answer").into_response();
    };
    let half = bytes.slice(..bytes.len() / 2);
    match fault {
        Fault::Reset => {
            // The declared length promises the whole body; the stream ends in an error after
            // half of it, and the server drops the connection.
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            let chunks: [Result<Bytes, std::io::Error>; 2] =
                [Ok(half), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset"))];
            Response::from_parts(parts, Body::from_stream(futures::stream::iter(chunks)))
        }
        Fault::Truncated => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(half))
        }
        Fault::ListChanged { grew } => {
            let changed = serde_json::from_slice::<Value>(&bytes).ok().and_then(|body| shifted(body, grew, page_size));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(changed.unwrap_or_else(|| bytes.to_vec())))
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// A list page as if one row had been created (`grew`) or deleted before it since page 1:
/// the rows move by one and `results` (and `pages`) follow.
fn shifted(mut body: Value, grew: bool, page_size: u64) -> Option<Vec<u8>> {
    let results = body.get("results")?.as_u64()?;
    let data = body.get_mut("data")?.as_array_mut()?;
    if data.is_empty() {
        return None;
    }
    let results = match grew {
        true => {
            data.insert(0, data[0].clone());
            data.truncate(page_size as usize);
            results + 1
        }
        false => {
            data.remove(0);
            results - 1
        }
    };
    body["results"] = Value::from(results);
    body["pages"] = Value::from(results.div_ceil(page_size));
    serde_json::to_vec(&body).ok()
}
