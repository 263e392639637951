/*! One DataFusion table per resource in the registry, under `provider.service.resource`.

A scan turns pushed-down predicates into requests (see [`pushdown`]) and streams each
response page into a `RecordBatch` as it arrives. */

mod decode;
mod pushdown;

pub use decode::to_batch;

use std::collections::BTreeMap;
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
use futures::{StreamExt, TryStreamExt, stream};

use crate::api::{ApiClient, ApiError, Request};
use crate::error::ScanError;
use crate::provider::{
    FilterOp, Kind, Method, NotFound, Param, PathTemplate, Provider, Registry, Resource, SqlVerb, resource_schema,
};
use crate::xfilter::{Filter, XFilter};
use pushdown::{FilterUse, classify};
use serde_json::Value;

/// Adds the parameter-column values of the call to every row.
fn with_params(mut rows: Vec<Value>, params: &[(String, Value)]) -> Vec<Value> {
    for row in rows.iter_mut() {
        if let Value::Object(object) = row {
            for (name, value) in params {
                object.insert(name.clone(), value.clone());
            }
        }
    }
    rows
}

/// Requests for single rows made at once.
const LOOKUP_CONCURRENCY: usize = 4;

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

    fn plan(&self, filters: &[Expr], limit: Option<usize>) -> Result<ScanPlan> {
        let resource = &self.resource;
        let mut bound: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut remote = Vec::new();
        for filter in filters {
            match self.classify(filter) {
                // Several predicates on one parameter: only values all of them allow.
                FilterUse::Bind { param, values } => match bound.get_mut(&param) {
                    Some(previous) => previous.retain(|v| values.contains(v)),
                    None => {
                        bound.insert(param, values);
                    }
                },
                FilterUse::Remote { filter, .. } => remote.push(filter),
                FilterUse::Local => {}
            }
        }
        let methods: Vec<(&str, &Method)> = resource.methods_for(SqlVerb::Select).collect();
        let required = |m: &Method| m.params.iter().filter(|p| p.required).cloned().collect::<Vec<Param>>();
        let Some((_, method)) = methods.iter().find(|(_, m)| required(m).iter().all(|p| bound.contains_key(&p.name)))
        else {
            return Err(self.missing_params(&bound));
        };
        // A bound column the chosen method does not take is checked on the rows instead.
        for (param, values) in &bound {
            if !method.params.iter().any(|p| &p.name == param)
                && let Some(column) = methods
                    .iter()
                    .flat_map(|(_, m)| m.params.iter())
                    .find(|p| &p.name == param)
                    .and_then(|p| p.column.clone())
            {
                remote
                    .push(Filter::any(values.iter().map(|v| Filter::cond(&column, FilterOp::Eq, v.clone())).collect()));
            }
        }
        let params = required(method);
        let mut calls = vec![ScanCall { path: method.path.clone(), params: vec![] }];
        for param in &params {
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
        Ok(if method.paginated {
            let xfilter =
                remote.filter(|_| method.filtered).map(|filter| XFilter { filter: Some(filter), order: None });
            ScanPlan::List {
                calls,
                object_key: method.object_key.clone().unwrap_or_else(|| "data".into()),
                xfilter,
                limit,
            }
        } else {
            ScanPlan::Lookup { calls, missing_is_empty: method.not_found == NotFound::Empty, check: remote }
        })
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

    /// No select method has all its parameters: name what is missing and how to give it.
    fn missing_params(&self, bound: &BTreeMap<String, Vec<Value>>) -> DataFusionError {
        let resource = &self.resource;
        let least_selective =
            resource.methods_for(SqlVerb::Select).min_by_key(|(_, m)| m.params.iter().filter(|p| p.required).count());
        let Some((name, method)) = least_selective else {
            return DataFusionError::External(Box::new(ScanError(format!(
                "{} has no method to read it with",
                resource.full_name
            ))));
        };
        let missing: Vec<String> = method
            .params
            .iter()
            .filter(|p| p.required && !bound.contains_key(&p.name))
            .map(|p| {
                let column = p.column.as_deref().unwrap_or(&p.name);
                let example = if p.kind == Kind::String { "'…'" } else { "…" };
                format!("`WHERE {column} = {example}` ({})", p.description.trim_end_matches('.'))
            })
            .collect();
        DataFusionError::External(Box::new(ScanError(format!(
            "{} cannot be read without {}: its list method {name} is {} {}. Add {}",
            resource.full_name,
            method
                .params
                .iter()
                .filter(|p| p.required && !bound.contains_key(&p.name))
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            method.verb,
            method.path,
            missing.join(" and ")
        ))))
    }
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
        let plan = self.plan(filters, limit.filter(|_| self.options.pushdown))?;
        let projected = project_schema(&self.schema, projection)?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(ResourceScanExec {
            table: self.resource.full_name.clone(),
            provider: self.provider.clone(),
            resource: self.resource.clone(),
            api: self.api.clone(),
            schema: self.schema.clone(),
            projection: projection.cloned(),
            projected,
            plan,
            page_size: self.options.page_size,
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

/// The listing request of a call, before its paging parameters.
fn list_request(call: &ScanCall, headers: &[(String, String)]) -> Request {
    let mut request = Request::get(call.path.to_string());
    request.headers = headers.to_vec();
    request
}

/// The requests a scan makes.
#[derive(Debug, Clone)]
enum ScanPlan {
    /// One GET per call; a 404 is no row when `missing_is_empty`. Rows must pass `check`,
    /// the predicates a list would have sent as X-Filter.
    Lookup { calls: Vec<ScanCall>, missing_is_empty: bool, check: Option<Filter> },
    /// Paginated lists, filtered by the API where possible.
    List { calls: Vec<ScanCall>, object_key: String, xfilter: Option<XFilter>, limit: Option<usize> },
}

#[derive(Debug)]
pub struct ResourceScanExec {
    table: String,
    provider: Arc<Provider>,
    resource: Arc<Resource>,
    api: Arc<ApiClient>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    projected: SchemaRef,
    plan: ScanPlan,
    page_size: u32,
    properties: Arc<PlanProperties>,
}

impl ResourceScanExec {
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
}

impl DisplayAs for ResourceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ResourceScanExec: {}: ", self.table)?;
        match &self.plan {
            ScanPlan::Lookup { calls, check, .. } => {
                let requests: Vec<String> = calls.iter().map(|c| format!("GET {}", c.path)).collect();
                write!(f, "{}", requests.join(", "))?;
                if let Some(check) = check {
                    write!(f, ", keeping rows that match {}", check.to_json())?;
                }
                if calls.iter().all(|c| self.api.is_cached(&Request::get(c.path.to_string()))) {
                    write!(f, ", served from the cache")?;
                }
                Ok(())
            }
            ScanPlan::List { calls, xfilter, limit, .. } => {
                let size = self.page_size(*limit);
                let pagination = &self.provider.pagination;
                let requests: Vec<String> = calls
                    .iter()
                    .map(|c| {
                        format!("GET {}?{}=1..&{}={size}", c.path, pagination.page_param, pagination.page_size_param)
                    })
                    .collect();
                write!(f, "{}", requests.join(", "))?;
                for (name, value) in self.filter_header(xfilter) {
                    write!(f, " {name}: {value}")?;
                }
                if let Some(n) = limit {
                    write!(f, ", stop after {n} rows")?;
                }
                let headers = self.filter_header(xfilter);
                if calls
                    .iter()
                    .all(|c| self.api.listing_is_cached(&list_request(c, &headers), pagination, size, *limit))
                {
                    write!(f, ", served from the cache")?;
                }
                Ok(())
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

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("{} has one partition, not {partition}", self.name())));
        }
        let decoder = Arc::new(decode::RowDecoder::new(&self.resource, self.schema.clone(), self.projection.clone()));
        let api = self.api.clone();
        let rows = match &self.plan {
            ScanPlan::Lookup { calls, missing_is_empty, check } => {
                let missing_is_empty = *missing_is_empty;
                let check = check.clone();
                stream::iter(calls.clone())
                    .map(move |call| {
                        let api = api.clone();
                        let check = check.clone();
                        async move {
                            match api.read_cached(&Request::get(call.path.to_string())).await {
                                Ok(row) => Ok(match (&check, row.as_object()) {
                                    (Some(check), Some(object)) if !check.matches(object) => vec![],
                                    _ => with_params(vec![row], &call.params),
                                }),
                                Err(e) if missing_is_empty && e.status() == Some(404) => Ok(vec![]),
                                Err(e) => Err(e),
                            }
                        }
                    })
                    .buffered(LOOKUP_CONCURRENCY)
                    .boxed()
            }
            ScanPlan::List { calls, object_key, xfilter, limit } => {
                let headers = self.filter_header(xfilter);
                let pagination = self.provider.pagination.clone();
                let page_size = self.page_size(*limit);
                let (object_key, limit) = (object_key.clone(), *limit);
                stream::iter(calls.clone())
                    .flat_map(move |call| {
                        api.pages(list_request(&call, &headers), &pagination, page_size, &object_key, limit)
                            .map_ok(move |rows| with_params(rows, &call.params))
                    })
                    .boxed()
            }
        };
        let batches = rows.map_err(|e: ApiError| DataFusionError::External(Box::new(e))).and_then(move |rows| {
            let decoder = decoder.clone();
            async move { decoder.decode(rows) }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.projected.clone(), batches)))
    }
}
