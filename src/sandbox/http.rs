//! The sandbox's HTTP surface: routing, authentication, the error envelope, paging and
//! X-Filter for lists, rate limits, fault injection, common headers and the access log.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::{App, images, linodes};
use crate::provider::{PageSizeRange, Resource};
use crate::xfilter::XFilter;

const DEFAULT_PAGE_SIZE: u64 = 100;

/// An error in the API's envelope: `{"errors": [{"reason": …, "field": …}]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<(String, Option<String>)>,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError { status, errors: vec![(reason.into(), None)], retry_after: None }
    }

    pub fn field(status: StatusCode, reason: impl Into<String>, field: impl Into<String>) -> Self {
        ApiError { status, errors: vec![(reason.into(), Some(field.into()))], retry_after: None }
    }

    pub fn bad_request(reason: impl Into<String>, field: impl Into<String>) -> Self {
        ApiError::field(StatusCode::BAD_REQUEST, reason, field)
    }

    /// Several 400 errors at once, as the API reports every invalid field.
    pub fn violations(violations: Vec<crate::validate::Violation>) -> Self {
        let errors = violations.into_iter().map(|v| (v.reason, Some(v.field))).collect();
        ApiError { status: StatusCode::BAD_REQUEST, errors, retry_after: None }
    }

    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "Not found")
    }

    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "Invalid Token")
    }

    pub fn forbidden() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "Unauthorized")
    }

    pub fn internal(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors: Vec<Value> = self
            .errors
            .into_iter()
            .map(|(reason, field)| match field {
                Some(field) => json!({"reason": reason, "field": field}),
                None => json!({"reason": reason}),
            })
            .collect();
        let mut response = json_response(self.status, &json!({ "errors": errors }));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

pub type Reply = Result<Response, ApiError>;

/// The account a request acts for: `None` is anonymous (public data only).
pub struct Caller(pub Option<usize>);

impl Caller {
    /// The account, for operations that need one.
    pub fn account(&self) -> Result<usize, ApiError> {
        self.0.ok_or_else(ApiError::unauthorized)
    }
}

/// The bearer token of a request: `None` without one; `Some("")` for an empty one.
fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::unauthorized())?.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim().to_string())),
        _ if value.eq_ignore_ascii_case("bearer") => Ok(Some(String::new())),
        _ => Err(ApiError::unauthorized()),
    }
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match bearer(&parts.headers)? {
            // linode-cli sends "Bearer " when its token is empty; that is anonymous.
            None => Ok(Caller(None)),
            Some(token) if token.is_empty() => Ok(Caller(None)),
            Some(token) => {
                app.read(|s| s.account_by_token(&token)).map(|a| Caller(Some(a))).ok_or_else(ApiError::unauthorized)
            }
        }
    }
}

/// A JSON request body as an object; anything else is a 400.
pub fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, "The request body must be a JSON object")),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("The request body is not valid JSON: {e}"))),
    }
}

pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/images", any(images::collection))
        .route("/images/{*rest}", any(images::member))
        .route("/linode/instances", get(linodes::list_instances))
        .route("/linode/instances/{id}", any(linodes::instance))
        .route("/linode/instances/{id}/disks", get(linodes::list_disks))
        .route("/linode/instances/{id}/disks/{disk}", get(linodes::disk))
        .route("/regions", get(linodes::list_regions))
        .route("/regions/{id}", get(linodes::region));
    Router::new()
        .nest("/v4", api.clone())
        .nest("/v4beta", api)
        .route("/sandbox-uploads/{secret}", put(images::receive_upload))
        .route("/sandbox/clock", post(advance_clock).get(clock))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .layer(middleware::from_fn_with_state(app.clone(), every_request))
        .with_state(app)
}

pub fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

async fn clock(State(app): State<App>) -> Response {
    ok(json!({ "now": super::store::format_time(app.read(|s| s.now())) }))
}

