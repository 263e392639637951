//! `/sandbox/clock`: the sandbox's clock, readable, and movable forward with an account's
//! token, so that time-based transitions (upload and recovery image expiry) can be seen
//! without waiting. It lives outside `/v4`: it is not part of the Linode API.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::app::App;
use super::store::format_time;
use super::wire::{ApiError, Caller, Reply, json_object, ok};

pub async fn clock(State(app): State<App>) -> Response {
    ok(json!({ "now": format_time(app.read(|s| s.now())) }))
}

/// A century is more than any expiry needs, and keeps the clock far from overflowing.
pub const MAX_OFFSET: i64 = 100 * 366 * 24 * 3600;

/// Moving the clock expires every account's pending uploads, so only an account may do it.
pub async fn advance_clock(State(app): State<App>, caller: Caller, body: Bytes) -> Reply {
    caller.account()?;
    let body = json_object(&body)?;
    let seconds = body.get("advance_seconds").and_then(Value::as_i64).filter(|s| (0..=MAX_OFFSET).contains(s));
    let seconds = seconds.ok_or_else(|| {
        ApiError::bad_request(format!("advance_seconds must be an integer from 0 to {MAX_OFFSET}"), "advance_seconds")
    })?;
    let now = app.write(|s| {
        if s.clock_offset + seconds > MAX_OFFSET {
            return Err(ApiError::bad_request("the clock cannot move more than a century ahead", "advance_seconds"));
        }
        s.clock_offset += seconds;
        Ok(s.now())
    })?;
    Ok(ok(json!({ "now": format_time(now) })))
}
