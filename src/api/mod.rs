/*! The HTTP client: bearer auth, retries of idempotent reads, error reporting and paging,
within the API's rate limits ([`budget`]) and through a response cache ([`cache`]) that the
clients of a process share.

Errors name the request (method and URL) and what the user can do about them; the token
never appears in any of them. Progress goes to a [`Progress`] callback. */

pub mod budget;
pub mod cache;
mod error;
mod page;
pub mod progress;
mod retry;

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::provider::{HttpVerb, Pagination, RateLimits, encode_segment};
use budget::{Class, RateBudget, Reported};
use cache::{Key, ResponseCache};
pub use error::{ApiError, ErrorItem, Shape};
use error::{error_chain, error_items, redact_upload_url};
pub use page::Page;
pub use progress::{Event, Progress};
use retry::{Failure, READ_ATTEMPTS};

/// Pages in flight at once after the first one: as many as the rate budget lets go, up to
/// this bound on connections and on the memory of pages not yet decoded.
const PAGE_CONCURRENCY: usize = 24;
/// Reads of a page that disagrees with page 1 before the list is taken to have changed.
const PAGE_REREADS: u32 = 2;
/// How long a cached response is reused unless the session says otherwise.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long one API call may take, response body included, unless the session says otherwise.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// What a failed change's error adds when its answer was lost after it was sent.
const UNKNOWN_OUTCOME: &str =
    "The request was sent, so the change may have happened: changes are never retried; check before sending it again";

/// A secret that never shows up in `Debug` output.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(value: String) -> Option<Token> {
        (!value.trim().is_empty()).then(|| Token(value.trim().to_string()))
    }

    /// Tells tokens apart within this process, and means nothing outside it.
    pub fn fingerprint(&self) -> u64 {
        IDENTITY_KEYS.hash_one(&self.0)
    }
}

/// Hashes with keys drawn once per process: a token's hash tells tokens apart within the
/// process and means nothing outside it.
static IDENTITY_KEYS: LazyLock<std::collections::hash_map::RandomState> = LazyLock::new(Default::default);

/// What the clients of a process share, so that sessions over one engine (the statements of
/// a script, the connections of a server) reuse each other's reads and respect one budget.
#[derive(Debug, Clone)]
pub struct Shared {
    pub cache: Arc<ResponseCache>,
    pub budget: Arc<RateBudget>,
}

