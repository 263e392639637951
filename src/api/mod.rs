/*! The HTTP client: bearer auth, retries of idempotent reads, error reporting and paging.

Errors name the request (method and URL) and what the user can do about them; the token
never appears in any of them. Progress goes to a [`Progress`] callback. */

pub mod progress;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::provider::{HttpVerb, Pagination, encode_segment};
pub use progress::{Event, Progress};

/// What a failed change's error adds when its answer was lost after it was sent.
const UNKNOWN_OUTCOME: &str =
    "The request was sent, so the change may have happened: changes are never retried; check before sending it again";

/// Pages fetched at once after the first one.
const PAGE_CONCURRENCY: usize = 4;
/// Attempts for an idempotent read before its error is reported.
const READ_ATTEMPTS: u32 = 4;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// How long one API call may take, response body included, unless the session says otherwise.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A secret that never shows up in `Debug` output.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(value: String) -> Option<Token> {
        (!value.trim().is_empty()).then(|| Token(value.trim().to_string()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// One entry of the API's error envelope.
#[derive(Debug, Clone)]
pub struct ErrorItem {
    pub reason: String,
    pub field: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {url} failed with HTTP {status}: {}{}", reasons(errors), hint_text(hint))]
    Status { method: HttpVerb, url: String, status: u16, errors: Vec<ErrorItem>, hint: Option<String> },
    #[error("{method} {url} failed: {detail}{}", hint_text(hint))]
    Network { method: HttpVerb, url: String, detail: String, hint: Option<String> },
    #[error("{method} {url} returned an unexpected response: {detail}")]
    Decode { method: HttpVerb, url: String, detail: String },
    /// A list whose length changed between its pages: its rows cannot be trusted.
    #[error(
        "the list changed while it was read (page 1 said {before}, page {page} said {after}): rows would have \
         been missed or read twice, so the query stopped; run it again"
    )]
    Changed { page: u64, before: Shape, after: Shape },
}

/// What a page says about its whole list: how many pages and rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub pages: Option<u64>,
    pub results: Option<u64>,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        write!(f, "{} rows in {} pages", count(self.results), count(self.pages))
    }
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn reasons(errors: &[ErrorItem]) -> String {
    if errors.is_empty() {
        return "no error details".into();
    }
    errors
        .iter()
        .map(|e| match &e.field {
            Some(field) => format!("{} (field {field})", e.reason),
            None => e.reason.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn hint_text(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(". {h}")).unwrap_or_default()
}

/// A request relative to the API base: `path` is already encoded.
#[derive(Debug, Clone)]
pub struct Request {
    pub verb: HttpVerb,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(HttpVerb::Get, path, None)
    }

    pub fn new(verb: HttpVerb, path: impl Into<String>, body: Option<Value>) -> Request {
        Request { verb, path: path.into(), query: vec![], headers: vec![], body }
    }

    fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let query: Vec<String> =
            self.query.iter().map(|(k, v)| format!("{}={}", encode_segment(k), encode_segment(v))).collect();
        format!("{}?{}", self.path, query.join("&"))
    }
}

