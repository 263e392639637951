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

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{ContextModifier, Set, Statement as SqlStatement};
use datafusion_postgres::pgwire;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::messages::PgWireBackendMessage as Backend;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::{CloseComplete, PortalSuspended};
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::access::{Backend as Place, Running};
use super::copy;
use super::frontend::{Message, Opening};
use super::reply::{Failure, Rows, change_tag, complete, description, notice};
use super::settings::{Applied, Settings};
use super::wire::{MAX_MESSAGE_BYTES, Probe, ReadError, Wire};
use super::{Shared, catalog, functions, params};
use crate::engine::{
    ACCOUNTS_ON_ERROR, AWAIT_TIMEOUT, CopyFormat, DRY_RUN, Kind, OwnSetting, Prepared, Session, own_setting,
};
use crate::error::Error;
use crate::outcome::Outcome;
use crate::sql::split_statements;

mod cursor;
mod extended;
mod login;
mod watch;

use login::login;
use watch::Watch;

/// How long a client has to connect and log in.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The most prepared statements, portals and cursors a connection may keep (each of them).
pub const MAX_PREPARED: usize = 1000;

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
        settings_at_begin: BTreeMap::new(),
        set_locally: BTreeMap::new(),
        skipping: false,
    };
    if connection.greet(&mut wire, &place).await.is_ok() {
        connection.run(&mut wire).await;
    }
    wire.close().await;
}

