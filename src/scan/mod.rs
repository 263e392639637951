/*! One DataFusion table per resource in the registry, under `provider.service.resource`.

A scan turns pushed-down predicates into requests (see [`pushdown`]) and streams each
response page into a `RecordBatch` as it arrives. */

mod accounts;
mod decode;
mod dependent;
mod pushdown;

pub use accounts::{ACCOUNT, AccountsInfo, AccountsTable, OnError};
pub use dependent::ParamsFromJoins;

pub use decode::to_batch;
use decode::{Fetched, Rows};

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, Session, TableProvider,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, project_schema};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::prelude::SessionContext;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt, stream};

use crate::api::{ApiClient, ApiError, Listing, Page, Request};
use crate::error::ScanError;
use crate::provider::{
    FilterOp, Kind, Method, NotFound, Param, PathTemplate, Provider, Registry, Resource, SqlVerb, resource_schema,
};
use crate::xfilter::{Filter, XFilter};
use pushdown::{FilterUse, classify};
use serde_json::Value;

/// Requests made at once: lookups of single rows, or lists, one per parameter value.
const CALL_CONCURRENCY: usize = 4;
/// Lookups named one by one in EXPLAIN.
const LOOKUPS_SHOWN: usize = 3;
/// Responses decoded at once.
const DECODERS: usize = 2;

#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Send predicates and limits to the API; off, every scan lists everything.
    pub pushdown: bool,
    /// Rows per page when listing.
    pub page_size: u32,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { pushdown: true, page_size: 500 }
    }
}

/// Registers a catalog per provider, a schema per service and a table per resource.
pub fn register_all(
    ctx: &SessionContext,
    registry: &Registry,
    client_for: impl Fn(&Provider) -> Arc<ApiClient>,
    options: ScanOptions,
) -> Result<()> {
    for provider in registry.providers.values() {
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let api = client_for(provider);
        for service in provider.services.values() {
            let schema = Arc::new(MemorySchemaProvider::new());
            for resource in service.resources.values() {
                let table = ResourceTable::new(provider.clone(), resource.clone(), api.clone(), options);
                schema.register_table(resource.name.clone(), Arc::new(table))?;
            }
            catalog.register_schema(&service.id, schema)?;
        }
        ctx.register_catalog(&provider.id, catalog);
    }
    Ok(())
}

/// Registers the tables of an account set: each resource's table reads every account
/// (`accounts_of` gives each account's client for a provider), with a leading `account` column.
pub fn register_accounts(
    ctx: &SessionContext,
    registry: &Registry,
    accounts_of: impl Fn(&Provider) -> Vec<(String, Arc<ApiClient>)>,
    options: ScanOptions,
    on_error: Arc<OnError>,
    progress: crate::api::Progress,
) -> Result<()> {
    for provider in registry.providers.values() {
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let accounts = accounts_of(provider);
        for service in provider.services.values() {
            let schema = Arc::new(MemorySchemaProvider::new());
            for resource in service.resources.values() {
                let tables = accounts
                    .iter()
                    .map(|(name, api)| {
                        let table = ResourceTable::new(provider.clone(), resource.clone(), api.clone(), options);
                        (name.clone(), Arc::new(table) as Arc<dyn TableProvider>)
                    })
                    .collect();
                let table = AccountsTable::new(resource.full_name.clone(), tables, on_error.clone(), progress.clone());
                schema.register_table(resource.name.clone(), Arc::new(table))?;
            }
            catalog.register_schema(&service.id, schema)?;
        }
        ctx.register_catalog(&provider.id, catalog);
    }
    Ok(())
}

#[derive(Debug)]
pub struct ResourceTable {
    provider: Arc<Provider>,
    resource: Arc<Resource>,
    api: Arc<ApiClient>,
    schema: SchemaRef,
    options: ScanOptions,
}

impl ResourceTable {
    pub fn new(provider: Arc<Provider>, resource: Arc<Resource>, api: Arc<ApiClient>, options: ScanOptions) -> Self {
        let schema = resource_schema(&resource);
        ResourceTable { provider, resource, api, schema, options }
    }

