//! Binding a statement to a method: which resource and method, which values go where, and
//! where the rows come from. Nothing is read or sent here; a statement that cannot succeed
//! is refused before anything else happens.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr as LogicalExpr, LogicalPlan, LogicalPlanBuilder, ident};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Delete, Expr, ExprWithAlias, FromTable, Ident, Insert, ObjectName, Statement,
    TableFactor, TableObject, TableWithJoins, Update, visit_expressions, visit_expressions_mut,
};
use serde_json::Value;

use super::accounts::{ACCOUNT, Scope};
use super::execute::{call_for, validation};
use super::sets::{SetChange, members};
use super::values::{literal, rows_of_batches};
use super::{Bound, Defaults, Input, Upload, upload};
use crate::error::{Error, Forbidden};
use crate::files::FileAccess;
use crate::provider::{HttpVerb, Method, Param, Registry, Resolved, Resource, SqlVerb, Verb, nearest};
use crate::sql::{Parsed, is_replace};

/// The change a statement asks for, or `None` when it changes no resource (a query, or an
/// INSERT into a table made with CREATE TABLE, which DataFusion runs). Over an account set
/// (`scope` [`Scope::Set`]) each input row ends with the account it acts in.
pub async fn bind(
    state: &SessionState,
    registry: &Registry,
    statement: &Statement,
    parsed: &Parsed,
    files: &FileAccess,
    defaults: &Defaults,
    scope: Scope,
) -> Result<Option<Bound>, Error> {
    let scope = &scope;
    let mut bound = match statement {
        Statement::Insert(insert) => match insert_target(registry, insert) {
            Some(target) => bind_insert(state, target, insert, defaults, scope).await?,
            None => return Ok(None),
        },
        Statement::Update(update) if is_replace(update) => bind_replace(state, registry, update, scope).await?,
        Statement::Update(_) => {
            return Err(Error::Unsupported {
                what: "UPDATE".into(),
                instead: Some("use REPLACE … SET … WHERE …, which maps to the API's PUT".into()),
            });
        }
        Statement::Delete(delete) => bind_delete(state, registry, delete, scope).await?,
        Statement::Execute { name: Some(name), parameters, .. } => {
            let mut bound = bind_exec(state, registry, name, parameters, files, scope)?;
            bound.returning = parsed.returning.clone();
            bound
        }
        _ => return Ok(None),
    };
    bound.await_ready = parsed.has_hint("AWAIT");
    if bound.await_ready && bound.resource.lifecycle.is_none() {
        return Err(Error::Refused(format!("{} {} is not awaitable", bound.verb.keyword(), bound.resource.full_name)));
    }
    if bound.await_ready && bound.verb == Verb::Exec && bound.method().verb == HttpVerb::Delete {
        return Err(Error::Refused(format!(
            "AWAIT has nothing to wait for after {}: use DELETE /*+ AWAIT */ FROM {} WHERE …",
            bound.method_name, bound.resource.full_name
        )));
    }
    if bound.returning.is_some() {
        // Planned over no rows, so that a mistake in it is found before anything is sent.
        super::execute::returning(&bound, &[], &[])
            .await
            .map_err(|e| Error::Refused(format!("RETURNING: {}", e.root())))?;
    }
    Ok(Some(bound))
}

/// Whether a statement changes a resource or calls a method (what [`bind`] binds), without
/// binding it.
pub fn changes_resources(registry: &Registry, statement: &Statement) -> bool {
    match statement {
        Statement::Insert(insert) => insert_target(registry, insert).is_some(),
        Statement::Update(_) | Statement::Delete(_) => true,
        // `EXEC provider.service.resource.method`; a one-part name is a prepared statement's.
        Statement::Execute { name: Some(name), .. } => name.0.len() > 1,
        _ => false,
    }
}

/// A change bound only as far as its result's columns need, without its values (a client
/// describes a statement before it gives its parameters, whose values binding checks).
pub fn bind_for_describe(
    state: &SessionState,
    registry: &Registry,
    statement: &Statement,
    parsed: &Parsed,
    scope: Scope,
) -> Result<Bound, Error> {
    let (resource, verb) = target(registry, statement)?;
    let returning = match statement {
        Statement::Insert(insert) => insert.returning.clone(),
        Statement::Update(update) => update.returning.clone(),
        Statement::Delete(delete) => delete.returning.clone(),
        _ => parsed.returning.clone(),
    };
    let name = match statement {
        Statement::Execute { name: Some(name), .. } => object_name(name),
        _ => resource.full_name.clone(),
    };
    let target = registry.resolve(&name)?;
    let method_name = match &target.method {
        Some(method) => method.clone(),
        None => verb
            .sql_verb()
            .and_then(|sql_verb| resource.methods_for(sql_verb).next().map(|(name, _)| name.to_string()))
            .unwrap_or_default(),
    };
    let mut bound = bound(state, target, verb, &method_name, Input::Rows(vec![]), &scope);
    bound.returning = returning;
    Ok(bound)
}