impl Shared {
    /// Responses kept for `cache_ttl` (zero: none).
    pub fn new(cache_ttl: Duration) -> Shared {
        Shared { cache: Arc::new(ResponseCache::new(cache_ttl)), budget: Arc::default() }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(DEFAULT_CACHE_TTL)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// A request relative to the API base: `path` is already encoded.
#[derive(Debug, Clone)]
pub struct Request {
    pub verb: HttpVerb,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// A page of a paginated listing, for the rate-limit classes.
    pub listing: bool,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(HttpVerb::Get, path, None)
    }

    pub fn new(verb: HttpVerb, path: impl Into<String>, body: Option<Value>) -> Request {
        Request { verb, path: path.into(), query: vec![], headers: vec![], body, listing: false }
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
    /// What errors call the API base: the URL, or nothing for clients that must not learn it
    /// (a server's remote clients), whose errors name the path alone.
    shown_base: String,
    token: Option<Token>,
    /// Where the token came from (an environment variable, a connection's password), for hints.
    token_source: String,
    progress: Progress,
    /// The API base and token, hashed: whose cache entries and budget these are.
    identity: u64,
    rate_limits: Option<RateLimits>,
    shared: Shared,
    timeout: Duration,
    usage: std::sync::Mutex<Usage>,
}

/// What a client has sent so far, for `SHOW ACCOUNTS`.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub requests: u64,
    pub failed: u64,
    /// The last failure, while no request has succeeded since.
    pub failing: Option<String>,
    /// Requests the general rate limit allows this minute; `None` without a known limit.
    pub budget_left: Option<u32>,
    /// The API's time at its last answer (its `Date` header).
    pub server_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// The HTTP clients (connections, TLS configuration) the API clients of a session share:
/// the accounts of a set cost one, not one each. Tokens go with each request, never with a
/// client.
#[derive(Clone)]
pub struct Http {
    proxied: reqwest::Client,
    /// Plain http is only allowed to this machine: a proxy (HTTP_PROXY) would see the token.
    direct: reqwest::Client,
}

impl Http {
    pub fn new() -> Http {
        Http { proxied: http_client(false), direct: http_client(true) }
    }
}

impl Default for Http {
    fn default() -> Http {
        Http::new()
    }
}

fn http_client(direct: bool) -> reqwest::Client {
    // No overall timeout on the client: an upload may take hours. API calls set their own.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("imageql/", env!("CARGO_PKG_VERSION")))
        .redirect(same_origin_redirects());
    let http = if direct { http.no_proxy() } else { http };
    http.build().expect("the TLS backend initialises")
}

impl ApiClient {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: &Http,
        base_url: &str,
        token: Option<Token>,
        token_source: &str,
        rate_limits: Option<RateLimits>,
        progress: Progress,
        shared: Shared,
        timeout: Duration,
    ) -> ApiClient {
        let http = match base_url.starts_with("http://") {
            true => http.direct.clone(),
            false => http.proxied.clone(),
        };
        let base_url = base_url.trim_end_matches('/').to_string();
        let identity = IDENTITY_KEYS.hash_one((&base_url, token.as_ref().map(|Token(t)| t)));
        ApiClient {
            http,
            shown_base: base_url.clone(),
            base_url,
            token,
            token_source: token_source.to_string(),
            progress,
            identity,
            rate_limits,
            shared,
            timeout,
            usage: Default::default(),
        }
    }

    /// What the client has sent so far and the rate budget it has left.
    pub fn usage(&self) -> Usage {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        usage.budget_left = self.rate_limits.as_ref().map(|limits| {
            let general = Class { name: "general".into(), per_minute: limits.per_minute };
            self.shared.budget.left(self.identity, &general)
        });
        usage
    }

    /// The client as a server's remote clients see it: errors name the API's paths but not
    /// where it is.
    pub fn hiding_base(mut self) -> ApiClient {
        self.shown_base = String::new();
        self
    }

    /// The API base as errors show it; empty when it is hidden.
    pub fn shown_base(&self) -> &str {
        &self.shown_base
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn url(&self, request: &Request) -> String {
        format!("{}{}", self.base_url, request.path_and_query())
    }

    /// The request's URL as errors name it.
    fn shown_url(&self, request: &Request) -> String {
        format!("{}{}", self.shown_base, request.path_and_query())
    }

    /// Whether the API accepts the token: a GET of `path` answered with anything but 401
    /// (403 and 404 come from a token the API knows).
    pub async fn accepts_token(&self, path: &str) -> Result<bool, ApiError> {
        match self.read_body(&Request::get(path)).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(401) => Ok(false),
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s) && s != 429) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Sends a request once: changes are never retried, so that a failure never hides a
    /// change that happened anyway.
    pub async fn send(&self, request: &Request) -> Result<Value, ApiError> {
        let body = self.send_once(request, 1).await.map_err(|failure| failure.error)?;
        let body = json_body(body).map_err(|unusable| self.unusable(request, unusable, 1).error)?;
        self.parse(request, &body)
    }

    /// Sends an idempotent read, retrying throttling, server errors and network failures.
    /// Never answered from the cache: for reads that must see the API as it is now.
    pub async fn read(&self, request: &Request) -> Result<Value, ApiError> {
        let body = self.read_body(request).await?;
        self.parse(request, &body)
    }

    /// [`ApiClient::read`], answered from the cache while a fresh answer is there, and sent
    /// once for concurrent identical reads.
    pub async fn read_cached(self: &Arc<Self>, request: &Request) -> Result<Value, ApiError> {
        let body = self.read_cached_body(request).await?;
        self.parse(request, &body)
    }

    async fn read_cached_body(self: &Arc<Self>, request: &Request) -> Result<Bytes, ApiError> {
        let client = Arc::clone(self);
        let owned = request.clone();
        self.shared
            .cache
            .get_or_fetch(self.cache_key(request), move || async move { client.read_body(&owned).await }.boxed())
            .await
    }

    /// Whether [`ApiClient::read_cached`] would answer `request` without sending it.
    pub fn is_cached(&self, request: &Request) -> bool {
        self.shared.cache.get(&self.cache_key(request)).is_some()
    }

    /// Drops every cached answer to this token: a change may have made any of them stale.
    pub fn forget_reads(&self) {
        self.shared.cache.forget(self.identity);
    }

    fn cache_key(&self, request: &Request) -> Key {
        let filter = request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("x-filter")).map(|(_, v)| v.clone());
        Key { client: self.identity, request: format!("{} {}", request.verb, request.path_and_query()), filter }
    }

