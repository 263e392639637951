/*! The one error type. Variants carry data, not prose: a front end decides how to show them.
[`text`] renders them for a terminal; [`Error::exit_code`] maps them to the command line's
exit codes and [`Error::sqlstate`] to Postgres error codes, without reading any message. */

mod text;

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};

use crate::api::ApiError;
use crate::provider::{LoadError, UnknownResource, Verb};
use crate::validate::Violation;

#[derive(Debug)]
pub enum Error {
    /// A mistake on the command line or in its files: exit code 2.
    Usage(String),
    Provider(LoadError),
    Sandbox(crate::sandbox::SandboxError),
    /// Text the parser rejects; the message carries the parser's position.
    Syntax(String),
    UnknownResource(UnknownResource),
    /// A table no query can read, with what it may have meant: the full names that end in it
    /// (a shortened name several resources have), or the nearest one.
    UnknownTable {
        name: String,
        matches: Vec<String>,
        nearest: Option<String>,
    },
    UnknownColumn {
        name: String,
        valid: Vec<String>,
    },
    /// A function no registry has, with the name DataFusion suggests.
    UnknownFunction {
        name: String,
        nearest: Option<String>,
    },
    /// A `{{ … }}` placeholder of a statement that cannot be filled.
    Placeholder(crate::template::TemplateError),
    /// A setting no one has heard of (`current_setting('nope')`).
    UnknownSetting(String),
    /// `EXECUTE name` of no statement prepared with that name.
    UnknownPrepared(String),
    /// An error whose message would repeat a secret the statement gave: shown masked.
    Masked {
        error: Box<Error>,
        secrets: Vec<String>,
    },
    /// A prepared statement whose result would no longer be what it was described as.
    Stale(String),
    /// Accounts of an account set that failed, each with why.
    AccountsFailed {
        failed: Vec<(String, String)>,
        /// Read for a change, which acts only when every account answers.
        change: bool,
    },
    /// A value a setting does not take.
    BadSetting {
        name: String,
        value: String,
        expected: &'static str,
    },
    /// A value that is not of its type, or out of its range.
    InvalidValue {
        fault: ValueFault,
        message: String,
    },
    /// A form imageql does not implement (`DROP TABLE`, `UPDATE`, `INSERT … ON CONFLICT`).
    Unsupported {
        what: String,
        instead: Option<String>,
    },
    /// A statement that cannot be sent as written: the reason says what to write instead.
    Refused(String),
    /// A statement nested past one of the engine's limits.
    TooComplex(Complexity),
    /// What the front end does not let its clients do.
    Forbidden(Forbidden),
    /// The statement needed more memory than it may use; DataFusion's words on where.
    OutOfMemory(String),
    /// No method of the resource can serve the statement with what it gives.
    Missing {
        verb: Verb,
        resource: String,
        method: String,
        needs: Vec<String>,
    },
    /// Values that break the method's description; nothing was sent.
    Validation(Validation),
    Api(ApiError),
    /// A change that stopped part-way: what was done, what failed, what was not sent.
    Partial(Box<Partial>),
    /// `/*+ AWAIT */` ended without the row becoming ready.
    Await {
        id: String,
        problem: AwaitProblem,
    },
    Cancelled,
    /// A local file an upload needs is missing or unfit.
    Upload {
        path: PathBuf,
        reason: String,
    },
    /// Planning or execution failed in the query engine.
    Query(String),
    Output(ArrowError),
    File {
        path: String,
        source: std::io::Error,
    },
    /// Where in a script the error happened.
    At {
        origin: String,
        line: usize,
        source: Box<Error>,
    },
}

/// The nesting limit a statement passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Complexity {
    Expressions,
    SetOperations,
    Joins,
}

