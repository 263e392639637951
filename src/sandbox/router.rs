//! The sandbox's HTTP surface: which handler answers which path, and what every request goes
//! through (latency, rate limits, injected faults, common headers, a JSON body on every
//! response, the access log). The handlers of images, instances and disks are mounted when
//! the provider registry describes those resources; every other path goes to the generic
//! reads, which answer what the registry describes or 404.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post, put};
use serde_json::json;

use super::app::App;
use super::generic::Reads;
use super::wire::{ApiError, Caller, Reply, bearer, ok};
use super::{clock, deploy, fault, images, instances};

/// The resources with handlers of their own: they belong to accounts and change over time.
const OWN_HANDLERS: [&str; 3] = ["linode.images.images", "linode.linode.instances", "linode.linode.disks"];

/// The resource the sandbox records as images change, served by the generic reads.
const EVENTS: &str = "linode.account.events";

/// The router, or why the provider files cannot be served.
pub fn router(app: App) -> Result<Router, String> {
    let events = app.clone();
    let reads = Reads::new(app.registry.clone(), &OWN_HANDLERS)?.with_source(
        EVENTS,
        Box::new(move |caller: &Caller| {
            let account = caller.account()?;
            Ok(events.read(|s| s.visible_events(account)))
        }),
    )?;
    let reads = Arc::new(reads);
    let described = |name: &str| app.registry.resolve(name).is_ok();
    let mut api: Vec<(&str, MethodRouter<App>)> = Vec::new();
    if described("linode.images.images") {
        api.push(("/images", any(images::collection)));
        api.push(("/images/{*rest}", any(images::member)));
    }
    if described("linode.linode.instances") {
        api.push(("/linode/instances", get(instances::list_instances).post(deploy::create_instance)));
        api.push(("/linode/instances/{id}", any(instances::instance)));
        api.push(("/linode/instances/{id}/rebuild", post(deploy::rebuild)));
    }
    if described("linode.linode.disks") {
        api.push(("/linode/instances/{id}/disks", get(instances::list_disks).post(deploy::create_disk)));
        api.push(("/linode/instances/{id}/disks/{disk}", get(instances::disk)));
    }
    api.push(("/profile", get(profile)));
    api.push(("/account/events/{id}/seen", post(deploy::mark_seen)));
    if described("linode.regions.availability") {
        api.push(("/regions/{id}/availability", get(deploy::region_availability)));
    }
    let mut router = Router::new();
    for prefix in ["/v4", "/v4beta"] {
        for (path, handler) in &api {
            router = router.route(&format!("{prefix}{path}"), handler.clone());
        }
    }
    if described("linode.images.images") {
        router = router.route("/sandbox-uploads/{secret}", put(images::receive_upload));
    }
    let generic = move |caller: Result<Caller, ApiError>, method: Method, uri: Uri, headers: HeaderMap| {
        let reads = reads.clone();
        async move { reads.serve(caller, &method, &uri, &headers) }
    };
    Ok(router
        .route("/sandbox/clock", post(clock::advance_clock).get(clock::clock))
        .fallback(generic)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(app.clone(), every_request))
        .with_state(app))
}

/// `GET /profile`: who the token belongs to, as the API's profile answers it.
async fn profile(State(app): State<App>, caller: Result<Caller, ApiError>) -> Reply {
    let account = caller?.account()?;
    let username = app.read(|s| s.accounts[account].username.clone());
    Ok(ok(json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "restricted": false,
        "two_factor_auth": false,
        "timezone": "UTC",
        "uid": account + 1,
    })))
}

/// Longest request target (path and query) answered.
const MAX_URI_BYTES: usize = 8 * 1024;
/// Most headers, and most header bytes, a request may carry.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// A 414 or 431 in the API's envelope for a request too large to consider.
fn oversized(request: &Request) -> Option<ApiError> {
    if request.uri().to_string().len() > MAX_URI_BYTES {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("The request target is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    (headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES).then(|| {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("A request may carry at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes of them"),
        )
    })
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
    if let Some(refusal) = oversized(&request) {
        return refusal.into_response();
    }
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
    // Unlimited image lists still count, against the general limit, for the headers.
    let (limit, enforced) = match (is_list, app.options.rate_limit_list) {
        (true, Some(n)) => (n, true),
        (true, None) => (general, false),
        (false, _) => (general, true),
    };
    let account = match bearer(request.headers()) {
        Ok(Some(token)) if !token.is_empty() => app.account_for(&token),
        _ => None,
    };
    let caller = match account {
        Some(account) => format!("account:{account}"),
        None => format!("ip:{}", peer.ip()),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (remaining, reset) = match is_api {
        true => app.limiter.lock().unwrap_or_else(|e| e.into_inner()).take(caller, is_list, limit, enforced, now),
        false => (Some(limit), now),
    };

    let (page, page_size) = fault::paging(query.as_deref().filter(|_| method == Method::GET));
    let fault = is_api.then(|| app.options.faults.pick(request.headers(), page)).flatten();
    let mut response = if remaining.is_none() {
        ApiError::too_many_requests(reset.saturating_sub(now).max(1)).into_response()
    } else if let Some(answer) = match fault {
        Some(fault) => app.options.faults.before(fault).await,
        None => None,
    } {
        answer
    } else {
        let response = next.run(request).await;
        match fault {
            Some(fault) => fault::after(fault, response, page_size).await,
            None => response,
        }
    };

    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        // Real clients call .json() on every body, so nothing may leave without one.
        let reason = response.status().canonical_reason().unwrap_or("Error").to_string();
        response = ApiError::new(response.status(), reason).into_response();
    }
    let headers = response.headers_mut();
    // The sandbox's clock, which tests move forward, is the API's time.
    let date = app.read(|state| state.now()).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(date) = HeaderValue::from_str(&date) {
        headers.insert(header::DATE, date);
    }
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
            // Whose token the request carried (never the token itself).
            "account": account.map(|a| app.read(|state| state.accounts[a].name.clone())),
            "query": query,
            "x_filter": x_filter,
            "status": response.status().as_u16(),
            "ms": started.elapsed().as_millis() as u64,
            "bytes": axum::body::HttpBody::size_hint(response.body()).exact(),
        });
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        // The log is a diagnostic aid: a full disk must not fail the request.
        let _ = writeln!(file, "{line}").and_then(|_| file.flush());
    }
    response
}
