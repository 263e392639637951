/*! One DataFusion table per resource in the registry, under `provider.service.resource`.

A scan turns pushed-down predicates into requests (see [`pushdown`]) and streams each
response page into a `RecordBatch` as it arrives. */

mod decode;
mod pushdown;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, Session, TableProvider};
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

use crate::api::{ApiClient, ApiError, Request, encode_segment};
use crate::provider::{NotFound, Provider, Registry, Resource, resource_schema};
use crate::xfilter::{Filter, XFilter};
use pushdown::{FilterUse, classify};

/// Requests for single rows made at once.
const LOOKUP_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Send predicates and limits to the API; off, every scan lists everything.
    pub pushdown: bool,
    /// Rows per page when listing.
    pub page_size: u32,
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
                let table = ResourceTable::new(provider.clone(), Arc::new(resource.clone()), api.clone(), options);
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
        let unlisted = || {
            DataFusionError::Plan(format!(
                "{} cannot be listed; run SHOW METHODS IN {} to see its required parameters",
                self.resource.full_name, self.resource.full_name
            ))
        };
        if !self.options.pushdown {
            let (_, method) = self.resource.list_method().ok_or_else(unlisted)?;
            return Ok(ScanPlan::List { path: method.path.clone(), object_key: object_key(method), xfilter: None, limit: None });
        }
        let mut ids: Option<Vec<String>> = None;
        let mut remote = Vec::new();
        for filter in filters {
            match classify(&self.resource, filter) {
                // Several id predicates: only ids that satisfy all of them.
                FilterUse::IdLookup(found) => {
                    ids = Some(match ids {
                        None => found,
                        Some(previous) => previous.into_iter().filter(|id| found.contains(id)).collect(),
                    })
                }
                FilterUse::Remote { filter, .. } => remote.push(filter),
                FilterUse::Local => {}
            }
        }
        let remote = (!remote.is_empty()).then(|| Filter::all(remote));
        if let Some(ids) = ids {
            let (_, method, param) = self.resource.get_method().expect("an id lookup implies a get method");
            let placeholder = format!("{{{}}}", param.name);
            let paths = ids.iter().map(|id| method.path.replace(&placeholder, &encode_segment(id))).collect();
            return Ok(ScanPlan::Lookup { paths, missing_is_empty: method.not_found == NotFound::Empty, check: remote });
        }
        let (_, method) = self.resource.list_method().ok_or_else(unlisted)?;
        let xfilter = remote.filter(|_| method.filtered).map(|filter| XFilter { filter: Some(filter), order: None });
        Ok(ScanPlan::List { path: method.path.clone(), object_key: object_key(method), xfilter, limit })
    }
}

fn object_key(method: &crate::provider::Method) -> String {
    method.object_key.clone().unwrap_or_else(|| "data".into())
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
        if !self.options.pushdown {
            return Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()]);
        }
        let filtered = self.resource.list_method().is_some_and(|(_, m)| m.filtered);
        Ok(filters
            .iter()
            .map(|f| match classify(&self.resource, f) {
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
        let plan = self.plan(filters, limit)?;
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

/// The requests a scan makes.
#[derive(Debug, Clone)]
enum ScanPlan {
    /// One GET per path; a 404 is no row when `missing_is_empty`. Rows must pass `check`,
    /// the predicates the list would have sent as X-Filter.
    Lookup { paths: Vec<String>, missing_is_empty: bool, check: Option<Filter> },
    /// The paginated list, filtered by the API where possible.
    List { path: String, object_key: String, xfilter: Option<XFilter>, limit: Option<usize> },
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
            ScanPlan::Lookup { paths, check, .. } => {
                let requests: Vec<String> = paths.iter().map(|p| format!("GET {p}")).collect();
                write!(f, "{}", requests.join(", "))?;
                if let Some(check) = check {
                    write!(f, ", keeping rows that match {}", check.to_json())?;
                }
                Ok(())
            }
            ScanPlan::List { path, xfilter, limit, .. } => {
                let size = self.page_size(*limit);
                let pagination = &self.provider.pagination;
                write!(f, "GET {path}?{}=1..&{}={size}", pagination.page_param, pagination.page_size_param)?;
                for (name, value) in self.filter_header(xfilter) {
                    write!(f, " {name}: {value}")?;
                }
                if let Some(n) = limit {
                    write!(f, ", stop after {n} rows")?;
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
        let rows = match &self.plan {
            ScanPlan::Lookup { paths, missing_is_empty, check } => {
                let api = self.api.clone();
                let missing_is_empty = *missing_is_empty;
                let check = check.clone();
                stream::iter(paths.clone())
                    .map(move |path| {
                        let api = api.clone();
                        let check = check.clone();
                        async move {
                            match api.read(&Request::get(path)).await {
                                Ok(row) => Ok(match (&check, row.as_object()) {
                                    (Some(check), Some(object)) if !check.matches(object) => vec![],
                                    _ => vec![row],
                                }),
                                Err(e) if missing_is_empty && e.status() == Some(404) => Ok(vec![]),
                                Err(e) => Err(e),
                            }
                        }
                    })
                    .buffered(LOOKUP_CONCURRENCY)
                    .boxed()
            }
            ScanPlan::List { path, object_key, xfilter, limit } => {
                let mut request = Request::get(path.clone());
                request.headers = self.filter_header(xfilter);
                self.api.pages(request, &self.provider.pagination, self.page_size(*limit), object_key, *limit)
            }
        };
        let batches = rows
            .map_err(|e: ApiError| DataFusionError::External(Box::new(e)))
            .and_then(move |rows| {
                let decoder = decoder.clone();
                async move { decoder.decode(rows) }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.projected.clone(), batches)))
    }
}
