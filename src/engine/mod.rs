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

mod awaited;
mod copy;
mod function;
mod guard;
mod members;
mod memory;
pub mod meta;
pub mod postgres;
mod restart;
mod settings;
mod statement;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::datasource::ViewTable;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{LogicalPlan, TableType};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{DescribeAlias, Statement as SqlStatement};

use crate::api::{ApiClient, CALL_TIMEOUT, Progress, Shared, Token};
pub use crate::cancel::CancelToken;
use crate::error::Error;
pub use crate::files::FileAccess;
use crate::mutate;
use crate::outcome::Outcome;
use crate::provider::{Provider, Registry, View, nearest_table};
use crate::scan::{
    AccountsInfo, ComputedTable, OnError, ParamsFromJoins, ScanOptions, register_accounts, register_all,
};
use crate::sql::{self, Dialect};
pub use guard::Policy;
pub use memory::Memory;
use meta::Meta;
pub use settings::{
    ACCOUNTS_ON_ERROR, AWAIT_TIMEOUT, DRY_RUN, OwnSetting, duration, duration_text, own_setting, setting_text,
};
use statement::Form;
pub use statement::{CopyFormat, Kind, Prepared, Statement};

/// What a session runs against and how.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The API base; `None` for each provider's own.
    pub base_url: Option<String>,
    pub token: Option<Token>,
    pub registry: Arc<Registry>,
    pub scan: ScanOptions,
    pub progress: Progress,
    /// The catalog unqualified `service.resource` names resolve in (a Postgres database);
    /// `None` keeps names fully qualified.
    pub default_catalog: Option<String>,
    /// How long one API call may take (a list page, a change; not an upload's body).
    pub timeout: std::time::Duration,
    /// The response cache and rate budget, shared with every session given the same.
    pub shared: Shared,
    /// The SQL the front end reads.
    pub dialect: Dialect,
    /// What the front end lets its users do besides reading and changing resources.
    pub policy: Policy,
    /// What errors call the token (`None`: the provider's environment variable).
    pub token_source: Option<String>,
    pub memory: Memory,
    /// Values the profile gives the fields an INSERT leaves out (linode-cli's defaults).
    pub defaults: mutate::Defaults,
    /// An account set: every provider table gets a leading `account` column and reads each
    /// of them with its own token. Empty: one account, `base_url` and `token`.
    pub accounts: Vec<AccountOptions>,
    /// The history store the session reads (`provider.history.*`); `None`: no history.
    pub history: Option<HistoryOptions>,
}

/// Where the history is and whose a session reads.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub dir: std::path::PathBuf,
    /// The name a session of one account reads and records it under (its profile's, or
    /// `default`); a set's accounts go by their own names.
    pub account: String,
}

/// One account of an account set, named by its profile.
#[derive(Debug, Clone)]
pub struct AccountOptions {
    pub name: String,
    pub base_url: Option<String>,
    pub token: Option<Token>,
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
            default_catalog: None,
            timeout: CALL_TIMEOUT,
            shared: Shared::default(),
            dialect: Dialect::Generic,
            policy: Policy::local(),
            token_source: None,
            memory: Memory::default(),
            defaults: mutate::Defaults::new(),
            accounts: vec![],
            history: None,
        }
    }
}

pub struct Session {
    ctx: SessionContext,
    registry: Arc<Registry>,
    clients: std::collections::HashMap<String, Arc<ApiClient>>,
    dialect: Dialect,
    policy: Policy,
    has_token: bool,
    /// Changes are previewed, not sent (`imageql.dry_run`).
    dry_run: std::sync::atomic::AtomicBool,
    /// Set by the command line's `--dry-run`: no statement may turn the dry run off.
    dry_run_forced: std::sync::atomic::AtomicBool,
    /// How long `/*+ AWAIT */` waits at most (`imageql.await_timeout`).
    await_timeout: std::sync::Mutex<std::time::Duration>,
    /// What the profile gives the fields an INSERT leaves out.
    defaults: mutate::Defaults,
    /// The account set's names; empty in a session of one account.
    accounts: Vec<String>,
    /// The account set's accounts, each as a session of its own.
    members: Option<Arc<members::Members>>,
    /// Whether a statement over the account set answers from the accounts that did not fail.
    on_error: Arc<OnError>,
    /// Warnings reported since the front end last took them (an account left out).
    warnings: Arc<std::sync::Mutex<Vec<String>>>,
    /// The body fields the provider files call secret, found once.
    secret_fields: Vec<String>,
}

/// One API client per provider.
type Clients = std::collections::HashMap<String, Arc<ApiClient>>;

/// The clients of one account: its token and API base (or the provider's) for each provider.
fn clients_for(
    http: &crate::api::Http,
    options: &SessionOptions,
    base_url: Option<&String>,
    token: Option<&Token>,
    token_source: Option<&str>,
) -> Result<Clients, Error> {
    let mut clients = Clients::new();
    for provider in options.registry.providers.values() {
        let given = base_url.cloned().unwrap_or_else(|| provider.base_url.clone());
        let base = api_base(&given)?;
        if token.is_some() && cleartext_off_host(&base) {
            return Err(Error::Usage(format!(
                "refusing to send {} over plain http to {given}: use https, or a loopback address",
                provider.auth.env_var
            )));
        }
        let base = base.as_str().trim_end_matches('/').to_string();
        let client = ApiClient::new(
            http,
            &base,
            token.cloned(),
            token_source.unwrap_or(&provider.auth.env_var),
            provider.rate_limits.clone(),
            options.progress.clone(),
            options.shared.clone(),
            options.timeout,
        );
        let client = match options.policy.reveals_setup {
            true => client,
            false => client.hiding_base(),
        };
        clients.insert(provider.id.clone(), Arc::new(client));
    }
    Ok(clients)
}