/// A statement's end, after the warnings it gave (an account left out) as notices.
async fn completed(wire: &mut Wire, warnings: Vec<String>, tag: impl Into<String>) -> io::Result<()> {
    for warning in warnings {
        wire.send(notice("WARNING", "01000", &warning)).await?;
    }
    wire.send(complete(tag)).await
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
                None => inferred.as_ref().and_then(params::wire_type).unwrap_or(Type::TEXT).oid(),
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
    /// The settings as the transaction block began (a ROLLBACK goes back to them), and those a
    /// `SET LOCAL` changed, with their values before (the block's end goes back to them).
    settings_at_begin: BTreeMap<String, String>,
    set_locally: BTreeMap<String, String>,
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
                // Sent at once, as PostgreSQL does: a client that waits for the answer to its
                // Parse before it sends Sync (asyncpg) must not wait for ever.
                Err(Stopped::Failed(failure)) => {
                    self.failed();
                    self.skipping = true;
                    if wire.send(failure.message()).await.is_err() || wire.flush().await.is_err() {
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
                Answer::Tag(tag) => completed(wire, self.session.take_warnings(), tag).await?,
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
            Outcome::Rows { stream, changed } => {
                Answer::Rows(Rows::new(stream, format, &options, prepared.column_names(), changed, command(prepared))?)
            }
            Outcome::Changed(change) => Answer::Tag(change_tag(&change, None)),
            Outcome::Copied(rows) => Answer::Tag(format!("COPY {rows}")),
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
                    completed(wire, self.session.take_warnings(), rows.tag()).await?;
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

    /// The session follows the connection's values of imageql's own settings (after a RESET
    /// ALL or DISCARD ALL too).
    fn sync_own_settings(&self) -> Result<(), Failure> {
        for name in [DRY_RUN, AWAIT_TIMEOUT, ACCOUNTS_ON_ERROR] {
            let own = OwnSetting::Set { name: name.into(), value: Some(self.settings.get(name)) };
            self.session.apply_own_setting(&own).map_err(|e| Failure::new(e.sqlstate(), e.to_string()))?;
        }
        // SHOW answers the switch as it acts, whatever synonym set it.
        self.settings.shared().set(DRY_RUN, if self.session.dry_run() { "on" } else { "off" });
        Ok(())
    }

    /// The settings as a transaction block ends: all as they were at BEGIN after a ROLLBACK,
    /// those of a `SET LOCAL` as they were before it after a COMMIT.
    fn end_settings(&mut self, rolled_back: bool) -> Result<(), Failure> {
        let shared = self.settings.shared();
        if rolled_back {
            shared.restore(std::mem::take(&mut self.settings_at_begin));
        } else {
            for (name, value) in std::mem::take(&mut self.set_locally) {
                shared.set(&name, &value);
            }
        }
        self.set_locally.clear();
        self.session.search(&self.settings.search_path());
        self.sync_own_settings()
    }

    /// SET, RESET, SHOW and DISCARD of the connection's settings.
    async fn variable(&mut self, wire: &mut Wire, prepared: &Prepared, format: &Format) -> Result<Answer, Stopped> {
        match prepared.sql() {
            Some(SqlStatement::UNLISTEN { .. }) => return Ok(Answer::Tag("UNLISTEN".into())),
            Some(SqlStatement::Deallocate { .. }) => {
                self.statements.retain(|name, _| name.is_empty());
                return Ok(Answer::Tag("DEALLOCATE ALL".into()));
            }
            _ => {}
        }
        if let Some(SqlStatement::Discard { .. }) = prepared.sql() {
            self.settings.discard();
            self.statements.clear();
            self.portals.clear();
            self.session.search(&self.settings.search_path());
            self.sync_own_settings()?;
            return Ok(Answer::Tag("DISCARD ALL".into()));
        }
        let Some(parsed) = prepared.statement() else { return Ok(Answer::Empty) };
        // `SET LOCAL` lasts until the block ends, and does nothing outside one (as PostgreSQL).
        if let Some(SqlStatement::Set(Set::SingleAssignment {
            scope: Some(ContextModifier::Local), variable, ..
        })) = prepared.sql()
        {
            if self.transaction == Transaction::Idle {
                wire.send(notice("WARNING", "25P01", "SET LOCAL can only be used in transaction blocks")).await?;
                return Ok(Answer::Tag("SET".into()));
            }
            let name = variable.to_string().to_lowercase();
            if !self.set_locally.contains_key(&name) {
                let before = self.settings.shared().get(&name).unwrap_or_default();
                self.set_locally.insert(name, before);
            }
        }
        // imageql's own settings are checked by the session, and kept here for SHOW.
        if let Some(own @ OwnSetting::Set { .. }) = own_setting(parsed) {
            self.session.apply_own_setting(&own).map_err(|e| Failure::new(e.sqlstate(), e.to_string()))?;
        }
        match self.settings.apply(parsed).map_err(|r| Failure::new(r.0, r.1))? {
            Applied::Set { reported } => {
                self.sync_own_settings()?;
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
        Ok(completed(wire, self.session.take_warnings(), format!("COPY {}", rows.sent)).await?)
    }

    /// BEGIN, COMMIT, ROLLBACK and savepoints, as PostgreSQL answers them.
    async fn transaction_command(&mut self, wire: &mut Wire, prepared: &Prepared) -> Result<String, Stopped> {
        let outside = |what: &str| Failure::new("25P01", format!("{what} can only be used in transaction blocks"));
        let (tag, warning) = match (prepared.sql(), self.transaction) {
            (Some(SqlStatement::StartTransaction { .. }), Transaction::Idle) => {
                self.transaction = Transaction::Block;
                self.settings_at_begin = self.settings.shared().all();
                self.set_locally.clear();
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
                self.end_settings(before == Transaction::Failed)?;
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
                self.end_settings(true)?;
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
}

/// Whether a dotted setting name is one SHOW answers under its dotted name.
fn session_setting_known(name: &str) -> bool {
    name.starts_with("imageql.")
}

/// The columns a prepared statement returns, unless it is a FETCH.
async fn describe(prepared: &Prepared, session: &Session) -> Result<Option<SchemaRef>, Stopped> {
    if matches!(prepared.kind(), Kind::CopyOut(..) | Kind::Cursor) {
        return Ok(None);
    }
    if let (Kind::Variable, Some(SqlStatement::ShowVariable { variable })) = (prepared.kind(), prepared.sql()) {
        let parts: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
        // As SHOW answers it: `time zone` in words, `imageql.dry_run` dotted.
        let dotted = parts.join(".");
        let name = if session_setting_known(&dotted) { dotted } else { parts.join(" ") };
        let all = name == "all";
        return Ok(Some(shown(&name, vec![], all).schema()));
    }
    if matches!(prepared.kind(), Kind::Plan(LogicalPlan::Copy(_))) {
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