/// The resource a change acts on and how, found without binding it (for describing its dry
/// run before its parameters are known).
pub fn target(registry: &Registry, statement: &Statement) -> Result<(Arc<Resource>, Verb), Error> {
    let (name, verb) = match statement {
        Statement::Insert(insert) => match insert_target(registry, insert) {
            Some(target) => return Ok((target.resource, Verb::Insert)),
            None => return Err(Error::Query("the statement changes no resource".into())),
        },
        Statement::Update(update) => (object_name(table_name(&update.table)?), Verb::Replace),
        Statement::Delete(delete) => match &delete.from {
            FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => match tables.as_slice() {
                [table] => (object_name(table_name(table)?), Verb::Delete),
                _ => return Err(Error::Refused("DELETE removes rows of one resource at a time".into())),
            },
        },
        Statement::Execute { name: Some(name), .. } => (object_name(name), Verb::Exec),
        _ => return Err(Error::Query("the statement changes no resource".into())),
    };
    Ok((registry.resolve(&name)?.resource, verb))
}

pub(super) fn object_name(name: &ObjectName) -> String {
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect();
    parts.join(".")
}

pub(super) fn insert_target(registry: &Registry, insert: &Insert) -> Option<Resolved> {
    let TableObject::TableName(name) = &insert.table else { return None };
    registry.resolve(&object_name(name)).ok()
}

fn table_name(table: &TableWithJoins) -> Result<&ObjectName, Error> {
    match (&table.relation, table.joins.is_empty()) {
        (TableFactor::Table { name, .. }, true) => Ok(name),
        _ => Err(Error::Refused("a change acts on one resource: joins and subqueries are not allowed here".into())),
    }
}

fn unsupported(what: &str, instead: &str) -> Error {
    Error::Unsupported { what: what.into(), instead: Some(instead.into()) }
}

/// The first method mapped to `verb` whose required parameters and body fields are all
/// among `given`.
pub(super) fn choose<'a>(resource: &'a Resource, verb: Verb, given: &[String]) -> Result<(&'a str, &'a Method), Error> {
    let sql_verb = verb.sql_verb().expect("EXEC names its method");
    let candidates: Vec<(&str, &Method)> = resource.methods_for(sql_verb).collect();
    let Some(&(first_name, first)) = candidates.first() else {
        return Err(Error::Refused(format!("{} does not support {}", resource.full_name, verb.keyword())));
    };
    let missing = |m: &Method| -> Vec<String> {
        let params = m.params.iter().filter(|p| p.required).map(|p| p.name.clone());
        params.chain(m.required.iter().cloned()).filter(|name| !given.iter().any(|g| g == name)).collect()
    };
    if let Some(found) = candidates.iter().find(|(_, m)| missing(m).is_empty()) {
        return Ok(*found);
    }
    Err(Error::Missing {
        verb,
        resource: resource.full_name.clone(),
        method: first_name.to_string(),
        needs: missing(first),
    })
}

/// What a method accepts by name: its parameters and body fields.
fn accepted(method: &Method) -> Vec<&str> {
    method.params.iter().map(|p| p.name.as_str()).chain(method.body.iter().map(|f| f.name.as_str())).collect()
}

/// `problem`, with the nearest valid name and the list of them.
fn unknown_name(problem: String, name: &str, valid: &[&str]) -> Error {
    let hint = nearest(name, valid.iter().copied()).map(|n| format!("did you mean {n}? ")).unwrap_or_default();
    Error::Refused(format!("{problem}: {hint}valid names are {}", valid.join(", ")))
}

fn bound(state: &SessionState, target: Resolved, verb: Verb, method_name: &str, input: Input, scope: &Scope) -> Bound {
    Bound {
        verb,
        provider: target.provider,
        resource: target.resource,
        method_name: method_name.to_string(),
        columns: vec![],
        input,
        constants: vec![],
        defaulted: vec![],
        protected_flag: false,
        keep_nulls: true,
        returning: None,
        await_ready: false,
        await_timeout: super::AWAIT_TIMEOUT,
        upload: None,
        set_change: None,
        state: state.clone(),
        scope: scope.clone(),
        row_numbers: vec![],
    }
}

