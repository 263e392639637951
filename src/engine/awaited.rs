//! `SELECT /*+ AWAIT */ … FROM resource WHERE …`: waits until every row the `WHERE` matches is
//! ready, as a change's `AWAIT` does, then answers the query with the rows as they are then.
//! This is how to wait on an image someone else started.

use std::sync::Arc;

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, Query, SelectItem, SetExpr, Statement as SqlStatement, TableFactor,
};

use crate::error::Error;
use crate::provider::{Registry, Resource};

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