#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    token: Option<Token>,
    /// The environment variable the token came from, for hints.
    token_source: String,
    progress: Progress,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(
        base_url: &str,
        token: Option<Token>,
        token_source: &str,
        progress: Progress,
        timeout: Duration,
    ) -> ApiClient {
        // No overall timeout on the client: an upload may take hours. API calls set their own.
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("imageql/", env!("CARGO_PKG_VERSION")))
            .redirect(same_origin_redirects());
        // Plain http is only allowed to this machine: a proxy (HTTP_PROXY) would see the token.
        if base_url.starts_with("http://") {
            http = http.no_proxy();
        }
        let http = http.build().expect("the TLS backend initialises");
        ApiClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            token_source: token_source.to_string(),
            progress,
            timeout,
        }
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn url(&self, request: &Request) -> String {
        format!("{}{}", self.base_url, request.path_and_query())
    }

    /// Sends a request once: changes are never retried, so that a failure never hides a
    /// change that happened anyway.
    pub async fn send(&self, request: &Request) -> Result<Value, ApiError> {
        self.send_once(request, 1).await.map_err(|failure| failure.error)
    }

    /// Sends an idempotent read, retrying throttling, server errors and network failures.
    pub async fn read(&self, request: &Request) -> Result<Value, ApiError> {
        let mut attempt = 1;
        loop {
            match self.send_once(request, READ_ATTEMPTS).await {
                Ok(value) => return Ok(value),
                Err(failure) if failure.retryable && attempt < READ_ATTEMPTS => {
                    let backoff = Duration::from_millis(250 << (attempt - 1));
                    tokio::time::sleep(failure.retry_after.unwrap_or(backoff).min(MAX_RETRY_WAIT)).await;
                    attempt += 1;
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// One attempt; `attempts` is how many the caller makes in all, for the hints.
    async fn send_once(&self, request: &Request, attempts: u32) -> Result<Value, Failure> {
        let url = self.url(request);
        let method = match request.verb {
            HttpVerb::Get => reqwest::Method::GET,
            HttpVerb::Post => reqwest::Method::POST,
            HttpVerb::Put => reqwest::Method::PUT,
            HttpVerb::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.http.request(method, &url).header("Accept", "application/json").timeout(self.timeout);
        if let Some(Token(token)) = &self.token {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        // A change whose answer was lost may have happened all the same.
        let unknown_outcome = (attempts == 1).then(|| UNKNOWN_OUTCOME.to_string());
        let response = builder.send().await.map_err(|e| Failure {
            retryable: true,
            retry_after: None,
            error: ApiError::Network {
                method: request.verb,
                url: url.clone(),
                hint: match e.is_connect() {
                    true => {
                        Some("Is the API reachable? To try imageql without an account, run it with --sandbox".into())
                    }
                    false => unknown_outcome.clone(),
                },
                detail: error_chain(&e.without_url()),
            },
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|e| Failure {
            retryable: true,
            retry_after: None,
            error: ApiError::Network {
                method: request.verb,
                url: url.clone(),
                detail: error_chain(&e.without_url()),
                hint: unknown_outcome.clone(),
            },
        })?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            // A body cut short on the way; a read asks again.
            return body.ok_or_else(|| Failure {
                retryable: true,
                retry_after: None,
                error: ApiError::Decode {
                    method: request.verb,
                    url,
                    detail: format!(
                        "the body is not JSON ({} bytes){}",
                        bytes.len(),
                        unknown_outcome.map(|h| format!(". {h}")).unwrap_or_default()
                    ),
                },
            });
        }
        let errors = body.as_ref().map(error_items).unwrap_or_default();
        let retryable = matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504);
        Err(Failure {
            retryable,
            retry_after,
            error: ApiError::Status {
                method: request.verb,
                url,
                status: status.as_u16(),
                errors,
                hint: self.hint(status, attempts),
            },
        })
    }

    /// PUTs a stream to an absolute URL handed out by the API (an upload URL): no token is
    /// sent, and `length` is declared up front, as object stores require.
    pub async fn put_stream(
        &self,
        url: &str,
        content_type: &str,
        length: u64,
        body: reqwest::Body,
    ) -> Result<(), ApiError> {
        let response = self
            .http
            .put(url)
            .header("Content-Type", content_type)
            .header("Content-Length", length)
            .body(body)
            .send()
            .await
            .map_err(|e| ApiError::Network {
                method: HttpVerb::Put,
                url: redact_upload_url(url),
                detail: error_chain(&e.without_url()),
                hint: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let errors = response.json::<Value>().await.ok().as_ref().map(error_items).unwrap_or_default();
        Err(ApiError::Status {
            method: HttpVerb::Put,
            url: redact_upload_url(url),
            status: status.as_u16(),
            errors,
            hint: None,
        })
    }

    fn hint(&self, status: StatusCode, attempts: u32) -> Option<String> {
        let source = &self.token_source;
        let again = match attempts {
            1 => "changes are never retried: check whether it happened before sending it again",
            _ => "try again later",
        };
        Some(match status.as_u16() {
            401 if self.token.is_some() => format!("The token in {source} was rejected; check that it is valid"),
            401 => format!("This needs a token: set {source}"),
            403 => format!("The token in {source} lacks the permission (OAuth scope) this needs"),
            429 if attempts > 1 => format!("The API's rate limit still applied after {attempts} attempts; {again}"),
            429 => format!("The API's rate limit was hit; {again}"),
            500..=599 => format!("The API failed; {again}"),
            _ => return None,
        })
    }

    /// Every row of a paginated collection, one page per item, in the API's order. The first
    /// page tells how many there are; the rest are fetched concurrently (bounded) and yielded
    /// in order. `max_rows` stops fetching once that many rows are certain to have arrived.
    pub fn pages(
        self: &Arc<Self>,
        request: Request,
        pagination: &Pagination,
        page_size: u32,
        object_key: &str,
        max_rows: Option<usize>,
    ) -> BoxStream<'static, Result<Vec<Value>, ApiError>> {
        let progress = Arc::new(self.progress.scan(&request.path));
        let fetch = {
            let client = Arc::clone(self);
            let pagination = pagination.clone();
            let object_key = object_key.to_string();
            move |page: u64| {
                let client = Arc::clone(&client);
                let mut request = request.clone();
                let pagination = pagination.clone();
                let object_key = object_key.clone();
                async move {
                    request.query.push((pagination.page_param.clone(), page.to_string()));
                    request.query.push((pagination.page_size_param.clone(), page_size.to_string()));
                    let body = client.read(&request).await?;
                    let decode_error =
                        |detail: String| ApiError::Decode { method: request.verb, url: client.url(&request), detail };
                    let rows = match body.get(&object_key) {
                        Some(Value::Array(rows)) => rows.clone(),
                        _ => {
                            return Err(decode_error(format!("no `{object_key}` array in the body")));
                        }
                    };
                    let pages = body.get(&pagination.response_pages).and_then(Value::as_u64);
                    let results = body.get("results").and_then(Value::as_u64);
                    Ok((rows, Shape { pages, results }))
                }
            }
        };
        let first = fetch(1);
        stream::once(first)
            .map(move |first| match first {
                Err(e) => stream::iter([Err(e)]).boxed(),
                Ok((rows, shape)) => {
                    // A missing page count means one page; `pages: 0` is the empty result.
                    let mut last = shape.pages.unwrap_or(1).max(1);
                    if let Some(max) = max_rows {
                        last = last.min((max as u64).div_ceil(page_size as u64).max(1));
                    }
                    progress.pages(last);
                    progress.page_done();
                    let fetch = fetch.clone();
                    let rest = stream::iter(2..=last)
                        .map(move |page| {
                            let fetched = fetch(page);
                            async move {
                                let (rows, later) = fetched.await?;
                                // Rows created or deleted since page 1 shift the pages: some
                                // rows would be read twice or never (linode_api4 checks this too).
                                match later == shape {
                                    true => Ok(rows),
                                    false => Err(ApiError::Changed { page, before: shape, after: later }),
                                }
                            }
                        })
                        .buffered(PAGE_CONCURRENCY);
                    // The bar lives as long as the stream of pages.
                    let progress = progress.clone();
                    stream::iter([Ok(rows)])
                        .chain(rest.map_ok(move |rows| {
                            progress.page_done();
                            rows
                        }))
                        .boxed()
                }
            })
            .flatten()
            .boxed()
    }
}

/// Redirects are followed within the API's origin only: the token must not travel to
/// another host, port or scheme, so such a redirect is answered as it came.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let origin = |url: &reqwest::Url| {
            (url.scheme().to_string(), url.host_str().map(str::to_string), url.port_or_known_default())
        };
        let same = attempt.previous().first().is_some_and(|first| origin(first) == origin(attempt.url()));
        match same && attempt.previous().len() < 10 {
            true => attempt.follow(),
            false => attempt.stop(),
        }
    })
}

struct Failure {
    retryable: bool,
    retry_after: Option<Duration>,
    error: ApiError,
}

/// An upload URL is a credential (a signature in its query, or a secret in its path): only
/// its host may appear in messages.
fn redact_upload_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!("{}://{}/… (the upload URL)", parsed.scheme(), parsed.host_str().unwrap_or("?")),
        Err(_) => "the upload URL".into(),
    }
}

fn error_items(body: &Value) -> Vec<ErrorItem> {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| ErrorItem {
                    reason: e.get("reason").and_then(Value::as_str).unwrap_or("(no reason given)").to_string(),
                    field: e.get("field").and_then(Value::as_str).map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    // reqwest's outermost message says only that the request failed; its causes say why.
    let mut parts: Vec<String> = vec![error.to_string()];
    parts.retain(|p| !p.starts_with("error sending request"));
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
