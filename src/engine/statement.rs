//! Statements on their way through a session: read ([`Statement`]), then checked and planned
//! ([`Prepared`]), then run any number of times with parameter values.

use std::collections::HashMap;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{Expr, LogicalPlan, Statement as PlanStatement};
use datafusion::sql::parser::{ResetStatement as ResetVariable, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Array, CopyLegacyOption, CopyOption, CopySource, Expr as SqlExpr, FromTable, Ident, ObjectName, Query, Reset,
    ResetStatement, SelectItem, Set, SetExpr, Statement as SqlStatement, TableFactor, Value, ValueWithSpan,
    visit_expressions, visit_expressions_mut,
};
use std::ops::ControlFlow;

use super::meta::Meta;
use crate::error::Error;
use crate::mutate;
use crate::provider::Registry;
use crate::sql::Parsed;

/// One statement as read from text: a meta command about the registry, or SQL.
#[derive(Debug, Clone)]
pub struct Statement {
    pub(super) form: Form,
}

#[derive(Debug, Clone)]
pub(super) enum Form {
    Meta(Meta),
    Sql(Parsed),
}

impl Statement {
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
    /// A query DataFusion plans only once its parameters have values (a table function's
    /// arguments must be constants: `usage($1, $2)`): planned when it runs.
    Deferred,
    /// SET, RESET or SHOW of a variable other than the engine's: the front end's to keep
    /// (a Postgres connection's `search_path`, `statement_timeout`, …).
    Variable,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE: the front end's.
    Transaction,
    /// `COPY … TO STDOUT`: the query's rows, for the front end to send in COPY's format.
    CopyOut(LogicalPlan, CopyFormat),
    /// DECLARE … CURSOR, FETCH, CLOSE: the front end's (a server's connection keeps cursors).
    Cursor,
}

/// How `COPY … TO STDOUT` writes rows: PostgreSQL's text format (tab-separated, `\N` for
/// null) or CSV, with or without a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub csv: bool,
    pub header: bool,
    pub delimiter: char,
    pub null: String,
    pub quote: char,
}

