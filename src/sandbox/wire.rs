//! The Linode API's wire conventions, as every handler needs them: the error envelope, JSON
//! bodies, bearer tokens, paging and X-Filter for lists, and per-minute rate-limit windows.
//! Nothing here knows the sandbox's state or routes, so handlers and the router both build
//! on it and it depends on neither.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::provider::{PageSizeRange, Resource, Row};
use crate::xfilter::{Filter, XFilter};

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

    pub fn too_many_requests(retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests") }
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
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
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

/// `page` and `page_size` from a query string, within the documented limits.
fn paging(query: Option<&str>, sizes: PageSizeRange) -> Result<(u64, u64), ApiError> {
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

/// The rows that pass `filter`, in its order (or as they were).
pub fn filtered(rows: Vec<Row>, filter: &XFilter) -> Vec<Row> {
    let mut rows: Vec<Row> = rows.into_iter().filter(|o| filter.filter.as_ref().is_none_or(|f| f.matches(o))).collect();
    if let Some(order) = &filter.order {
        rows.sort_by(|a, b| order.compare(a, b));
    }
    rows
}

/// Filters, sorts and pages `rows` into the API's list envelope, with the rows under `key`.
pub fn list(
    rows: Vec<Row>,
    filter: &XFilter,
    query: Option<&str>,
    sizes: PageSizeRange,
    key: &str,
    empty: EmptyList,
) -> Reply {
    list_lazily(rows.into_iter(), |row| row, |row, test| test.matches(row), filter, query, sizes, key, empty)
}

/// [`list`] over items that become rows only when needed: only the page's items are turned
/// into rows, and `matches` tests the others as cheaply as it can, so a page costs time in
/// proportion to the page (and to the filter's tests), and memory in proportion to the page
/// alone. Rows are written straight into the response's bytes. Only an order must see every
/// matching row at once.
#[allow(clippy::too_many_arguments)]
pub fn list_lazily<T, R: Serialize>(
    mut items: impl Iterator<Item = T>,
    to_row: impl Fn(T) -> R,
    matches: impl Fn(&T, &Filter) -> bool,
    filter: &XFilter,
    query: Option<&str>,
    sizes: PageSizeRange,
    key: &str,
    empty: EmptyList,
) -> Reply {
    let (page, page_size) = paging(query, sizes)?;
    let start = (page - 1).saturating_mul(page_size);
    let on_page = |n: u64| (start..start.saturating_add(page_size)).contains(&n);
    let (results, data): (u64, Vec<Value>) = match (&filter.filter, &filter.order) {
        (_, Some(_)) => {
            let rows: Vec<Row> = items.map(|item| row_of(&to_row(item))).collect();
            let rows = filtered(rows, filter);
            let data = rows.iter().skip(start as usize).take(page_size as usize).cloned().map(Value::Object).collect();
            (rows.len() as u64, data)
        }
        (None, None) => {
            let before = items.by_ref().take(start as usize).count() as u64;
            let data: Vec<R> = items.by_ref().take(page_size as usize).map(to_row).collect();
            let results = before + data.len() as u64 + items.count() as u64;
            return Ok(page_response(Envelope { key, data, page, results, page_size, empty }));
        }
        (Some(test), None) => {
            let mut matched = 0;
            let mut data = Vec::new();
            for item in items {
                if matches(&item, test) {
                    if on_page(matched) {
                        data.push(to_row(item));
                    }
                    matched += 1;
                }
            }
            return Ok(page_response(Envelope { key, data, page, results: matched, page_size, empty }));
        }
    };
    Ok(page_response(Envelope { key, data, page, results, page_size, empty }))
}

/// A row written out and read back, for the orders that compare whole rows.
fn row_of(row: &impl Serialize) -> Row {
    match serde_json::to_value(row) {
        Ok(Value::Object(map)) => map,
        _ => Row::new(),
    }
}

/// A page in the API's list envelope, in the key order of the resource's recordings.
struct Envelope<'a, R> {
    key: &'a str,
    data: Vec<R>,
    page: u64,
    results: u64,
    page_size: u64,
    empty: EmptyList,
}

impl<R: Serialize> Serialize for Envelope<'_, R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Envelope { key, data, page, results, page_size, empty } = self;
        let (page, pages) = match (results, empty) {
            (0, EmptyList::Zeros) => (0, 0),
            (0, EmptyList::FirstPage) => (1, 1),
            _ => (*page, results.div_ceil(*page_size)),
        };
        let mut map = s.serialize_map(Some(4))?;
        match empty {
            EmptyList::Zeros => {
                map.serialize_entry("pages", &pages)?;
                map.serialize_entry(*key, data)?;
                map.serialize_entry("results", results)?;
                map.serialize_entry("page", &page)?;
            }
            EmptyList::FirstPage => {
                map.serialize_entry(*key, data)?;
                map.serialize_entry("page", &page)?;
                map.serialize_entry("pages", &pages)?;
                map.serialize_entry("results", results)?;
            }
        }
        map.end()
    }
}

fn page_response<R: Serialize>(envelope: Envelope<R>) -> Response {
    match serde_json::to_vec(&envelope) {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => ApiError::internal(format!("the sandbox could not write a page: {e}")).into_response(),
    }
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
    pub fn take(&mut self, key: String, list: bool, limit: u32, enforced: bool, now: u64) -> (Option<u32>, u64) {
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