    /// The parameter values and X-Filter conditions of the predicates DataFusion pushed.
    fn bind(&self, filters: &[Expr]) -> Binding {
        let mut binding = Binding::default();
        for filter in filters {
            match self.classify(filter) {
                FilterUse::Bind { param, values } => {
                    if !rechecked(&self.resource, &param, &values) {
                        binding.exact.insert(param.clone());
                    }
                    binding.restrict(param, values)
                }
                FilterUse::Remote { filter, .. } => binding.remote.push(filter),
                FilterUse::Local => {}
            }
        }
        binding
    }

    /// How a predicate is used. Without pushdown only parameter columns are bound: a value
    /// no response carries can only come from the query.
    fn classify(&self, filter: &Expr) -> FilterUse {
        match classify(&self.resource, filter) {
            FilterUse::Bind { param, values } if !self.options.pushdown => {
                let is_param_column = self.resource.param_columns().iter().any(|p| p.name == param);
                if is_param_column { FilterUse::Bind { param, values } } else { FilterUse::Local }
            }
            _ if !self.options.pushdown => FilterUse::Local,
            other => other,
        }
    }
}

/// The rows a select method needs values for before it can be called: parameter values
/// from literals, and the X-Filter conditions of the other predicates.
#[derive(Debug, Clone, Default)]
struct Binding {
    bound: BTreeMap<String, Vec<Value>>,
    /// Parameters bound by a predicate DataFusion does not evaluate again.
    exact: BTreeSet<String>,
    remote: Vec<Filter>,
}

impl Binding {
    /// Several predicates on one parameter: only values all of them allow.
    fn restrict(&mut self, param: String, values: Vec<Value>) {
        match self.bound.get_mut(&param) {
            Some(previous) => {
                let allowed: HashSet<String> = values.iter().map(Value::to_string).collect();
                previous.retain(|v| allowed.contains(&v.to_string()));
            }
            None => {
                self.bound.insert(param, values);
            }
        }
    }
}

/// The select methods' required parameters.
fn required(method: &Method) -> impl Iterator<Item = &Param> {
    method.params.iter().filter(|p| p.required)
}

/// The first select method whose required parameters are all among `given`.
fn method_for(resource: &Resource, given: impl Fn(&str) -> bool) -> Option<&Method> {
    resource.methods_for(SqlVerb::Select).map(|(_, m)| m).find(|m| required(m).all(|p| given(&p.name)))
}

/// The requests of a scan once every parameter it needs has values.
fn plan_calls(resource: &Resource, binding: &Binding, limit: Option<usize>) -> Result<ScanPlan> {
    let Some(method) = method_for(resource, |name| binding.bound.contains_key(name)) else {
        return Err(missing_params(resource, &binding.bound));
    };
    let plan = plan_method(resource, method, binding, limit);
    Ok(match (&plan, listing_instead(resource, binding)) {
        (ScanPlan::Lookup { calls, .. }, Some(listing)) if calls.len() > CALL_CONCURRENCY => {
            ScanPlan::Either { lookups: Box::new(plan), listing }
        }
        _ => plan,
    })
}

/// The requests of `method` for the values in `binding`.
fn plan_method(resource: &Resource, method: &Method, binding: &Binding, limit: Option<usize>) -> ScanPlan {
    let Binding { bound, remote, .. } = binding;
    let mut remote = remote.clone();
    // A bound column the chosen method does not take is checked on the rows instead.
    for (param, values) in bound {
        if !method.params.iter().any(|p| &p.name == param)
            && let Some(column) = row_column(resource, param)
        {
            remote.push(Filter::any(values.iter().map(|v| Filter::cond(column, FilterOp::Eq, v.clone())).collect()));
        }
    }
    let mut calls = vec![ScanCall { path: method.path.clone(), params: vec![] }];
    for param in required(method) {
        let values = &bound[&param.name];
        calls = calls
            .into_iter()
            .flat_map(|call| {
                values.iter().map(move |value| {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let mut call = call.clone();
                    call.path = call.path.fill(&param.name, &text);
                    if param.column.is_none() {
                        call.params.push((param.name.clone(), value.clone()));
                    }
                    call
                })
            })
            .collect();
    }
    let remote = (!remote.is_empty()).then(|| Filter::all(remote));
    if method.paginated {
        let xfilter = remote.filter(|_| method.filtered).map(|filter| XFilter { filter: Some(filter), order: None });
        ScanPlan::List { calls, object_key: method.object_key.clone().unwrap_or_else(|| "data".into()), xfilter, limit }
    } else {
        ScanPlan::Lookup { calls, missing_is_empty: method.not_found == NotFound::Empty, check: remote }
    }
}

