//! The extended query protocol: Parse, Bind, Describe and Execute of named statements and
//! portals, each prepared once and run with the values a Bind gives.

use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion_postgres::pgwire;
use pgwire::api::portal::Format;
use pgwire::messages::PgWireBackendMessage as Backend;
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{BindComplete, ParseComplete};
use pgwire::messages::response::EmptyQueryResponse;

use super::{Answer, Connection, MAX_PREPARED, Portal, PortalState, Stopped, Stored, completed};
use crate::engine::Prepared;
use crate::serve::params;
use crate::serve::reply::{Failure, complete, description, field_infos};
use crate::serve::wire::Wire;
use crate::sql::split_statements;

impl Connection {
    pub(super) async fn parse(
        &mut self,
        wire: &mut Wire,
        name: String,
        query: &str,
        declared: Vec<u32>,
    ) -> Result<(), Stopped> {
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
        let mut declared = declared;
        for (n, array) in prepared.as_ref().and_then(Prepared::sql).map(params::oid_arrays).unwrap_or_default() {
            if declared.len() < n {
                declared.resize(n, 0);
            }
            if declared[n - 1] == 0 {
                declared[n - 1] = array.oid();
            }
        }
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

    pub(super) async fn bind(
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

    pub(super) async fn describe(&mut self, wire: &mut Wire, portal: bool, name: &str) -> Result<(), Stopped> {
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

    pub(super) async fn execute(&mut self, wire: &mut Wire, name: &str, max_rows: usize) -> Result<(), Stopped> {
        let mut portal = self
            .portals
            .remove(name)
            .ok_or_else(|| Failure::new("34000", format!("portal \"{name}\" does not exist")))?;
        let result = self.execute_portal(wire, &mut portal, max_rows).await;
        self.portals.insert(name.to_string(), portal);
        result
    }

    pub(super) async fn execute_portal(
        &mut self,
        wire: &mut Wire,
        portal: &mut Portal,
        max_rows: usize,
    ) -> Result<(), Stopped> {
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
                    Answer::Tag(tag) => return Ok(completed(wire, self.session.take_warnings(), tag).await?),
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