/// Moves the sandbox's clock forward, so that time-based transitions (upload expiry,
/// recovery image expiry) can be seen without waiting.
async fn advance_clock(State(app): State<App>, body: Bytes) -> Reply {
    // A century is more than any expiry needs, and keeps the clock far from overflowing.
    const MAX_OFFSET: i64 = 100 * 366 * 24 * 3600;
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
    Ok(ok(json!({ "now": super::store::format_time(now) })))
}

/// `page` and `page_size` from a query string, within the documented limits.
pub fn paging(query: Option<&str>, sizes: PageSizeRange) -> Result<(u64, u64), ApiError> {
    let params = parse_query(query.unwrap_or(""));
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        match params.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a positive integer"), name)),
        }
    };
    let page = number("page", 1)?;
    if page == 0 {
        return Err(ApiError::bad_request("page must be a positive integer", "page"));
    }
    let page_size = number("page_size", DEFAULT_PAGE_SIZE)?;
    if !(sizes.min as u64..=sizes.max as u64).contains(&page_size) {
        return Err(ApiError::bad_request(
            format!("page_size must be between {} and {}", sizes.min, sizes.max),
            "page_size",
        ));
    }
    Ok((page, page_size))
}

pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

/// The request's X-Filter, parsed and checked against the resource's fields.
pub fn x_filter(headers: &HeaderMap, resource: &Resource) -> Result<XFilter, ApiError> {
    let filter_error = |reason: String| ApiError::bad_request(reason, "X-Filter");
    let Some(value) = headers.get("x-filter") else {
        return Ok(XFilter::default());
    };
    let text = value.to_str().map_err(|_| filter_error("Invalid JSON in X-Filter".into()))?;
    let parsed = XFilter::parse(text).map_err(|e| filter_error(e.to_string()))?;
    parsed.validate(|name| resource.field(name)).map_err(|e| filter_error(e.to_string()))?;
    Ok(parsed)
}

/// Which envelope an empty list gets: `/images` answers with zeros, other lists with page 1.
#[derive(Clone, Copy)]
pub enum EmptyList {
    Zeros,
    FirstPage,
}

/// Filters, sorts and pages `rows` into the API's list envelope.
pub fn list(
    app: &App,
    rows: Vec<Map<String, Value>>,
    filter: &XFilter,
    query: Option<&str>,
    empty: EmptyList,
) -> Reply {
    let sizes = app.registry.providers.get("linode").expect("the embedded registry has linode").pagination.page_size;
    let (page, page_size) = paging(query, sizes)?;
    let mut rows: Vec<Map<String, Value>> =
        rows.into_iter().filter(|o| filter.filter.as_ref().is_none_or(|f| f.matches(o))).collect();
    if let Some(order) = &filter.order {
        rows.sort_by(|a, b| order.compare(a, b));
    }
    let results = rows.len() as u64;
    if results == 0 {
        return Ok(ok(match empty {
            EmptyList::Zeros => json!({"pages": 0, "data": [], "results": 0, "page": 0}),
            EmptyList::FirstPage => json!({"data": [], "page": 1, "pages": 1, "results": 0}),
        }));
    }
    let pages = results.div_ceil(page_size);
    let start = ((page - 1).saturating_mul(page_size)).min(results) as usize;
    let data: Vec<Value> = rows.into_iter().skip(start).take(page_size as usize).map(Value::Object).collect();
    Ok(ok(match empty {
        EmptyList::Zeros => json!({"pages": pages, "data": data, "results": results, "page": page}),
        EmptyList::FirstPage => {
            json!({"data": data, "page": page, "pages": pages, "results": results})
        }
    }))
}

/// Per-minute request counters, by caller and kind of request.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<(String, bool), (u64, u32)>,
}