/// What a front end's policy refuses (see `engine::Policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forbidden {
    /// A file of this machine, named as the statement names it.
    File { path: String, why: FileRefusal },
    /// Creating, changing or dropping tables, views or schemas, or writing into them.
    Definition { statement: String },
    /// Changing the engine's own settings (`SET datafusion.…`).
    Setting { name: String },
    /// Changing rows the provider files protect (public images), named by id in the
    /// statement, or matched by its WHERE (`column` then says how to leave them out).
    Protected { ids: Vec<String>, reason: String, column: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRefusal {
    /// The front end reads and writes no files for its clients.
    NoFiles,
    /// The path leads out of the one directory the front end allows.
    Outside,
}

/// Every problem found in a statement's values, by row (`row 2`, `SET`, `@@json`).
#[derive(Debug, Clone)]
pub struct Validation {
    pub verb: Verb,
    pub resource: String,
    pub method: String,
    pub problems: Vec<(String, Violation)>,
}

#[derive(Debug)]
pub struct Partial {
    pub verb: Verb,
    pub resource: String,
    /// Subjects of the calls that were made, with the id created where one was.
    pub done: Vec<String>,
    /// The subject of the call that failed, when a call failed (not a later step).
    pub failed: Option<String>,
    pub not_sent: Vec<String>,
    pub cause: Error,
    /// What was done to clean up after the failure (an upload's row deleted again).
    pub cleanup: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwaitProblem {
    Disappeared,
    Ended {
        status: String,
    },
    TimedOut {
        waited: std::time::Duration,
        status: String,
    },
    /// Cancelled while waiting.
    Stopped {
        status: String,
    },
    NoWayToRead,
}

/// What is wrong with an invalid value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFault {
    /// Text that does not read as the type it is cast to.
    Cast,
    DivisionByZero,
    /// Out of its type's range.
    Overflow,
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Provider(_) => 2,
            Error::Sandbox(sandbox) if sandbox.is_usage() => 2,
            Error::At { source, .. } => source.exit_code(),
            Error::Masked { error, .. } => error.exit_code(),
            _ => 1,
        }
    }

    /// The Postgres error code a wire front end sends for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Syntax(_) | Error::Refused(_) => "42601",
            Error::TooComplex(_) => "54001",
            Error::Forbidden(Forbidden::Definition { .. }) => "25006",
            Error::Forbidden(_) => "42501",
            Error::OutOfMemory(_) => "53200",
            Error::UnknownResource(_) | Error::UnknownTable { .. } => "42P01",
            Error::UnknownColumn { .. } => "42703",
            Error::UnknownFunction { .. } => "42883",
            Error::UnknownSetting(_) => "42704",
            Error::UnknownPrepared(_) => "26000",
            Error::BadSetting { .. } => "22023",
            Error::AccountsFailed { .. } => "08006",
            Error::Stale(_) => "0A000",
            Error::Masked { error, .. } => error.sqlstate(),
            Error::Placeholder(_) => "42601",
            Error::InvalidValue { fault: ValueFault::Cast, .. } => "22P02",
            Error::InvalidValue { fault: ValueFault::DivisionByZero, .. } => "22012",
            Error::InvalidValue { fault: ValueFault::Overflow, .. } => "22003",
            Error::Unsupported { .. } => "0A000",
            Error::Missing { .. } => "23502",
            Error::Validation(_) | Error::Upload { .. } => "22023",
            Error::Api(api) => match api.status() {
                Some(401) => "28000",
                Some(403) => "42501",
                Some(404) => "42704",
                Some(429) => "53400",
                Some(400..=499) => "22023",
                _ => "08006",
            },
            Error::Partial(partial) => partial.cause.sqlstate(),
            Error::Await { problem: AwaitProblem::Stopped { .. }, .. } => "57014",
            Error::Await { .. } => "55000",
            Error::Cancelled => "57014",
            Error::At { source, .. } => source.sqlstate(),
            Error::Usage(_) | Error::Provider(_) | Error::Sandbox(_) => "F0000",
            Error::Query(_) | Error::Output(_) | Error::File { .. } => "XX000",
        }
    }

    /// The reader of our output went away (`imageql … | head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Output(ArrowError::IoError(_, e)) => e.kind() == std::io::ErrorKind::BrokenPipe,
            Error::At { source, .. } => source.is_broken_pipe(),
            _ => false,
        }
    }

    /// The error without the script position around it.
    pub fn root(&self) -> &Error {
        match self {
            Error::At { source, .. } => source.root(),
            other => other,
        }
    }
}

