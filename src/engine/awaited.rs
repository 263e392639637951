//! `SELECT /*+ AWAIT */ … FROM resource WHERE …`: waits until every row the `WHERE` matches is
//! ready, as a change's `AWAIT` does, then answers the query with the rows as they are then.
//! This is how to wait on an image someone else started.

use std::sync::Arc;

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, Query, SelectItem, SetExpr, Statement as SqlStatement, TableFactor,
};

use datafusion::common::ParamValues;

use super::{CancelToken, Session};
use crate::error::Error;
use crate::provider::{Registry, Resource};
use crate::{mutate, sql};

/// What an awaited query waits on: the resource, and the query of the ids of its rows.
pub(super) struct Awaited {
    pub resource: Arc<Resource>,
    pub ids: SqlStatement,
}

/// The resource an awaited query reads and the query of its rows' ids (its own `FROM` and
/// `WHERE`); refused unless it reads one resource that has a lifecycle.
pub(super) fn awaited(statement: &DFStatement, registry: &Registry) -> Result<Awaited, Error> {
    let refused = || {
        Error::Refused(
            "AWAIT on a query waits for the rows of one resource: SELECT /*+ AWAIT */ … FROM \
             linode.images.images WHERE id = 'private/42'"
                .into(),
        )
    };
    let statement = match statement {
        DFStatement::Statement(statement) => statement,
        DFStatement::Explain(_) => {
            return Err(Error::Refused(
                "EXPLAIN of SELECT /*+ AWAIT */ is not made: explain the query without AWAIT".into(),
            ));
        }
        _ => return Err(refused()),
    };
    let SqlStatement::Query(query) = statement.as_ref() else { return Err(refused()) };
    let SetExpr::Select(select) = query.body.as_ref() else { return Err(refused()) };
    let [from] = select.from.as_slice() else { return Err(refused()) };
    let (TableFactor::Table { name, .. }, true) = (&from.relation, from.joins.is_empty()) else {
        return Err(refused());
    };
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect();
    let resource = registry.resolve(&parts.join("."))?.resource;
    let (Some(_), Some(key)) = (&resource.lifecycle, resource.key()) else {
        return Err(Error::Refused(format!("{} has no status to wait for", resource.full_name)));
    };
    let mut ids = select.as_ref().clone();
    ids.projection = vec![SelectItem::UnnamedExpr(Expr::Identifier(Ident::new(key.column)))];
    ids.distinct = None;
    ids.group_by = GroupByExpr::Expressions(vec![], vec![]);
    ids.having = None;
    ids.qualify = None;
    ids.named_window = vec![];
    let ids = Query {
        body: Box::new(SetExpr::Select(Box::new(ids))),
        order_by: None,
        limit_clause: None,
        fetch: None,
        ..query.as_ref().clone()
    };
    Ok(Awaited { resource: resource.clone(), ids: SqlStatement::Query(Box::new(ids)) })
}

impl Session {
    /// Waits until the rows an awaited query names are ready; what it then reads is fresh.
    pub(super) async fn await_rows(
        &self,
        parsed: &sql::Parsed,
        params: &ParamValues,
        cancel: &CancelToken,
    ) -> Result<(), Error> {
        let awaited = awaited(&parsed.statement, &self.registry)?;
        let state = self.ctx.state();
        let mut plan = state.statement_to_plan(DFStatement::Statement(Box::new(awaited.ids))).await?;
        if !matches!(params, ParamValues::List(values) if values.is_empty()) {
            plan = plan.replace_params_with_values(params)?;
        }
        let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
        let ids: Vec<String> = mutate::rows_of_batches(&batches)?
            .into_iter()
            .filter_map(|row| row.into_iter().next())
            .map(|id| id.as_str().map(str::to_string).unwrap_or_else(|| id.to_string()))
            .collect();
        let provider =
            self.registry.providers.values().find(|p| awaited.resource.full_name.starts_with(&format!("{}.", p.id)));
        let api = provider
            .map(|p| &self.clients[&p.id])
            .ok_or_else(|| Error::Query("no provider for the resource".into()))?;
        mutate::await_all(&awaited.resource, api, &ids, false, self.await_timeout(), cancel).await?;
        api.forget_reads();
        Ok(())
    }
}
