/*! The engine: a session over the provider registry, the API and a DataFusion context. Each
statement goes in as text and comes out as an [`Outcome`] or an [`Error`]; nothing here
prints, starts a server or reads the terminal. Front ends (the command line, the shell, a
library user) decide what to do with outcomes.

```no_run
# async fn demo() -> Result<(), imageql::error::Error> {
use futures::TryStreamExt;
use imageql::engine::{Session, SessionOptions};
use imageql::outcome::Outcome;

let options = SessionOptions::new("http://127.0.0.1:8765/v4", Some("sandbox-token"));
let session = Session::new(options).await?;
if let Outcome::Rows { stream, .. } = session.execute("SELECT id, label FROM linode.images.images").await? {
    let batches: Vec<_> = stream.try_collect().await?;
    assert!(batches.iter().all(|b| b.num_columns() == 2));
}
# Ok(())
# }
``` */

pub mod meta;

use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;

use crate::api::{ApiClient, Progress, Shared, Token};
pub use crate::cancel::CancelToken;
use crate::error::Error;
use crate::mutate;
use crate::outcome::Outcome;
use crate::provider::Registry;
use crate::scan::{ScanOptions, register_all};
use crate::sql;

/// What a session runs against and how.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The API base; `None` for each provider's own.
    pub base_url: Option<String>,
    pub token: Option<Token>,
    pub registry: Arc<Registry>,
    pub scan: ScanOptions,
    pub progress: Progress,
    /// The response cache and rate budget, shared with every session given the same.
    pub shared: Shared,
}

impl SessionOptions {
    /// The built-in providers against `base_url`, with defaults for the rest.
    pub fn new(base_url: &str, token: Option<&str>) -> SessionOptions {
        SessionOptions {
            base_url: Some(base_url.to_string()),
            token: token.and_then(|t| Token::new(t.to_string())),
            registry: Arc::new(Registry::embedded().expect("the built-in provider files load")),
            scan: ScanOptions::default(),
            progress: Progress::silent(),
            shared: Shared::default(),
        }
    }
}

pub struct Session {
    ctx: SessionContext,
    registry: Arc<Registry>,
    clients: std::collections::HashMap<String, Arc<ApiClient>>,
}

impl Session {
    pub async fn new(options: SessionOptions) -> Result<Session, Error> {
        let registry = options.registry;
        let mut clients = std::collections::HashMap::new();
        for provider in registry.providers.values() {
            let base_url = options.base_url.clone().unwrap_or_else(|| provider.base_url.clone());
            if options.token.is_some() && cleartext_off_host(&base_url) {
                return Err(Error::Usage(format!(
                    "refusing to send {} over plain http to {base_url}: use https, or a loopback address",
                    provider.auth.env_var
                )));
            }
            let client = ApiClient::new(
                &base_url,
                options.token.clone(),
                &provider.auth.env_var,
                provider.rate_limits.clone(),
                options.progress.clone(),
                options.shared.clone(),
            );
            clients.insert(provider.id.clone(), Arc::new(client));
        }
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        register_all(&ctx, &registry, |p| clients[&p.id].clone(), options.scan)?;
        let session = Session { ctx, registry, clients };
        session.register_views().await?;
        Ok(session)
    }

    /// Creates the views the provider files declare, under their service.
    async fn register_views(&self) -> Result<(), Error> {
        for provider in self.registry.providers.values() {
            for service in provider.services.values() {
                for (name, view) in &service.views {
                    let full = format!("{}.{}.{name}", provider.id, service.id);
                    let failed = |e: Error| Error::Refused(format!("view {full} in the provider files: {e}"));
                    let query = provider.view_sql(view).map_err(|missing| {
                        failed(Error::Refused(format!("the view uses {{{{ {missing} }}}}, which is not a constant")))
                    })?;
                    let mut parsed = sql::parse(&format!("CREATE VIEW {full} AS {query}")).map_err(failed)?;
                    sql::resolve_names(&mut parsed.statement, &self.registry);
                    let plan =
                        self.ctx.state().statement_to_plan(parsed.statement).await.map_err(|e| failed(e.into()))?;
                    self.ctx.execute_logical_plan(plan).await?.collect().await?;
                }
            }
        }
        Ok(())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs one statement. A change runs to its end before this returns; rows of a query are
    /// produced as its stream is read.
    pub async fn execute(&self, text: &str) -> Result<Outcome, Error> {
        self.execute_with(text, &CancelToken::new()).await
    }

    /// [`Session::execute`], stopped by `cancel`: a change stops before its next request.
    pub async fn execute_with(&self, text: &str, cancel: &CancelToken) -> Result<Outcome, Error> {
        if let Some(meta) = meta::parse(text, &self.registry) {
            return Ok(Outcome::batch(meta::run(&meta?, &self.registry)?, None));
        }
        let mut parsed = sql::parse(text)?;
        sql::resolve_names(&mut parsed.statement, &self.registry);
        let state = self.ctx.state();
        match &parsed.statement {
            DFStatement::Statement(statement) => {
                if let Some(bound) = mutate::bind(&state, &self.registry, statement, &parsed.hints).await? {
                    let api = &self.clients[&bound.provider.id];
                    return mutate::execute(bound, api, cancel).await;
                }
            }
            DFStatement::Explain(explain) => {
                if let DFStatement::Statement(statement) = explain.statement.as_ref()
                    && let Some(bound) = mutate::bind(&state, &self.registry, statement, &parsed.hints).await?
                {
                    return Ok(Outcome::batch(mutate::explain(&bound).await?, None));
                }
            }
            _ => {}
        }
        self.query(state, parsed.statement).await
    }

    /// Everything DataFusion runs: queries, EXPLAIN, views, COPY.
    async fn query(&self, state: SessionState, statement: DFStatement) -> Result<Outcome, Error> {
        let plan = state.statement_to_plan(statement).await?;
        let quiet = matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_));
        let frame = self.ctx.execute_logical_plan(plan).await?;
        if quiet {
            frame.collect().await?;
            return Ok(Outcome::Done);
        }
        Ok(Outcome::Rows { stream: frame.execute_stream().await?, changed: None })
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
