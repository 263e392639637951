//! Statements on their way through a session: read ([`Statement`]), then checked and planned
//! ([`Prepared`]), then run any number of times with parameter values.

use std::collections::HashMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Reset, ResetStatement, Set, Statement as SqlStatement};

use super::meta::Meta;
use crate::error::Error;
use crate::mutate;
use crate::provider::Registry;
use crate::sql::Parsed;

/// One statement as read from text: a meta command about the registry, or SQL.
#[derive(Debug, Clone)]
pub struct Statement {
    pub(super) text: String,
    pub(super) form: Form,
}

#[derive(Debug, Clone)]
pub(super) enum Form {
    Meta(Meta),
    Sql(Parsed),
}

impl Statement {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The SQL statement, unless it is a meta command.
    pub fn sql(&self) -> Option<&SqlStatement> {
        match &self.form {
            Form::Sql(Parsed { statement: DFStatement::Statement(statement), .. }) => Some(statement),
            _ => None,
        }
    }
}

/// What a prepared statement is, and so who runs it.
#[derive(Debug)]
pub enum Kind {
    /// SHOW RESOURCES, DESCRIBE a resource, …: answered from the registry.
    Meta(Meta),
    /// A change of resources or an EXEC, or EXPLAIN of one: bound when it runs.
    Change,
    /// What DataFusion runs: queries, EXPLAIN, views, COPY, the engine's settings, and the
    /// session's own tables where the policy allows them.
    Plan(LogicalPlan),
    /// SET, RESET or SHOW of a variable other than the engine's: the front end's to keep
    /// (a Postgres connection's `search_path`, `statement_timeout`, …).
    Variable,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE: the front end's.
    Transaction,
}

/// A statement checked against the session's policy and planned; nothing was sent.
#[derive(Debug)]
pub struct Prepared {
    text: String,
    parsed: Option<Parsed>,
    kind: Kind,
}

impl Prepared {
    pub(super) fn new(text: String, parsed: Option<Parsed>, kind: Kind) -> Prepared {
        Prepared { text, parsed, kind }
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The SQL statement, unless it is a meta command.
    pub fn sql(&self) -> Option<&SqlStatement> {
        match &self.parsed {
            Some(Parsed { statement: DFStatement::Statement(statement), .. }) => Some(statement),
            _ => None,
        }
    }

    /// Whether it changes resources when it runs (EXPLAIN of a change does not).
    pub fn changes(&self) -> bool {
        matches!(self.kind, Kind::Change) && self.sql().is_some()
    }

    /// The parsed SQL; every kind but [`Kind::Meta`] has it.
    pub(super) fn parsed(&self) -> &Parsed {
        self.parsed.as_ref().expect("a SQL statement")
    }
}

/// The kind of a statement that is not planned by DataFusion when prepared; `None` for one
/// that is.
pub(super) fn classify(statement: &DFStatement, registry: &Registry) -> Option<Kind> {
    let sql = match statement {
        DFStatement::Statement(sql) => sql.as_ref(),
        DFStatement::Explain(explain) => {
            return match explain.statement.as_ref() {
                DFStatement::Statement(sql) if mutate::changes_resources(registry, sql) => Some(Kind::Change),
                _ => None,
            };
        }
        _ => return None,
    };
    match sql {
        s if mutate::changes_resources(registry, s) => Some(Kind::Change),
        SqlStatement::Set(_) | SqlStatement::Reset(_) | SqlStatement::ShowVariable { .. }
            if !engine_variable(sql) =>
        {
            Some(Kind::Variable)
        }
        SqlStatement::StartTransaction { .. }
        | SqlStatement::Commit { .. }
        | SqlStatement::Rollback { .. }
        | SqlStatement::Savepoint { .. }
        | SqlStatement::ReleaseSavepoint { .. } => Some(Kind::Transaction),
        _ => None,
    }
}

/// Whether a SET, RESET or SHOW names one of the engine's own settings (`datafusion.…`).
fn engine_variable(statement: &SqlStatement) -> bool {
    let name = match statement {
        SqlStatement::Set(Set::SingleAssignment { variable, .. }) => variable.to_string(),
        SqlStatement::Reset(ResetStatement { reset: Reset::ConfigurationParameter(name) }) => name.to_string(),
        SqlStatement::ShowVariable { variable } => variable.first().map(|i| i.value.clone()).unwrap_or_default(),
        _ => return false,
    };
    name.to_lowercase().starts_with("datafusion.")
}

/// Whether running a plan gives rows to show (not DDL, SET or a transaction statement).
pub(super) fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_))
}

/// The types of a plan's `$n` placeholders by position. A placeholder DataFusion could not
/// type takes the type it is cast to (`$1::VARCHAR`).
pub(super) fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, Error> {
    let mut types: HashMap<String, Option<DataType>> = plan.get_parameter_types()?;
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
    let count = types.keys().filter_map(|id| id.strip_prefix('$')?.parse::<usize>().ok()).max().unwrap_or(0);
    Ok((1..=count).map(|i| types.get(&format!("${i}")).cloned().flatten()).collect())
}
