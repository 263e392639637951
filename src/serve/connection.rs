//! One client connection: its login, then its messages in order. Statements of both
//! protocols go through the session's [`Session::prepare`] and [`Session::run`]; this module
//! keeps what Postgres keeps per connection (settings, prepared statements and portals, the
//! transaction block) and sends the answers.
//!
//! A simple Query is parsed whole before any of its statements runs, and each statement's
//! answer (its command tag: what a change did) is sent before the next one starts. Changes
//! reach the API at once and cannot be rolled back, so they are refused inside an explicit
//! transaction block (25001) rather than reported rolled back. A running statement stops
//! when the client cancels it, when `statement_timeout` passes, or when the client hangs up;
//! a change reports what it did before it stopped.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{CloseCursor, FetchDirection, Statement as SqlStatement, Value, ValueWithSpan};
use datafusion_postgres::arrow_pg::datatypes::into_pg_type;
use datafusion_postgres::pgwire;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::messages::PgWireBackendMessage as Backend;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::{DataRow, NoData, ParameterDescription};
use pgwire::messages::extendedquery::{BindComplete, CloseComplete, ParseComplete, PortalSuspended};
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::access::{Backend as Place, Running};
use super::copy;
use super::frontend::{Message, Opening, PROTOCOL_3_0};
use super::reply::{Failure, Rows, change_tag, complete, description, field_infos, notice};
use super::settings::{Applied, Settings};
use super::wire::{MAX_MESSAGE_BYTES, MAX_OPENING_BYTES, Probe, ReadError, Wire};
use super::{Auth, Shared, catalog, functions, params};
use crate::api::Token;
use crate::engine::{CancelToken, CopyFormat, Kind, Prepared, Session};
use crate::error::Error;
use crate::outcome::Outcome;
use crate::sql::split_statements;

/// How long a client has to connect and log in.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The most prepared statements, and the most portals, a connection may keep.
pub const MAX_PREPARED: usize = 1000;
/// How often a running statement looks for a client that went away.
const HANGUP_CHECK: Duration = Duration::from_millis(200);

pub(super) async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let Ok(mut wire) = Wire::new(tcp) else { return };
    let address = wire.peer.ip();
    let opening = match timeout(STARTUP_TIMEOUT, wire.opening(shared.tls.as_ref())).await {
        Ok(Ok(opening)) => opening,
        Ok(Err(ReadError::Closed | ReadError::Io(_))) | Err(_) => return,
        Ok(Err(e)) => return refuse(wire, Failure::fatal("08P01", e.to_string())).await,
    };
    let (version, parameters) = match opening {
        // A cancel request gets no answer, right or wrong; wrong ones count as failed logins.
        Opening::Cancel { pid, secret } => {
            if shared.logins.wait(address).is_none() && !shared.backends.cancel(pid, secret) {
                shared.logins.failed(address);
            }
            return;
        }
        Opening::Startup { version, parameters } => (version, parameters),
    };
    let Ok(_slot) = shared.slots.clone().try_acquire_owned() else {
        return refuse(wire, Failure::fatal("53300", "sorry, too many clients already")).await;
    };
    let place = shared.backends.join();
    let session = match timeout(STARTUP_TIMEOUT, login(&shared, &mut wire, version, &parameters)).await {
        Ok(Ok(session)) => session,
        Ok(Err(Stopped::Failed(failure))) => return refuse(wire, failure).await,
        Ok(Err(Stopped::Gone)) => return,
        Err(_) => return refuse(wire, Failure::fatal("08006", "the client took too long to log in")).await,
    };
    let settings = Settings::new(&parameters);
    if let Err(e) = catalog::install(session.context(), &shared.database, &shared.catalog, settings.shared()) {
        return refuse(wire, Failure::fatal("XX000", e.to_string())).await;
    }
    functions::register(session.context(), place.pid, settings.shared());
    let mut connection = Connection {
        session,
        settings,
        running: place.running.clone(),
        statements: HashMap::new(),
        portals: HashMap::new(),
        cursors: HashMap::new(),
        transaction: Transaction::Idle,
        skipping: false,
    };
    if connection.greet(&mut wire, &place).await.is_ok() {
        connection.run(&mut wire).await;
    }
    wire.close().await;
}

async fn refuse(mut wire: Wire, failure: Failure) {
    let _ = wire.send(failure.message()).await;
    wire.close().await;
}

/// Why handling a message stopped: the client's mistake (answered), or the connection.
enum Stopped {
    Failed(Failure),
    Gone,
}

impl From<io::Error> for Stopped {
    fn from(_: io::Error) -> Self {
        Stopped::Gone
    }
}

impl From<Failure> for Stopped {
    fn from(failure: Failure) -> Self {
        Stopped::Failed(failure)
    }
}

impl From<Error> for Stopped {
    fn from(error: Error) -> Self {
        Stopped::Failed(error.into())
    }
}

