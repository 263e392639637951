/*! A session: the provider registry, the API clients and a DataFusion context over them.
Each statement is parsed, routed and run here; results go to a [`Printer`]. */

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;

use crate::api::{ApiClient, Token};
use crate::error::Error;
use crate::output::{Format, Printer};
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
            Arc::new(ApiClient::new(&base_url, token, &provider.auth.env_var))
        };
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        register_all(&ctx, &registry, client_for, options.scan)?;
        Ok(Session { ctx, registry, _sandbox: sandbox })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs one statement and prints its result.
    pub async fn execute(&self, text: &str, format: Format, out: &mut dyn Write) -> Result<(), Error> {
        let mut statement = sql::parse_one(text).map_err(Error::Sql)?;
        if let DFStatement::Statement(s) = &statement
            && let Some(verb) = mutation_verb(s)
        {
            return Err(Error::Sql(format!("{verb} statements are not supported")));
        }
        sql::resolve_names(&mut statement, &self.registry);
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        SQLOptions::new().with_allow_dml(false).verify_plan(&plan)?;
        let quiet = matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_));
        let frame = self.ctx.execute_logical_plan(plan).await?;
        let mut stream = frame.execute_stream().await?;
        if quiet {
            while let Some(batch) = stream.next().await {
                batch?;
            }
            return Ok(());
        }
        let mut printer = Printer::new(format, stream.schema(), out)?;
        while let Some(batch) = stream.next().await {
            printer.write(batch?)?;
        }
        printer.finish()?;
        Ok(())
    }
}

fn mutation_verb(statement: &Statement) -> Option<&'static str> {
    Some(match statement {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Execute { .. } => "EXEC",
        _ => return None,
    })
}
