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
use super::wire::{ApiError, Caller, bearer};
use super::{clock, images, instances};

/// The resources with handlers of their own: they belong to accounts and change over time.
const OWN_HANDLERS: [&str; 3] = ["linode.images.images", "linode.linode.instances", "linode.linode.disks"];

/// The router, or why the provider files cannot be served.
pub fn router(app: App) -> Result<Router, String> {
    let reads = Arc::new(Reads::new(app.registry.clone(), &OWN_HANDLERS)?);
    let described = |name: &str| app.registry.resources().any(|(_, _, r)| r.full_name == name);
    let mut api: Vec<(&str, MethodRouter<App>)> = Vec::new();
    if described("linode.images.images") {
        api.push(("/images", any(images::collection)));
        api.push(("/images/{*rest}", any(images::member)));
    }
    if described("linode.linode.instances") {
        api.push(("/linode/instances", get(instances::list_instances)));
        api.push(("/linode/instances/{id}", any(instances::instance)));
    }
    if described("linode.linode.disks") {
        api.push(("/linode/instances/{id}/disks", get(instances::list_disks)));
        api.push(("/linode/instances/{id}/disks/{disk}", get(instances::disk)));
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
    // Unlimited image lists still count, against the general limit, for the headers.
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
        ApiError::too_many_requests(reset.saturating_sub(now).max(1)).into_response()
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
            "bytes": axum::body::HttpBody::size_hint(response.body()).exact(),
        });
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        // The log is a diagnostic aid: a full disk must not fail the request.
        let _ = writeln!(file, "{line}").and_then(|_| file.flush());
    }
    response
}
