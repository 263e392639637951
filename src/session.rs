/*! A session: the provider registry, the API clients and a DataFusion context over them.
Each statement is parsed, routed and run here; results go to a [`Printer`]. */

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Expr, Query, Statement};
use futures::StreamExt;
use tokio::sync::Notify;

use crate::api::{ApiClient, Token};
use crate::error::Error;
use crate::meta;
use crate::output::{Format, Printer};
use crate::plan::{self, Mode, MutationPlan};
use crate::provider::{Provider, Registry};
use crate::sandbox::{Sandbox, SandboxArgs};
use crate::sql;
use crate::table::{ScanOptions, register_all};

/// Where the API calls go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A sandbox started in this process on a free loopback port.
    Sandbox(SandboxArgs),
    /// The provider's API, or another base URL (a standalone sandbox, a proxy).
    Api { base_url: Option<String> },
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub target: Target,
    pub providers: Option<PathBuf>,
    pub scan: ScanOptions,
}

pub struct Session {
    ctx: SessionContext,
    registry: Arc<Registry>,
    clients: HashMap<String, Arc<ApiClient>>,
    interrupted: Arc<AtomicBool>,
    interrupt_notice: Arc<Notify>,
    /// Keeps an in-process sandbox alive as long as the session.
    _sandbox: Option<Sandbox>,
}

impl Session {
    pub async fn connect(options: SessionOptions) -> Result<Session, Error> {
        let registry = Arc::new(match &options.providers {
            Some(dir) => Registry::from_dir(dir)?,
            None => Registry::embedded()?,
        });
        let sandbox = match &options.target {
            Target::Sandbox(args) => Some(Sandbox::start(args).await?),
            Target::Api { .. } => None,
        };
        let client_for = |provider: &Provider| {
            let (base_url, token) = match (&sandbox, &options.target) {
                (Some(sandbox), _) => (sandbox.base_url.clone(), Token::new(sandbox.token.clone())),
                (None, Target::Api { base_url }) => (
                    base_url.clone().unwrap_or_else(|| provider.base_url.clone()),
                    std::env::var(&provider.auth.env_var).ok().and_then(Token::new),
                ),
                (None, Target::Sandbox(_)) => unreachable!("a sandbox target starts a sandbox"),
            };
            if token.is_some() && sandbox.is_none() && cleartext_off_host(&base_url) {
                return Err(Error::Usage(format!(
                    "refusing to send {} over plain http to {base_url}: use https, or a loopback address",
                    provider.auth.env_var
                )));
            }
            Ok(Arc::new(ApiClient::new(&base_url, token, &provider.auth.env_var)))
        };
        let clients: HashMap<String, Arc<ApiClient>> = registry
            .providers
            .values()
            .map(|p| client_for(p).map(|client| (p.id.clone(), client)))
            .collect::<Result<_, Error>>()?;
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        register_all(&ctx, &registry, |p| clients[&p.id].clone(), options.scan)?;
        let session = Session {
            ctx,
            registry,
            clients,
            interrupted: Arc::default(),
            interrupt_notice: Arc::default(),
            _sandbox: sandbox,
        };
        session.register_views().await?;
        Ok(session)
    }

    /// Creates the views the provider files declare, under their service.
    async fn register_views(&self) -> Result<(), Error> {
        for provider in self.registry.providers.values() {
            for service in provider.services.values() {
                for (name, view) in &service.views {
                    let full = format!("{}.{}.{name}", provider.id, service.id);
                    let failed = |e: String| Error::Sql(format!("view {full} in the provider files: {e}"));
                    let query = provider.view_sql(view).map_err(|missing| failed(format!("no constant {missing}")))?;
                    let mut statement = sql::parse_one(&format!("CREATE VIEW {full} AS {query}")).map_err(failed)?;
                    sql::resolve_names(&mut statement, &self.registry);
                    let plan =
                        self.ctx.state().statement_to_plan(statement).await.map_err(|e| failed(e.strip_backtrace()))?;
                    self.ctx.execute_logical_plan(plan).await?.collect().await?;
                }
            }
        }
        Ok(())
    }