impl Session {
    pub async fn new(mut options: SessionOptions) -> Result<Session, Error> {
        // Warnings go where the front end shows them, and are kept for one that sends them on.
        let warnings: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (kept, shown) = (warnings.clone(), options.progress.clone());
        options.progress = Progress::new(move |event| {
            if let crate::api::Event::Warning(text) = &event {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(text.to_string());
            }
            shown.report(event);
        });
        let http = crate::api::Http::new();
        let clients = clients_for(
            &http,
            &options,
            options.base_url.as_ref(),
            options.token.as_ref(),
            options.token_source.as_deref(),
        )?;
        let mut accounts = Vec::new();
        let mut seen: Vec<(&str, Option<&String>, Option<u64>)> = Vec::new();
        for account in &options.accounts {
            // Two profiles of one account (linode-cli's and imageql's files both name it) would
            // read its rows twice and send its changes twice.
            let identity = (account.base_url.as_ref(), account.token.as_ref().map(Token::fingerprint));
            if let Some((first, ..)) = seen.iter().find(|(_, url, token)| (*url, *token) == identity) {
                let text = format!(
                    "profile {} is the same account as {first} (the same token and API): it is read once, as {first}",
                    account.name
                );
                options.progress.report(crate::api::Event::Warning(&text));
                continue;
            }
            seen.push((account.name.as_str(), identity.0, identity.1));
            let source = format!("the token of profile {}", account.name);
            let clients =
                clients_for(&http, &options, account.base_url.as_ref(), account.token.as_ref(), Some(&source))?;
            accounts.push((account.name.clone(), clients));
        }
        Session::build(options, clients, accounts, warnings).await
    }