/// `?` on the errors of the layers below wraps them in their variant.
macro_rules! wrap {
    ($($source:ty => $variant:ident),* $(,)?) => {
        $(impl From<$source> for Error {
            fn from(error: $source) -> Self {
                Error::$variant(error)
            }
        })*
    };
}

wrap!(
    LoadError => Provider,
    crate::sandbox::SandboxError => Sandbox,
    ApiError => Api,
    UnknownResource => UnknownResource,
    ArrowError => Output,
);

impl From<DataFusionError> for Error {
    fn from(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::External(inner) => match inner.downcast_ref::<ApiError>() {
                Some(api) => Error::Api(api.clone()),
                None if let Some(Error::UnknownSetting(name)) = inner.downcast_ref::<Error>() => {
                    Error::UnknownSetting(name.clone())
                }
                None if let Some(Error::AccountsFailed { failed, change }) = inner.downcast_ref::<Error>() => {
                    Error::AccountsFailed { failed: failed.clone(), change: *change }
                }
                None => match inner.downcast_ref::<ScanError>() {
                    Some(ScanError(message)) => Error::Refused(message.clone()),
                    None => Error::Query(inner.to_string()),
                },
            },
            DataFusionError::SQL(parser, _) => Error::Syntax(parser.to_string()),
            DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
                SchemaError::FieldNotFound { field, valid_fields } => Error::UnknownColumn {
                    name: field.name.clone(),
                    valid: valid_fields.iter().map(|c| c.name.clone()).collect(),
                },
                other => Error::Query(other.to_string()),
            },
            DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
                ArrowError::CastError(_) => Error::InvalidValue { fault: ValueFault::Cast, message: arrow.to_string() },
                ArrowError::DivideByZero => {
                    Error::InvalidValue { fault: ValueFault::DivisionByZero, message: arrow.to_string() }
                }
                ArrowError::ArithmeticOverflow(_) => {
                    Error::InvalidValue { fault: ValueFault::Overflow, message: arrow.to_string() }
                }
                other => Error::Query(other.to_string()),
            },
            DataFusionError::NotImplemented(what) => Error::Unsupported { what: what.clone(), instead: None },
            DataFusionError::ResourcesExhausted(what) => Error::OutOfMemory(what.clone()),
            DataFusionError::Plan(message) => match (table_not_found(message), function_not_found(message)) {
                (Some(name), _) => Error::UnknownTable { name, matches: vec![], nearest: None },
                (_, Some((name, nearest))) => Error::UnknownFunction { name, nearest },
                _ => Error::Query(message.clone()),
            },
            DataFusionError::Execution(message) if let Some(name) = prepared_not_found(message) => {
                Error::UnknownPrepared(name)
            }
            root => Error::Query(root.strip_backtrace()),
        }
    }
}

/// DataFusion reports an unknown function only in words: `Invalid function 'f'.\nDid you
/// mean 'g'?`.
fn function_not_found(message: &str) -> Option<(String, Option<String>)> {
    let rest = message.strip_prefix("Invalid function '")?;
    let (name, rest) = rest.split_once('\'')?;
    let nearest = rest.split_once("Did you mean '").and_then(|(_, n)| n.split_once('\'')).map(|(n, _)| n.to_string());
    Some((name.to_string(), nearest))
}

/// DataFusion reports an unknown prepared statement only in words: `Prepared statement 'p'
/// does not exist`.
fn prepared_not_found(message: &str) -> Option<String> {
    let rest = message.strip_prefix("Prepared statement '")?;
    rest.strip_suffix("' does not exist").map(str::to_string)
}

/// DataFusion reports an unknown table only in words: `table 'a.b.c' not found`.
fn table_not_found(message: &str) -> Option<String> {
    let rest = message.strip_prefix("table '")?;
    rest.strip_suffix("' not found").map(str::to_string)
}

/// A scan that cannot be planned as written (a parameter column without a value), carried
/// through DataFusion to be reported as [`Error::Refused`].
#[derive(Debug, Clone)]
pub struct ScanError(pub String);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScanError {}