    fn parse(&self, request: &Request, body: &Bytes) -> Result<Value, ApiError> {
        serde_json::from_slice(body).map_err(|_| ApiError::Decode {
            method: request.verb,
            url: self.shown_url(request),
            detail: "the body is not JSON".into(),
        })
    }

    /// The body of an idempotent read, after retries.
    async fn read_body(&self, request: &Request) -> Result<Bytes, ApiError> {
        self.read_checked(request, json_body).await
    }

    /// An idempotent read, after retries, its body made into what `usable` makes of it: a
    /// body that is not JSON was cut short on the way, and is asked for again.
    async fn read_checked<T>(
        &self,
        request: &Request,
        usable: impl Fn(Bytes) -> Result<T, Unusable>,
    ) -> Result<T, ApiError> {
        let mut attempt = 1;
        loop {
            let sent = self.send_once(request, READ_ATTEMPTS).await;
            match sent.and_then(|body| usable(body).map_err(|unusable| self.unusable(request, unusable, READ_ATTEMPTS)))
            {
                Ok(body) => return Ok(body),
                Err(failure) => match retry::next_wait(&failure, attempt, self.rate_limits.is_some()) {
                    Some(wait) => {
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    None => return Err(failure.error),
                },
            }
        }
    }

    /// The rate-limit classes a request counts against: the general limit, and the first
    /// class of the provider file it belongs to.
    fn classes(&self, request: &Request) -> Vec<Class> {
        let Some(limits) = &self.rate_limits else { return vec![] };
        let mut classes = vec![Class { name: "general".into(), per_minute: limits.per_minute }];
        if let Some(class) = limits.class_for(request.verb, &request.path, request.listing) {
            classes.push(Class { name: class.name.clone(), per_minute: class.per_minute });
        }
        classes
    }

    /// One attempt, within the rate budget; `attempts` is how many the caller makes in all,
    /// for the hints. A success is the body as it arrived.
    async fn send_once(&self, request: &Request, attempts: u32) -> Result<Bytes, Failure> {
        let sent = self.attempt(request, attempts).await;
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.requests += 1;
        match &sent {
            Ok(_) => usage.failing = None,
            Err(failure) => {
                usage.failed += 1;
                usage.failing = Some(failure.error.to_string());
            }
        }
        sent
    }

    async fn attempt(&self, request: &Request, attempts: u32) -> Result<Bytes, Failure> {
        let classes = self.classes(request);
        self.shared.budget.acquire(self.identity, &classes, &self.progress).await;
        let url = self.url(request);
        let shown = self.shown_url(request);
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
                url: shown.clone(),
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
        if let Some(date) = response.headers().get("date").and_then(|d| d.to_str().ok())
            && let Ok(date) = chrono::DateTime::parse_from_rfc2822(date)
        {
            self.usage.lock().unwrap_or_else(|e| e.into_inner()).server_time = Some(date.to_utc());
        }
        let retry_after = header_number(response.headers(), "retry-after").map(Duration::from_secs);
        // The headers speak of the most specific limit the request falls under.
        if let Some(class) = classes.last() {
            let reported = Reported {
                limit: header_number(response.headers(), "x-ratelimit-limit").map(|n| n as u32),
                remaining: header_number(response.headers(), "x-ratelimit-remaining").map(|n| n as u32),
                reset: header_number(response.headers(), "x-ratelimit-reset"),
            };
            self.shared.budget.observe(self.identity, class, reported);
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.shared.budget.pause(self.identity, class, retry_after.unwrap_or(Duration::from_secs(1)));
            }
        }
        let bytes = response.bytes().await.map_err(|e| Failure {
            retryable: true,
            retry_after: None,
            error: ApiError::Network {
                method: request.verb,
                url: shown.clone(),
                detail: error_chain(&e.without_url()),
                hint: unknown_outcome.clone(),
            },
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let errors = body.as_ref().map(error_items).unwrap_or_default();
        let retryable = retry::retryable_status(status.as_u16());
        Err(Failure {
            retryable,
            retry_after,
            error: ApiError::Status {
                method: request.verb,
                url: shown,
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

    /// The failure of a request whose successful response cannot be used; `attempts` as for
    /// [`ApiClient::hint`].
    fn unusable(&self, request: &Request, unusable: Unusable, attempts: u32) -> Failure {
        // A change whose answer was lost may have happened all the same.
        let unknown_outcome = match attempts {
            1 => format!(". {UNKNOWN_OUTCOME}"),
            _ => String::new(),
        };
        let (retryable, detail) = match unusable {
            Unusable::NotJson(length) => (true, format!("the body is not JSON ({length} bytes){unknown_outcome}")),
            Unusable::Shape(detail) => (false, detail),
        };
        Failure {
            retryable,
            retry_after: None,
            error: ApiError::Decode { method: request.verb, url: self.shown_url(request), detail },
        }
    }

    fn hint(&self, status: StatusCode, attempts: u32) -> Option<String> {
        retry::advice(status.as_u16(), attempts, self.token.is_some(), &self.token_source)
    }

    /// The first page of a listing, from the cache when it has it.
    pub async fn first_page(self: &Arc<Self>, listing: &Listing) -> Result<Page, ApiError> {
        self.page(listing, 1).await
    }

    /// The first page of a listing if the cache has it.
    pub fn cached_first_page(&self, listing: &Listing) -> Option<Page> {
        let body = self.shared.cache.get(&self.cache_key(&listing.page_request(1)))?;
        listing.parse(body).ok()
    }

    /// A page through the cache. A page read from the API is parsed once, as the check of
    /// its body; a cached one when it is taken from the cache.
    async fn page(self: &Arc<Self>, listing: &Listing, number: u64) -> Result<Page, ApiError> {
        let request = listing.page_request(number);
        if !listing.cached {
            return self.read_checked(&request, |body| listing.parse(body)).await;
        }
        let fetched: Arc<std::sync::Mutex<Option<Page>>> = Arc::default();
        let (client, owned, listing_owned, slot) =
            (Arc::clone(self), request.clone(), listing.clone(), Arc::clone(&fetched));
        let fetch = move || {
            async move {
                let page = client.read_checked(&owned, |body| listing_owned.parse(body)).await?;
                let body = page.body().clone();
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(page);
                Ok(body)
            }
            .boxed()
        };
        let body = self.shared.cache.get_or_fetch(self.cache_key(&request), fetch).await?;
        if let Some(page) = fetched.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(page);
        }
        listing.parse(body).map_err(|unusable| self.unusable(&request, unusable, READ_ATTEMPTS).error)
    }

    /// Every page of a listing, in the API's order, its rows not yet parsed; `first` when
    /// the caller has read page 1 already. Page 1 tells how many there are; the rest are
    /// fetched concurrently (as the rate budget allows) and yielded in order. Pages come
    /// from the cache when it has them.
    pub fn pages(
        self: &Arc<Self>,
        listing: Listing,
        first: Option<Page>,
    ) -> BoxStream<'static, Result<Page, ApiError>> {
        let progress = Arc::new(self.progress.scan(&listing.request.path));
        let client = Arc::clone(self);
        let first = async move {
            match first {
                Some(page) => Ok(page),
                None => client.first_page(&listing).await,
            }
            .map(|page| (page, listing))
        };
        let client = Arc::clone(self);
        stream::once(first)
            .map(move |first| match first {
                Err(e) => stream::iter([Err(e)]).boxed(),
                Ok((first, listing)) => {
                    let shape = first.shape;
                    let last = listing.last_page(&first);
                    progress.pages(last);
                    progress.page_done();
                    let mut listing = listing;
                    listing.cached = client.shared.cache.holds(first.body().len() as u64 * last);
                    let (client, listing) = (client.clone(), Arc::new(listing));
                    let rest = stream::iter(2..=last)
                        .map(move |number| {
                            let (client, listing) = (client.clone(), listing.clone());
                            let (fetcher, fetched) = (client.clone(), listing.clone());
                            // Each page is received and parsed on its own task, in parallel.
                            let page = on_own_task(async move { fetcher.page(&fetched, number).await });
                            async move {
                                let page = page.await?;
                                client.page_of_shape(&listing, number, page, shape).await
                            }
                        })
                        .buffered(PAGE_CONCURRENCY);
                    // The bar lives as long as the stream of pages.
                    let progress = progress.clone();
                    stream::iter([Ok(first)])
                        .chain(rest.map_ok(move |page| {
                            progress.page_done();
                            page
                        }))
                        .boxed()
                }
            })
            .flatten()
            .boxed()
    }

    /// `page` (number `number`) when it tells of the same list as page 1 (`shape`). Rows
    /// created or deleted since page 1 shift the pages: some rows would be read twice or
    /// never (linode_api4 checks this too). A page that disagrees is read again, as its answer
    /// may have been a passing fault; when it still disagrees the list changed, and nothing
    /// read of it may be reused.
    async fn page_of_shape(&self, listing: &Listing, number: u64, page: Page, shape: Shape) -> Result<Page, ApiError> {
        let mut page = page;
        for _ in 0..PAGE_REREADS {
            if page.shape == shape {
                return Ok(page);
            }
            self.forget_reads();
            page = self.read_checked(&listing.page_request(number), |body| listing.parse(body)).await?;
        }
        if page.shape == shape {
            return Ok(page);
        }
        self.forget_reads();
        Err(ApiError::Changed { page: number, before: shape, after: page.shape })
    }

    /// Whether every page [`ApiClient::pages`] would read is in the cache.
    pub fn listing_is_cached(&self, listing: &Listing) -> bool {
        let Some(first) = self.cached_first_page(listing) else { return false };
        (2..=listing.last_page(&first)).all(|page| self.is_cached(&listing.page_request(page)))
    }

    /// Every page of a listing, when the cache has them all and they tell of one list.
    pub fn cached_pages(&self, listing: &Listing) -> Option<Vec<Page>> {
        let first = self.cached_first_page(listing)?;
        let mut pages = vec![];
        for number in 2..=listing.last_page(&first) {
            let body = self.shared.cache.get(&self.cache_key(&listing.page_request(number)))?;
            let page = listing.parse(body).ok()?;
            (page.shape == first.shape).then_some(())?;
            pages.push(page);
        }
        pages.insert(0, first);
        Some(pages)
    }
}

/// Runs `work` as a task of its own, stopped when its result is no longer wanted.
fn on_own_task<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> impl Future<Output = Result<T, ApiError>> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(work);
    let guard = AbortOnDrop(task.abort_handle());
    async move {
        let _guard = guard;
        match task.await {
            Ok(result) => result,
            Err(failure) => match failure.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Cancelled: only by the guard or by a runtime shutting down, with nobody waiting.
                Err(_) => std::future::pending().await,
            },
        }
    }
}

/// A paginated read: the request without its paging parameters, and how to page it.
#[derive(Debug, Clone)]
pub struct Listing {
    request: Request,
    pagination: Pagination,
    page_size: u32,
    /// The key of the rows' array in each page.
    object_key: String,
    /// Fetching stops once this many rows are certain to have arrived.
    max_rows: Option<usize>,
    /// Whether pages after the first go through the cache: not when the listing is larger
    /// than the cache holds.
    cached: bool,
}

impl Listing {
    pub fn new(
        request: Request,
        pagination: Pagination,
        page_size: u32,
        object_key: &str,
        max_rows: Option<usize>,
    ) -> Self {
        Listing { request, pagination, page_size, object_key: object_key.to_string(), max_rows, cached: true }
    }

    fn page_request(&self, page: u64) -> Request {
        let mut request = self.request.clone();
        request.query.push((self.pagination.page_param.clone(), page.to_string()));
        request.query.push((self.pagination.page_size_param.clone(), self.page_size.to_string()));
        request.listing = true;
        request
    }

    /// A page of this listing from its body.
    fn parse(&self, body: Bytes) -> Result<Page, Unusable> {
        match Page::parse(body.clone(), &self.object_key, &self.pagination.response_pages) {
            Some(page) => Ok(page),
            None => match json_body(body) {
                Ok(_) => Err(Unusable::Shape(format!("no `{}` array in the body", self.object_key))),
                Err(not_json) => Err(not_json),
            },
        }
    }

    /// The last page to read: the API's page count, or fewer when `max_rows` are enough.
    pub fn last_page(&self, first: &Page) -> u64 {
        // A missing page count means one page; `pages: 0` is the empty result.
        let last = first.shape.pages.unwrap_or(1).max(1);
        match self.max_rows {
            Some(max) => last.min((max as u64).div_ceil(self.page_size as u64).max(1)),
            None => last,
        }
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

/// A response header that holds a whole number.
fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// Why the body of a successful response cannot be used.
enum Unusable {
    /// Not JSON, of this many bytes: most likely cut short on the way.
    NotJson(usize),
    /// JSON, but not of the shape expected.
    Shape(String),
}

fn json_body(body: Bytes) -> Result<Bytes, Unusable> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => Ok(body),
        Err(_) => Err(Unusable::NotJson(body.len())),
    }
}