/// The column of the rows a select parameter stands for (`imageId` → `id`), if any.
fn row_column<'a>(resource: &'a Resource, param: &str) -> Option<&'a str> {
    resource
        .methods_for(SqlVerb::Select)
        .flat_map(|(_, m)| m.params.iter())
        .find(|p| p.name == param)?
        .column
        .as_deref()
}

/// Whether DataFusion evaluates a binding predicate again: when there are more values than
/// lookups go out at once, and the values are a column of rows that a listing without the
/// parameter returns, a scan may list the rows instead ([`listing_instead`]).
fn rechecked(resource: &Resource, param: &str, values: &[Value]) -> bool {
    values.len() > CALL_CONCURRENCY
        && row_column(resource, param).is_some()
        && resource.methods_for(SqlVerb::Select).any(|(_, m)| m.paginated && !m.params.iter().any(|p| p.name == param))
}

/// One listing that holds every row the lookups of `binding` would read, when DataFusion
/// keeps the rows asked for: the parameters it leaves out were bound only by predicates
/// that DataFusion evaluates again.
fn listing_instead(resource: &Resource, binding: &Binding) -> Option<OneListing> {
    let method = resource.methods_for(SqlVerb::Select).map(|(_, m)| m).find(|m| {
        let takes = |param: &str| m.params.iter().any(|p| p.name == param);
        m.paginated
            && required(m).all(|p| binding.bound.get(&p.name).is_some_and(|values| values.len() == 1))
            && binding
                .bound
                .keys()
                .all(|param| takes(param) || (!binding.exact.contains(param) && row_column(resource, param).is_some()))
    })?;
    let mut narrowed = binding.clone();
    narrowed.bound.retain(|param, _| method.params.iter().any(|p| &p.name == param));
    match plan_method(resource, method, &narrowed, None) {
        ScanPlan::List { mut calls, object_key, xfilter, .. } if calls.len() == 1 => {
            Some(OneListing { call: calls.remove(0), object_key, xfilter })
        }
        _ => None,
    }
}

/// Parameter columns no literal gave, when values from another table (a join, an `IN`
/// subquery) would let the scan run: see [`dependent`].
fn awaited_params(resource: &Resource, bound: &BTreeMap<String, Vec<Value>>) -> Option<Vec<String>> {
    if method_for(resource, |name| bound.contains_key(name)).is_some() {
        return None;
    }
    let columns = resource.param_columns();
    let is_column = |name: &str| columns.iter().any(|p| p.name == name);
    let method = method_for(resource, |name| bound.contains_key(name) || is_column(name))?;
    Some(required(method).filter(|p| !bound.contains_key(&p.name)).map(|p| p.name.clone()).collect())
}

/// No select method has all its parameters: name what is missing and how to give it.
fn missing_params(resource: &Resource, bound: &BTreeMap<String, Vec<Value>>) -> DataFusionError {
    let least_selective = resource.methods_for(SqlVerb::Select).min_by_key(|(_, m)| required(m).count());
    let Some((name, method)) = least_selective else {
        return DataFusionError::External(Box::new(ScanError(format!(
            "{} has no method to read it with",
            resource.full_name
        ))));
    };
    let missing: Vec<&Param> = required(method).filter(|p| !bound.contains_key(&p.name)).collect();
    let how: Vec<String> = missing
        .iter()
        .map(|p| {
            let column = p.column.as_deref().unwrap_or(&p.name);
            let example = if p.kind == Kind::String { "'…'" } else { "…" };
            format!("`WHERE {column} = {example}` ({})", p.description.trim_end_matches('.'))
        })
        .collect();
    DataFusionError::External(Box::new(ScanError(format!(
        "{} cannot be read without {}: its list method {name} is {} {}. Add {}, or join it on that column",
        resource.full_name,
        missing.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        method.verb,
        method.path,
        how.join(" and ")
    ))))
}

