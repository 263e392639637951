//! Cursors of DECLARE … CURSOR: rows computed as FETCH asks for them, forward only, closed by
//! CLOSE or at the end of their transaction (unless WITH HOLD).

use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::{CloseCursor, FetchDirection, Statement as SqlStatement, Value, ValueWithSpan};
use datafusion_postgres::pgwire;
use pgwire::api::portal::Format;
use pgwire::messages::PgWireBackendMessage as Backend;
use pgwire::messages::data::DataRow;

use super::{Answer, Connection, Cursor, MAX_PREPARED, Stopped, Transaction};
use crate::engine::Prepared;
use crate::serve::reply::{Failure, complete, description};
use crate::serve::wire::Wire;

impl Connection {
    /// DECLARE … CURSOR, FETCH and CLOSE.
    pub(super) async fn cursor(
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
                if self.cursors.len() >= MAX_PREPARED {
                    return Err(
                        Failure::new("53400", format!("a connection keeps at most {MAX_PREPARED} cursors")).into()
                    );
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
    pub(super) async fn fetch(
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
}