/// A DataFrame over a query's AST, planned as DataFusion plans any query.
async fn frame(state: &SessionState, statement: Statement) -> Result<DataFrame, Error> {
    let plan = state.statement_to_plan(DFStatement::Statement(Box::new(statement))).await?;
    Ok(DataFrame::new(state.clone(), plan))
}

async fn bind_insert(
    state: &SessionState,
    target: Resolved,
    insert: &Insert,
    defaults: &Defaults,
    scope: &Scope,
) -> Result<Bound, Error> {
    let full_name = target.resource.full_name.clone();
    let refused = [
        (insert.overwrite, "INSERT OVERWRITE"),
        (insert.on.is_some(), "INSERT … ON CONFLICT / ON DUPLICATE KEY"),
        (insert.replace_into, "REPLACE INTO"),
        (insert.ignore || insert.or.is_some(), "INSERT IGNORE / INSERT OR …"),
        (
            insert.partitioned.is_some() || insert.settings.is_some() || insert.format_clause.is_some(),
            "this INSERT form",
        ),
    ];
    if let Some((_, what)) = refused.iter().find(|(found, _)| *found) {
        return Err(unsupported(
            &format!("{what} on {full_name}"),
            &format!("INSERT INTO {full_name} (…) VALUES (…) creates rows; REPLACE … SET … WHERE … changes them"),
        ));
    }
    let mut columns: Vec<String> = insert
        .columns
        .iter()
        .filter_map(|c| c.0.last().and_then(|p| p.as_ident()))
        .map(|i| insertable(&target, i))
        .collect();
    if let Some(twice) = columns.iter().enumerate().find(|(i, c)| columns[..*i].contains(c)).map(|(_, c)| c) {
        return Err(Error::Refused(format!("INSERT names {twice} twice: name each column once")));
    }
    let account_at = columns.iter().position(|c| c.eq_ignore_ascii_case(ACCOUNT));
    if *scope == Scope::Set {
        let Some(at) = account_at else {
            return Err(Error::Refused(format!(
                "this session reads several accounts: an INSERT names the account of each row, e.g. \
                 INSERT INTO {full_name} (account, …) VALUES ('acme', …)"
            )));
        };
        columns.remove(at);
    }
    if columns.is_empty() {
        return Err(Error::Refused(format!(
            "INSERT INTO {full_name} needs a column list, e.g. INSERT INTO {full_name} (disk_id, label) VALUES (…)"
        )));
    }
    // The profile's defaults count as given, for the methods that take them.
    let takes_default = |name: &String| {
        !columns.contains(name)
            && target.resource.methods_for(SqlVerb::Insert).any(|(_, m)| m.profile_defaults.contains(name))
    };
    let offered: Vec<String> =
        columns.iter().cloned().chain(defaults.keys().filter(|k| takes_default(k)).cloned()).collect();
    let (method_name, method) = choose(&target.resource, Verb::Insert, &offered)?;
    let defaulted: Vec<(String, Value)> = method
        .profile_defaults
        .iter()
        .filter(|name| !columns.contains(name))
        .filter_map(|name| Some((name.clone(), default_value(method, name, defaults.get(name)?))))
        .collect();
    let valid = accepted(method);
    if let Some(bad) = columns.iter().find(|c| !valid.contains(&c.as_str())) {
        return Err(unknown_name(format!("{full_name} has no insertable column {bad}"), bad, &valid));
    }
    let source = insert.source.as_ref().ok_or_else(|| Error::Refused("INSERT needs VALUES (…) or a SELECT".into()))?;
    let mut rows = frame(state, Statement::Query(source.clone())).await?;
    let width = rows.schema().fields().len();
    let named = columns.len() + usize::from(*scope == Scope::Set);
    if width != named {
        return Err(Error::Refused(format!("INSERT names {named} columns but its rows have {width} values")));
    }
    if let (Scope::Set, Some(at)) = (scope, account_at) {
        // The account goes last, where the split of a change over a set finds it.
        let fields: Vec<LogicalExpr> = rows.schema().columns().into_iter().map(LogicalExpr::Column).collect();
        let mut ordered = fields.clone();
        let account = ordered.remove(at);
        ordered.push(account);
        rows = rows.select(ordered)?;
    }
    let method_name = method_name.to_string();
    let mut bound = bound(state, target, Verb::Insert, &method_name, Input::Query(rows), scope);
    bound.columns = columns;
    bound.keep_nulls = false;
    bound.returning = insert.returning.clone();
    bound.defaulted = defaulted.iter().map(|(name, _)| name.clone()).collect();
    bound.constants = defaulted;
    Ok(bound)
}