#[async_trait]
impl TableProvider for ResourceTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let filtered = self.resource.list_method().is_some_and(|(_, m)| m.filtered);
        Ok(filters
            .iter()
            .map(|f| match self.classify(f) {
                FilterUse::Remote { .. } if !filtered => TableProviderFilterPushDown::Unsupported,
                // A scan may list instead of looking these up: DataFusion keeps the rows asked for.
                FilterUse::Bind { param, values } if rechecked(&self.resource, &param, &values) => {
                    TableProviderFilterPushDown::Inexact
                }
                u => u.pushdown(),
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Without pushdown the API sees no limit either.
        let limit = limit.filter(|_| self.options.pushdown);
        let binding = self.bind(filters);
        let calls = match awaited_params(&self.resource, &binding.bound) {
            Some(awaited) => Calls::Awaiting(Awaiting { binding, limit, awaited, supplier: None }),
            None => Calls::Planned(plan_calls(&self.resource, &binding, limit)?),
        };
        let projected = project_schema(&self.schema, projection)?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(ResourceScanExec {
            table: self.resource.full_name.clone(),
            caller: Caller {
                provider: self.provider.clone(),
                api: self.api.clone(),
                page_size: self.options.page_size,
            },
            resource: self.resource.clone(),
            schema: self.schema.clone(),
            projection: projection.cloned(),
            projected,
            calls,
            properties,
        }))
    }
}

/// One request of a scan, and the parameter-column values its rows get.
#[derive(Debug, Clone)]
struct ScanCall {
    path: PathTemplate,
    params: Vec<(String, Value)>,
}

/// The pages of a listing as rows with the parameter-column values of its call.
fn listed(
    api: &Arc<ApiClient>,
    listing: Listing,
    first: Option<Page>,
    params: Vec<(String, Value)>,
) -> BoxStream<'static, Result<Fetched, ApiError>> {
    api.pages(listing, first)
        .map_ok(move |page| Fetched { rows: Rows::Page(page), params: params.clone(), keep: None })
        .boxed()
}

/// The requests a scan makes.
#[derive(Debug, Clone)]
enum ScanPlan {
    /// One GET per call; a 404 is no row when `missing_is_empty`. Rows must pass `check`,
    /// the predicates a list would have sent as X-Filter.
    Lookup { calls: Vec<ScanCall>, missing_is_empty: bool, check: Option<Filter> },
    /// Paginated lists, filtered by the API where possible.
    List { calls: Vec<ScanCall>, object_key: String, xfilter: Option<XFilter>, limit: Option<usize> },
    /// Many lookups, or one listing of a single call whose rows DataFusion narrows down to
    /// the ones asked for: whichever is fewer requests, as the listing's first page tells.
    Either { lookups: Box<ScanPlan>, listing: OneListing },
}

/// A listing by one call.
#[derive(Debug, Clone)]
struct OneListing {
    call: ScanCall,
    object_key: String,
    xfilter: Option<XFilter>,
}

impl OneListing {
    fn plan(&self) -> ScanPlan {
        let OneListing { call, object_key, xfilter } = self.clone();
        ScanPlan::List { calls: vec![call], object_key, xfilter, limit: None }
    }
}

impl ScanPlan {
    fn calls(&self) -> usize {
        match self {
            ScanPlan::Lookup { calls, .. } | ScanPlan::List { calls, .. } => calls.len(),
            ScanPlan::Either { lookups, .. } => lookups.calls(),
        }
    }
}

/// A scan's requests: known when it is planned, or once another input has given values
/// for its parameter columns.
#[derive(Debug, Clone)]
enum Calls {
    Planned(ScanPlan),
    Awaiting(Awaiting),
}

/// A scan whose parameter columns `awaited` get their values from `supplier`, set by
/// [`dependent::ParamsFromJoins`] when a join or an `IN` subquery provides them.
#[derive(Debug, Clone)]
struct Awaiting {
    binding: Binding,
    limit: Option<usize>,
    awaited: Vec<String>,
    supplier: Option<dependent::Supplier>,
}

/// What sends a scan's requests.
#[derive(Debug, Clone)]
struct Caller {
    provider: Arc<Provider>,
    api: Arc<ApiClient>,
    /// Rows per page asked for, before the provider's range and the scan's limit.
    page_size: u32,
}

impl Caller {
    fn page_size(&self, limit: Option<usize>) -> u32 {
        let range = self.provider.pagination.page_size;
        match limit {
            Some(n) => range.clamp(n as u64).min(self.page_size.max(range.min)),
            None => range.clamp(self.page_size as u64),
        }
    }

    fn filter_header(&self, xfilter: &Option<XFilter>) -> Vec<(String, String)> {
        match (xfilter, &self.provider.filter) {
            (Some(x), Some(config)) => vec![(config.header.clone(), x.encode())],
            _ => vec![],
        }
    }

