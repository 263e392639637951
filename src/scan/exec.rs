//! Running a planned scan: its requests sent through the account's client (pages in
//! parallel within the rate budget, lookups a few at a time), each response decoded into
//! rows as it arrives, and what EXPLAIN says of it.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::Value;

use super::decode;
use super::decode::{Fetched, Rows};
use super::plan::{Binding, OneListing, ScanCall, ScanPlan, method_for, missing_params, plan_calls};
use super::{CALL_CONCURRENCY, DECODERS, LOOKUPS_SHOWN, dependent};
use crate::api::{ApiClient, ApiError, Listing, Page, Request};
use crate::provider::{PathTemplate, Provider, Resource};
use crate::xfilter::{Filter, XFilter};

/// The pages of a listing as rows with the parameter-column values of its call.
pub(super) fn listed(
    api: &Arc<ApiClient>,
    listing: Listing,
    first: Option<Page>,
    params: Vec<(String, Value)>,
) -> BoxStream<'static, Result<Fetched, ApiError>> {
    api.pages(listing, first)
        .map_ok(move |page| Fetched { rows: Rows::Page(page), params: params.clone(), keep: None })
        .boxed()
}

/// A scan's requests: known when it is planned, or once another input has given values
/// for its parameter columns.
#[derive(Debug, Clone)]
pub(super) enum Calls {
    Planned(ScanPlan),
    Awaiting(Awaiting),
}

/// A scan whose parameter columns `awaited` get their values from `supplier`, set by
/// [`dependent::ParamsFromJoins`] when a join or an `IN` subquery provides them.
#[derive(Debug, Clone)]
pub(super) struct Awaiting {
    pub(super) binding: Binding,
    pub(super) limit: Option<usize>,
    pub(super) awaited: Vec<String>,
    pub(super) supplier: Option<dependent::Supplier>,
}

/// What sends a scan's requests.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) provider: Arc<Provider>,
    pub(super) api: Arc<ApiClient>,
    /// Rows per page asked for, before the provider's range and the scan's limit.
    pub(super) page_size: u32,
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
    pub(super) table: String,
    pub(super) caller: Caller,
    pub(super) resource: Arc<Resource>,
    pub(super) schema: SchemaRef,
    pub(super) projection: Option<Vec<usize>>,
    pub(super) projected: SchemaRef,
    pub(super) calls: Calls,
    pub(super) properties: Arc<PlanProperties>,
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
