/*! Account sets: in a session over several accounts, each provider table is the union of the
same table in every account, with a leading `account` column (the profile's name).

A predicate on `account` (`=`, `<>`, `IN`, `NOT IN` with literals) decides which accounts are
called at all; the others go to each account's own scan, which sends them to the API as usual.
Each account's scan uses its own client (token, API URL, response cache and rate budget); a
bounded number of accounts are read at once, each whole before any row is answered. An account
that fails does not stop the others: by default the statement then fails naming every account
that failed and why, answering no row; when the session says `skip`, the rows of the others
are the answer and the failures are warnings. */

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, project_schema};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};
use futures::{StreamExt, stream};

use super::computed::Computed;
use super::plan::{account_filter, mentions_account};
use crate::api::{ApiClient, Event, Progress};
use crate::error::Error;

/// The leading column of every table of an account set.
pub const ACCOUNT: &str = "account";
/// Accounts read at once: each has its own rate budget, so this bounds connections and memory.
pub const ACCOUNTS_IN_FLIGHT: usize = 32;

/// How a statement over an account set treats an account that fails.
#[derive(Debug, Default)]
pub struct OnError {
    skip: AtomicBool,
    /// Changes reading their rows now: every account must answer them.
    changes: AtomicUsize,
}

impl OnError {
    /// Whether a failing account is left out of the answer.
    pub fn skip(&self) -> bool {
        self.skip.load(Ordering::Relaxed) && !self.changing()
    }

    pub fn set_skip(&self, skip: bool) {
        self.skip.store(skip, Ordering::Relaxed);
    }

    fn changing(&self) -> bool {
        self.changes.load(Ordering::Relaxed) > 0
    }

    /// While the guard lives, reads are for a change: a failing account fails them.
    pub fn for_change(self: &Arc<Self>) -> ForChange {
        self.changes.fetch_add(1, Ordering::Relaxed);
        ForChange(self.clone())
    }
}

/// Reads for a change, until dropped (see [`OnError::for_change`]).
pub struct ForChange(Arc<OnError>);

impl Drop for ForChange {
    fn drop(&mut self) {
        self.0.changes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One table of an account set.
#[derive(Debug)]
pub struct AccountsTable {
    /// `provider.service.resource`.
    name: String,
    accounts: Vec<(String, Arc<dyn TableProvider>)>,
    schema: SchemaRef,
    on_error: Arc<OnError>,
    progress: Progress,
}

impl AccountsTable {
    pub fn new(
        name: String,
        accounts: Vec<(String, Arc<dyn TableProvider>)>,
        on_error: Arc<OnError>,
        progress: Progress,
    ) -> Self {
        let inner = accounts[0].1.schema();
        let mut fields = vec![Arc::new(Field::new(ACCOUNT, DataType::Utf8, false))];
        fields.extend(inner.fields().iter().cloned());
        AccountsTable { name, accounts, schema: Arc::new(Schema::new(fields)), on_error, progress }
    }
}

#[async_trait]
impl TableProvider for AccountsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let others: Vec<&Expr> = filters.iter().copied().filter(|f| !mentions_account(f)).collect();
        let mut inner = self.accounts[0].1.supports_filters_pushdown(&others)?.into_iter();
        Ok(filters
            .iter()
            .map(|f| match (account_filter(f).is_some(), mentions_account(f)) {
                (true, _) => TableProviderFilterPushDown::Exact,
                (false, true) => TableProviderFilterPushDown::Unsupported,
                (false, false) => inner.next().unwrap_or(TableProviderFilterPushDown::Unsupported),
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let keeps: Vec<_> = filters.iter().filter_map(account_filter).collect();
        let inner_filters: Vec<Expr> = filters.iter().filter(|f| !mentions_account(f)).cloned().collect();
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let inner_projection: Vec<usize> = wanted.iter().filter(|i| **i != 0).map(|i| i - 1).collect();
        let mut children = Vec::new();
        for (name, table) in self.accounts.iter().filter(|(name, _)| keeps.iter().all(|keep| keep(name))) {
            let plan = table.scan(state, Some(&inner_projection), &inner_filters, limit).await?;
            children.push((name.clone(), plan));
        }
        let projected = project_schema(&self.schema, projection)?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(AccountsExec {
            table: self.name.clone(),
            names: children.iter().map(|(name, _)| name.clone()).collect(),
            children: children.into_iter().map(|(_, plan)| plan).collect(),
            wanted,
            projected,
            properties,
            on_error: self.on_error.clone(),
            progress: self.progress.clone(),
        }))
    }
}

/// The scans of the accounts a statement reads, their rows with the account's name.
#[derive(Debug)]
pub struct AccountsExec {
    /// The table, for warnings.
    table: String,
    names: Vec<String>,
    children: Vec<Arc<dyn ExecutionPlan>>,
    /// The table's columns asked for, `0` being `account`.
    wanted: Vec<usize>,
    projected: SchemaRef,
    properties: Arc<PlanProperties>,
    on_error: Arc<OnError>,
    progress: Progress,
}

impl DisplayAs for AccountsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "AccountsExec: {} accounts ({}), at most {ACCOUNTS_IN_FLIGHT} at once",
            self.names.len(),
            self.names.join(", ")
        )
    }
}