    /// `GET path?page=1..&page_size=N` for a list, `GET path` for a lookup.
    fn describe(&self, path: &PathTemplate, paginated: bool, limit: Option<usize>) -> String {
        let pagination = &self.provider.pagination;
        match paginated {
            true => format!(
                "GET {path}?{}=1..&{}={}",
                pagination.page_param,
                pagination.page_size_param,
                self.page_size(limit)
            ),
            false => format!("GET {path}"),
        }
    }

    /// What `plan` sends, for EXPLAIN.
    fn explain(&self, plan: &ScanPlan, f: &mut fmt::Formatter) -> fmt::Result {
        match plan {
            ScanPlan::Lookup { calls, check, .. } => {
                let requests: Vec<String> =
                    calls.iter().take(LOOKUPS_SHOWN).map(|c| self.describe(&c.path, false, None)).collect();
                write!(f, "{}", requests.join(", "))?;
                if calls.len() > LOOKUPS_SHOWN {
                    write!(f, ", … ({} requests)", calls.len())?;
                }
                if let Some(check) = check {
                    write!(f, ", keeping rows that match {}", check.to_json())?;
                }
                if calls.iter().all(|c| self.api.is_cached(&Request::get(c.path.to_string()))) {
                    write!(f, ", served from the cache")?;
                }
                Ok(())
            }
            ScanPlan::List { calls, xfilter, limit, object_key } => {
                let requests: Vec<String> = calls.iter().map(|c| self.describe(&c.path, true, *limit)).collect();
                write!(f, "{}", requests.join(", "))?;
                for (name, value) in self.filter_header(xfilter) {
                    write!(f, " {name}: {value}")?;
                }
                if let Some(n) = limit {
                    write!(f, ", stop after {n} rows")?;
                }
                if calls.iter().all(|c| self.api.listing_is_cached(&self.listing(c, object_key, xfilter, *limit))) {
                    write!(f, ", served from the cache")?;
                } else if calls.iter().all(|c| self.cached_superset(c, object_key, xfilter).is_some()) {
                    write!(f, ", served from the cached whole listing, filtered here")?;
                }
                Ok(())
            }
            ScanPlan::Either { lookups, listing: one } => {
                let lookup_count = lookups.calls();
                let listing = self.listing(&one.call, &one.object_key, &one.xfilter, None);
                let pages = self.api.cached_first_page(&listing).map(|first| listing.last_page(&first));
                match pages {
                    Some(pages) if pages < lookup_count as u64 => {
                        self.explain(&one.plan(), f)?;
                        write!(
                            f,
                            ": {pages} pages are fewer requests than {lookup_count} lookups; rows not asked for are dropped"
                        )
                    }
                    Some(pages) => {
                        self.explain(lookups, f)?;
                        write!(f, ": {lookup_count} lookups are fewer requests than the {pages} pages of a listing")
                    }
                    None => {
                        self.explain(lookups, f)?;
                        write!(f, "; or instead, if it has fewer than {lookup_count} pages (its first page tells), ")?;
                        self.explain(&one.plan(), f)
                    }
                }
            }
        }
    }

    /// A filtered listing answered from the cached pages of the call's whole listing, with
    /// the filter to keep its rows by: the API would have evaluated the same grammar.
    fn cached_superset(
        &self,
        call: &ScanCall,
        object_key: &str,
        xfilter: &Option<XFilter>,
    ) -> Option<(Vec<Page>, Filter)> {
        let filter = xfilter.as_ref()?.filter.clone()?;
        let pages = self.api.cached_pages(&self.listing(call, object_key, &None, None))?;
        Some((pages, filter))
    }

    /// The listing of one call of a [`ScanPlan::List`].
    fn listing(&self, call: &ScanCall, object_key: &str, xfilter: &Option<XFilter>, limit: Option<usize>) -> Listing {
        let mut request = Request::get(call.path.to_string());
        request.headers = self.filter_header(xfilter);
        Listing::new(request, self.provider.pagination.clone(), self.page_size(limit), object_key, limit)
    }

