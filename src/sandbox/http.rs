//! The sandbox's HTTP surface: routing, authentication, the error envelope, paging,
//! X-Filter evaluation, response headers and the access log.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::App;
use crate::xfilter::XFilter;

const DEFAULT_PAGE_SIZE: u64 = 100;

/// An error in the API's envelope: `{"errors": [{"reason": …, "field": …}]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<(String, Option<String>)>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError { status, errors: vec![(reason.into(), None)] }
    }

    pub fn field(status: StatusCode, reason: impl Into<String>, field: impl Into<String>) -> Self {
        ApiError { status, errors: vec![(reason.into(), Some(field.into()))] }
    }

    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "Not found")
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
        json_response(self.status, &json!({ "errors": errors }))
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

/// The account a request acts for: `None` is anonymous (public images only).
pub struct Caller(pub Option<usize>);

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let invalid = || ApiError::new(StatusCode::UNAUTHORIZED, "Invalid Token");
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Caller(None));
        };
        let value = value.to_str().map_err(|_| invalid())?.trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ if value.eq_ignore_ascii_case("bearer") => "",
            _ => return Err(invalid()),
        };
        // linode-cli sends "Bearer " when its token is empty; that is treated as anonymous.
        if token.is_empty() {
            return Ok(Caller(None));
        }
        let state = app.state.lock().unwrap();
        state.account_by_token(token).map(|a| Caller(Some(a))).ok_or_else(invalid)
    }
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/{version}/images", any(images_root))
        .route("/{version}/images/{*rest}", any(image_path))
        .fallback(|| async { ApiError::not_found() })
        .layer(middleware::from_fn_with_state(app.clone(), every_request))
        .with_state(app)
}

fn check_version(version: &str) -> Result<(), ApiError> {
    match version {
        "v4" | "v4beta" => Ok(()),
        _ => Err(ApiError::not_found()),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

async fn images_root(
    State(app): State<App>,
    Path(version): Path<String>,
    method: Method,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let caller = caller?;
    match method {
        Method::GET => list_images(&app, caller, &headers, query.as_deref()),
        _ => Err(method_not_allowed()),
    }
}

async fn image_path(
    State(app): State<App>,
    Path((version, rest)): Path<(String, String)>,
    method: Method,
    caller: Result<Caller, ApiError>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let caller = caller?;
    // `rest` is already percent-decoded, so `private%2F42` and `private/42` both arrive as
    // `private/42`.
    match method {
        Method::GET => get_image(&app, caller, &rest),
        _ => Err(method_not_allowed()),
    }
}

fn get_image(app: &App, caller: Caller, id: &str) -> Result<Response, ApiError> {
    let state = app.state.lock().unwrap();
    let image = state.find_image(caller.0, id).ok_or_else(ApiError::not_found)?;
    Ok(ok(image.to_json()))
}

fn list_images(app: &App, caller: Caller, headers: &HeaderMap, query: Option<&str>) -> Result<Response, ApiError> {
    let (page, page_size) = paging(query)?;
    let xfilter = match headers.get("x-filter") {
        None => XFilter::default(),
        Some(value) => {
            let text = value.to_str().map_err(|_| filter_error("Invalid JSON in X-Filter"))?;
            let parsed = XFilter::parse(text).map_err(|e| filter_error(e.to_string()))?;
            parsed.validate(|name| app.images.field(name)).map_err(|e| filter_error(e.to_string()))?;
            parsed
        }
    };
    let state = app.state.lock().unwrap();
    let mut rows: Vec<Map<String, Value>> = state
        .visible_images(caller.0)
        .map(|i| i.to_object())
        .filter(|o| xfilter.filter.as_ref().is_none_or(|f| f.matches(o)))
        .collect();
    drop(state);
    if let Some(order) = &xfilter.order {
        rows.sort_by(|a, b| order.compare(a, b));
    }
    Ok(ok(envelope(rows, page, page_size)))
}

fn filter_error(reason: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, reason, "X-Filter")
}

fn paging(query: Option<&str>) -> Result<(u64, u64), ApiError> {
    let params = parse_query(query.unwrap_or(""));
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        match params.get(name) {
            None => Ok(default),
            Some(text) => text.parse::<u64>().map_err(|_| {
                ApiError::field(StatusCode::BAD_REQUEST, format!("{name} must be a positive integer"), name)
            }),
        }
    };
    let page = number("page", 1)?;
    if page == 0 {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "page must be a positive integer", "page"));
    }
    let page_size = number("page_size", DEFAULT_PAGE_SIZE)?;
    if !(25..=500).contains(&page_size) {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "page_size must be between 25 and 500", "page_size"));
    }
    Ok((page, page_size))
}

fn parse_query(query: &str) -> HashMap<String, String> {
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

/// The paginated envelope. An empty `/images` result has the recorded shape
/// `{"pages": 0, "data": [], "results": 0, "page": 0}`.
fn envelope(rows: Vec<Map<String, Value>>, page: u64, page_size: u64) -> Value {
    let results = rows.len() as u64;
    if results == 0 {
        return json!({"pages": 0, "data": [], "results": 0, "page": 0});
    }
    let pages = results.div_ceil(page_size);
    let start = ((page - 1).saturating_mul(page_size)).min(results) as usize;
    let data: Vec<Value> = rows.into_iter().skip(start).take(page_size as usize).map(Value::Object).collect();
    json!({"pages": pages, "data": data, "results": results, "page": page})
}

/// Latency, common headers, a JSON body on every response, and the access log.
async fn every_request(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let x_filter = request.headers().get("x-filter").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if !app.options.latency.is_zero() {
        tokio::time::sleep(app.options.latency).await;
    }
    let mut response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
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
    if let Some(log) = &app.access_log {
        let line = json!({
            "method": method,
            "path": path,
            "query": query,
            "x_filter": x_filter,
            "status": response.status().as_u16(),
            "ms": started.elapsed().as_millis() as u64,
        });
        let mut file = log.lock().unwrap();
        // The log is a diagnostic aid: a full disk must not fail the request.
        let _ = writeln!(file, "{line}").and_then(|_| file.flush());
    }
    response
}