/// An INSERT's column as the methods name it: unquoted names are matched regardless of case,
/// as SQL folds them (`DISK_ID` is `disk_id`, `LINODEID` is `linodeId`); quoted ones as written.
fn insertable(target: &Resolved, column: &Ident) -> String {
    if column.quote_style.is_some() {
        return column.value.clone();
    }
    let methods = target.resource.methods_for(SqlVerb::Insert).map(|(_, m)| m);
    let names: Vec<&str> = methods
        .flat_map(|m| m.params.iter().map(|p| p.name.as_str()).chain(m.body.iter().map(|f| f.name.as_str())))
        .collect();
    match names.iter().find(|n| **n == column.value) {
        Some(exact) => exact.to_string(),
        None => {
            names.iter().find(|n| n.eq_ignore_ascii_case(&column.value)).map_or(column.value.clone(), |n| n.to_string())
        }
    }
}

/// A profile's text as a body field's value: a list field takes a JSON list, or one item.
fn default_value(method: &Method, name: &str, text: &str) -> Value {
    let list = method.body.iter().any(|f| f.name == name && f.kind == crate::provider::Kind::Array);
    match (list, serde_json::from_str::<Value>(text)) {
        (true, Ok(Value::Array(items))) => Value::Array(items),
        (true, _) => Value::Array(vec![Value::String(text.to_string())]),
        (false, _) => Value::String(text.to_string()),
    }
}

/// Whether an expression can be computed once, without rows and without reading anything.
fn is_constant(expr: &Expr) -> bool {
    let mut constant = true;
    let _ = visit_expressions(expr, |e| {
        if matches!(
            e,
            Expr::Identifier(_)
                | Expr::CompoundIdentifier(_)
                | Expr::Subquery(_)
                | Expr::Exists { .. }
                | Expr::InSubquery { .. }
        ) {
            constant = false;
        }
        ControlFlow::<()>::Continue(())
    });
    constant
}

/// The values of constant expressions, computed by DataFusion without any request.
async fn constant_values(state: &SessionState, exprs: &[Expr]) -> Result<Vec<Value>, Error> {
    if exprs.is_empty() {
        return Ok(vec![]);
    }
    let empty = DFSchema::empty();
    let exprs = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let logical =
                state.create_logical_expr_from_sql_expr(ExprWithAlias { expr: e.clone(), alias: None }, &empty)?;
            Ok(logical.alias(format!("v{i}")))
        })
        .collect::<Result<Vec<LogicalExpr>, Error>>()?;
    let one_row = LogicalPlanBuilder::empty(true).build()?;
    let batches = DataFrame::new(state.clone(), one_row).select(exprs)?.collect().await?;
    Ok(rows_of_batches(&batches)?.into_iter().next().unwrap_or_default())
}

/// The values of `column = v`, `column IN (…)` (or `alias` for column), or an OR of those;
/// `None` for anything else.
fn literal_equalities(expr: &Expr, column: &str, alias: &str) -> Option<Vec<Value>> {
    let is_column = |e: &Expr| match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(column) || i.value.eq_ignore_ascii_case(alias),
        Expr::CompoundIdentifier(parts) => {
            parts.last().is_some_and(|i| i.value.eq_ignore_ascii_case(column) || i.value.eq_ignore_ascii_case(alias))
        }
        _ => false,
    };
    match expr {
        Expr::Nested(inner) => literal_equalities(inner, column, alias),
        Expr::BinaryOp { left, op: BinaryOperator::Eq, right } if is_column(left) => Some(vec![literal(right)?]),
        Expr::BinaryOp { left, op: BinaryOperator::Eq, right } if is_column(right) => Some(vec![literal(left)?]),
        Expr::InList { expr, list, negated: false } if is_column(expr) => list.iter().map(literal).collect(),
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
            let mut values = literal_equalities(left, column, alias)?;
            values.extend(literal_equalities(right, column, alias)?);
            Some(values)
        }
        _ => None,
    }
    .map(|mut values| {
        let mut seen = Vec::new();
        values.retain(|v| {
            !v.is_null() && !seen.contains(v) && {
                seen.push(v.clone());
                true
            }
        });
        values
    })
}

