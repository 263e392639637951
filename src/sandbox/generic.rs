//! Registry-driven reads: every GET method of a resource that has no handler of its own is
//! served from the seed rows of its service (`<service>.seed.json`, see `docs/providers.md`),
//! so a read-only resource needs a YAML file and a seed file, and no Rust.
//!
//! A method whose description has an `objectKey` lists: the rows under that key, in the API's
//! paginated envelope when it is `paginated`, filtered by X-Filter when it is `filtered`.
//! Without one it reads one row, 404 in the API's envelope when there is none. The path's
//! parameters pick the rows: a parameter with a `column` matches that field, one without (the
//! `linodeId` of disks) matches the key of the same name that seed rows carry, which is left
//! out of the answers. The routes are matched here rather than by axum, so that provider files
//! cannot make two routes conflict.
//!
//! A resource whose rows the sandbox keeps itself (per account, changing as images change, like
//! the account's events) has a [`RowSource`] instead of seed rows, and is served the same way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use super::wire::{ApiError, Caller, EmptyList, Reply, filtered, list, ok, x_filter};
use crate::provider::{HttpVerb, Registry, Row, seed_params};
use crate::xfilter::XFilter;

/// The prefixes the API is served under.
const PREFIXES: [&str; 2] = ["/v4", "/v4beta"];

enum Segment {
    Literal(String),
    Param(String),
}

/// A GET method and the path it answers.
struct Route {
    provider: String,
    service: String,
    resource: String,
    method: String,
    segments: Vec<Segment>,
}

/// The rows of a resource for a caller, where they come from the sandbox's state.
pub type RowSource = Box<dyn Fn(&Caller) -> Result<Vec<Row>, ApiError> + Send + Sync>;

/// The generic read routes of a registry.
pub struct Reads {
    registry: Arc<Registry>,
    routes: Vec<Route>,
    /// By full resource name.
    sources: HashMap<String, RowSource>,
}

/// Refuses seed rows for a resource the sandbox keeps itself: they would never be served.
fn refuse_seed_rows(registry: &Registry, full_name: &str) -> Result<(), String> {
    for (provider, service, resource) in registry.resources().filter(|(_, _, r)| r.full_name == full_name) {
        if service.seed.resources().any(|r| r == resource.name) {
            return Err(format!(
                "the seed file of service {}.{} has rows for {}, which the sandbox keeps on its own, per account; remove them",
                provider.id, service.id, resource.full_name
            ));
        }
    }
    Ok(())
}