    /// The rows of every call, up to [`CALL_CONCURRENCY`] calls at a time.
    fn rows(&self, plan: ScanPlan) -> BoxStream<'static, Result<Fetched, ApiError>> {
        let api = self.api.clone();
        match plan {
            ScanPlan::Lookup { calls, missing_is_empty, check } => stream::iter(calls)
                .map(move |call| {
                    let api = api.clone();
                    let check = check.clone();
                    async move {
                        let rows = match api.read_cached(&Request::get(call.path.to_string())).await {
                            Ok(row) => match (&check, row.as_object()) {
                                (Some(check), Some(object)) if !check.matches(object) => vec![],
                                _ => vec![row],
                            },
                            Err(e) if missing_is_empty && e.status() == Some(404) => vec![],
                            Err(e) => return Err(e),
                        };
                        Ok(Fetched { rows: Rows::Parsed(rows), params: call.params, keep: None })
                    }
                })
                .buffered(CALL_CONCURRENCY)
                .boxed(),
            ScanPlan::List { calls, object_key, xfilter, limit } => {
                let caller = self.clone();
                stream::iter(calls)
                    .map(move |call| match caller.cached_superset(&call, &object_key, &xfilter) {
                        Some((pages, filter)) => stream::iter(pages)
                            .map(move |page| {
                                let keep = Some(filter.clone());
                                Ok(Fetched { rows: Rows::Page(page), params: call.params.clone(), keep })
                            })
                            .boxed(),
                        None => listed(&api, caller.listing(&call, &object_key, &xfilter, limit), None, call.params),
                    })
                    .flatten_unordered(CALL_CONCURRENCY)
                    .boxed()
            }
            // The listing's first page tells its length: list when that is fewer requests.
            ScanPlan::Either { lookups, listing: OneListing { call, object_key, xfilter } } => {
                let listing = self.listing(&call, &object_key, &xfilter, None);
                let caller = self.clone();
                let lookup_count = lookups.calls();
                let chosen = async move {
                    let first = api.first_page(&listing).await?;
                    Ok(match listing.last_page(&first) < lookup_count as u64 {
                        true => listed(&api, listing, Some(first), call.params),
                        false => caller.rows(*lookups),
                    })
                };
                stream::once(chosen).try_flatten().boxed()
            }
        }
    }
}

#[derive(Debug)]
pub struct ResourceScanExec {
    table: String,
    caller: Caller,
    resource: Arc<Resource>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    projected: SchemaRef,
    calls: Calls,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for ResourceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ResourceScanExec: {}: ", self.table)?;
        match &self.calls {
            Calls::Planned(plan) => self.caller.explain(plan, f),
            Calls::Awaiting(Awaiting { binding, limit, awaited, supplier }) => {
                let given = |name: &str| binding.bound.contains_key(name) || awaited.iter().any(|a| a == name);
                if let Some(method) = method_for(&self.resource, given) {
                    write!(f, "{}", self.caller.describe(&method.path, method.paginated, *limit))?;
                }
                match supplier {
                    Some(supplier) => write!(f, " for each {supplier}"),
                    None => write!(f, " (needs {})", awaited.join(", ")),
                }
            }
        }
    }
}

impl ExecutionPlan for ResourceScanExec {
    fn name(&self) -> &str {
        "ResourceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("{} has one partition, not {partition}", self.name())));
        }
        let decoder = Arc::new(decode::RowDecoder::new(&self.resource, self.schema.clone(), self.projection.clone()));
        let caller = self.caller.clone();
        let to_rows = move |plan: ScanPlan| caller.rows(plan).map_err(|e| DataFusionError::External(Box::new(e)));
        let rows = match &self.calls {
            Calls::Planned(plan) => to_rows(plan.clone()).boxed(),
            Calls::Awaiting(awaiting) => {
                let (resource, awaiting) = (self.resource.clone(), awaiting.clone());
                let planned = async move {
                    let Some(supplier) = &awaiting.supplier else {
                        return Err(missing_params(&resource, &awaiting.binding.bound));
                    };
                    let mut binding = awaiting.binding.clone();
                    for (param, values) in supplier.values(context).await? {
                        binding.restrict(param, values);
                    }
                    plan_calls(&resource, &binding, awaiting.limit)
                };
                stream::once(planned).map_ok(to_rows).try_flatten().boxed()
            }
        };
        // Decoding runs beside the runtime's threads, which keep pages arriving meanwhile.
        let batches = rows
            .map(move |fetched| {
                let decoder = decoder.clone();
                async move {
                    let fetched = fetched?;
                    tokio::task::spawn_blocking(move || decoder.decode(fetched))
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?
                }
            })
            .buffered(DECODERS);
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.projected.clone(), batches)))
    }
}