/// Checks who the client is and opens its session.
async fn login(
    shared: &Shared,
    wire: &mut Wire,
    version: i32,
    parameters: &[(String, String)],
) -> Result<Session, Stopped> {
    let address = wire.peer.ip();
    let parameter = |name: &str| parameters.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let options: Vec<String> =
        parameters.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.clone()).collect();
    if version != PROTOCOL_3_0 || !options.is_empty() {
        wire.send(Backend::NegotiateProtocolVersion(NegotiateProtocolVersion::new(0, options))).await?;
    }
    let user = parameter("user").unwrap_or_default().to_string();
    if user.is_empty() {
        return Err(Failure::fatal("28000", "no user name was given in the startup packet").into());
    }
    let database = parameter("database").filter(|d| !d.is_empty()).unwrap_or(&user);
    if database != shared.database {
        return Err(Failure::fatal(
            "3D000",
            format!("database \"{database}\" does not exist: connect to \"{}\"", shared.database),
        )
        .into());
    }
    if !wire.secure && !address.is_loopback() && !shared.insecure {
        return Err(Failure::fatal(
            "28000",
            "passwords are API tokens and are taken from other machines only over TLS: connect with sslmode=require",
        )
        .into());
    }
    if let Some(wait) = shared.logins.wait(address) {
        return Err(Failure::fatal(
            "28000",
            format!("too many failed logins from {address}: try again in {} s", wait.as_secs().max(1)),
        )
        .into());
    }
    wire.send(Backend::Authentication(Authentication::CleartextPassword)).await?;
    wire.flush().await?;
    let password = match wire.read(MAX_OPENING_BYTES).await {
        Ok(Message::Password(password)) => password,
        Ok(_) => return Err(Failure::fatal("08P01", "expected a password message").into()),
        Err(ReadError::Closed | ReadError::Io(_)) => return Err(Stopped::Gone),
        Err(e) => return Err(Failure::fatal("08P01", e.to_string()).into()),
    };
    let refused = |why: &str| {
        shared.logins.failed(address);
        Stopped::Failed(Failure::fatal("28P01", format!("password authentication failed for user \"{user}\"{why}")))
    };
    let (token, source) = match &shared.auth {
        Auth::Fixed { token, password: expected } => match same(&password, expected) {
            true => (token.clone(), "the server's API token"),
            false => return Err(refused("")),
        },
        Auth::TokenIsPassword { anonymous } => match Token::new(password) {
            Some(token) => (Some(token), "the connection's password"),
            None if *anonymous => (None, "the connection's password"),
            None => return Err(refused(": the password is a Linode API token")),
        },
    };
    let session =
        super::session(shared, token.clone(), source).await.map_err(|e| Failure::fatal("XX000", e.to_string()))?;
    if let Some(token) = &token
        && !shared.tokens.trusted(token.fingerprint())
    {
        match session.token_accepted().await {
            Ok(true) => shared.tokens.accepted(token.fingerprint()),
            Ok(false) if matches!(shared.auth, Auth::Fixed { .. }) => {
                return Err(Failure::fatal(
                    "28000",
                    "the API refused this server's token: its operator must give it a valid one",
                )
                .into());
            }
            Ok(false) => return Err(refused(": the API refused the token")),
            Err(e) => return Err(Failure::fatal("08006", format!("the token cannot be checked: {e}")).into()),
        }
    }
    shared.logins.succeeded(address);
    Ok(session)
}

/// Whether two passwords are equal, compared in a time that depends on their lengths only.
fn same(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    Idle,
    Block,
    /// A statement failed in the block: only its end is accepted.
    Failed,
}

/// A statement of the extended protocol: prepared once, bound and run any number of times.
struct Stored {
    /// `None` for an empty query.
    prepared: Option<Prepared>,
    /// The types the client gave in Parse (0 where it gave none).
    declared: Vec<u32>,
    /// What the statement needs, where it tells.
    inferred: Vec<Option<DataType>>,
}

impl Stored {
    /// The parameter types the client is told of.
    fn wire_types(&self) -> Vec<u32> {
        self.inferred
            .iter()
            .enumerate()
            .map(|(i, inferred)| match self.declared.get(i).copied().filter(|oid| *oid != 0) {
                Some(oid) => oid,
                None => inferred.as_ref().and_then(|t| into_pg_type(t).ok()).unwrap_or(Type::TEXT).oid(),
            })
            .collect()
    }
}

struct Portal {
    stored: Arc<Stored>,
    params: ParamValues,
    format: Format,
    state: PortalState,
}

enum PortalState {
    Ready,
    Suspended(Rows),
    Done,
}

/// What a statement gave, ready to be sent.
enum Answer {
    Rows(Rows),
    Tag(String),
    Empty,
    /// `COPY … TO STDOUT`: rows to send in COPY's format.
    Copy(Rows, CopyFormat),
    /// FETCH: up to `count` rows (all with `None`) of a cursor.
    Fetch {
        cursor: String,
        count: Option<usize>,
    },
}

/// A cursor of DECLARE: its rows, and whether it outlives its transaction (WITH HOLD).
struct Cursor {
    rows: Rows,
    hold: bool,
}

struct Connection {
    session: Session,
    settings: Settings,
    running: Arc<Running>,
    statements: HashMap<String, Arc<Stored>>,
    portals: HashMap<String, Portal>,
    cursors: HashMap<String, Cursor>,
    transaction: Transaction,
    /// After an error in the extended protocol: messages are skipped until Sync.
    skipping: bool,
}

