//! How deeply a statement may nest. DataFusion's planner and sqlparser's visitors recurse
//! over the AST, so a statement deeper than [`MAX_EXPRESSION_DEPTH`], [`MAX_SET_OPERATIONS`]
//! or [`MAX_JOINS`] is refused right after parsing, before anything else walks it; the walk
//! here stops at the first limit passed, so it stays shallow itself.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, CopyToStatement, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Visit, Visitor};

use crate::error::{Complexity, Error};

/// How deeply expressions may nest: operands of a chain such as `1+1+…` or `a OR b OR …`
/// count one level each.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;
/// The most set operations (`UNION`, `EXCEPT`, `INTERSECT`) one query may chain.
pub const MAX_SET_OPERATIONS: usize = 1000;
/// The most tables one `FROM` may join.
pub const MAX_JOINS: usize = 256;

/// Refuses a statement nested past a limit with [`Error::TooComplex`].
pub fn check(statement: &DFStatement) -> Result<(), Error> {
    let mut depth = Depth { now: 0 };
    let walked = match statement {
        DFStatement::Statement(statement) => statement.visit(&mut depth),
        DFStatement::Explain(explain) => return check(&explain.statement),
        DFStatement::CopyTo(CopyToStatement { source: CopyToSource::Query(query), .. }) => query.visit(&mut depth),
        _ => ControlFlow::Continue(()),
    };
    match walked {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(limit) => Err(Error::TooComplex(limit)),
    }
}

struct Depth {
    now: usize,
}

impl Visitor for Depth {
    type Break = Complexity;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Complexity> {
        // Set operations nest to the left; walk that spine without recursion.
        let mut operations = 0;
        let mut body = query.body.as_ref();
        loop {
            if let SetExpr::Select(select) = body
                && select.from.iter().map(|t| t.joins.len() + 1).sum::<usize>() > MAX_JOINS
            {
                return ControlFlow::Break(Complexity::Joins);
            }
            match body {
                SetExpr::SetOperation { left, .. } => {
                    operations += 1;
                    body = left;
                }
                _ => break,
            }
        }
        match operations > MAX_SET_OPERATIONS {
            true => ControlFlow::Break(Complexity::SetOperations),
            false => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<Complexity> {
        self.now += 1;
        match self.now > MAX_EXPRESSION_DEPTH {
            true => ControlFlow::Break(Complexity::Expressions),
            false => ControlFlow::Continue(()),
        }
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Complexity> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}