impl Reads {
    /// Routes for the GET methods of every resource but `own` (full names of the resources with
    /// handlers of their own), whose seed rows would never be served and are refused.
    pub fn new(registry: Arc<Registry>, own: &[&str]) -> Result<Reads, String> {
        let mut routes = Vec::new();
        for (provider, service, resource) in registry.resources() {
            if own.contains(&resource.full_name.as_str()) {
                refuse_seed_rows(&registry, &resource.full_name)?;
                continue;
            }
            for (name, method) in resource.methods.iter().filter(|(_, m)| m.verb == HttpVerb::Get) {
                let path = method.path.to_string();
                let segments = path
                    .split('/')
                    .skip(1)
                    .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(param) => Segment::Param(param.to_string()),
                        None => Segment::Literal(s.to_string()),
                    })
                    .collect();
                routes.push(Route {
                    provider: provider.id.clone(),
                    service: service.id.clone(),
                    resource: resource.name.clone(),
                    method: name.clone(),
                    segments,
                });
            }
        }
        // Where a literal and a parameter could both match (`/volumes/summary`, `/volumes/{id}`),
        // the literal wins; otherwise the first method in name order does.
        routes.sort_by_cached_key(|r| r.segments.iter().map(|s| matches!(s, Segment::Param(_))).collect::<Vec<_>>());
        Ok(Reads { registry, routes, sources: HashMap::new() })
    }

    /// Serves the rows of `resource` (a full name) from `source` rather than from seed rows.
    pub fn with_source(mut self, resource: &str, source: RowSource) -> Result<Reads, String> {
        refuse_seed_rows(&self.registry, resource)?;
        self.sources.insert(resource.to_string(), source);
        Ok(self)
    }

    /// The route that answers a request path, with the values of its parameters (decoded).
    fn find(&self, path: &str) -> Option<(&Route, Vec<(&str, String)>)> {
        let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p).filter(|r| r.starts_with('/')))?;
        let rest = rest.strip_suffix('/').filter(|r| !r.is_empty()).unwrap_or(rest);
        let parts: Vec<String> = rest
            .split('/')
            .skip(1)
            .map(|s| percent_decode_str(s).decode_utf8().map(|s| s.into_owned()))
            .collect::<Result<_, _>>()
            .ok()?;
        self.routes.iter().find_map(|route| {
            if route.segments.len() != parts.len() {
                return None;
            }
            let mut bound = Vec::new();
            for (segment, part) in route.segments.iter().zip(&parts) {
                match segment {
                    Segment::Literal(text) if text == part => {}
                    Segment::Literal(_) => return None,
                    Segment::Param(name) => bound.push((name.as_str(), part.clone())),
                }
            }
            Some((route, bound))
        })
    }

    /// Answers a request no handler of its own took: a generic read, or 404.
    pub fn serve(&self, caller: Result<Caller, ApiError>, method: &Method, uri: &Uri, headers: &HeaderMap) -> Reply {
        let (route, bound) = self.find(uri.path()).ok_or_else(ApiError::not_found)?;
        // Seed rows are public, but a token the sandbox does not know is refused, as everywhere.
        let caller = caller?;
        if *method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        let (provider, resource) =
            self.registry.resource(&route.provider, &route.service, &route.resource).expect("routes come from it");
        let described = &resource.methods[&route.method];
        let column = |param: &str| {
            let declared = described.params.iter().find(|p| p.name == param);
            declared.and_then(|p| p.column.clone()).unwrap_or_else(|| param.to_string())
        };
        let bound: Vec<(String, String)> = bound.into_iter().map(|(param, value)| (column(param), value)).collect();
        let carried: Vec<String> = seed_params(resource).into_iter().map(|p| p.name.clone()).collect();
        let rows = match self.sources.get(&resource.full_name) {
            Some(source) => Cow::Owned(source(&caller)?),
            None => Cow::Borrowed(provider.services[&route.service].seed.rows(&route.resource)),
        };
        let mut rows = rows
            .iter()
            .filter(|row| bound.iter().all(|(key, value)| row.get(key).is_some_and(|v| same(v, value))))
            .map(|row| row.iter().filter(|(k, _)| !carried.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect());
        let Some(key) = &described.object_key else {
            return rows.next().map(|row: Row| ok(Value::Object(row))).ok_or_else(ApiError::not_found);
        };
        let filter = if described.filtered { x_filter(headers, resource)? } else { XFilter::default() };
        let rows: Vec<Row> = rows.collect();
        // Rows under a parent (disks of an instance) exist only for parents the seed knows.
        if rows.is_empty() && !bound.is_empty() {
            return Err(ApiError::not_found());
        }
        if described.paginated {
            return list(rows, &filter, uri.query(), provider.pagination.page_size, key, EmptyList::FirstPage);
        }
        let rows: Vec<Value> = filtered(rows, &filter).into_iter().map(Value::Object).collect();
        Ok(ok(json!({ key: rows })))
    }
}

/// Whether a row's value is the one a path segment gives (`12345` for the number 12345).
fn same(value: &Value, text: &str) -> bool {
    match value {
        Value::String(s) => s == text,
        Value::Number(n) => match n.as_i64() {
            Some(i) => text.parse::<i64>() == Ok(i),
            None => text.parse::<f64>().ok() == n.as_f64(),
        },
        Value::Bool(b) => text == if *b { "true" } else { "false" },
        _ => false,
    }
}
