//! One client connection: its authentication, its engine session, and the routing of each
//! statement to the engine or to `datafusion-postgres` over the same DataFusion context.

use datafusion_postgres::pgwire;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ParamValues};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion_postgres::DfSessionService;
use datafusion_postgres::arrow_pg::datatypes::df::{deserialize_parameters_with_server_types, encode_dataframe};
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::{
    DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, SendableRowStream, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;

use super::{Auth, Shared, compat};
use crate::api::{Progress, Token};
use crate::engine::{CancelToken, Session, SessionOptions};
use crate::error::Error;
use crate::outcome::Outcome;
use crate::provider::Verb;
use crate::sql::split_statements;

/// What a connection holds once it has authenticated.
struct Ready {
    session: Session,
    service: Arc<DfSessionService>,
    /// SET/SHOW and transaction statements, answered as Postgres would.
    hooks: Vec<Arc<dyn QueryHook>>,
}

pub(super) struct Connection {
    shared: Arc<Shared>,
    ready: OnceLock<Ready>,
    /// Stops the statement running now, when the client sends a cancel request.
    running: Mutex<CancelToken>,
}

impl Connection {
    fn ready(&self) -> PgWireResult<&Ready> {
        self.ready.get().ok_or_else(|| fatal("28000", "the connection has not authenticated"))
    }

    /// A fresh token for the statement that starts now.
    fn start(&self) -> CancelToken {
        let token = CancelToken::new();
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }

    pub(super) fn cancel(&self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).cancel();
    }
}

/// Rows that end with a "query cancelled" error once `token` is cancelled; the scan behind
/// them is dropped then.
fn until_cancelled(rows: SendableRowStream, token: CancelToken) -> SendableRowStream {
    let stopped = token.clone();
    let cut = rows.take_until(async move { token.cancelled().await });
    let error = stream::once(async move { stopped.is_cancelled() })
        .filter_map(|cancelled| async move { cancelled.then_some(Err(PgWireError::QueryCanceled)) });
    Box::pin(cut.chain(error))
}

/// `response`, stopped by `token` while its rows are sent.
fn cancellable(response: Response, token: &CancelToken) -> Response {
    match response {
        Response::Query(mut query) => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(stream::empty()));
            query.data_rows = until_cancelled(rows, token.clone());
            Response::Query(query)
        }
        other => other,
    }
}

/// The handlers pgwire asks for once per connection.
pub struct Handlers {
    connection: Arc<Connection>,
}

impl Handlers {
    pub(super) fn new(shared: Arc<Shared>) -> Handlers {
        let connection = Connection { shared, ready: OnceLock::new(), running: Mutex::default() };
        Handlers { connection: Arc::new(connection) }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(Queries { connection: self.connection.clone() })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(Queries { connection: self.connection.clone() })
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup { connection: self.connection.clone() })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(Cancels { shared: self.connection.shared.clone() })
    }
}

fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message.into())))
}

/// An engine error as Postgres reports errors: its SQLSTATE and the command line's text.
fn wire_error(e: Error) -> PgWireError {
    error(e.sqlstate(), e.to_string())
}

/// Errors from `datafusion-postgres` carry DataFusion's errors; they get the engine's codes.
fn translated(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
            Ok(df) => wire_error(Error::from(*df)),
            Err(other) => error("XX000", other.to_string()),
        },
        other => other,
    }
}

/// A client's cancel request (sent on a connection of its own) stops the statement its
/// other connection is running, wherever it is: planning, a change, or sending rows.
struct Cancels {
    shared: Arc<Shared>,
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.shared.cancels.cancel(request.pid, &request.secret_key).await;
        if let Some(connection) = self.shared.connection(request.pid, &request.secret_key.to_bytes()) {
            connection.cancel();
        }
    }
}