    /// Asks a running change to stop before its next request, or an upload at once (Ctrl-C
    /// in the shell).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.interrupt_notice.notify_waiters();
    }

    /// Forgets an interruption that came after the last statement ended.
    pub fn clear_interrupt(&self) {
        self.interrupted.store(false, Ordering::SeqCst);
    }

    pub(crate) fn take_interrupt(&self) -> bool {
        self.interrupted.swap(false, Ordering::SeqCst)
    }

    /// Resolves when [`Session::interrupt`] is called.
    pub(crate) async fn interrupted(&self) {
        let notified = self.interrupt_notice.notified();
        if !self.interrupted.load(Ordering::SeqCst) {
            notified.await;
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn client(&self, provider: &str) -> Arc<ApiClient> {
        self.clients[provider].clone()
    }

    /// Runs one statement and prints its result; returns the number of rows printed, if it
    /// printed rows.
    pub async fn execute(&self, text: &str, format: Format, out: &mut dyn Write) -> Result<Option<usize>, Error> {
        if let Some(meta) = meta::parse(text, &self.registry) {
            let batch = meta::run(&meta.map_err(Error::Sql)?, &self.registry).map_err(Error::Sql)?;
            let mut printer = Printer::new(format, batch.schema(), out)?;
            printer.write(batch)?;
            let rows = printer.rows();
            printer.finish()?;
            return Ok(Some(rows));
        }
        let prepared = sql::prepare(text).map_err(Error::Sql)?;
        let mut statement = sql::parse_one(&prepared.text).map_err(Error::Sql)?;
        match &statement {
            DFStatement::Statement(s) => {
                if let Some(plan) = plan::plan(self, s, &prepared, Mode::Execute).await? {
                    return plan::execute(self, plan, format, out).await;
                }
            }
            DFStatement::Explain(explain) => {
                if let DFStatement::Statement(s) = explain.statement.as_ref()
                    && let Some(plan) = plan::plan(self, s, &prepared, Mode::Explain).await?
                {
                    return self.explain_mutation(&plan, format, out).await.map(Some);
                }
            }
            _ => {}
        }
        sql::resolve_names(&mut statement, &self.registry);
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        let quiet = matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_));
        let frame = self.ctx.execute_logical_plan(plan).await?;
        let mut stream = frame.execute_stream().await?;
        if quiet {
            while let Some(batch) = stream.next().await {
                batch?;
            }
            return Ok(None);
        }
        let mut printer = Printer::new(format, stream.schema(), out)?;
        while let Some(batch) = stream.next().await {
            printer.write(batch?)?;
        }
        let rows = printer.rows();
        printer.finish()?;
        Ok(Some(rows))
    }

    fn logical_plan_of(&self, query: &Query) -> DFStatement {
        let mut statement = DFStatement::Statement(Box::new(Statement::Query(Box::new(query.clone()))));
        sql::resolve_names(&mut statement, &self.registry);
        statement
    }

    /// Runs a query for a mutation (its rows, or the rows it acts on) and returns the values.
    pub(crate) async fn query_rows(&self, query: &Query) -> Result<Vec<Vec<serde_json::Value>>, Error> {
        let plan = self.ctx.state().statement_to_plan(self.logical_plan_of(query)).await?;
        let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
        plan::rows(&batches).map_err(Error::Query)
    }

    /// The values of constant expressions, computed without any request.
    pub(crate) async fn constant_row(&self, exprs: &[Expr]) -> Result<Vec<serde_json::Value>, Error> {
        if exprs.is_empty() {
            return Ok(vec![]);
        }
        let items: Vec<String> = exprs.iter().enumerate().map(|(i, e)| format!("{e} AS v{i}")).collect();
        let query = sql::parse_query(&format!("SELECT {}", items.join(", "))).map_err(Error::Sql)?;
        Ok(self.query_rows(&query).await?.into_iter().next().unwrap_or_default())
    }

    /// The physical plan of a query, showing the requests its scans would make.
    async fn physical_plan_text(&self, sql_text: &str) -> Result<String, Error> {
        let query = sql::parse_query(sql_text).map_err(Error::Sql)?;
        let state = self.ctx.state();
        let logical = state.statement_to_plan(self.logical_plan_of(&query)).await?;
        let physical = state.create_physical_plan(&logical).await?;
        Ok(displayable(physical.as_ref()).indent(false).to_string())
    }

    /// EXPLAIN of a mutation: the requests it would send, none sent.
    async fn explain_mutation(&self, plan: &MutationPlan, format: Format, out: &mut dyn Write) -> Result<usize, Error> {
        let mut steps: Vec<(String, String)> = Vec::new();
        if let Some(deferred) = &plan.deferred {
            let physical = self.physical_plan_text(&deferred.read).await?;
            steps.push(("read".into(), format!("{}\n{}", deferred.read, physical.trim_end())));
            steps.push(("for each row".into(), deferred.each.clone()));
        }
        for (i, call) in plan.calls.iter().enumerate() {
            let body =
                call.body.as_ref().map(|b| format!(" {}", serde_json::Value::Object(b.clone()))).unwrap_or_default();
            steps.push(((i + 1).to_string(), format!("{} {}{body}", call.verb, call.path)));
        }
        if let (Some(file), Some(spec)) = (&plan.upload, &plan.method.upload) {
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            steps.push((
                "then".into(),
                format!("PUT the {size} bytes of {} to the response's {}", file.display(), spec.url_field),
            ));
        }
        if plan.await_ready
            && let Some(lifecycle) = &plan.resource.lifecycle
        {
            let until = if plan.kind == plan::Kind::Delete {
                "it is gone (404)".to_string()
            } else {
                let places = lifecycle
                    .regions
                    .as_ref()
                    .map(|p| format!(" and every {} entry is {}", p.field, p.ready.join(" or ")))
                    .unwrap_or_default();
                format!("{} is {}{places}", lifecycle.status, lifecycle.ready.join(" or "))
            };
            steps.push(("then".into(), format!("poll {} until {until}", lifecycle.get)));
        }
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("step", DataType::Utf8, false),
            ArrowField::new("request", DataType::Utf8, false),
        ]));
        let (left, right): (Vec<String>, Vec<String>) = steps.into_iter().unzip();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(left)), Arc::new(StringArray::from(right))],
        )?;
        let rows = batch.num_rows();
        let mut printer = Printer::new(format, schema, out)?;
        printer.write(batch)?;
        printer.finish()?;
        Ok(rows)
    }
}

/// A URL that would carry the token unencrypted off this machine.
fn cleartext_off_host(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(url) => {
            let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            url.scheme() == "http" && !loopback
        }
        Err(_) => false,
    }
}