fn column_of(param: &Param) -> &str {
    param.column.as_deref().unwrap_or(&param.name)
}

/// The WHERE clause of a REPLACE or DELETE, which must have one.
fn required_where<'a>(resource: &Resource, selection: Option<&'a Expr>) -> Result<&'a Expr, Error> {
    selection.ok_or_else(|| {
        Error::Refused(format!(
            "a WHERE clause is required: without one this would change every row of {}; use WHERE id = '…'",
            resource.full_name
        ))
    })
}

fn protected_id(id: &str, reason: &str) -> Error {
    Error::Forbidden(Forbidden::Protected { ids: vec![id.to_string()], reason: reason.to_string(), column: None })
}

/// Rows named by literal ids (`WHERE id = …`, `id IN (…)`): no read is needed for them.
fn by_literal_ids(bound: &mut Bound, method: &Method, selection: &Expr) -> Result<bool, Error> {
    // Over an account set the rows are read, to know which accounts hold them.
    if bound.scope == Scope::Set {
        return Ok(false);
    }
    let params: Vec<&Param> = method.params.iter().filter(|p| p.required).collect();
    let [param] = params.as_slice() else { return Ok(false) };
    let Some(ids) = literal_equalities(selection, column_of(param), &param.name) else { return Ok(false) };
    if let Some(protected) = &bound.resource.protected
        && let Some(id) = ids.iter().filter_map(Value::as_str).find(|id| protected.protects_id(id))
    {
        return Err(protected_id(id, &protected.reason));
    }
    bound.columns = vec![param.name.clone()];
    bound.input = Input::Rows(ids.into_iter().map(|id| vec![id]).collect());
    Ok(true)
}

/// Rows found by the statement's own scan and filter (planned by DataFusion), projected to
/// the required parameters, the protection flag and the `computed` values.
fn by_query(
    bound: &mut Bound,
    method: &Method,
    rows: DataFrame,
    computed: Vec<(String, LogicalExpr)>,
) -> Result<(), Error> {
    let params: Vec<&Param> = method.params.iter().filter(|p| p.required).collect();
    // Aliased, so that the same column twice (`SET description = id`) stays two columns.
    let mut items: Vec<LogicalExpr> = params.iter().map(|p| ident(column_of(p))).collect();
    if let Some(protected) = &bound.resource.protected {
        items.push(ident(&protected.column));
        bound.protected_flag = true;
    }
    items.extend(computed.iter().map(|(_, e)| e.clone()));
    if bound.scope == Scope::Set {
        items.push(ident(ACCOUNT));
    }
    let items: Vec<LogicalExpr> = items.into_iter().enumerate().map(|(i, e)| e.alias(format!("c{i}"))).collect();
    // Ordered, so that the calls (and any report of a failure part-way) are reproducible.
    let order = (0..params.len()).map(|i| ident(format!("c{i}")).sort(true, false)).collect();
    bound.columns = params.iter().map(|p| p.name.clone()).chain(computed.into_iter().map(|(c, _)| c)).collect();
    bound.input = Input::Query(rows.select(items)?.sort(order)?);
    Ok(())
}

/// The input plan of a DataFusion UPDATE or DELETE: the resource's rows that match.
fn dml_input(plan: LogicalPlan) -> Result<LogicalPlan, Error> {
    match plan {
        LogicalPlan::Dml(dml) => Ok(Arc::unwrap_or_clone(dml.input)),
        other => Err(Error::Query(format!("expected a DML plan, not {}", other.display()))),
    }
}