impl Connection {
    async fn greet(&mut self, wire: &mut Wire, place: &Place<'_>) -> io::Result<()> {
        wire.send(Backend::Authentication(Authentication::Ok)).await?;
        for (name, value) in self.settings.reported() {
            wire.send(Backend::ParameterStatus(ParameterStatus::new(name, value))).await?;
        }
        wire.send(Backend::BackendKeyData(BackendKeyData::new(place.pid, SecretKey::I32(place.secret)))).await?;
        self.ready(wire).await
    }

    async fn ready(&mut self, wire: &mut Wire) -> io::Result<()> {
        let status = match self.transaction {
            Transaction::Idle => TransactionStatus::Idle,
            Transaction::Block => TransactionStatus::Transaction,
            Transaction::Failed => TransactionStatus::Error,
        };
        wire.send(Backend::ReadyForQuery(ReadyForQuery::new(status))).await?;
        wire.flush().await
    }

    async fn run(&mut self, wire: &mut Wire) {
        loop {
            let message = match wire.read(MAX_MESSAGE_BYTES).await {
                Ok(message) => Ok(message),
                Err(ReadError::Closed | ReadError::Io(_)) => return,
                Err(e @ ReadError::Content(_)) => Err(e),
                Err(e) => {
                    let _ = wire.send(Failure::fatal("08P01", e.to_string()).message()).await;
                    return;
                }
            };
            let handled = match message {
                // A message that cannot be read is an error of the extended protocol's kind.
                Err(_) if self.skipping => Ok(true),
                Err(e) => Err(Failure::new("08P01", e.to_string()).into()),
                Ok(message) => self.handle(wire, message).await,
            };
            match handled {
                Ok(true) => {}
                Ok(false) | Err(Stopped::Gone) => return,
                // An error of the extended protocol: answered once, the rest skipped until Sync.
                Err(Stopped::Failed(failure)) => {
                    self.failed();
                    self.skipping = true;
                    if wire.send(failure.message()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one message; `false` when the connection is to end.
    async fn handle(&mut self, wire: &mut Wire, message: Message) -> Result<bool, Stopped> {
        let handled = match message {
            Message::Terminate => return Ok(false),
            Message::Sync => self.sync(wire).await.map_err(Stopped::from),
            _ if self.skipping => Ok(()),
            Message::Query(text) => self.simple(wire, &text).await.map_err(Stopped::from),
            Message::Parse { name, query, types } => self.parse(wire, name, &query, types).await,
            Message::Bind { portal, statement, parameter_formats, parameters, result_formats } => {
                self.bind(wire, portal, &statement, &parameter_formats, &parameters, &result_formats).await
            }
            Message::Describe { portal, name } => self.describe(wire, portal, &name).await,
            Message::Execute { portal, max_rows } => self.execute(wire, &portal, max_rows as usize).await,
            Message::Close { portal, name } => {
                match portal {
                    true => self.portals.remove(&name).map(drop),
                    false => self.statements.remove(&name).map(drop),
                };
                wire.send(Backend::CloseComplete(CloseComplete::new())).await.map_err(Stopped::from)
            }
            Message::Flush => wire.flush().await.map_err(Stopped::from),
            Message::Password(_) => Err(Failure::new("08P01", "unexpected password message").into()),
            Message::Copy => Err(Failure::new("08P01", "COPY data without a COPY in progress").into()),
            Message::Unsupported(b'F') => {
                Err(Failure::new("0A000", "function calls (the F message) are not supported").into())
            }
            Message::Unsupported(kind) => {
                wire.send(Failure::fatal("08P01", format!("invalid frontend message type {kind}")).message()).await?;
                return Ok(false);
            }
        };
        handled.map(|()| true)
    }

    /// A statement failed: a transaction block fails with it.
    fn failed(&mut self) {
        if self.transaction == Transaction::Block {
            self.transaction = Transaction::Failed;
        }
    }

    async fn sync(&mut self, wire: &mut Wire) -> io::Result<()> {
        self.skipping = false;
        // Portals live until their transaction ends; outside a block that is now.
        if self.transaction == Transaction::Idle {
            self.portals.clear();
        }
        self.ready(wire).await
    }

    /// A Query message: every statement parsed first, then each run and answered in turn;
    /// the first error ends it.
    async fn simple(&mut self, wire: &mut Wire, text: &str) -> io::Result<()> {
        match self.simple_statements(wire, text).await {
            Ok(()) => {}
            Err(Stopped::Gone) => return Err(io::ErrorKind::BrokenPipe.into()),
            Err(Stopped::Failed(failure)) => {
                self.failed();
                wire.send(failure.message()).await?;
            }
        }
        self.ready(wire).await
    }

    async fn simple_statements(&mut self, wire: &mut Wire, text: &str) -> Result<(), Stopped> {
        let pieces = split_statements(text);
        if pieces.is_empty() {
            return Ok(wire.send(Backend::EmptyQueryResponse(EmptyQueryResponse::new())).await?);
        }
        let statements = pieces.iter().map(|piece| self.session.parse(&piece.text)).collect::<Result<Vec<_>, _>>()?;
        for statement in statements {
            self.allowed_in_transaction(statement.sql())?;
            let prepared = self.session.prepare(statement).await?;
            let prepares = matches!(
                prepared.kind(),
                Kind::Plan(LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(_)))
            );
            if !prepares && !self.session.parameter_types(&prepared)?.is_empty() {
                return Err(Failure::new("42P02", "there is no parameter $1: a simple query takes none").into());
            }
            let answer = self.answer(wire, &prepared, &ParamValues::List(vec![]), &Format::UnifiedText).await?;
            match answer {
                Answer::Rows(mut rows) => {
                    wire.send(description(&rows.fields)).await?;
                    self.stream(wire, &mut rows, 0).await?;
                }
                Answer::Tag(tag) => wire.send(complete(tag)).await?,
                Answer::Empty => wire.send(Backend::EmptyQueryResponse(EmptyQueryResponse::new())).await?,
                Answer::Copy(mut rows, format) => self.copy_out(wire, &mut rows, &format).await?,
                Answer::Fetch { cursor, count } => self.fetch(wire, &cursor, count, true).await?,
            }
        }
        Ok(())
    }

    /// In a failed transaction block only its end is accepted, as in PostgreSQL.
    fn allowed_in_transaction(&self, statement: Option<&SqlStatement>) -> Result<(), Failure> {
        let ends = matches!(statement, Some(SqlStatement::Rollback { .. } | SqlStatement::Commit { .. }));
        match self.transaction == Transaction::Failed && !ends {
            true => Err(Failure::new(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            )),
            false => Ok(()),
        }
    }

    /// Runs a prepared statement up to what it gives: rows still to be sent, or a tag.
    async fn answer(
        &mut self,
        wire: &mut Wire,
        prepared: &Prepared,
        params: &ParamValues,
        format: &Format,
    ) -> Result<Answer, Stopped> {
        match prepared.kind() {
            Kind::Variable => return self.variable(wire, prepared, format).await,
            Kind::Transaction => return Ok(Answer::Tag(self.transaction_command(wire, prepared).await?)),
            Kind::Cursor => return self.cursor(wire, prepared, params, format).await,
            _ => {}
        }
        if prepared.changes() && self.transaction != Transaction::Idle {
            return Err(Failure::new(
                "25001",
                "changes cannot run inside a transaction block: they reach the API at once and ROLLBACK cannot undo \
                 them; run them outside BEGIN … COMMIT (with autocommit)",
            )
            .into());
        }
        let watch = self.watch(wire.probe());
        let outcome = watch.finishing(self.session.run(prepared, params, &watch.token)).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                if let Error::Partial(partial) = &error
                    && !partial.done.is_empty()
                {
                    let done = format!(
                        "{} on {} was done for: {}",
                        partial.verb.keyword(),
                        partial.resource,
                        partial.done.join(", ")
                    );
                    wire.send(notice("WARNING", "01000", &done)).await?;
                }
                return Err(watch.failure(error).into());
            }
        };
        let options = self.settings.format_options();
        if let Kind::CopyOut(_, copy) = prepared.kind() {
            let Outcome::Rows { stream, .. } = outcome else { return Ok(Answer::Tag("COPY 0".into())) };
            let rows = Rows::new(stream, &Format::UnifiedText, &options, prepared.column_names(), None, "COPY")?;
            return Ok(Answer::Copy(rows, copy.clone()));
        }
        Ok(match outcome {
            Outcome::Rows { stream, changed: None } if is_copy(prepared) => {
                let batches = watch.unless_stopped(datafusion::physical_plan::common::collect(stream)).await?;
                let written = batches.map_err(|e| Failure::from(Error::from(e)))?;
                Answer::Tag(format!("COPY {}", copied(&written)))
            }
            Outcome::Rows { stream, changed } => {
                Answer::Rows(Rows::new(stream, format, &options, prepared.column_names(), changed, command(prepared))?)
            }
            Outcome::Changed(change) => Answer::Tag(change_tag(&change, None)),
            Outcome::Done => Answer::Tag(done_tag(prepared)),
        })
    }

    /// Sends rows, at most `max_rows` (0: all); `true` when every row was sent (and the tag).
    async fn stream(&mut self, wire: &mut Wire, rows: &mut Rows, max_rows: usize) -> Result<bool, Stopped> {
        let watch = self.watch(wire.probe());
        let mut sent = 0;
        loop {
            if max_rows > 0 && sent == max_rows {
                wire.send(Backend::PortalSuspended(PortalSuspended::new())).await?;
                return Ok(false);
            }
            let next: Result<Option<DataRow>, Failure> = watch.unless_stopped(rows.next()).await?;
            match next? {
                Some(row) => {
                    wire.send(Backend::DataRow(row)).await?;
                    sent += 1;
                }
                None => {
                    wire.send(complete(rows.tag())).await?;
                    return Ok(true);
                }
            }
        }
    }

    /// A fresh cancel token for the statement that starts, watched for the timeout and for
    /// the client hanging up.
    fn watch(&self, probe: Probe) -> Watch {
        let deadline = self.settings.statement_timeout().map(|t| Instant::now() + t);
        Watch { token: self.running.start(), deadline, probe, why: std::sync::Mutex::new(None) }
    }

    /// SET, RESET, SHOW and DISCARD of the connection's settings.
    async fn variable(&mut self, wire: &mut Wire, prepared: &Prepared, format: &Format) -> Result<Answer, Stopped> {
        if let Some(SqlStatement::Discard { .. }) = prepared.sql() {
            self.settings.discard();
            self.statements.clear();
            self.portals.clear();
            self.session.search(&self.settings.search_path());
            return Ok(Answer::Tag("DISCARD ALL".into()));
        }
        let Some(parsed) = prepared.statement() else { return Ok(Answer::Empty) };
        match self.settings.apply(parsed).map_err(|r| Failure::new(r.0, r.1))? {
            Applied::Set { reported } => {
                for (name, value) in reported {
                    wire.send(Backend::ParameterStatus(ParameterStatus::new(name, value))).await?;
                }
                self.session.search(&self.settings.search_path());
                let tag = match parsed {
                    datafusion::sql::parser::Statement::Reset(_) => "RESET",
                    _ => "SET",
                };
                Ok(Answer::Tag(tag.into()))
            }
            Applied::Show { column, rows } => {
                let all = rows.len() > 1 || column == "name";
                let batch = shown(&column, rows, all);
                let stream = crate::outcome::Outcome::batch(batch, None);
                let Outcome::Rows { stream, .. } = stream else { unreachable!("a batch is rows") };
                Ok(Answer::Rows(Rows::new(stream, format, &self.settings.format_options(), None, None, "SHOW")?))
            }
        }
    }

    /// The columns a stored statement returns, found without running it (a FETCH's are its
    /// cursor's).
    async fn result_schema(&mut self, stored: &Stored) -> Result<Option<SchemaRef>, Stopped> {
        let Some(prepared) = &stored.prepared else { return Ok(None) };
        if let Some(SqlStatement::Fetch { name, .. }) = prepared.sql() {
            return Ok(self.cursors.get(&name.value).map(|c| c.rows.schema.clone()));
        }
        describe(prepared, &self.session).await
    }

    /// `COPY … TO STDOUT`: every row as CopyData, then the count.
    async fn copy_out(&mut self, wire: &mut Wire, rows: &mut Rows, format: &CopyFormat) -> Result<(), Stopped> {
        let columns = rows.fields.len();
        wire.send(Backend::CopyOutResponse(CopyOutResponse::new(0, columns as i16, vec![0; columns]))).await?;
        if format.header {
            let names: Vec<String> = rows.fields.iter().map(|f| f.name().to_string()).collect();
            wire.send(Backend::CopyData(CopyData::new(copy::header(&names, format)))).await?;
        }
        let watch = self.watch(wire.probe());
        loop {
            let next: Result<Option<DataRow>, Failure> = watch.unless_stopped(rows.next()).await?;
            match next? {
                Some(row) => wire.send(Backend::CopyData(CopyData::new(copy::line(&row, format)))).await?,
                None => break,
            }
        }
        wire.send(Backend::CopyDone(CopyDone::new())).await?;
        Ok(wire.send(complete(format!("COPY {}", rows.sent))).await?)
    }

    /// DECLARE … CURSOR, FETCH and CLOSE.
    async fn cursor(
        &mut self,
        wire: &mut Wire,
        prepared: &Prepared,
        params: &ParamValues,
        format: &Format,
    ) -> Result<Answer, Stopped> {
        match prepared.sql() {
            Some(SqlStatement::Declare { stmts }) => {
                let [declare] = stmts.as_slice() else {
                    return Err(Failure::new("0A000", "declare one cursor at a time").into());
                };
                let (Some(name), Some(query)) = (declare.names.first(), &declare.for_query) else {
                    return Err(Failure::new("42601", "DECLARE needs a name and CURSOR FOR a query").into());
                };
                let hold = declare.hold == Some(true);
                if !hold && self.transaction == Transaction::Idle {
                    return Err(Failure::new("25P01", "DECLARE CURSOR can only be used in transaction blocks").into());
                }
                if self.cursors.contains_key(&name.value) {
                    return Err(Failure::new("42P03", format!("cursor \"{}\" already exists", name.value)).into());
                }
                let statement = self.session.parse(&query.to_string())?;
                let query = self.session.prepare(statement).await?;
                let Answer::Rows(rows) = Box::pin(self.answer(wire, &query, params, format)).await? else {
                    return Err(Failure::new("42601", "a cursor is declared for a query that returns rows").into());
                };
                self.cursors.insert(name.value.clone(), Cursor { rows, hold });
                Ok(Answer::Tag("DECLARE CURSOR".into()))
            }
            Some(SqlStatement::Fetch { name, direction, .. }) => {
                if !self.cursors.contains_key(&name.value) {
                    return Err(Failure::new("34000", format!("cursor \"{}\" does not exist", name.value)).into());
                }
                let count = |limit: &ValueWithSpan| match &limit.value {
                    Value::Number(n, _) => n.parse::<usize>().map_err(|_| Failure::new("22023", format!("FETCH {n}"))),
                    other => Err(Failure::new("22023", format!("FETCH {other}"))),
                };
                let count = match direction {
                    FetchDirection::Next => Some(1),
                    FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => {
                        Some(count(limit)?)
                    }
                    FetchDirection::Forward { limit: None } => Some(1),
                    FetchDirection::All | FetchDirection::ForwardAll => None,
                    _ => return Err(Failure::new("55000", "cursor can only scan forward").into()),
                };
                Ok(Answer::Fetch { cursor: name.value.clone(), count })
            }
            Some(SqlStatement::Close { cursor }) => {
                match cursor {
                    CloseCursor::All => self.cursors.clear(),
                    CloseCursor::Specific { name } => {
                        if self.cursors.remove(&name.value).is_none() {
                            return Err(
                                Failure::new("34000", format!("cursor \"{}\" does not exist", name.value)).into()
                            );
                        }
                    }
                }
                Ok(Answer::Tag("CLOSE CURSOR".into()))
            }
            _ => Err(Failure::new("0A000", "this cursor statement is not supported").into()),
        }
    }

    /// FETCH: up to `count` rows of a cursor (its description first in the simple protocol).
    async fn fetch(
        &mut self,
        wire: &mut Wire,
        name: &str,
        count: Option<usize>,
        describe: bool,
    ) -> Result<(), Stopped> {
        let watch = self.watch(wire.probe());
        let Some(cursor) = self.cursors.get_mut(name) else {
            return Err(Failure::new("34000", format!("cursor \"{name}\" does not exist")).into());
        };
        if describe {
            wire.send(description(&cursor.rows.fields)).await?;
        }
        let mut fetched = 0;
        while count.is_none_or(|n| fetched < n) {
            let next: Result<Option<DataRow>, Failure> = watch.unless_stopped(cursor.rows.next()).await?;
            match next? {
                Some(row) => {
                    wire.send(Backend::DataRow(row)).await?;
                    fetched += 1;
                }
                None => break,
            }
        }
        Ok(wire.send(complete(format!("FETCH {fetched}"))).await?)
    }

    /// BEGIN, COMMIT, ROLLBACK and savepoints, as PostgreSQL answers them.
    async fn transaction_command(&mut self, wire: &mut Wire, prepared: &Prepared) -> Result<String, Stopped> {
        let outside = |what: &str| Failure::new("25P01", format!("{what} can only be used in transaction blocks"));
        let (tag, warning) = match (prepared.sql(), self.transaction) {
            (Some(SqlStatement::StartTransaction { .. }), Transaction::Idle) => {
                self.transaction = Transaction::Block;
                ("BEGIN", None)
            }
            (Some(SqlStatement::StartTransaction { .. }), _) => {
                ("BEGIN", Some("there is already a transaction in progress"))
            }
            (Some(SqlStatement::Commit { .. }), Transaction::Idle) => {
                ("COMMIT", Some("there is no transaction in progress"))
            }
            (Some(SqlStatement::Commit { .. }), before) => {
                self.transaction = Transaction::Idle;
                self.cursors.retain(|_, c| c.hold);
                (if before == Transaction::Failed { "ROLLBACK" } else { "COMMIT" }, None)
            }
            (Some(SqlStatement::Rollback { savepoint: Some(_), .. }), Transaction::Idle) => {
                return Err(outside("ROLLBACK TO SAVEPOINT").into());
            }
            (Some(SqlStatement::Rollback { savepoint: Some(_), .. }), _) => {
                self.transaction = Transaction::Block;
                ("ROLLBACK", None)
            }
            (Some(SqlStatement::Rollback { .. }), Transaction::Idle) => {
                ("ROLLBACK", Some("there is no transaction in progress"))
            }
            (Some(SqlStatement::Rollback { .. }), _) => {
                self.transaction = Transaction::Idle;
                self.cursors.retain(|_, c| c.hold);
                ("ROLLBACK", None)
            }
            (Some(SqlStatement::Savepoint { .. }), Transaction::Idle) => return Err(outside("SAVEPOINT").into()),
            (Some(SqlStatement::Savepoint { .. }), _) => ("SAVEPOINT", None),
            (Some(SqlStatement::ReleaseSavepoint { .. }), Transaction::Idle) => {
                return Err(outside("RELEASE SAVEPOINT").into());
            }
            (Some(SqlStatement::ReleaseSavepoint { .. }), _) => ("RELEASE", None),
            _ => return Err(Failure::new("0A000", "this transaction statement is not supported").into()),
        };
        if let Some(warning) = warning {
            wire.send(notice("WARNING", "25001", warning)).await?;
        }
        Ok(tag.into())
    }

    async fn parse(&mut self, wire: &mut Wire, name: String, query: &str, declared: Vec<u32>) -> Result<(), Stopped> {
        if !name.is_empty() && self.statements.contains_key(&name) {
            return Err(Failure::new("42P05", format!("prepared statement \"{name}\" already exists")).into());
        }
        if !self.statements.contains_key(&name) && self.statements.len() >= MAX_PREPARED {
            return Err(Failure::new(
                "53400",
                format!("a connection keeps at most {MAX_PREPARED} prepared statements: close some first"),
            )
            .into());
        }
        let pieces = split_statements(query);
        let prepared = match pieces.as_slice() {
            [] => None,
            [piece] => {
                let statement = self.session.parse(&piece.text)?;
                Some(self.session.prepare(statement).await?)
            }
            _ => return Err(Failure::new("42601", "cannot insert multiple commands into a prepared statement").into()),
        };
        let mut inferred = match &prepared {
            Some(prepared) => self.session.parameter_types(prepared)?,
            None => vec![],
        };
        if declared.len() > inferred.len() {
            inferred.resize(declared.len(), None);
        }
        self.statements.insert(name, Arc::new(Stored { prepared, declared, inferred }));
        Ok(wire.send(Backend::ParseComplete(ParseComplete::new())).await?)
    }

    async fn bind(
        &mut self,
        wire: &mut Wire,
        portal: String,
        statement: &str,
        parameter_formats: &[i16],
        parameters: &[Option<bytes::Bytes>],
        result_formats: &[i16],
    ) -> Result<(), Stopped> {
        let stored = self.statements.get(statement).cloned().ok_or_else(|| no_statement(statement))?;
        if parameters.len() != stored.inferred.len() {
            return Err(Failure::new(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but prepared statement \"{statement}\" requires {}",
                    parameters.len(),
                    stored.inferred.len()
                ),
            )
            .into());
        }
        if !self.portals.contains_key(&portal) && self.portals.len() >= MAX_PREPARED {
            return Err(Failure::new("53400", format!("a connection keeps at most {MAX_PREPARED} portals")).into());
        }
        let values = params::decode(parameters, parameter_formats, &stored.declared, &stored.inferred)
            .map_err(|e| Failure::new(e.code, e.message))?;
        let columns = match result_formats.len() > 1 {
            true => self.result_schema(&stored).await?.map(|s| s.fields().len()),
            false => None,
        };
        let format = result_format(result_formats, columns)?;
        let bound = Portal {
            stored,
            params: ParamValues::List(values.into_iter().map(Into::into).collect()),
            format,
            state: PortalState::Ready,
        };
        self.portals.insert(portal, bound);
        Ok(wire.send(Backend::BindComplete(BindComplete::new())).await?)
    }

    async fn describe(&mut self, wire: &mut Wire, portal: bool, name: &str) -> Result<(), Stopped> {
        let (stored, format) = match portal {
            // A cursor of DECLARE is a portal too, as in PostgreSQL (psycopg describes it so).
            true if !self.portals.contains_key(name) && self.cursors.contains_key(name) => {
                let fields = self.cursors[name].rows.fields.clone();
                return Ok(wire.send(description(&fields)).await?);
            }
            true => {
                let found = self
                    .portals
                    .get(name)
                    .ok_or_else(|| Failure::new("34000", format!("portal \"{name}\" does not exist")))?;
                (found.stored.clone(), found.format.clone())
            }
            false => {
                let stored = self.statements.get(name).cloned().ok_or_else(|| no_statement(name))?;
                wire.send(Backend::ParameterDescription(ParameterDescription::new(stored.wire_types()))).await?;
                (stored, Format::UnifiedText)
            }
        };
        match self.result_schema(&stored).await? {
            Some(schema) => {
                let names = stored.prepared.as_ref().and_then(Prepared::column_names);
                let fields = field_infos(&schema, &format, &self.settings.format_options(), names)?;
                wire.send(description(&fields)).await?;
            }
            None => wire.send(Backend::NoData(NoData::new())).await?,
        }
        Ok(())
    }

    async fn execute(&mut self, wire: &mut Wire, name: &str, max_rows: usize) -> Result<(), Stopped> {
        let mut portal = self
            .portals
            .remove(name)
            .ok_or_else(|| Failure::new("34000", format!("portal \"{name}\" does not exist")))?;
        let result = self.execute_portal(wire, &mut portal, max_rows).await;
        self.portals.insert(name.to_string(), portal);
        result
    }

    async fn execute_portal(&mut self, wire: &mut Wire, portal: &mut Portal, max_rows: usize) -> Result<(), Stopped> {
        let mut rows = match std::mem::replace(&mut portal.state, PortalState::Done) {
            PortalState::Suspended(rows) => rows,
            PortalState::Done => return Ok(wire.send(complete("SELECT 0")).await?),
            PortalState::Ready => {
                let Some(prepared) = &portal.stored.prepared else {
                    return Ok(wire.send(Backend::EmptyQueryResponse(EmptyQueryResponse::new())).await?);
                };
                self.allowed_in_transaction(prepared.sql())?;
                match self.answer(wire, prepared, &portal.params, &portal.format).await? {
                    Answer::Rows(rows) => rows,
                    Answer::Tag(tag) => return Ok(wire.send(complete(tag)).await?),
                    Answer::Empty => {
                        return Ok(wire.send(Backend::EmptyQueryResponse(EmptyQueryResponse::new())).await?);
                    }
                    Answer::Copy(mut rows, format) => return self.copy_out(wire, &mut rows, &format).await,
                    Answer::Fetch { cursor, count } => return self.fetch(wire, &cursor, count, false).await,
                }
            }
        };
        if !self.stream(wire, &mut rows, max_rows).await? {
            portal.state = PortalState::Suspended(rows);
        }
        Ok(())
    }
}

fn no_statement(name: &str) -> Failure {
    Failure::new("26000", format!("prepared statement \"{name}\" does not exist"))
}

/// The formats of a portal's columns: none given (text), one for all, or one per column
/// (`columns` counted when there are several codes).
fn result_format(codes: &[i16], columns: Option<usize>) -> Result<Format, Failure> {
    let format = match codes {
        [] => Format::UnifiedText,
        [one] => Format::from(*one),
        each => {
            let count = columns.unwrap_or(0);
            if each.len() != count {
                return Err(Failure::new(
                    "08P01",
                    format!("bind message has {} result formats but the query has {count} columns", each.len()),
                ));
            }
            Format::Individual(each.to_vec())
        }
    };
    match codes.iter().all(|c| *c == 0 || *c == 1) {
        true => Ok(format),
        false => Err(Failure::new("08P01", "result format codes are 0 (text) or 1 (binary)")),
    }
}

/// The columns a prepared statement returns, unless it is a FETCH.
async fn describe(prepared: &Prepared, session: &Session) -> Result<Option<SchemaRef>, Stopped> {
    if matches!(prepared.kind(), Kind::CopyOut(..) | Kind::Cursor) {
        return Ok(None);
    }
    if let (Kind::Variable, Some(SqlStatement::ShowVariable { variable })) = (prepared.kind(), prepared.sql()) {
        let name = variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join(" ");
        let all = name == "all";
        return Ok(Some(shown(&name, vec![], all).schema()));
    }
    if is_copy(prepared) {
        return Ok(None);
    }
    Ok(session.describe(prepared).await?)
}

/// SHOW's answer: the value, or every setting's name and value.
fn shown(column: &str, rows: Vec<(String, String)>, all: bool) -> RecordBatch {
    let (names, values): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    let (schema, columns) = match all {
        true => (
            Schema::new(vec![Field::new("name", DataType::Utf8, false), Field::new("setting", DataType::Utf8, false)]),
            vec![Arc::new(StringArray::from(names)) as _, Arc::new(StringArray::from(values)) as _],
        ),
        false => (
            Schema::new(vec![Field::new(column, DataType::Utf8, false)]),
            vec![Arc::new(StringArray::from(values)) as _],
        ),
    };
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns of equal length")
}

fn is_copy(prepared: &Prepared) -> bool {
    matches!(prepared.kind(), Kind::Plan(LogicalPlan::Copy(_)))
}

/// Rows a COPY wrote, from DataFusion's count.
fn copied(batches: &[RecordBatch]) -> u64 {
    let count = |batch: &RecordBatch| {
        batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>().map_or(0, |a| a.value(0))
    };
    batches.iter().map(count).sum()
}

/// The command word of a statement that returns rows.
fn command(prepared: &Prepared) -> &'static str {
    match prepared.kind() {
        Kind::Plan(LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) => "EXPLAIN",
        _ => "SELECT",
    }
}

