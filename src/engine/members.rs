/*! The accounts of an account set, each as a session of one account.

Views and changes over a set go through them. A view of a set is each account's own view
with the `account` column in front, so a bill is each account's bill, computed as it would
be for that account alone. A change's part for one account reads and checks in that
account's session (its references, its dry run). The sessions are made when first needed
and share the set's clients, so each account keeps one token, cache, rate budget and count
of requests. */

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session as CatalogSession, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::OnceCell;

use super::{Clients, Session, SessionOptions};
use crate::api::{ApiClient, Progress};
use crate::error::Error;
use crate::scan::{AccountsTable, OnError};

/// The sessions of an account set's accounts, made when first needed.
pub struct Members {
    /// What every account's session is made with, but its clients.
    options: SessionOptions,
    accounts: Vec<(String, Clients)>,
    sessions: Vec<OnceCell<Arc<Session>>>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.accounts.iter().map(|(name, _)| name)).finish()
    }
}

impl Members {
    pub fn new(mut options: SessionOptions, accounts: Vec<(String, Clients)>) -> Members {
        options.accounts = vec![];
        let sessions = accounts.iter().map(|_| OnceCell::new()).collect();
        Members { options, accounts, sessions }
    }

    /// The session of the account `name` alone.
    pub async fn session(&self, name: &str) -> Result<Arc<Session>, Error> {
        let index = self.index(name)?;
        let made = self.sessions[index].get_or_try_init(|| async {
            let (name, clients) = self.accounts[index].clone();
            let mut options = self.options.clone();
            // Each account reads its own history.
            if let Some(history) = &mut options.history {
                history.account = name;
            }
            let session = Box::pin(Session::build(options, clients, vec![], Arc::default())).await?;
            Ok::<_, Error>(Arc::new(session))
        });
        made.await.cloned()
    }

    /// The client of the account `name` for a provider.
    pub fn client(&self, name: &str, provider: &str) -> Result<Arc<ApiClient>, Error> {
        Ok(self.accounts[self.index(name)?].1[provider].clone())
    }

    /// Every account's clients.
    pub fn clients(&self) -> Vec<Arc<ApiClient>> {
        self.accounts.iter().flat_map(|(_, clients)| clients.values().cloned()).collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.accounts.iter().map(|(name, _)| name.clone()).collect()
    }

    fn index(&self, name: &str) -> Result<usize, Error> {
        self.accounts.iter().position(|(n, _)| n == name).ok_or_else(|| {
            Error::Refused(format!("{name} is not one of this session's accounts: {}", self.names().join(", ")))
        })
    }

    /// A view of the set: each account's view, `account` first.
    pub fn view(
        self: &Arc<Self>,
        name: &str,
        schema: SchemaRef,
        on_error: Arc<OnError>,
        progress: Progress,
    ) -> AccountsTable {
        let tables = self
            .names()
            .into_iter()
            .map(|account| {
                let source = Source::View(name.to_string());
                let table =
                    MemberTable { members: self.clone(), account: account.clone(), schema: schema.clone(), source };
                (account, Arc::new(table) as Arc<dyn TableProvider>)
            })
            .collect();
        AccountsTable::new(name.to_string(), tables, on_error, progress)
    }
}

/// What a member's table is.
#[derive(Debug, Clone)]
enum Source {
    /// A view, by its full name.
    View(String),
    /// A call of a view with parameters.
    Function { name: String, args: Vec<Expr> },
}

/// One account's view (or call of a view with parameters) in a view of the set.
#[derive(Debug)]
struct MemberTable {
    members: Arc<Members>,
    account: String,
    schema: SchemaRef,
    source: Source,
}

fn failed(error: Error) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

#[async_trait]
impl TableProvider for MemberTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // The account's view filters them in its own plan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let session = self.members.session(&self.account).await.map_err(failed)?;
        let table = match &self.source {
            Source::View(name) => session.ctx.table_provider(name.as_str()).await?,
            Source::Function { name, args } => session
                .ctx
                .table_function(name)?
                .create_table_provider_with_args(TableFunctionArgs::new(args, state))?,
        };
        table.scan(state, projection, filters, limit).await
    }
}

/// A view with parameters over a set: each account's call of it, `account` first.
#[derive(Debug)]
pub struct AccountsFunction {
    name: String,
    members: Arc<Members>,
    /// One account's function, which checks the arguments and tells the columns.
    template: Arc<dyn TableFunctionImpl>,
    on_error: Arc<OnError>,
    progress: Progress,
}

impl AccountsFunction {
    pub fn new(
        name: String,
        members: Arc<Members>,
        template: Arc<dyn TableFunctionImpl>,
        on_error: Arc<OnError>,
        progress: Progress,
    ) -> AccountsFunction {
        AccountsFunction { name, members, template, on_error, progress }
    }
}

impl TableFunctionImpl for AccountsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs().to_vec();
        let schema = self.template.call_with_args(args)?.schema();
        let tables = self
            .members
            .names()
            .into_iter()
            .map(|account| {
                let source = Source::Function { name: self.name.clone(), args: exprs.clone() };
                let members = self.members.clone();
                let table = MemberTable { members, account: account.clone(), schema: schema.clone(), source };
                (account, Arc::new(table) as Arc<dyn TableProvider>)
            })
            .collect();
        Ok(Arc::new(AccountsTable::new(self.name.clone(), tables, self.on_error.clone(), self.progress.clone())))
    }
}
