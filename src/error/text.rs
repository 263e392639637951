//! Errors as text for a terminal or a wire protocol's message field: each names what was
//! wrong and what to do about it. The token never appears in any of them.

use std::fmt;

use super::{AwaitProblem, Complexity, Error, FileRefusal, Forbidden, Partial, Validation};
use crate::provider::nearest;
use crate::sql::{MAX_EXPRESSION_DEPTH, MAX_JOINS, MAX_SET_OPERATIONS};

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) | Error::Refused(message) | Error::Query(message) => f.write_str(message),
            Error::Syntax(message) => match message.strip_prefix("sql parser error: ") {
                Some(rest) => write!(f, "syntax error: {rest}"),
                None => write!(f, "syntax error: {message}"),
            },
            Error::TooComplex(Complexity::Expressions) => write!(
                f,
                "the statement nests expressions more than {MAX_EXPRESSION_DEPTH} levels deep: split long chains of \
                 AND, OR or operators (e.g. use IN (…) for many alternatives)"
            ),
            Error::TooComplex(Complexity::SetOperations) => write!(
                f,
                "the query chains more than {MAX_SET_OPERATIONS} UNION, EXCEPT or INTERSECT operations: split it"
            ),
            Error::TooComplex(Complexity::Joins) => {
                write!(f, "the query joins more than {MAX_JOINS} tables in one FROM: join fewer, through views or CTEs")
            }
            Error::Forbidden(forbidden) => write!(f, "{forbidden}"),
            Error::OutOfMemory(detail) => write!(
                f,
                "the statement needs more memory than it may use ({detail}); narrow it with WHERE, LIMIT or fewer \
                 columns"
            ),
            Error::Provider(error) => write!(f, "{error}"),
            Error::Sandbox(error) => write!(f, "{error}"),
            Error::UnknownResource(error) => write!(f, "{error}"),
            Error::UnknownTable { name, matches, nearest } => {
                if matches.len() > 1 {
                    let matches = matches.join(", ");
                    return write!(
                        f,
                        "{name} is ambiguous: several tables have that name: {matches}; write one in full"
                    );
                }
                write!(f, "unknown table {name}: ")?;
                if let Some(nearest) = matches.first().or(nearest.as_ref()) {
                    write!(f, "did you mean {nearest}? ")?;
                }
                write!(f, "SHOW RESOURCES lists what can be queried")
            }
            Error::UnknownColumn { name, valid } => {
                write!(f, "No field named {name}")?;
                if let Some(close) = nearest(name, valid.iter().map(String::as_str)) {
                    write!(f, "; did you mean {close}?")?;
                }
                write!(f, " Valid fields are {}.", valid.join(", "))
            }
            Error::UnknownFunction { name, nearest } => {
                write!(f, "function {name} does not exist")?;
                nearest.iter().try_for_each(|n| write!(f, "; did you mean {n}?"))
            }
            Error::InvalidValue { message, .. } => f.write_str(message),
            Error::Placeholder(problem) => write!(f, "{problem}"),
            Error::UnknownSetting(name) => write!(f, "unrecognized configuration parameter \"{name}\""),
            Error::UnknownPrepared(name) => write!(f, "prepared statement \"{name}\" does not exist"),
            Error::Stale(message) => f.write_str(message),
            Error::Masked { error, secrets } => f.write_str(&crate::mutate::masked(&error.to_string(), secrets)),
            Error::AccountsFailed { failed, change } => {
                let plural = if failed.len() == 1 { "" } else { "s" };
                write!(f, "{} account{plural} failed", failed.len())?;
                for (name, why) in failed {
                    write!(f, "\n  {name}: {why}")?;
                }
                match change {
                    true => write!(
                        f,
                        "\na change acts only when every account it reads answers, whatever accounts_on_error says: \
                         nothing was sent; name the accounts to change with WHERE account = …"
                    ),
                    false => write!(
                        f,
                        "\nthe others' rows are not answered alone; SET accounts_on_error = 'skip' (or --accounts-on-error skip) answers from them"
                    ),
                }
            }
            Error::BadSetting { name, value, expected } => {
                write!(f, "invalid value for parameter \"{name}\": \"{value}\" (it takes {expected})")
            }
            Error::Unsupported { what, instead } => {
                write!(f, "{what} is not supported")?;
                instead.iter().try_for_each(|i| write!(f, ": {i}"))
            }
            Error::Missing { verb, resource, method, needs } => write!(
                f,
                "{} on {resource} needs {} (required by {method}); see SHOW METHODS IN {resource}",
                verb.keyword(),
                needs.join(", ")
            ),
            Error::Validation(validation) => write!(f, "{validation}"),
            Error::Api(error) => write!(f, "{error}"),
            Error::Partial(partial) => write!(f, "{partial}"),
            Error::Await { id, problem } => match problem {
                AwaitProblem::Disappeared => write!(f, "{id} disappeared while waiting for it to be ready"),
                AwaitProblem::Ended { status } => write!(f, "{id} ended {status}"),
                AwaitProblem::TimedOut { waited, status } => write!(
                    f,
                    "gave up waiting for {id} after {}; it is {status} (SET imageql.await_timeout = '2h' waits longer)",
                    crate::engine::duration_text(*waited)
                ),
                AwaitProblem::Stopped { status } => write!(f, "stopped waiting for {id}: it is {status}"),
                AwaitProblem::NoWayToRead => write!(f, "{id} cannot be re-read: its resource has no get method"),
            },
            Error::Cancelled => f.write_str("cancelled"),
            Error::Upload { path, reason } => write!(f, "{}: {reason}", path.display()),
            Error::Output(error) => write!(f, "cannot write the result: {error}"),
            Error::File { path, source } => write!(f, "{path}: {source}"),
            Error::At { origin, line, source } => write!(f, "{origin}:{line}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Forbidden::File { path, why: FileRefusal::NoFiles } => write!(
                f,
                "{path:?}: this server reads and writes no files for its clients (COPY … TO a file and @file \
                 uploads need the operator to allow a directory with --allow-files)"
            ),
            Forbidden::File { path, why: FileRefusal::Outside } => write!(
                f,
                "{path:?} is outside the directory this server lets clients use: give a path inside it, such as \
                 'report.csv'"
            ),
            Forbidden::Definition { statement } => write!(
                f,
                "{statement} is not allowed here: clients of this server read the provider's tables and views and \
                 change resources with INSERT, REPLACE, DELETE and EXEC; they create no tables, views or schemas"
            ),
            Forbidden::Setting { name } => {
                write!(f, "SET {name} is not allowed here: the engine's settings are the server operator's")
            }
            Forbidden::Protected { ids, reason, column: None } => write!(f, "{}: {reason}", ids.join(", ")),
            Forbidden::Protected { ids, reason, column: Some(column) } => write!(
                f,
                "the WHERE clause matches {} protected row{} ({}): {reason}; narrow it, e.g. with AND NOT {column}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                ids.join(", "),
            ),
        }
    }
}

impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{} on {} was not sent; {count} problem{}:",
            self.verb.keyword(),
            self.resource,
            if count == 1 { "" } else { "s" }
        )?;
        for (subject, violation) in &self.problems {
            write!(f, "\n  {subject}: {violation}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Partial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = format!("{} on {}", self.verb.keyword(), self.resource);
        let total = self.done.len() + usize::from(self.failed.is_some()) + self.not_sent.len();
        match (&self.failed, &self.cause) {
            // The statement's only call: its own error says it all.
            (Some(_), cause) if total == 1 => {
                write!(f, "{cause}")?;
                return self.cleanup.iter().try_for_each(|c| write!(f, "\n  {c}"));
            }
            (Some(_), _) => write!(f, "{what} stopped at {} of {total}:", self.done.len() + 1)?,
            (None, Error::Cancelled) => write!(f, "{what} interrupted before {} of {total}:", self.done.len() + 1)?,
            (None, cause) => {
                write!(f, "{what} was done ({}), but then: {cause}", self.done.join(", "))?;
                return self.cleanup.iter().try_for_each(|c| write!(f, "\n  {c}"));
            }
        }
        for done in &self.done {
            write!(f, "\n  {done}: done")?;
        }
        if let Some(failed) = &self.failed {
            write!(f, "\n  {failed}: failed: {}", self.cause)?;
        }
        for not_sent in &self.not_sent {
            write!(f, "\n  {not_sent}: not sent")?;
        }
        self.cleanup.iter().try_for_each(|c| write!(f, "\n  {c}"))
    }
}