async fn bind_replace(
    state: &SessionState,
    registry: &Registry,
    update: &Update,
    scope: &Scope,
) -> Result<Bound, Error> {
    if update.from.is_some() {
        return Err(unsupported("REPLACE … FROM", "name the rows with WHERE, e.g. WHERE id IN (SELECT …)"));
    }
    if update.limit.is_some() || !update.order_by.is_empty() {
        return Err(unsupported("REPLACE … ORDER BY / LIMIT", "narrow the WHERE clause instead, e.g. WHERE id = '…'"));
    }
    let name = table_name(&update.table)?;
    let target = registry.resolve(&object_name(name))?;
    let resource = target.resource.clone();
    let path_params: Vec<String> = resource
        .methods_for(SqlVerb::Replace)
        .flat_map(|(_, m)| m.params.iter().filter(|p| p.required).map(|p| p.name.clone()))
        .collect();
    let mut assigned: Vec<(String, Expr)> = Vec::new();
    for assignment in &update.assignments {
        let AssignmentTarget::ColumnName(column) = &assignment.target else {
            return Err(Error::Refused("REPLACE sets one column at a time: SET a = 1, b = 2".into()));
        };
        let Some(ident) = column.0.last().and_then(|p| p.as_ident()) else {
            return Err(Error::Refused(format!("REPLACE sets columns by name, not {column}")));
        };
        // Unquoted names are matched regardless of case, as SQL folds them.
        let writable = resource.methods_for(SqlVerb::Replace).flat_map(|(_, m)| m.body.iter().map(|f| &f.name));
        let column = match ident.quote_style {
            None => writable.into_iter().find(|name| name.eq_ignore_ascii_case(&ident.value)).cloned(),
            Some(_) => None,
        }
        .unwrap_or_else(|| ident.value.clone());
        if assigned.iter().any(|(c, _)| c == &column) {
            return Err(Error::Refused(format!("REPLACE sets {column} twice: set each column once")));
        }
        assigned.push((column, assignment.value.clone()));
    }
    let given: Vec<String> = assigned.iter().map(|(c, _)| c.clone()).chain(path_params).collect();
    let (method_name, method) = choose(&resource, Verb::Replace, &given)?;
    let writable: Vec<&str> = method.body.iter().map(|f| f.name.as_str()).collect();
    for (column, _) in &assigned {
        if !writable.contains(&column.as_str()) {
            return Err(match resource.field(column) {
                Some(_) => Error::Refused(format!(
                    "{column} is read-only; REPLACE on {} can set {}",
                    resource.full_name,
                    writable.join(", ")
                )),
                None => {
                    unknown_name(format!("{} has no writable column {column}", resource.full_name), column, &writable)
                }
            });
        }
    }
    // Constant values are computed (and checked) before any request; the others per row.
    let (constant, computed): (Vec<_>, Vec<_>) = assigned.into_iter().partition(|(_, e)| is_constant(e));
    let values = constant_values(state, &constant.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()).await?;
    let constants: Vec<(String, Value)> = constant.into_iter().map(|(c, _)| c).zip(values).collect();
    let (_, problems) = call_for(method, constants.clone(), true, String::new());
    let about_constants = |field: &str| {
        constants
            .iter()
            .any(|(c, _)| field == c || field.starts_with(&format!("{c}[")) || field.starts_with(&format!("{c}.")))
    };
    let problems: Vec<_> = problems.into_iter().filter(|v| about_constants(&v.field)).collect();
    if !problems.is_empty() {
        let problems = problems.into_iter().map(|v| ("SET".to_string(), v)).collect();
        return Err(validation(Verb::Replace, &resource.full_name, method_name, problems));
    }
    let method_name = method_name.to_string();
    let mut bound = bound(state, target, Verb::Replace, &method_name, Input::Rows(vec![]), scope);
    bound.constants = constants;
    bound.returning = update.returning.clone();
    let selection = required_where(&resource, update.selection.as_ref())?;
    if computed.is_empty() && by_literal_ids(&mut bound, method, selection)? {
        return Ok(bound);
    }
    let dml = Update { returning: None, optimizer_hints: vec![], ..update.clone() };
    let plan = state.statement_to_plan(DFStatement::Statement(Box::new(Statement::Update(dml)))).await?;
    let LogicalPlan::Projection(projection) = dml_input(plan)? else {
        return Err(Error::Query("expected DataFusion's UPDATE to project the new values".into()));
    };
    // DataFusion casts each new value to its column's type; the API takes JSON text for
    // lists, so the value is taken as written.
    let computed = computed
        .into_iter()
        .map(|(column, written)| {
            let planned = projection.expr.iter().find(|e| e.schema_name().to_string() == column);
            let value = match planned {
                Some(LogicalExpr::Alias(alias)) => match alias.expr.as_ref() {
                    LogicalExpr::Cast(cast) if !matches!(written, Expr::Cast { .. }) => cast.expr.as_ref().clone(),
                    other => other.clone(),
                },
                _ => return Err(Error::Query(format!("DataFusion's UPDATE has no value for {column}"))),
            };
            Ok((column, value))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let rows = DataFrame::new(state.clone(), Arc::unwrap_or_clone(projection.input));
    by_query(&mut bound, method, rows, computed)?;
    Ok(bound)
}

async fn bind_delete(
    state: &SessionState,
    registry: &Registry,
    delete: &Delete,
    scope: &Scope,
) -> Result<Bound, Error> {
    if !delete.order_by.is_empty() || delete.using.is_some() || !delete.tables.is_empty() {
        return Err(unsupported(
            "DELETE … ORDER BY / USING / multi-table DELETE",
            "name the rows with WHERE (and LIMIT), e.g. WHERE id = '…'",
        ));
    }
    let delete = &without_alias(delete);
    let tables = match &delete.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [table] = tables.as_slice() else {
        return Err(Error::Refused("DELETE removes rows of one resource at a time".into()));
    };
    let target = registry.resolve(&object_name(table_name(table)?))?;
    let path_params: Vec<String> = target
        .resource
        .methods_for(SqlVerb::Delete)
        .flat_map(|(_, m)| m.params.iter().filter(|p| p.required).map(|p| p.name.clone()))
        .collect();
    let resource = target.resource.clone();
    let (method_name, method) = choose(&resource, Verb::Delete, &path_params)?;
    let method_name = method_name.to_string();
    let mut bound = bound(state, target, Verb::Delete, &method_name, Input::Rows(vec![]), scope);
    // The API answers a deletion with nothing: RETURNING gives the rows as read before it.
    bound.returning = delete.returning.clone();
    if bound.returning.is_some() && resource.key().is_none() {
        return Err(unsupported("DELETE … RETURNING here", "this resource has no way to read a row by its id"));
    }
    let selection = required_where(&resource, delete.selection.as_ref())?;
    if delete.limit.is_none() && by_literal_ids(&mut bound, method, selection)? {
        return Ok(bound);
    }
    let dml = Delete { optimizer_hints: vec![], returning: None, ..delete.clone() };
    let plan = state.statement_to_plan(DFStatement::Statement(Box::new(Statement::Delete(dml)))).await?;
    by_query(&mut bound, method, DataFrame::new(state.clone(), dml_input(plan)?), vec![])?;
    Ok(bound)
}

/// `DELETE FROM t AS x WHERE x.label = … RETURNING x.id` as `DELETE FROM t WHERE label = …
/// RETURNING id`: DataFusion plans a DELETE's WHERE over the table's own name.
fn without_alias(delete: &Delete) -> Delete {
    let mut delete = delete.clone();
    let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &mut delete.from;
    let Some(TableWithJoins { relation: TableFactor::Table { alias, .. }, .. }) = tables.first_mut() else {
        return delete;
    };
    let Some(alias) = alias.take() else { return delete };
    let unqualified = |expr: &mut Expr| {
        if let Expr::CompoundIdentifier(parts) = expr
            && let [qualifier, column] = parts.as_slice()
            && qualifier.value.eq_ignore_ascii_case(&alias.name.value)
        {
            *expr = Expr::Identifier(column.clone());
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut delete.selection, unqualified);
    let _ = visit_expressions_mut(&mut delete.returning, unqualified);
    delete
}

fn bind_exec(
    state: &SessionState,
    registry: &Registry,
    name: &ObjectName,
    parameters: &[Expr],
    files: &FileAccess,
    scope: &Scope,
) -> Result<Bound, Error> {
    let full = object_name(name);
    let target = registry.resolve(&full)?;
    let resource = target.resource.clone();
    let Some(method_name) = target.method.clone() else {
        return Err(Error::Refused(format!("EXEC needs provider.service.resource.method, not {full}")));
    };
    let Some(method) = resource.methods.get(&method_name) else {
        let names: Vec<&str> = resource.methods.keys().map(String::as_str).collect();
        return Err(unknown_name(format!("{} has no method {method_name}", resource.full_name), &method_name, &names));
    };
    let upload_param = method.upload.as_ref().map(|u| u.param.clone());
    let mut values: Vec<(String, Value)> = Vec::new();
    let mut file = None;
    let mut set_change = None;
    let mut account = None;
    for parameter in parameters {
        let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = parameter else {
            return Err(Error::Refused(format!(
                "EXEC parameters are @name = value, separated by commas; got {parameter}"
            )));
        };
        let Expr::Identifier(ident) = left.as_ref() else {
            return Err(Error::Refused(format!("EXEC parameters are @name = value; got {left}")));
        };
        let value = literal(right)
            .ok_or_else(|| Error::Refused(format!("{ident}: EXEC parameters take literals, not {right}")))?;
        if ident.value == "@@json" {
            let text = value.as_str().ok_or_else(|| Error::Refused("@@json takes a JSON object in a string".into()))?;
            let Ok(Value::Object(body)) = serde_json::from_str::<Value>(text) else {
                return Err(Error::Refused("@@json is not a JSON object: give '{\"field\": value, …}'".into()));
            };
            let fields: Vec<&str> = method.body.iter().map(|f| f.name.as_str()).collect();
            for (key, value) in body {
                if !fields.contains(&key.as_str()) {
                    return Err(unknown_name(format!("{method_name} takes no key {key} in @@json"), &key, &fields));
                }
                values.push((key, value));
            }
            continue;
        }
        let Some(param) = ident.value.strip_prefix('@') else {
            return Err(Error::Refused(format!("EXEC parameters start with @: {}", ident.value)));
        };
        if param.eq_ignore_ascii_case(ACCOUNT) && *scope == Scope::Set {
            if account.replace(value).is_some() {
                return Err(Error::Refused("@account is given twice: an EXEC acts in one account".into()));
            }
            continue;
        }
        if upload_param.as_deref() == Some(param) {
            let path = value.as_str().ok_or_else(|| Error::Refused(format!("@{param} takes a file name")))?;
            file = Some(path.to_string());
            continue;
        }
        if let Some(spec) = &method.complete_set
            && (param == spec.add || param == spec.remove)
        {
            let change = set_change.get_or_insert_with(SetChange::default);
            let names = members(param, &value)?;
            if param == spec.add {
                change.add = names
            } else {
                change.remove = names
            }
            continue;
        }
        let mut valid = accepted(method);
        valid.extend(upload_param.as_deref());
        valid.extend(method.complete_set.iter().flat_map(|s| [s.add.as_str(), s.remove.as_str()]));
        if *scope == Scope::Set {
            valid.push(ACCOUNT);
        }
        if !valid.contains(&param) {
            return Err(unknown_name(format!("{method_name} takes no parameter @{param}"), param, &valid));
        }
        if values.iter().any(|(name, _)| name == param) {
            return Err(Error::Refused(format!("@{param} is given twice: give each parameter once")));
        }
        values.push((param.to_string(), value));
    }
    if let Some(param) = method.params.iter().find(|p| p.required && !values.iter().any(|(n, _)| n == &p.name)) {
        return Err(Error::Missing {
            verb: Verb::Exec,
            resource: resource.full_name.clone(),
            method: method_name.clone(),
            needs: vec![format!("@{}='…' ({})", param.name, param.description.trim_end_matches('.'))],
        });
    }
    if let Some(protected) = &resource.protected
        && method.verb != HttpVerb::Get
        && let Some(id) = values
            .iter()
            .filter(|(n, _)| method.params.iter().any(|p| &p.name == n && p.column.is_some()))
            .filter_map(|(_, v)| v.as_str())
            .find(|id| protected.protects_id(id))
    {
        return Err(protected_id(id, &protected.reason));
    }
    let upload = match (file, &method.upload) {
        (Some(written), Some(spec)) => {
            let path = files.readable(&written)?;
            let shown = PathBuf::from(written);
            Some(Upload { warning: upload::inspect(&path, &shown, spec)?, path, shown })
        }
        _ => None,
    };
    if let Some(spec) = &method.complete_set {
        // Every call of such a method is checked against the current set, and its column is
        // always there to be filled in once that is read.
        let change = set_change.get_or_insert_with(SetChange::default);
        if !values.iter().any(|(n, _)| n == &spec.field) {
            if change.add.is_empty() && change.remove.is_empty() {
                return Err(Error::Missing {
                    verb: Verb::Exec,
                    resource: resource.full_name.clone(),
                    method: method_name.clone(),
                    needs: vec![format!(
                        "@{}='…' (added to the current {}), @{}='…', or the whole list in @@json",
                        spec.add, spec.field, spec.remove
                    )],
                });
            }
            values.push((spec.field.clone(), Value::Null));
        }
    }
    let (columns, mut row): (Vec<String>, Vec<Value>) = values.into_iter().unzip();
    if *scope == Scope::Set {
        let account = account.ok_or_else(|| {
            Error::Refused(format!(
                "this session reads several accounts: EXEC names the one it acts in, e.g. EXEC {full} @account = 'acme', …"
            ))
        })?;
        row.push(account);
    }
    let mut bound = bound(state, target, Verb::Exec, &method_name, Input::Rows(vec![row]), scope);
    bound.columns = columns;
    bound.upload = upload;
    bound.set_change = set_change;
    Ok(bound)
}