/// The tag of a statement that ran and returned nothing.
fn done_tag(prepared: &Prepared) -> String {
    match prepared.kind() {
        Kind::Plan(LogicalPlan::Statement(statement)) => match statement {
            datafusion::logical_expr::Statement::SetVariable(_) => "SET".into(),
            datafusion::logical_expr::Statement::Prepare(_) => "PREPARE".into(),
            datafusion::logical_expr::Statement::Deallocate(_) => "DEALLOCATE".into(),
            other => other.name().to_uppercase(),
        },
        Kind::Plan(LogicalPlan::Ddl(ddl)) => ddl.name().to_uppercase(),
        _ => "OK".into(),
    }
}

/// Why a statement stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TimedOut,
    HungUp,
}

/// Watches a running statement: its deadline, the client's cancel request (through its
/// token) and the client hanging up all cancel the token.
struct Watch {
    token: CancelToken,
    deadline: Option<Instant>,
    probe: Probe,
    why: std::sync::Mutex<Option<Stop>>,
}

impl Watch {
    fn stop(&self, why: Stop) {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
        self.token.cancel();
    }

    fn reason(&self) -> Stop {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(Stop::Cancelled)
    }

    /// Cancels the token when the deadline passes or the client hangs up; never returns.
    async fn guard(&self) {
        loop {
            tokio::select! {
                _ = sleep_until(self.deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))), if self.deadline.is_some() => {
                    self.stop(Stop::TimedOut);
                    std::future::pending::<()>().await;
                }
                _ = sleep(HANGUP_CHECK) => {
                    if self.probe.hung_up() {
                        self.stop(Stop::HungUp);
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// `work` to its end (a change reports what it did when its token is cancelled).
    async fn finishing<T>(&self, work: impl Future<Output = T>) -> T {
        tokio::select! {
            biased;
            out = work => out,
            _ = self.guard() => unreachable!("the guard never returns"),
        }
    }

    /// `work`, dropped if the statement is stopped first.
    async fn unless_stopped<T>(&self, work: impl Future<Output = T>) -> Result<T, Failure> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(self.failure(Error::Cancelled)),
            out = work => Ok(out),
            _ = self.guard() => unreachable!("the guard never returns"),
        }
    }

    /// An error as the client is told of it: a stopped statement says why.
    fn failure(&self, error: Error) -> Failure {
        let cancelled = matches!(&error, Error::Cancelled)
            || matches!(&error, Error::Partial(p) if matches!(p.cause, Error::Cancelled));
        if !cancelled {
            return error.into();
        }
        let why = match self.reason() {
            Stop::TimedOut => "canceling statement due to statement timeout",
            Stop::Cancelled | Stop::HungUp => "canceling statement due to user request",
        };
        match error {
            Error::Partial(_) => Failure::new("57014", format!("{why}: {error}")),
            _ => Failure::new("57014", why),
        }
    }
}