impl AccountsExec {
    /// The accounts read, in the order of the children.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The table, `provider.service.resource`.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// A batch of one account's scan with the account's column put where it was asked for.
    fn with_account(wanted: &[usize], schema: &SchemaRef, name: &str, batch: RecordBatch) -> Result<RecordBatch> {
        let account: ArrayRef = Arc::new(StringArray::from(vec![name; batch.num_rows()]));
        let mut inner = batch.columns().iter();
        let columns: Vec<ArrayRef> = wanted
            .iter()
            .map(|i| if *i == 0 { account.clone() } else { inner.next().cloned().unwrap_or_else(|| account.clone()) })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
    }
}

impl ExecutionPlan for AccountsExec {
    fn name(&self) -> &str {
        "AccountsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
    }

    /// Each account's scan is read whole, as one stream: spreading it over partitions would
    /// gain nothing but a repartition in between.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.children.len()]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(AccountsExec {
            table: self.table.clone(),
            names: self.names.clone(),
            children,
            wanted: self.wanted.clone(),
            projected: self.projected.clone(),
            properties: self.properties.clone(),
            on_error: self.on_error.clone(),
            progress: self.progress.clone(),
        }))
    }

    /// Every account's rows are read whole before any is answered: a statement that fails
    /// must answer no row, and an account left out must give none (not the rows it read before
    /// it failed), whatever reads the answer and however much of it.
    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("{} has one partition, not {partition}", self.name())));
        }
        let mut reads = Vec::with_capacity(self.children.len());
        for (name, child) in self.names.iter().zip(&self.children) {
            let (name, child, context) = (name.clone(), child.clone(), context.clone());
            let (wanted, schema) = (self.wanted.clone(), self.projected.clone());
            reads.push(async move {
                let read = async {
                    let mut batches = Vec::new();
                    for p in 0..child.output_partitioning().partition_count() {
                        let mut stream = child.execute(p, context.clone())?;
                        while let Some(batch) = stream.next().await {
                            batches.push(AccountsExec::with_account(&wanted, &schema, &name, batch?)?);
                        }
                    }
                    Ok::<_, DataFusionError>(batches)
                };
                let read = match read.await.map_err(Error::from) {
                    // A row another account holds (the instance of `linodeId = …`) is not found
                    // in this one: no rows of it here.
                    Err(Error::Api(api)) if api.status() == Some(404) => Ok(vec![]),
                    other => other.map_err(|e| e.to_string()),
                };
                (name, read)
            });
        }
        let (on_error, progress, table) = (self.on_error.clone(), self.progress.clone(), self.table.clone());
        let answer = async move {
            let results: Vec<(String, std::result::Result<Vec<RecordBatch>, String>)> =
                stream::iter(reads).buffer_unordered(ACCOUNTS_IN_FLIGHT).collect().await;
            let mut failed: Vec<(String, String)> = Vec::new();
            let mut batches = Vec::new();
            for (name, read) in results {
                match read {
                    Ok(read) => batches.extend(read),
                    Err(why) => failed.push((name, why)),
                }
            }
            failed.sort();
            if !failed.is_empty() && !on_error.skip() {
                let change = on_error.changing();
                let error = DataFusionError::External(Box::new(Error::AccountsFailed { failed, change }));
                return stream::iter(vec![Err(error)]);
            }
            for (name, why) in &failed {
                progress.report(Event::Warning(&format!("account {name} was left out of {table}: {why}")));
            }
            stream::iter(batches.into_iter().map(Ok).collect::<Vec<_>>())
        };
        let rows = stream::once(Box::pin(answer)).flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.projected.clone(), rows)))
    }
}

/// `linode.meta.accounts` (and `SHOW ACCOUNTS`): the session's accounts, each with its API,
/// how its requests went and the rate budget it has left this minute.
#[derive(Debug)]
pub struct AccountsInfo {
    accounts: Vec<(String, Arc<ApiClient>)>,
    schema: SchemaRef,
}

impl AccountsInfo {
    pub fn new(accounts: Vec<(String, Arc<ApiClient>)>) -> AccountsInfo {
        let schema = Arc::new(Schema::new(vec![
            Field::new(ACCOUNT, DataType::Utf8, false),
            Field::new("api_url", DataType::Utf8, true),
            Field::new("status", DataType::Utf8, false),
            Field::new("requests", DataType::Int64, false),
            Field::new("failed", DataType::Int64, false),
            Field::new("budget_left", DataType::Int64, true),
        ]));
        AccountsInfo { accounts, schema }
    }
}

impl Computed for AccountsInfo {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let usage: Vec<_> = self.accounts.iter().map(|(name, api)| (name, api.shown_base(), api.usage())).collect();
        let status = |u: &crate::api::Usage| match (&u.failing, u.requests) {
            (Some(why), _) => format!("failing: {why}"),
            (None, 0) => "not called yet".to_string(),
            (None, _) => "ok".to_string(),
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(usage.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(
                usage.iter().map(|(_, base, _)| (!base.is_empty()).then_some(*base)).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(usage.iter().map(|(_, _, u)| status(u)).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(usage.iter().map(|(_, _, u)| u.requests as i64).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(usage.iter().map(|(_, _, u)| u.failed as i64).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(usage.iter().map(|(_, _, u)| u.budget_left.map(i64::from)).collect::<Vec<_>>())),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