impl RateLimiter {
    /// Counts a request; returns the requests left in this minute (None when over the limit)
    /// and the epoch second the window resets.
    /// An unenforced limit only counts, for the headers.
    fn take(&mut self, key: String, list: bool, limit: u32, enforced: bool, now: u64) -> (Option<u32>, u64) {
        let minute = now / 60;
        let entry = self.windows.entry((key, list)).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        let reset = (minute + 1) * 60;
        if enforced && entry.1 >= limit {
            return (None, reset);
        }
        entry.1 += 1;
        (Some(limit.saturating_sub(entry.1)), reset)
    }
}

/// A cheap, well-spread pseudo-random number for fault injection.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Latency, rate limits, injected faults, common headers, a JSON body on every response,
/// and the access log.
async fn every_request(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let x_filter = request.headers().get("x-filter").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_api = path.starts_with("/v4/") || path.starts_with("/v4beta/");
    if !app.options.latency.is_zero() {
        tokio::time::sleep(app.options.latency).await;
    }

    let is_list = method == Method::GET && (path.ends_with("/images") || path.ends_with("/images/"));
    let general = app.options.rate_limit;
    // Image lists are unlimited unless --rate-limit-list says otherwise.
    let (limit, enforced) = match (is_list, app.options.rate_limit_list) {
        (true, Some(n)) => (n, true),
        (true, None) => (general, false),
        (false, _) => (general, true),
    };
    let caller = match bearer(request.headers()) {
        Ok(Some(token)) if !token.is_empty() => match app.account_for(&token) {
            Some(account) => format!("account:{account}"),
            None => format!("ip:{}", peer.ip()),
        },
        _ => format!("ip:{}", peer.ip()),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (remaining, reset) = match is_api {
        true => app.limiter.lock().unwrap_or_else(|e| e.into_inner()).take(caller, is_list, limit, enforced, now),
        false => (Some(limit), now),
    };

    let mut response = if remaining.is_none() {
        let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        error.retry_after = Some(reset.saturating_sub(now).max(1));
        error.into_response()
    } else if is_api && app.options.fail_rate > 0.0 && random_unit() < app.options.fail_rate {
        // Faults strike before the handler runs, so a failed request changes nothing.
        let (status, reason) = match (random_unit() * 3.0) as u8 {
            0 => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
            1 => (StatusCode::BAD_GATEWAY, "Bad gateway"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable"),
        };
        ApiError::new(status, reason).into_response()
    } else {
        next.run(request).await
    };

    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        // Real clients call .json() on every body, so nothing may leave without one.
        let reason = response.status().canonical_reason().unwrap_or("Error").to_string();
        response = ApiError::new(response.status(), reason).into_response();
    }
    let headers = response.headers_mut();
    for (name, value) in [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-headers", "Authorization, Origin, X-Requested-With, Content-Type, Accept, X-Filter"),
        ("access-control-allow-methods", "HEAD, GET, OPTIONS, POST, PUT, DELETE"),
        ("cache-control", "private, max-age=0, s-maxage=0, no-cache, no-store"),
        ("vary", "Authorization, X-Filter"),
        ("x-oauth-scopes", "*"),
        ("x-content-type-options", "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if is_api {
        headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining.unwrap_or(0)));
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    }
    if let Some(log) = &app.access_log {
        let line = json!({
            "method": method.as_str(),
            "path": path,
            "query": query,
            "x_filter": x_filter,
            "status": response.status().as_u16(),
            "ms": started.elapsed().as_millis() as u64,
        });
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        // The log is a diagnostic aid: a full disk must not fail the request.
        let _ = writeln!(file, "{line}").and_then(|_| file.flush());
    }
    response
}

/// Path and query parameters shared by the list handlers.
pub struct ListRequest {
    pub headers: HeaderMap,
    pub query: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let RawQuery(query) = RawQuery::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found())?;
        Ok(ListRequest { headers: parts.headers.clone(), query })
    }
}

/// A path segment that must be an integer id; anything else is not found.
pub fn numeric_id(Path(text): Path<String>) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found())
}
