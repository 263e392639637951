/*! One DataFusion table per resource in the registry, under `provider.service.resource`.

A scan turns pushed-down predicates into requests (see [`pushdown`]) and streams each
response page into a `RecordBatch` as it arrives. */

mod accounts;
mod computed;
mod decode;
mod dependent;
mod exec;
mod plan;
mod pushdown;

pub use accounts::{ACCOUNT, AccountsInfo, AccountsTable, OnError};
pub use computed::{Computed, ComputedTable};
pub use dependent::ParamsFromJoins;

pub use decode::to_batch;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, Session, TableProvider,
};
use datafusion::common::{Result, project_schema};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use datafusion::prelude::SessionContext;

use crate::api::ApiClient;
use crate::provider::{Provider, Registry, Resource, resource_schema};
use exec::{Awaiting, Caller, Calls, ResourceScanExec};
use plan::{Binding, awaited_params, plan_calls, rechecked};
use pushdown::{FilterUse, classify};

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
                // One schema for every account's table.
                let first = accounts.first().map(|(_, api)| api.clone());
                let template = first.map(|api| ResourceTable::new(provider.clone(), resource.clone(), api, options));
                let tables = accounts
                    .iter()
                    .zip(std::iter::repeat(template))
                    .filter_map(|((name, api), template)| {
                        let table = ResourceTable { api: api.clone(), ..template? };
                        Some((name.clone(), Arc::new(table) as Arc<dyn TableProvider>))
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

#[derive(Debug, Clone)]
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