impl CopyFormat {
    /// The format `COPY`'s options ask for.
    pub(super) fn of(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat, Error> {
        let csv = options.iter().any(|o| matches!(o, CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv")))
            || legacy.iter().any(|o| matches!(o, CopyLegacyOption::Csv(_)));
        if let Some(CopyOption::Format(other)) = options
            .iter()
            .find(|o| matches!(o, CopyOption::Format(f) if !matches!(f.value.to_lowercase().as_str(), "csv" | "text")))
        {
            return Err(Error::Unsupported {
                what: format!("COPY … TO STDOUT in the {} format", other.value),
                instead: Some("the formats are text and csv".into()),
            });
        }
        let mut format = CopyFormat {
            csv,
            header: false,
            delimiter: if csv { ',' } else { '\t' },
            null: if csv { String::new() } else { "\\N".into() },
            quote: '"',
        };
        for option in options {
            match option {
                CopyOption::Header(header) => format.header = *header,
                CopyOption::Delimiter(c) => format.delimiter = *c,
                CopyOption::Null(null) => format.null = null.clone(),
                CopyOption::Quote(c) => format.quote = *c,
                _ => {}
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Delimiter(c) => format.delimiter = *c,
                CopyLegacyOption::Null(null) => format.null = null.clone(),
                CopyLegacyOption::Header => format.header = true,
                _ => {}
            }
        }
        Ok(format)
    }
}

/// A statement checked against the session's policy and planned; nothing was sent.
#[derive(Debug)]
pub struct Prepared {
    parsed: Option<Parsed>,
    kind: Kind,
    /// A change's parameter types, found when it is prepared (a plan's are in its plan).
    change_parameters: Vec<Option<DataType>>,
    /// Whether the session previewed changes when it was prepared: its result's columns
    /// (a dry run's or the change's) were known from then on.
    pub(super) previewed: bool,
}

impl Prepared {
    pub(super) fn new(parsed: Option<Parsed>, kind: Kind) -> Prepared {
        Prepared { parsed, kind, change_parameters: vec![], previewed: false }
    }

    pub(super) fn with_change_parameters(self, types: Vec<Option<DataType>>) -> Prepared {
        Prepared { change_parameters: types, ..self }
    }

    pub(super) fn change_parameters(&self) -> &[Option<DataType>] {
        &self.change_parameters
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The SQL statement, unless it is a meta command.
    pub fn sql(&self) -> Option<&SqlStatement> {
        match &self.parsed {
            Some(Parsed { statement: DFStatement::Statement(statement), .. }) => Some(statement),
            _ => None,
        }
    }

    /// The names of the columns it returns where they differ from its plan's (PostgreSQL's
    /// repeated names).
    pub fn column_names(&self) -> Option<&[String]> {
        self.parsed.as_ref().and_then(|p| p.column_names.as_deref())
    }

    /// The statement as DataFusion's parser read it, unless it is a meta command.
    pub fn statement(&self) -> Option<&DFStatement> {
        self.parsed.as_ref().map(|p| &p.statement)
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

/// The query `COPY … TO STDOUT` sends, as a statement of its own, and its format.
pub(super) fn copied_query(parsed: &Parsed) -> Result<Option<(Parsed, CopyFormat)>, Error> {
    let DFStatement::Statement(statement) = &parsed.statement else { return Ok(None) };
    let SqlStatement::Copy { source, options, legacy_options, .. } = statement.as_ref() else { return Ok(None) };
    let query = match source {
        CopySource::Query(query) => query.clone(),
        CopySource::Table { table_name, columns } => Box::new(table_query(table_name, columns, None)),
    };
    let query = Parsed { statement: DFStatement::Statement(Box::new(SqlStatement::Query(query))), ..parsed.clone() };
    Ok(Some((query, CopyFormat::of(options, legacy_options)?)))
}

/// `SELECT columns FROM table [WHERE selection]` (every column when none are named).
fn table_query(table: &ObjectName, columns: &[Ident], selection: Option<SqlExpr>) -> Query {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let parsed = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql("SELECT * FROM t")
        .and_then(|mut p| p.parse_query());
    let mut query = *parsed.expect("the template parses");
    if let SetExpr::Select(select) = query.body.as_mut() {
        if let Some(TableFactor::Table { name, .. }) = select.from.first_mut().map(|t| &mut t.relation) {
            *name = table.clone();
        }
        if !columns.is_empty() {
            select.projection =
                columns.iter().map(|c| SelectItem::UnnamedExpr(SqlExpr::Identifier(c.clone()))).collect();
        }
        select.selection = selection;
    }
    query
}

/// The types of a change's `$n` by position: a value takes its field's type, a condition
/// (REPLACE's and DELETE's WHERE) the one it has in the query of the rows it picks.
pub(super) async fn change_parameter_types(
    state: &SessionState,
    registry: &Registry,
    statement: &SqlStatement,
) -> Vec<Option<DataType>> {
    let values = mutate::value_types(registry, statement);
    let condition = match statement {
        SqlStatement::Update(update) => match &update.table.relation {
            TableFactor::Table { name, .. } => update.selection.clone().map(|s| (name.clone(), s)),
            _ => None,
        },
        SqlStatement::Delete(delete) => {
            let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &delete.from;
            match tables.first().map(|t| &t.relation) {
                Some(TableFactor::Table { name, .. }) => delete.selection.clone().map(|s| (name.clone(), s)),
                _ => None,
            }
        }
        _ => None,
    };
    let mut conditions = vec![];
    if let Some((table, selection)) = condition {
        let query = SqlStatement::Query(Box::new(table_query(&table, &[], Some(selection))));
        if let Ok(plan) = state.statement_to_plan(DFStatement::Statement(Box::new(query))).await {
            conditions = parameter_types(&plan).unwrap_or_default();
        }
    }
    (1..=placeholder_count(statement))
        .map(|n| values.get(&n).cloned().or_else(|| conditions.get(n - 1).cloned().flatten()))
        .collect()
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
        DFStatement::Reset(ResetVariable::Variable(name)) if !is_engine_setting(&name.to_string()) => {
            return Some(Kind::Variable);
        }
        _ => return None,
    };
    match sql {
        s if mutate::changes_resources(registry, s) => Some(Kind::Change),
        SqlStatement::Set(_) | SqlStatement::Reset(_) | SqlStatement::ShowVariable { .. } if !engine_variable(sql) => {
            Some(Kind::Variable)
        }
        // Statements of a connection's state that a pool resets with (asyncpg: `UNLISTEN *`,
        // psycopg: `DEALLOCATE ALL`); a DEALLOCATE of one name is DataFusion's.
        SqlStatement::Discard { .. } | SqlStatement::UNLISTEN { .. } => Some(Kind::Variable),
        SqlStatement::Deallocate { name, .. } if name.value.eq_ignore_ascii_case("all") => Some(Kind::Variable),
        SqlStatement::Declare { .. } | SqlStatement::Fetch { .. } | SqlStatement::Close { .. } => Some(Kind::Cursor),
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
    is_engine_setting(&name)
}

/// Whether a setting is one of the engine's own (`datafusion.…`).
pub(super) fn is_engine_setting(name: &str) -> bool {
    name.to_lowercase().starts_with("datafusion.")
}

/// Whether DataFusion can run a plan: once optimized, no subquery is left undecorrelated.
pub(super) fn runnable(state: &datafusion::execution::SessionState, plan: &LogicalPlan) -> bool {
    let Ok(optimized) = state.optimize(plan) else { return true };
    let mut left = false;
    let _ = optimized.apply(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                left |= matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::OuterReferenceColumn(..) | Expr::Exists(_) | Expr::InSubquery(_)
                );
                Ok(if left { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
            });
        }
        Ok(if left { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    !left
}

/// Whether running a plan gives rows to show (not DDL, SET, PREPARE or a transaction
/// statement; EXECUTE of a prepared statement does).
pub(super) fn returns_rows(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Statement(statement) => matches!(statement, PlanStatement::Execute(_)),
        LogicalPlan::Ddl(_) => false,
        _ => true,
    }
}

/// Functions whose first argument is an array searched for the second.
const ARRAY_SEARCHES: [&str; 2] = ["array_has", "array_contains"];

/// The types of a plan's `$n` placeholders by position. A placeholder DataFusion could not
/// type takes the type it is cast to (`$1::VARCHAR`), or, as the array an element is looked
/// for in (`x = ANY($1)`, `array_has($1, x)`), a list of the element's type.
pub(super) fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, Error> {
    let mut types: HashMap<String, Option<DataType>> = plan.get_parameter_types()?;
    let _ = plan.apply_with_subqueries(|node| {
        let schema = match node.inputs().as_slice() {
            [input] => input.schema().clone(),
            _ => node.schema().clone(),
        };
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                let untyped = |p: &Placeholder| types.get(&p.id).is_none_or(Option::is_none);
                match e {
                    // `$1::oid[]` is of the type it is cast to, as in PostgreSQL, whatever else
                    // DataFusion guessed from where it is used.
                    Expr::Cast(cast) => {
                        if let Expr::Placeholder(placeholder) = cast.expr.as_ref() {
                            types.insert(placeholder.id.clone(), Some(cast.field.data_type().clone()));
                        }
                    }
                    Expr::ScalarFunction(call) if ARRAY_SEARCHES.contains(&call.name()) => {
                        if let [Expr::Placeholder(placeholder), element] = call.args.as_slice()
                            && untyped(placeholder)
                            && let Ok(element) = element.get_type(&schema)
                        {
                            let list = DataType::List(Arc::new(Field::new_list_field(element, true)));
                            types.insert(placeholder.id.clone(), Some(list));
                        }
                    }
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let count = types.keys().filter_map(|id| id.strip_prefix('$')?.parse::<usize>().ok()).max().unwrap_or(0);
    Ok((1..=count).map(|i| types.get(&format!("${i}")).cloned().flatten()).collect())
}

/// Whether a change returns rows (`RETURNING`).
pub(super) fn has_returning(statement: &SqlStatement, parsed: &Parsed) -> bool {
    match statement {
        SqlStatement::Insert(insert) => insert.returning.is_some(),
        SqlStatement::Update(update) => update.returning.is_some(),
        SqlStatement::Delete(delete) => delete.returning.is_some(),
        _ => parsed.returning.is_some(),
    }
}

/// The highest `$n` a statement names: how many parameters it takes.
pub(super) fn placeholder_count(statement: &SqlStatement) -> usize {
    let mut count = 0;
    let _ = visit_expressions(statement, |expr| {
        if let SqlExpr::Value(ValueWithSpan { value: Value::Placeholder(name), .. }) = expr
            && let Some(n) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
        {
            count = count.max(n);
        }
        ControlFlow::<()>::Continue(())
    });
    count
}

/// `statement` with each `$n` replaced by the literal of its value: values take the place of
/// expressions, so they can never change what the statement is.
pub(super) fn with_values(statement: &SqlStatement, params: &ParamValues) -> Result<SqlStatement, Error> {
    let ParamValues::List(values) = params else {
        return Err(Error::Refused("named parameters are not supported; use $1, $2, …".into()));
    };
    let mut bound = statement.clone();
    let mut failed = None;
    let _ = visit_expressions_mut(&mut bound, |expr| {
        if let SqlExpr::Value(ValueWithSpan { value: Value::Placeholder(name), .. }) = expr {
            let value = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| values.get(n.checked_sub(1)?));
            match value.map(|v| literal(&v.value)) {
                Some(Ok(literal)) => *expr = literal,
                Some(Err(e)) => failed = Some(e),
                None => failed = Some(Error::Refused(format!("there is no value for parameter {name}"))),
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(bound),
    }
}

/// A value as a SQL literal.
fn literal(value: &ScalarValue) -> Result<SqlExpr, Error> {
    let text = |v: Value| Ok(SqlExpr::value(v));
    if value.is_null() {
        return text(Value::Null);
    }
    match value {
        ScalarValue::Boolean(Some(b)) => text(Value::Boolean(*b)),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Decimal128(..) => text(Value::Number(value.to_string(), false)),
        ScalarValue::Float32(Some(f)) if f.is_finite() => text(Value::Number(value.to_string(), false)),
        ScalarValue::Float64(Some(f)) if f.is_finite() => text(Value::Number(value.to_string(), false)),
        ScalarValue::List(list) => {
            let items = (0..list.value_length(0) as usize)
                .map(|i| ScalarValue::try_from_array(&list.value(0), i).map_err(Error::from).and_then(|v| literal(&v)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SqlExpr::Array(Array { elem: items, named: true }))
        }
        other => text(Value::SingleQuotedString(match other {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => s.clone(),
            // Arrow's text of a timestamp or date (`2026-12-01T00:00:00`), which reads back as
            // one; a ScalarValue displays a timestamp as its raw number.
            other => match other.cast_to(&DataType::Utf8) {
                Ok(ScalarValue::Utf8(Some(text))) => text,
                _ => other.to_string(),
            },
        })),
    }
}