struct Startup {
    connection: Arc<Connection>,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                // The password is a token: it crosses only an encrypted or local link.
                if !client.is_secure() && !client.socket_addr().ip().is_loopback() {
                    return Err(fatal(
                        "28000",
                        "passwords are sent only over TLS or from this machine: connect with sslmode=require",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let password = message.into_password()?.password;
                let user = LoginInfo::from_client_info(client).user().unwrap_or_default().to_string();
                let shared = &self.connection.shared;
                let token = match &shared.auth {
                    Auth::TokenIsPassword => Token::new(password),
                    Auth::Fixed { token, password: expected } if &password == expected => token.clone(),
                    Auth::Fixed { .. } => return Err(PgWireError::InvalidPassword(user)),
                };
                let ready = connect(shared, token).await.map_err(|e| fatal(e.sqlstate(), e.to_string()))?;
                let _ = self.connection.ready.set(ready);
                let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                // A cancel request from the client (psql's Ctrl-C) stops the running statement.
                shared.register(pid, &secret.to_bytes(), &self.connection);
                let (handle, guard) = shared.cancels.register(pid, secret);
                client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
                client.session_extensions().insert::<ConnectionGuard>(guard);
                finish_authentication(client, &DefaultServerParameterProvider::default()).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The connection's engine session, with a `pg_catalog` beside the resources.
async fn connect(shared: &Shared, token: Option<Token>) -> Result<Ready, Error> {
    let options = SessionOptions {
        base_url: shared.base_url.clone(),
        token,
        registry: shared.registry.clone(),
        scan: shared.scan,
        progress: Progress::silent(),
        default_catalog: Some(shared.database.clone()),
        timeout: shared.timeout,
        shared: shared.answers.clone(),
        dialect: crate::sql::Dialect::Generic,
        policy: crate::engine::Policy::local(),
    };
    let session = Session::new(options).await?;
    let context = Arc::new(session.context().clone());
    setup_pg_catalog(&context, &shared.database, EmptyContextProvider)
        .map_err(|e| Error::Query(format!("cannot set up pg_catalog: {e}")))?;
    compat::register(&context);
    let hooks: Vec<Arc<dyn QueryHook>> = vec![Arc::new(SetShowHook), Arc::new(TransactionStatementHook)];
    let service = Arc::new(DfSessionService::new_with_hooks(context, hooks.clone()));
    Ok(Ready { session, service, hooks })
}

async fn owns(session: &Session, text: &str) -> bool {
    let Ok(statement) = session.parse(text) else { return false };
    matches!(session.prepare(statement).await.map(|p| matches!(p.kind(), crate::engine::Kind::Meta(_) | crate::engine::Kind::Change)), Ok(true))
}

struct Queries {
    connection: Arc<Connection>,
}

/// The command of a change's tag, as Postgres names them (REPLACE is an UPDATE).
fn command(verb: Verb) -> &'static str {
    match verb {
        Verb::Insert => "INSERT",
        Verb::Replace => "UPDATE",
        Verb::Delete => "DELETE",
        Verb::Exec => "EXEC",
    }
}

fn change_tag(verb: Verb, rows: usize) -> Tag {
    let tag = Tag::new(command(verb)).with_rows(rows);
    if verb == Verb::Insert { tag.with_oid(0) } else { tag }
}

fn pg_fields(schema: &SchemaRef, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    arrow_schema_to_pg_fields(schema, format, None)
}

/// Runs a statement the engine owns and turns its outcome into a response. `rows` says
/// whether the client was told to expect rows (the extended protocol describes first).
async fn run_engine(
    session: &Session,
    text: &str,
    format: &Format,
    rows: bool,
    cancel: &CancelToken,
) -> PgWireResult<Response> {
    match session.execute_with(text, cancel).await.map_err(wire_error)? {
        Outcome::Rows { stream, changed } if rows => {
            let fields = Arc::new(pg_fields(&stream.schema(), format)?);
            let encoding = fields.clone();
            let data = stream
                .map(move |batch| -> Box<dyn Iterator<Item = PgWireResult<_>> + Send + Sync> {
                    match batch {
                        Ok(batch) => encode_recordbatch(encoding.clone(), batch),
                        Err(e) => Box::new(std::iter::once(Err(wire_error(e.into())))),
                    }
                })
                .flat_map(stream::iter);
            let mut response = QueryResponse::new(fields, data);
            if let Some(change) = changed {
                // The rows are counted as they are sent: `INSERT 0` becomes `INSERT 0 1`.
                let command = command(change.verb);
                response.set_command_tag(&if change.verb == Verb::Insert {
                    format!("{command} 0")
                } else {
                    command.into()
                });
            }
            Ok(Response::Query(response))
        }
        Outcome::Rows { changed: Some(change), .. } | Outcome::Changed(change) => {
            Ok(Response::Execution(change_tag(change.verb, change.count)))
        }
        Outcome::Rows { .. } | Outcome::Done => Ok(Response::Execution(Tag::new("OK"))),
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let ready = self.connection.ready()?;
        let mut responses = Vec::new();
        for piece in split_statements(query) {
            let token = self.connection.start();
            if let Some(command) = savepoint(&piece.text) {
                responses.push(Response::Execution(Tag::new(command)));
            } else if owns(&ready.session, &piece.text).await {
                let answer = run_engine(&ready.session, &piece.text, &Format::UnifiedText, true, &token).await?;
                responses.push(cancellable(answer, &token));
            } else {
                let answered = SimpleQueryHandler::do_query(ready.service.as_ref(), client, &piece.text).await;
                responses.extend(answered.map_err(translated)?.into_iter().map(|r| cancellable(r, &token)));
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// The tag of a savepoint statement (drivers open them around what they run), which there
/// is nothing to do for: a change is sent when it runs and cannot be rolled back.
fn savepoint(text: &str) -> Option<&'static str> {
    let words: Vec<String> = text.split_whitespace().take(2).map(str::to_uppercase).collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["SAVEPOINT", ..] => Some("SAVEPOINT"),
        ["RELEASE", ..] => Some("RELEASE"),
        ["ROLLBACK", "TO"] => Some("ROLLBACK"),
        _ => None,
    }
}

/// A statement parsed for the extended protocol: one the engine runs (with the columns it
/// returns, found without running it), or one `datafusion-postgres` planned.
#[derive(Clone)]
enum Prepared {
    Engine {
        text: String,
        schema: Option<SchemaRef>,
    },
    /// A savepoint statement, acknowledged: changes are sent at once and never rolled back.
    Savepoint(&'static str),
    DataFusion(DfStatement),
}

struct Parser {
    connection: Arc<Connection>,
}

/// A portal's parameters, decoded with the types the client sent and the plan infers.
fn parameters(portal: &Portal<Prepared>, plan: &LogicalPlan) -> PgWireResult<ParamValues> {
    let mut types = plan.get_parameter_types().map_err(|e| wire_error(e.into()))?;
    // A placeholder DataFusion could not type takes the type it is cast to (`$1::VARCHAR`).
    let _ = plan.apply_with_subqueries(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                if let Expr::Cast(cast) = e
                    && let Expr::Placeholder(placeholder) = cast.expr.as_ref()
                    && types.get(&placeholder.id).is_none_or(Option::is_none)
                {
                    types.insert(placeholder.id.clone(), Some(cast.field.data_type().clone()));
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    // By position: `$3` is the third parameter even when `$2` has no type.
    let inferred: Vec<Option<&DataType>> =
        (1..=portal.parameter_len()).map(|i| types.get(&format!("${i}")).and_then(Option::as_ref)).collect();
    let wire: Vec<Option<Type>> = inferred.iter().map(|t| t.and_then(|t| into_pg_type(t).ok())).collect();
    let wire: Vec<Option<&Type>> = wire.iter().map(Option::as_ref).collect();
    deserialize_parameters_with_server_types(portal, &inferred, &wire)
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let ready = self.connection.ready()?;
        if let Some(command) = savepoint(sql) {
            return Ok(Some(Prepared::Savepoint(command)));
        }
        if owns(&ready.session, sql).await {
            let prepared = ready.session.prepare(ready.session.parse(sql).map_err(wire_error)?).await.map_err(wire_error)?;
            let schema = ready.session.describe(&prepared).await.map_err(wire_error)?;
            return Ok(Some(Prepared::Engine { text: sql.to_string(), schema }));
        }
        let parsed = ready.service.query_parser().parse_sql(client, sql, types).await.map_err(translated)?;
        Ok(parsed.map(Prepared::DataFusion))
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        match statement {
            Prepared::Engine { .. } | Prepared::Savepoint(_) => Ok(vec![]),
            Prepared::DataFusion(statement) => {
                self.connection.ready()?.service.query_parser().get_parameter_types(statement)
            }
        }
    }

    fn get_result_schema(&self, statement: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            Prepared::Engine { schema: Some(schema), .. } => pg_fields(schema, format.unwrap_or(&Format::UnifiedText)),
            Prepared::Engine { schema: None, .. } | Prepared::Savepoint(_) => Ok(vec![]),
            Prepared::DataFusion(statement) => {
                self.connection.ready()?.service.query_parser().get_result_schema(statement, format)
            }
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser { connection: self.connection.clone() })
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let ready = self.connection.ready()?;
        let token = self.connection.start();
        match &portal.statement.statement {
            Prepared::Savepoint(command) => Ok(Response::Execution(Tag::new(command))),
            Prepared::Engine { text, schema } => {
                let format = &portal.result_column_format;
                let answer = run_engine(&ready.session, text, format, schema.is_some(), &token).await?;
                Ok(cancellable(answer, &token))
            }
            Prepared::DataFusion(statement) => {
                let (_, Some((parsed, plan))) = statement else { return Ok(Response::EmptyQuery) };
                let params = parameters(portal, plan)?;
                for hook in &ready.hooks {
                    let context = ready.session.context();
                    if let Some(answer) = hook.handle_extended_query(parsed, plan, &params, context, client).await {
                        return answer.map_err(translated);
                    }
                }
                let plan = plan.clone().replace_params_with_values(&params).map_err(|e| wire_error(e.into()))?;
                let frame =
                    ready.session.context().execute_logical_plan(plan).await.map_err(|e| wire_error(e.into()))?;
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let rows =
                    encode_dataframe(frame, &portal.result_column_format, Some(options)).await.map_err(translated)?;
                Ok(Response::Query(rows))
            }
        }
    }
}