    /// A session with its clients made: of one account, or of an account set (`accounts`).
    async fn build(
        options: SessionOptions,
        clients: Clients,
        accounts: Vec<(String, Clients)>,
        warnings: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> Result<Session, Error> {
        let registry = options.registry.clone();
        let mut config = SessionConfig::new().with_information_schema(true);
        if let Some(catalog) = &options.default_catalog {
            config = config.with_default_catalog_and_schema(catalog, "public");
        }
        let mut runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(memory::Bounded::new(&options.memory)));
        if !options.memory.spill {
            runtime =
                runtime.with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled));
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc()?)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(ParamsFromJoins))
            .build();
        let ctx = SessionContext::new_with_state(state);
        memory::bound_functions(&ctx, options.memory.statement);
        if options.dialect == Dialect::Postgres {
            postgres::register(&ctx);
        }
        let on_error = Arc::new(OnError::default());
        let of = |p: &Provider| -> Vec<(String, Arc<ApiClient>)> {
            match accounts.is_empty() {
                true => vec![("default".to_string(), clients[&p.id].clone())],
                false => accounts.iter().map(|(name, c)| (name.clone(), c[&p.id].clone())).collect(),
            }
        };
        if accounts.is_empty() {
            register_all(&ctx, &registry, |p| clients[&p.id].clone(), options.scan)?;
        } else {
            register_accounts(&ctx, &registry, of, options.scan, on_error.clone(), options.progress.clone())?;
        }
        // `provider.meta.accounts`: the accounts and how their requests went.
        for provider in registry.providers.values() {
            if let Some(catalog) = ctx.catalog(&provider.id) {
                let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
                datafusion::catalog::SchemaProvider::register_table(
                    schema.as_ref(),
                    "accounts".into(),
                    ComputedTable::new(AccountsInfo::new(of(provider)), TableType::View),
                )?;
                catalog.register_schema("meta", schema)?;
            }
        }
        let has_token = options.token.is_some();
        let names = accounts.iter().map(|(name, _)| name.clone()).collect();
        let members = (!accounts.is_empty()).then(|| Arc::new(members::Members::new(options.clone(), accounts)));
        let session = Session {
            ctx,
            registry,
            clients,
            dialect: options.dialect,
            policy: options.policy,
            has_token,
            dry_run: Default::default(),
            dry_run_forced: Default::default(),
            await_timeout: std::sync::Mutex::new(mutate::AWAIT_TIMEOUT),
            defaults: options.defaults,
            accounts: names,
            members,
            on_error,
            warnings,
            secret_fields: options.registry.secret_fields(),
        };
        // The views read the history (usage bills a deleted image by what it saw).
        session.register_history(options.history.as_ref()).await?;
        match &session.members {
            None => session.register_views().await?,
            Some(members) => session.register_set_views(members, &options.progress).await?,
        }
        Ok(session)
    }

    /// `provider.history.*`: the observations of each recorded resource, their versions and
    /// the rows at a moment, and `changes(from, to)`, for the session's own accounts; empty
    /// without a store.
    async fn register_history(&self, options: Option<&HistoryOptions>) -> Result<(), Error> {
        let store = crate::history::Store::new(options.map(|o| o.dir.clone()).unwrap_or_default());
        let accounts = match (options, self.accounts.is_empty()) {
            (None, _) => vec![],
            (Some(options), true) => vec![options.account.clone()],
            (Some(_), false) => self.accounts.clone(),
        };
        for provider in self.registry.providers.values() {
            let recorded: Vec<Arc<crate::provider::Resource>> = self
                .registry
                .recorded()
                .into_iter()
                .filter(|r| r.full_name.starts_with(&format!("{}.", provider.id)))
                .collect();
            let Some(catalog) = self.ctx.catalog(&provider.id).filter(|_| !recorded.is_empty()) else { continue };
            let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
            catalog.register_schema("history", schema.clone())?;
            let transitions = crate::history::TransitionsTable::new(store.clone(), recorded.clone(), accounts.clone());
            datafusion::catalog::SchemaProvider::register_table(
                schema.as_ref(),
                "transitions".into(),
                ComputedTable::new(transitions, TableType::Base),
            )?;
            for resource in &recorded {
                let table = crate::history::HistoryTable::new(store.clone(), resource.clone(), accounts.clone());
                datafusion::catalog::SchemaProvider::register_table(
                    schema.as_ref(),
                    resource.name.clone(),
                    ComputedTable::new(table, TableType::Base),
                )?;
                let full = format!("{}.history.{}", provider.id, resource.name);
                for (name, sql, at) in crate::history::views(resource, &full) {
                    let at_param = crate::provider::ViewParam {
                        name: "at".into(),
                        kind: crate::provider::Kind::Datetime,
                        description: "The moment (UTC).".into(),
                    };
                    self.register_sql_view(&name, &sql, if at { vec![at_param] } else { vec![] }).await?;
                }
            }
            let period = |name: &str, description: &str| crate::provider::ViewParam {
                name: name.into(),
                kind: crate::provider::Kind::Datetime,
                description: description.into(),
            };
            let changes = format!(
                "SELECT * FROM {}.history.transitions WHERE at >= CAST($from AS TIMESTAMP) AND at < CAST($to AS TIMESTAMP)",
                provider.id
            );
            let params = vec![
                period("from", "The period's start (inclusive, UTC)."),
                period("to", "The period's end (exclusive, UTC)."),
            ];
            self.register_sql_view(&format!("{}.history.changes", provider.id), &changes, params).await?;
        }
        Ok(())
    }

    /// A view of imageql's own SQL, by its full name; with parameters, a table function.
    async fn register_sql_view(
        &self,
        full: &str,
        sql: &str,
        params: Vec<crate::provider::ViewParam>,
    ) -> Result<(), Error> {
        let parsed = sql::parse(sql, Dialect::Generic)?;
        let plan = self.ctx.state().statement_to_plan(parsed.statement).await?;
        if params.is_empty() {
            let parts: Vec<&str> = full.split('.').collect();
            let table = TableReference::full(parts[0], parts[1], parts[2]);
            self.ctx.register_table(table, Arc::new(ViewTable::new(plan, Some(sql.to_string()))))?;
        } else {
            self.ctx.register_udtf(full, Arc::new(function::ViewFunction::new(full.to_string(), params, plan)));
        }
        Ok(())
    }

    /// The names of the account set's accounts; none for a session of one account.
    pub fn accounts(&self) -> &[String] {
        &self.accounts
    }

    /// The API's time at its latest answer to this session, from its `Date` header.
    pub fn server_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let clients = self.clients.values().cloned();
        let members = self.members.iter().flat_map(|m| m.clients());
        clients.chain(members).filter_map(|c| c.usage().server_time).max()
    }

    /// The views of an account set: each account's own, `account` first. One account's
    /// session tells their columns.
    async fn register_set_views(&self, members: &Arc<members::Members>, progress: &Progress) -> Result<(), Error> {
        let Some(first) = self.accounts.first() else { return Ok(()) };
        let template = members.session(first).await?;
        for provider in self.registry.providers.values() {
            for service in provider.services.values() {
                for (name, view) in &service.views {
                    let full = format!("{}.{}.{name}", provider.id, service.id);
                    if view.params.is_empty() {
                        let schema = template.ctx.table_provider(full.as_str()).await?.schema();
                        let table = members.view(&full, schema, self.on_error.clone(), progress.clone());
                        self.ctx.register_table(
                            TableReference::full(provider.id.as_str(), service.id.as_str(), name.as_str()),
                            Arc::new(table),
                        )?;
                    } else {
                        let function = template.ctx.table_function(&full)?.function().clone();
                        let across = members::AccountsFunction::new(
                            full.clone(),
                            members.clone(),
                            function,
                            self.on_error.clone(),
                            progress.clone(),
                        );
                        self.ctx.register_udtf(&full, Arc::new(across));
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates the views the provider files declare, under their service; a view with
    /// parameters becomes a table function of the same name. A view may read another: views
    /// are created in passes until every one is, and one that never plans is reported.
    async fn register_views(&self) -> Result<(), Error> {
        let mut pending: Vec<(&Provider, &str, &str, &View)> = Vec::new();
        for provider in self.registry.providers.values() {
            for service in provider.services.values() {
                for (name, view) in &service.views {
                    pending.push((provider, service.id.as_str(), name.as_str(), view));
                }
            }
        }
        while !pending.is_empty() {
            let tried = pending.len();
            let mut failures = Vec::new();
            for (provider, service, name, view) in std::mem::take(&mut pending) {
                if let Err(e) = self.register_view(provider, service, name, view).await {
                    failures.push(((provider, service, name, view), e));
                }
            }
            if failures.len() == tried {
                return Err(failures.remove(0).1);
            }
            pending = failures.into_iter().map(|(view, _)| view).collect();
        }
        Ok(())
    }

    async fn register_view(&self, provider: &Provider, service: &str, name: &str, view: &View) -> Result<(), Error> {
        let full = format!("{}.{service}.{name}", provider.id);
        let failed = |e: Error| Error::Refused(format!("view {full} in the provider files: {e}"));
        let query = provider.view_sql(view).map_err(|missing| {
            failed(Error::Refused(format!("the view uses {{{{ {missing} }}}}, which is not a constant")))
        })?;
        let mut parsed = sql::parse(&query, Dialect::Generic).map_err(failed)?;
        sql::resolve_names(&mut parsed.statement, &self.registry, &self.session_tables());
        let plan = self.ctx.state().statement_to_plan(parsed.statement).await.map_err(|e| failed(e.into()))?;
        if view.params.is_empty() {
            let table = TableReference::full(provider.id.as_str(), service, name);
            self.ctx.register_table(table, Arc::new(ViewTable::new(plan, Some(query))))?;
        } else {
            let function = function::ViewFunction::new(full.clone(), view.params.clone(), plan);
            self.ctx.register_udtf(&full, Arc::new(function));
        }
        Ok(())
    }

    /// The tables this session made (CREATE TABLE), and the engine's own in the providers'
    /// catalogs (history, meta).
    fn session_tables(&self) -> sql::SessionTables {
        let public = self.ctx.catalog("datafusion").and_then(|c| c.schema("public"));
        let local = public.map(|schema| schema.table_names()).unwrap_or_default();
        let described = self.registry.table_names();
        let mut engine = Vec::new();
        for provider in self.registry.providers.keys() {
            let Some(catalog) = self.ctx.catalog(provider) else { continue };
            // A Postgres client's catalog queries name these as the client means them.
            let system = |schema: &String| matches!(schema.as_str(), "pg_catalog" | "information_schema");
            for schema in catalog.schema_names().into_iter().filter(|s| !system(s)) {
                let tables = catalog.schema(&schema).map(|s| s.table_names()).unwrap_or_default();
                engine.extend(tables.into_iter().map(|t| format!("{provider}.{schema}.{t}")));
            }
        }
        engine.retain(|full| !described.contains(full));
        sql::SessionTables { local: local.iter().map(|t| t.to_lowercase()).collect(), engine }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether the API accepts the session's token, asked of each provider that says how
    /// (`auth.check`); a session without a token is accepted.
    pub async fn token_accepted(&self) -> Result<bool, Error> {
        for provider in self.registry.providers.values() {
            if let Some(check) = &provider.auth.check
                && self.has_token
                && !self.clients[&provider.id].accepts_token(check).await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The DataFusion context the session's queries run in (for front ends that add their
    /// own catalogs, such as a Postgres server's `pg_catalog`).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Reads the text of one statement (a piece of a script) in the session's dialect.
    pub fn parse(&self, text: &str) -> Result<Statement, Error> {
        // `SHOW ACCOUNTS` is the query of the first provider's `meta.accounts`.
        let words: Vec<String> = text.trim().trim_end_matches(';').split_whitespace().map(str::to_uppercase).collect();
        if words == ["SHOW", "ACCOUNTS"]
            && let Some(provider) = self.registry.providers.keys().next()
        {
            let query = format!("SELECT * FROM {provider}.meta.accounts ORDER BY account");
            return Ok(Statement { form: Form::Sql(sql::parse(&query, self.dialect)?) });
        }
        let form = match meta::parse(text, &self.registry) {
            Some(meta) => Form::Meta(meta?),
            None => Form::Sql(sql::parse(text, self.dialect)?),
        };
        Ok(Statement { form })
    }

    /// `DESCRIBE name`, made without text: a resource's description from the registry, or
    /// DataFusion's of any other table or view (the shell's `\d name`).
    pub fn describe_named(&self, name: &str) -> Result<Statement, Error> {
        let completed = self.registry.completed(name);
        let name = completed.as_deref().unwrap_or(name);
        if self.registry.resolve(name).is_ok_and(|r| r.method.is_none()) {
            return Ok(Statement { form: Form::Meta(Meta::Describe { resource: name.to_string(), extended: false }) });
        }
        let describe = SqlStatement::ExplainTable {
            describe_alias: DescribeAlias::Describe,
            hive_format: None,
            has_table_keyword: false,
            table_name: sql::object_name(name)?,
        };
        Ok(Statement { form: Form::Sql(DFStatement::Statement(Box::new(describe)).into()) })
    }

    /// `SHOW RESOURCES`, made without text (the shell's `\d`).
    pub fn list_resources(&self) -> Statement {
        Statement { form: Form::Meta(Meta::Resources { service: None, like: None }) }
    }

    /// Checks a statement against the session's policy and plans it, sending nothing: what
    /// kind of statement it is, its parameters and the rows it returns are known from here on.
    pub async fn prepare(&self, statement: Statement) -> Result<Prepared, Error> {
        let mut secrets = match &statement.form {
            Form::Sql(parsed) => self.secrets_of(&parsed.statement),
            Form::Meta(_) => vec![],
        };
        // Parameters have no values yet.
        secrets.retain(|secret| !secret.starts_with('$'));
        self.prepared(statement).await.map_err(|error| with_secrets_masked(self.explained(error), secrets))
    }

    async fn prepared(&self, statement: Statement) -> Result<Prepared, Error> {
        let mut parsed = match statement.form {
            Form::Meta(meta) => return Ok(Prepared::new(None, Kind::Meta(meta))),
            Form::Sql(parsed) => parsed,
        };
        let state = self.ctx.state();
        guard::check_statement(&mut parsed.statement, &state, &self.policy)?;
        if let Some((mut query, format)) = statement::copied_query(&parsed)? {
            sql::resolve_names(&mut query.statement, &self.registry, &self.session_tables());
            let plan = self.plan(&state, &mut query).await?;
            guard::check_plan(&plan, &self.registry, &self.policy)?;
            return Ok(Prepared::new(Some(parsed), Kind::CopyOut(plan, format)));
        }
        sql::resolve_names(&mut parsed.statement, &self.registry, &self.session_tables());
        if let DFStatement::Statement(prepare) = &parsed.statement
            && let SqlStatement::Prepare { statement: inner, .. } = prepare.as_ref()
            && mutate::changes_resources(&self.registry, inner)
        {
            return Err(Error::Unsupported {
                what: "PREPARE of a change".into(),
                instead: Some(
                    "run the change itself; a driver's prepared statements (bound parameters) take changes".into(),
                ),
            });
        }
        let kind = match statement::classify(&parsed.statement, &self.registry) {
            Some(kind) => kind,
            None => match self.plan(&state, &mut parsed).await {
                Ok(plan) => {
                    guard::check_plan(&plan, &self.registry, &self.policy)?;
                    Kind::Plan(plan)
                }
                Err(_) if parameters(&parsed) > 0 => Kind::Deferred,
                Err(e) => return Err(e),
            },
        };
        if !self.accounts.is_empty() && !matches!(kind, Kind::Change) && parsed.has_hint("AWAIT") {
            return Err(Error::Refused(format!(
                "a SELECT waits in one account: this session reads the account set {}; run it with --profile NAME",
                self.accounts.join(", ")
            )));
        }
        match (&kind, parsed.has_hint("AWAIT")) {
            (Kind::Plan(_), true) => {
                awaited::awaited(&parsed.statement, &self.registry)?;
            }
            (Kind::Change, _) | (_, false) => {}
            (_, true) => {
                return Err(Error::Refused(
                    "AWAIT waits for what a change started, or for the rows of a SELECT: write it after \
                     INSERT, REPLACE, DELETE, EXEC or SELECT"
                        .into(),
                ));
            }
        }
        let types = match (&kind, &parsed.statement) {
            (Kind::Change, DFStatement::Statement(change)) => {
                statement::change_parameter_types(&state, &self.registry, change).await
            }
            _ => vec![],
        };
        let mut prepared = Prepared::new(Some(parsed), kind).with_change_parameters(types);
        prepared.previewed = self.dry_run();
        Ok(prepared)
    }

    /// DataFusion's plan of a statement. In the Postgres dialect, a statement whose correlated
    /// subqueries DataFusion cannot decorrelate is planned once more with its lookups in the
    /// catalog as NULL (how clients ask for a column's default or collation, which this
    /// catalog has none of); a subquery of anything else stays, and fails as DataFusion says.
    async fn plan(&self, state: &SessionState, parsed: &mut sql::Parsed) -> Result<LogicalPlan, Error> {
        let plan = state.statement_to_plan(parsed.statement.clone()).await?;
        if self.dialect != Dialect::Postgres || statement::runnable(state, &plan) {
            return Ok(plan);
        }
        let mut nulled = parsed.statement.clone();
        if let DFStatement::Statement(statement) = &mut nulled {
            sql::postgres::null_catalog_lookups(statement);
        }
        match state.statement_to_plan(nulled.clone()).await {
            Ok(retried) if statement::runnable(state, &retried) => {
                parsed.statement = nulled;
                Ok(retried)
            }
            _ => Ok(plan),
        }
    }

    /// The columns of the rows a prepared statement returns, found without sending anything;
    /// `None` when it returns no rows (a change without RETURNING, SET, CREATE VIEW).
    pub async fn describe(&self, prepared: &Prepared) -> Result<Option<SchemaRef>, Error> {
        match prepared.kind() {
            Kind::Meta(meta) => Ok(Some(self.meta(meta)?.schema())),
            Kind::Plan(plan) => Ok(statement::returns_rows(plan).then(|| Arc::new(plan.schema().as_arrow().clone()))),
            Kind::CopyOut(plan, _) => Ok(Some(Arc::new(plan.schema().as_arrow().clone()))),
            Kind::Cursor => Ok(None),
            Kind::Change => {
                let parsed = prepared.parsed();
                let (statement, previewed) = match &parsed.statement {
                    DFStatement::Explain(explain) => match explain.statement.as_ref() {
                        DFStatement::Statement(statement) => (statement, true),
                        _ => return Ok(None),
                    },
                    DFStatement::Statement(statement) => (statement, self.dry_run()),
                    _ => return Ok(None),
                };
                if previewed {
                    let (resource, verb) = mutate::target(&self.registry, statement)?;
                    return Ok(Some(mutate::preview_schema(&resource, verb, &self.scope())));
                }
                let exec = matches!(statement.as_ref(), SqlStatement::Execute { .. });
                if !exec && !statement::has_returning(statement, parsed) {
                    return Ok(None);
                }
                let bound =
                    mutate::bind_for_describe(&self.ctx.state(), &self.registry, statement, parsed, self.scope())?;
                mutate::result_schema(&bound).await
            }
            Kind::Deferred => {
                let nulls = ParamValues::List(vec![ScalarValue::Null.into(); parameters(prepared.parsed())]);
                match self.deferred_plan(prepared.parsed(), &nulls).await {
                    Ok(plan) => Ok(statement::returns_rows(&plan).then(|| Arc::new(plan.schema().as_arrow().clone()))),
                    Err(_) => Ok(None),
                }
            }
            Kind::Variable | Kind::Transaction => Ok(None),
        }
    }

    /// The plan of a deferred statement with its parameters' values in place.
    async fn deferred_plan(&self, parsed: &sql::Parsed, params: &ParamValues) -> Result<LogicalPlan, Error> {
        let DFStatement::Statement(statement) = &parsed.statement else {
            return Err(Error::Query("only a query is planned when it runs".into()));
        };
        let mut valued = parsed.clone();
        valued.statement = DFStatement::Statement(Box::new(statement::with_values(statement, params)?));
        let plan = self.plan(&self.ctx.state(), &mut valued).await?;
        guard::check_plan(&plan, &self.registry, &self.policy)?;
        Ok(plan)
    }

    /// The types of a prepared statement's parameters (`$1`, `$2`, …) by position; `None`
    /// where nothing in the statement tells.
    pub fn parameter_types(&self, prepared: &Prepared) -> Result<Vec<Option<DataType>>, Error> {
        match (prepared.kind(), prepared.sql()) {
            (Kind::Plan(plan), _) => statement::parameter_types(plan),
            (Kind::Deferred, _) => Ok(vec![None; parameters(prepared.parsed())]),
            (Kind::Change, Some(_)) => Ok(prepared.change_parameters().to_vec()),
            (_, Some(sql)) => Ok(vec![None; statement::placeholder_count(sql)]),
            (_, None) => Ok(vec![]),
        }
    }

    /// Where unqualified table names are looked up (a Postgres connection's `search_path`):
    /// the first of `schemas` the session's default catalog has, else `public`.
    pub fn search(&self, schemas: &[String]) {
        let catalog = self.ctx.state().config().options().catalog.default_catalog.clone();
        let known = self.ctx.catalog(&catalog).map(|c| c.schema_names()).unwrap_or_default();
        let first = schemas.iter().find(|s| known.contains(s)).cloned().unwrap_or_else(|| "public".into());
        self.ctx.state_ref().write().config_mut().options_mut().catalog.default_schema = first;
    }

    /// Runs one statement. A change runs to its end before this returns; rows of a query are
    /// produced as its stream is read.
    pub async fn execute(&self, text: &str) -> Result<Outcome, Error> {
        self.execute_with(text, &CancelToken::new()).await
    }

    /// [`Session::execute`], stopped by `cancel`: a change stops before its next request.
    pub async fn execute_with(&self, text: &str, cancel: &CancelToken) -> Result<Outcome, Error> {
        self.execute_statement(self.parse(text)?, cancel).await
    }

    /// Prepares and runs a statement that takes no parameters.
    pub async fn execute_statement(&self, statement: Statement, cancel: &CancelToken) -> Result<Outcome, Error> {
        let prepared = self.prepare(statement).await?;
        self.run(&prepared, &ParamValues::List(vec![]), cancel).await
    }

    /// Runs a prepared statement with values for its parameters.
    pub async fn run(&self, prepared: &Prepared, params: &ParamValues, cancel: &CancelToken) -> Result<Outcome, Error> {
        self.running(prepared, params, cancel)
            .await
            .map_err(|error| self.masked(prepared, params, self.explained(error)))
    }

    /// An error of a change that gave a secret, with the secret masked wherever it shows; a
    /// secret given as a parameter (`$3`) is masked by its value.
    fn masked(&self, prepared: &Prepared, params: &ParamValues, error: Error) -> Error {
        let Some(statement) = prepared.statement() else { return error };
        let values = match params {
            ParamValues::List(values) => values.as_slice(),
            ParamValues::Map(_) => &[],
        };
        let secrets = self
            .secrets_of(statement)
            .into_iter()
            .filter_map(|secret| match secret.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => values.get(n.wrapping_sub(1)).map(|v| v.value().to_string().trim_matches('"').to_string()),
                None => Some(secret),
            })
            .filter(|secret| !secret.is_empty() && secret != "NULL")
            .collect();
        with_secrets_masked(error, secrets)
    }

    /// The secrets a statement (or the change it explains) gives.
    fn secrets_of(&self, statement: &DFStatement) -> Vec<String> {
        match statement {
            DFStatement::Statement(statement) => mutate::secret_values(statement, &self.secret_fields),
            DFStatement::Explain(explain) => self.secrets_of(&explain.statement),
            _ => vec![],
        }
    }

    async fn running(&self, prepared: &Prepared, params: &ParamValues, cancel: &CancelToken) -> Result<Outcome, Error> {
        let state = self.ctx.state();
        match prepared.kind() {
            Kind::Meta(meta) => Ok(Outcome::batch(self.meta(meta)?, None)),
            // A client that kept a statement prepared under the other dry-run setting expects
            // other columns: refused before anything is sent, as PostgreSQL refuses a cached
            // plan whose result changed.
            Kind::Change if prepared.changes() && prepared.previewed != self.dry_run() => Err(Error::Stale(
                "cached plan must not change result type: imageql.dry_run changed since the statement was prepared; \
                 prepare it again"
                    .into(),
            )),
            Kind::Change => self.change(prepared.parsed(), params, cancel).await,
            Kind::Plan(plan) => {
                let plan = match params {
                    ParamValues::List(values) if values.is_empty() => plan.clone(),
                    params => plan.clone().replace_params_with_values(params)?,
                };
                if prepared.parsed().has_hint("AWAIT") {
                    self.await_rows(prepared.parsed(), params, cancel).await?;
                }
                self.query(plan).await
            }
            Kind::Deferred => self.query(self.deferred_plan(prepared.parsed(), params).await?).await,
            Kind::CopyOut(plan, _) => self.query(plan.clone().replace_params_with_values(params)?).await,
            Kind::Cursor => Err(Error::Unsupported {
                what: "cursors (DECLARE, FETCH, CLOSE)".into(),
                instead: Some("they are for clients of imageql serve; here LIMIT and OFFSET page through rows".into()),
            }),
            Kind::Variable if let Some(own) = settings::own_setting(&prepared.parsed().statement) => {
                self.apply_own_setting(&own)
            }
            // No notifications are ever listened to, and statements prepared by SQL are
            // DataFusion's, kept by name only.
            Kind::Variable
                if matches!(prepared.sql(), Some(SqlStatement::UNLISTEN { .. } | SqlStatement::Deallocate { .. })) =>
            {
                Ok(Outcome::Done)
            }
            Kind::Variable | Kind::Transaction => {
                let plan = state.statement_to_plan(prepared.parsed().statement.clone()).await?;
                guard::check_plan(&plan, &self.registry, &self.policy)?;
                self.query(plan).await
            }
        }
    }

    /// The dry run of a prepared change (one that is not an EXPLAIN): what it would send,
    /// read now, nothing sent; `None` for any other statement.
    pub async fn preview(&self, prepared: &Prepared, cancel: &CancelToken) -> Result<Option<RecordBatch>, Error> {
        let (true, Some(statement)) = (prepared.changes(), prepared.sql()) else { return Ok(None) };
        let state = self.ctx.state();
        let bound = mutate::bind(
            &state,
            &self.registry,
            statement,
            prepared.parsed(),
            &self.policy.files,
            &self.defaults,
            self.scope(),
        )
        .await;
        let Some(bound) = bound.map_err(|error| self.explained(error))? else { return Ok(None) };
        Ok(Some(self.previewed(bound, cancel).await?))
    }

    /// Whether the session's changes act over an account set.
    fn scope(&self) -> mutate::Scope {
        match self.members {
            None => mutate::Scope::Single,
            Some(_) => mutate::Scope::Set,
        }
    }

    /// The dry run of a bound change.
    async fn previewed(&self, bound: mutate::Bound, cancel: &CancelToken) -> Result<RecordBatch, Error> {
        let Some(members) = &self.members else {
            return mutate::preview(&bound, &self.clients[&bound.provider.id], cancel).await;
        };
        let parts = self.parts(members, &bound, cancel).await?;
        match mutate::preview_parts(&parts, cancel).await? {
            Some(batch) => Ok(batch),
            None => {
                let mut nothing = bound;
                nothing.input = mutate::Input::Rows(vec![]);
                mutate::preview(&nothing, &self.clients[&nothing.provider.id], cancel).await
            }
        }
    }

    /// A change over the account set, split into each account's part: its rows are read
    /// once over the set, so that they are those a SELECT with the same WHERE answers.
    async fn parts(
        &self,
        members: &members::Members,
        bound: &mutate::Bound,
        cancel: &CancelToken,
    ) -> Result<Vec<mutate::Part>, Error> {
        let rows = {
            let _every_account = self.on_error.for_change();
            mutate::input_rows(bound, cancel).await?
        };
        let mut parts = Vec::new();
        for rows in mutate::split(rows, &self.accounts)? {
            let account = rows.account.clone();
            let session = members.session(&account).await?;
            let api = members.client(&account, &bound.provider.id)?;
            parts.push(mutate::Part { bound: bound.part(rows, session.ctx.state()), api, account });
        }
        Ok(parts)
    }

    /// A meta command's answer; a resource described in an account set starts with `account`.
    fn meta(&self, meta: &Meta) -> Result<RecordBatch, Error> {
        let answer = meta::run(meta, &self.registry)?;
        if self.accounts.is_empty() || !matches!(meta, Meta::Describe { .. }) {
            return Ok(answer);
        }
        let schema = answer.schema();
        let value = |name: &str| match name {
            "name" => "account",
            "type" => "string",
            "nullable" => "NO",
            "filterable" => "=, <>, IN, NOT IN: decide which accounts are called",
            _ => "The profile of the account set the row comes from.",
        };
        let columns = schema
            .fields()
            .iter()
            .map(|f| Arc::new(datafusion::arrow::array::StringArray::from(vec![value(f.name())])) as _)
            .collect();
        let first = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(concat_batches(&schema, [&first, &answer])?)
    }

    /// A change of resources, or EXPLAIN of one: bound now, then sent or explained.
    async fn change(&self, parsed: &sql::Parsed, params: &ParamValues, cancel: &CancelToken) -> Result<Outcome, Error> {
        let state = self.ctx.state();
        let (statement, explained) = match &parsed.statement {
            DFStatement::Statement(statement) => (statement, false),
            DFStatement::Explain(explain) => match explain.statement.as_ref() {
                DFStatement::Statement(statement) => (statement, true),
                _ => return Err(Error::Query("EXPLAIN of this statement is not a change".into())),
            },
            _ => return Err(Error::Query("not a change".into())),
        };
        let statement = statement::with_values(statement, params)?;
        let bound =
            mutate::bind(&state, &self.registry, &statement, parsed, &self.policy.files, &self.defaults, self.scope())
                .await?;
        let Some(mut bound) = bound else {
            return Err(Error::Query("the statement changes no resource".into()));
        };
        bound.await_timeout = self.await_timeout();
        if explained || self.dry_run() {
            return Ok(Outcome::batch(self.previewed(bound, cancel).await?, None));
        }
        let Some(members) = &self.members else {
            let api = self.clients[&bound.provider.id].clone();
            return mutate::execute(bound, &api, cancel).await;
        };
        let parts = self.parts(members, &bound, cancel).await?;
        let schema = mutate::result_schema(&bound).await?;
        let change = mutate::nothing_changed(&bound);
        mutate::combined(mutate::execute_parts(parts, cancel).await?, change, schema).await
    }

    /// Everything DataFusion runs: queries, EXPLAIN, views, COPY, settings.
    async fn query(&self, plan: LogicalPlan) -> Result<Outcome, Error> {
        if let LogicalPlan::Copy(copy) = plan {
            return Ok(Outcome::Copied(copy::run(&self.ctx, copy).await?));
        }
        let quiet = !statement::returns_rows(&plan);
        let frame = self.ctx.execute_logical_plan(plan).await?;
        if quiet {
            frame.collect().await?;
            return Ok(Outcome::Done);
        }
        let stream = frame.clone().execute_stream().await?;
        Ok(Outcome::Rows { stream: restart::restarting(frame, stream), changed: None })
    }

    /// An unknown table, named as the user wrote it with the names it may stand for.
    fn explained(&self, error: Error) -> Error {
        match error {
            Error::UnknownTable { name, .. } => {
                let catalog = self.ctx.state().config().options().catalog.default_catalog.clone();
                unknown_table(&self.registry, &self.session_tables(), &name, &catalog)
            }
            other => other,
        }
    }
}

fn with_secrets_masked(error: Error, secrets: Vec<String>) -> Error {
    match secrets.is_empty() {
        true => error,
        false => Error::Masked { error: Box::new(error), secrets },
    }
}

/// How many parameters (`$n`) a parsed SQL statement takes.
fn parameters(parsed: &sql::Parsed) -> usize {
    match &parsed.statement {
        DFStatement::Statement(statement) => statement::placeholder_count(statement),
        _ => 0,
    }
}

/// The error for a table DataFusion did not find, named as the user wrote it (without the
/// session's default catalog and `public.`), with the full names it may stand for.
fn unknown_table(registry: &Registry, tables: &sql::SessionTables, name: &str, catalog: &str) -> Error {
    let written =
        name.strip_prefix(&format!("{catalog}.")).map(|n| n.strip_prefix("public.").unwrap_or(n)).unwrap_or(name);
    let parts: Vec<&str> = written.split('.').collect();
    let matches = if parts.len() < 3 { tables.completions(registry, &parts) } else { vec![] };
    let mut known = registry.table_names();
    known.extend(tables.engine.iter().cloned());
    let nearest = nearest_table(written, &known).map(str::to_string);
    Error::UnknownTable { name: written.to_string(), matches, nearest }
}

/// The API base as a URL: http or https with a host, nothing the client would have to guess
/// at (`http://` alone, or `http:images`, which means the host `images`).
fn api_base(text: &str) -> Result<reqwest::Url, Error> {
    let invalid = |why: &str| {
        Error::Usage(format!(
            "the API URL {text:?} {why}: give one like https://api.linode.com/v4 or http://127.0.0.1:8765/v4"
        ))
    };
    let url = reqwest::Url::parse(text).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must start with https:// or http://"));
    }
    let written = text.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
    if url.host_str().is_none_or(str::is_empty) || !written.starts_with(|c: char| c != '/') {
        return Err(invalid("names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("may not hold credentials, a query or a fragment"));
    }
    Ok(url)
}

/// A URL that would carry the token unencrypted off this machine.
fn cleartext_off_host(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    url.scheme() == "http" && !loopback
}
