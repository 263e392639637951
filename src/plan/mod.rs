/*! Mutations: INSERT, REPLACE, DELETE and EXEC become calls of the methods the provider files
map to them. Planning picks the method (the first in `sqlVerbs` whose required parameters are
all given), builds each request body, and validates it against the method's description, so
that a statement that cannot succeed makes no request. [`run`] sends the calls. */

mod run;
mod values;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Delete, Expr, FromTable, Insert, ObjectName, Query, SelectItem, Statement, TableFactor,
    TableObject, TableWithJoins, Update, visit_expressions,
};
use serde_json::{Map, Value};

use crate::api::encode_segment;
use crate::error::Error;
use crate::provider::{HttpVerb, Method, ParamLocation, Provider, Resource, SqlVerb, fill_path};
use crate::session::Session;
use crate::sql::Prepared;
use crate::validate::check_body;
pub use run::execute;
pub use values::rows;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Insert,
    Replace,
    Delete,
    Exec,
}

impl Kind {
    pub fn keyword(self) -> &'static str {
        match self {
            Kind::Insert => "INSERT",
            Kind::Replace => "REPLACE",
            Kind::Delete => "DELETE",
            Kind::Exec => "EXEC",
        }
    }
}

/// One request of a mutation.
#[derive(Debug, Clone)]
pub struct Call {
    pub verb: HttpVerb,
    /// Relative to the API base, encoded.
    pub path: String,
    pub body: Option<Map<String, Value>>,
    /// What the call is about, for reports: `row 2`, `private/42`.
    pub subject: String,
}

/// Rows that come from a query the plan did not run (EXPLAIN): the query, and what is sent
/// for each of its rows.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub read: String,
    pub each: String,
}

#[derive(Debug)]
pub struct MutationPlan {
    pub kind: Kind,
    pub provider: Arc<Provider>,
    pub resource: Arc<Resource>,
    pub method_name: String,
    pub method: Method,
    pub calls: Vec<Call>,
    pub deferred: Option<Deferred>,
    pub returning: Option<Vec<SelectItem>>,
    pub await_ready: bool,
    /// A local file to send to the URL the response gives (`@file` of an upload method).
    pub upload: Option<PathBuf>,
}

/// Whether reads needed to find the rows may run (execution) or not (EXPLAIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Execute,
    Explain,
}

fn refuse(message: impl Into<String>) -> Error {
    Error::Sql(message.into())
}

/// The mutation a statement asks for, or `None` when it is not one.
pub async fn plan(
    session: &Session,
    statement: &Statement,
    prepared: &Prepared,
    mode: Mode,
) -> Result<Option<MutationPlan>, Error> {
    let plan = match statement {
        // INSERT into a table made with CREATE TABLE is DataFusion's.
        Statement::Insert(insert) if !is_resource(session, &insert.table) => return Ok(None),
        Statement::Insert(insert) => plan_insert(session, insert, mode).await?,
        Statement::Update(update) if prepared.replace => plan_replace(session, update, mode).await?,
        Statement::Update(_) => {
            return Err(refuse("UPDATE is not supported: use REPLACE … SET … WHERE …, which maps to the API's PUT"));
        }
        Statement::Delete(delete) => plan_delete(session, delete, mode).await?,
        Statement::Execute { name: Some(name), parameters, .. } => plan_exec(session, name, parameters)?,
        _ => return Ok(None),
    };
    let mut plan = plan;
    plan.await_ready = prepared.has_hint("AWAIT");
    if plan.await_ready && plan.resource.lifecycle.is_none() {
        return Err(refuse(format!("{} {} is not awaitable", plan.kind.keyword(), plan.resource.full_name)));
    }
    if plan.await_ready && plan.kind == Kind::Exec && plan.method.verb == HttpVerb::Delete {
        return Err(refuse(format!(
            "AWAIT has nothing to wait for after {}: use DELETE /*+ AWAIT */ FROM {} WHERE …",
            plan.method_name, plan.resource.full_name
        )));
    }
    if let Some(items) = &plan.returning {
        run::check_returning(&plan.resource, items).await?;
    }
    Ok(Some(plan))
}

fn is_resource(session: &Session, table: &TableObject) -> bool {
    let TableObject::TableName(name) = table else { return false };
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect();
    matches!(parts.as_slice(), [p, s, r] if session.registry().resource(p, s, r).is_some())
}

/// The provider and resource a three-part name refers to.
fn resolve(session: &Session, name: &ObjectName) -> Result<(Arc<Provider>, Arc<Resource>), Error> {
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect();
    let found = match parts.as_slice() {
        [p, s, r] => session.registry().resource(p, s, r),
        _ => None,
    };
    match found {
        Some((provider, resource)) => Ok((provider.clone(), Arc::new(resource.clone()))),
        None => {
            let known: Vec<String> = session.registry().resources().map(|(_, _, r)| r.full_name.clone()).collect();
            let hint = nearest(&parts.join("."), known.iter().map(String::as_str))
                .map(|n| format!("did you mean {n}? "))
                .unwrap_or_default();
            Err(refuse(format!("unknown resource {name}: {hint}resources are {}", known.join(", "))))
        }
    }
}

fn table_name(table: &TableWithJoins) -> Result<&ObjectName, Error> {
    match (&table.relation, table.joins.is_empty()) {
        (TableFactor::Table { name, .. }, true) => Ok(name),
        _ => Err(refuse("a mutation changes one resource: joins and subqueries are not allowed here")),
    }
}

/// The closest of `candidates` to `name`, if one is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .map(|c| (edit_distance(&name, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb)).min(row[j] + 1).min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// The first method mapped to `verb` whose required parameters and body fields are all
/// among `given`.
fn choose<'a>(resource: &'a Resource, verb: SqlVerb, given: &[String]) -> Result<(&'a str, &'a Method), Error> {
    let candidates: Vec<(&str, &Method)> = resource.methods_for(verb).collect();
    let keyword = format!("{verb:?}").to_uppercase();
    if candidates.is_empty() {
        return Err(refuse(format!("{} does not support {keyword}", resource.full_name)));
    }
    let missing = |m: &Method| -> Vec<String> {
        let params = m.params.iter().filter(|p| p.required).map(|p| p.name.clone());
        params.chain(m.required.iter().cloned()).filter(|name| !given.iter().any(|g| g == name)).collect()
    };
    if let Some(found) = candidates.iter().find(|(_, m)| missing(m).is_empty()) {
        return Ok(*found);
    }
    let (name, method) = candidates[0];
    Err(refuse(format!(
        "{keyword} on {} needs {} (required by {name}); see SHOW METHODS IN {}",
        resource.full_name,
        missing(method).join(", "),
        resource.full_name
    )))
}

/// What a method accepts by name: its parameters and body fields.
fn accepted(method: &Method) -> Vec<&str> {
    method.params.iter().map(|p| p.name.as_str()).chain(method.body.iter().map(|f| f.name.as_str())).collect()
}

/// `problem`, with the nearest valid name and the list of them.
fn unknown_name(problem: String, name: &str, valid: &[&str]) -> Error {
    let hint = nearest(name, valid.iter().copied()).map(|n| format!("did you mean {n}? ")).unwrap_or_default();
    refuse(format!("{problem}: {hint}valid names are {}", valid.join(", ")))
}

/// Builds the path and body of one call from named values; nulls are left out of INSERTs.
fn call_for(
    method: &Method,
    values: Vec<(String, Value)>,
    keep_nulls: bool,
    subject: String,
) -> Result<(Call, Vec<String>), Error> {
    let mut path = method.path.clone();
    let mut query = Vec::new();
    let mut body = Map::new();
    let mut problems = Vec::new();
    for (name, value) in values {
        if let Some(param) = method.params.iter().find(|p| p.name == name) {
            let text = match &value {
                Value::String(s) => s.clone(),
                Value::Null => {
                    problems.push(format!("{name} must not be null"));
                    continue;
                }
                other => other.to_string(),
            };
            match param.location {
                ParamLocation::Path => path = fill_path(&path, &name, &text),
                ParamLocation::Query => query.push(format!("{}={}", encode_segment(&name), encode_segment(&text))),
            }
        } else if let Some(field) = method.body.iter().find(|f| f.name == name) {
            if value.is_null() && !keep_nulls {
                continue;
            }
            match values::coerce(field, value) {
                Ok(value) => {
                    body.insert(name, value);
                }
                Err(problem) => problems.push(problem),
            }
        }
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    problems.extend(check_body(method, &body).into_iter().map(|v| v.to_string()));
    let body = (method.verb != HttpVerb::Get && method.verb != HttpVerb::Delete).then_some(body);
    Ok((Call { verb: method.verb, path, body, subject }, problems))
}

/// Turns per-call problems into one error that lists them, or nothing.
fn all_valid(kind: Kind, resource: &Resource, problems: Vec<(String, Vec<String>)>) -> Result<(), Error> {
    let lines: Vec<String> = problems
        .into_iter()
        .flat_map(|(subject, list)| list.into_iter().map(move |p| format!("  {subject}: {p}")))
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    Err(Error::Validation(format!(
        "{} on {} was not sent; {} problem{}:\n{}",
        kind.keyword(),
        resource.full_name,
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        lines.join("\n")
    )))
}

fn reads_tables(query: &Query) -> bool {
    let mut reads = false;
    let _ = datafusion::sql::sqlparser::ast::visit_relations(query, |_| {
        reads = true;
        std::ops::ControlFlow::<()>::Break(())
    });
    reads
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
        std::ops::ControlFlow::<()>::Continue(())
    });
    constant
}

async fn plan_insert(session: &Session, insert: &Insert, mode: Mode) -> Result<MutationPlan, Error> {
    let TableObject::TableName(name) = &insert.table else {
        return Err(refuse("INSERT needs a resource name"));
    };
    let (provider, resource) = resolve(session, name)?;
    let columns: Vec<String> =
        insert.columns.iter().filter_map(|c| c.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone())).collect();
    if columns.is_empty() {
        return Err(refuse(format!(
            "INSERT INTO {} needs a column list, e.g. INSERT INTO {} (disk_id, label) VALUES (…)",
            resource.full_name, resource.full_name
        )));
    }
    let (method_name, method) = choose(&resource, SqlVerb::Insert, &columns)?;
    let valid = accepted(method);
    if let Some(bad) = columns.iter().find(|c| !valid.contains(&c.as_str())) {
        return Err(unknown_name(format!("{} has no insertable column {bad}", resource.full_name), bad, &valid));
    }
    let source = insert.source.as_ref().ok_or_else(|| refuse("INSERT needs VALUES (…) or a SELECT"))?;
    let mut plan = MutationPlan {
        kind: Kind::Insert,
        provider: provider.clone(),
        resource: resource.clone(),
        method_name: method_name.to_string(),
        method: method.clone(),
        calls: vec![],
        deferred: None,
        returning: insert.returning.clone(),
        await_ready: false,
        upload: None,
    };
    if mode == Mode::Explain && reads_tables(source) {
        let each = columns.iter().enumerate().map(|(i, c)| format!("{c}: column {}", i + 1)).collect::<Vec<_>>();
        plan.deferred = Some(Deferred {
            read: source.to_string(),
            each: format!("{} {} with {{{}}}", method.verb, method.path, each.join(", ")),
        });
        return Ok(plan);
    }
    let rows = session.query_rows(source).await?;
    let mut problems = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        if row.len() != columns.len() {
            return Err(refuse(format!(
                "INSERT names {} columns but its rows have {} values",
                columns.len(),
                row.len()
            )));
        }
        let subject = format!("row {}", i + 1);
        let (call, issues) = call_for(method, columns.iter().cloned().zip(row).collect(), false, subject.clone())?;
        problems.push((subject, issues));
        plan.calls.push(call);
    }
    all_valid(Kind::Insert, &resource, problems)?;
    Ok(plan)
}

/// The rows a REPLACE or DELETE acts on: the path parameter values of each, from the WHERE
/// clause when it names them, otherwise from a query (run now, or deferred for EXPLAIN).
struct Targets {
    rows: Vec<Vec<(String, Value)>>,
    /// Per-row values of non-constant SET expressions, in assignment order.
    computed: Vec<Vec<Value>>,
    deferred: Option<String>,
}

async fn targets(
    session: &Session,
    resource: &Resource,
    method: &Method,
    table: &ObjectName,
    selection: Option<&Expr>,
    computed: &[(String, Expr)],
    mode: Mode,
) -> Result<Targets, Error> {
    let selection = selection.ok_or_else(|| {
        refuse(format!(
            "a WHERE clause is required: without one this would change every row of {}; use WHERE id = '…'",
            resource.full_name
        ))
    })?;
    let params: Vec<&crate::provider::Param> = method.params.iter().filter(|p| p.required).collect();
    let column_of = |p: &crate::provider::Param| p.column.clone().unwrap_or_else(|| p.name.clone());
    let protected = resource.protected.as_ref();
    // `WHERE id = 'x'` or `id IN (…)` needs no read.
    if let ([param], true) = (params.as_slice(), computed.is_empty())
        && let Some(ids) = literal_equalities(selection, &column_of(param), &param.name)
    {
        if let Some(p) = protected
            && let Some(id) = ids.iter().filter_map(Value::as_str).find(|id| p.protects_id(id))
        {
            return Err(refuse(format!("{id}: {}", p.reason)));
        }
        let rows = ids.into_iter().map(|id| vec![(param.name.clone(), id)]).collect();
        return Ok(Targets { rows, computed: vec![], deferred: None });
    }
    // Aliased, so that the same column twice (`SET description = id`) stays two columns.
    let mut items: Vec<String> = params.iter().map(|p| quote(&column_of(p))).collect();
    if let Some(p) = protected {
        items.push(quote(&p.column));
    }
    items.extend(computed.iter().map(|(_, e)| e.to_string()));
    let items: Vec<String> = items.into_iter().enumerate().map(|(i, item)| format!("{item} AS c{i}")).collect();
    // Ordered, so that the calls (and any report of a failure part-way) are reproducible.
    let order: Vec<String> = (1..=params.len()).map(|i| i.to_string()).collect();
    let read = format!("SELECT {} FROM {table} WHERE {selection} ORDER BY {}", items.join(", "), order.join(", "));
    if mode == Mode::Explain {
        return Ok(Targets { rows: vec![], computed: vec![], deferred: Some(read) });
    }
    let query = crate::sql::parse_query(&read).map_err(Error::Sql)?;
    let found = session.query_rows(&query).await?;
    if let Some(p) = protected {
        let blocked: Vec<String> = found
            .iter()
            .filter(|row| row[params.len()] == Value::Bool(true))
            .map(|row| row[0].as_str().map(str::to_string).unwrap_or_else(|| row[0].to_string()))
            .collect();
        if !blocked.is_empty() {
            return Err(refuse(format!(
                "the WHERE clause matches {} protected row{} ({}): {}; narrow it, e.g. with AND NOT {}",
                blocked.len(),
                if blocked.len() == 1 { "" } else { "s" },
                blocked.join(", "),
                p.reason,
                p.column
            )));
        }
    }
    let skip = params.len() + usize::from(protected.is_some());
    let rows =
        found.iter().map(|row| params.iter().zip(row).map(|(p, v)| (p.name.clone(), v.clone())).collect()).collect();
    let computed = found.into_iter().map(|row| row.into_iter().skip(skip).collect()).collect();
    Ok(Targets { rows, computed, deferred: None })
}

/// How a call on a row is named in reports: by its first path parameter (the id).
fn subject_of(params: &[(String, Value)]) -> String {
    params.first().map(|(_, v)| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).unwrap_or_default()
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The literal values of `column = v`, `column IN (…)` (or `alias` for column), or an OR of
/// those; `None` for anything else.
fn literal_equalities(expr: &Expr, column: &str, alias: &str) -> Option<Vec<Value>> {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    let is_column = |e: &Expr| match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(column) || i.value.eq_ignore_ascii_case(alias),
        Expr::CompoundIdentifier(parts) => {
            parts.last().is_some_and(|i| i.value.eq_ignore_ascii_case(column) || i.value.eq_ignore_ascii_case(alias))
        }
        _ => false,
    };
    match expr {
        Expr::Nested(inner) => literal_equalities(inner, column, alias),
        Expr::BinaryOp { left, op: BinaryOperator::Eq, right } if is_column(left) => {
            Some(vec![values::literal(right)?])
        }
        Expr::BinaryOp { left, op: BinaryOperator::Eq, right } if is_column(right) => {
            Some(vec![values::literal(left)?])
        }
        Expr::InList { expr, list, negated: false } if is_column(expr) => list.iter().map(values::literal).collect(),
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

async fn plan_replace(session: &Session, update: &Update, mode: Mode) -> Result<MutationPlan, Error> {
    if update.from.is_some() {
        return Err(refuse("REPLACE … FROM is not supported"));
    }
    let name = table_name(&update.table)?;
    let (provider, resource) = resolve(session, name)?;
    let path_params: Vec<String> = resource
        .methods_for(SqlVerb::Replace)
        .flat_map(|(_, m)| m.params.iter().filter(|p| p.required).map(|p| p.name.clone()))
        .collect();
    let mut assigned: Vec<(String, Expr)> = Vec::new();
    for assignment in &update.assignments {
        let AssignmentTarget::ColumnName(column) = &assignment.target else {
            return Err(refuse("REPLACE sets one column at a time: SET a = 1, b = 2"));
        };
        let column = column.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone()).unwrap_or_default();
        assigned.push((column, assignment.value.clone()));
    }
    let given: Vec<String> = assigned.iter().map(|(c, _)| c.clone()).chain(path_params).collect();
    let (method_name, method) = choose(&resource, SqlVerb::Replace, &given)?;
    let writable: Vec<&str> = method.body.iter().map(|f| f.name.as_str()).collect();
    for (column, _) in &assigned {
        if !writable.contains(&column.as_str()) {
            return Err(match resource.field(column) {
                Some(_) => refuse(format!(
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
    let constant_values = session.constant_row(&constant.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()).await?;
    let constant: Vec<(String, Value)> = constant.into_iter().map(|(c, _)| c).zip(constant_values).collect();
    let (_, mut problems) = call_for(method, constant.clone(), true, String::new())?;
    problems.retain(|p| constant.iter().any(|(c, _)| p.starts_with(&format!("{c}:"))));
    all_valid(Kind::Replace, &resource, vec![("SET".into(), problems)])?;
    let targets = targets(session, &resource, method, name, update.selection.as_ref(), &computed, mode).await?;
    let mut plan = MutationPlan {
        kind: Kind::Replace,
        provider,
        resource: resource.clone(),
        method_name: method_name.to_string(),
        method: method.clone(),
        calls: vec![],
        deferred: None,
        returning: update.returning.clone(),
        await_ready: false,
        upload: None,
    };
    if let Some(read) = targets.deferred {
        let sets: Vec<String> = constant
            .iter()
            .map(|(c, v)| format!("{c}: {v}"))
            .chain(computed.iter().map(|(c, e)| format!("{c}: {e}")))
            .collect();
        plan.deferred =
            Some(Deferred { read, each: format!("{} {} with {{{}}}", method.verb, method.path, sets.join(", ")) });
        return Ok(plan);
    }
    let mut problems = Vec::new();
    for (i, params) in targets.rows.into_iter().enumerate() {
        let subject = subject_of(&params);
        let per_row = computed.iter().map(|(c, _)| c.clone()).zip(targets.computed.get(i).cloned().unwrap_or_default());
        let values: Vec<(String, Value)> = params.into_iter().chain(constant.iter().cloned()).chain(per_row).collect();
        let (call, issues) = call_for(method, values, true, subject.clone())?;
        problems.push((subject, issues));
        plan.calls.push(call);
    }
    all_valid(Kind::Replace, &resource, problems)?;
    Ok(plan)
}

async fn plan_delete(session: &Session, delete: &Delete, mode: Mode) -> Result<MutationPlan, Error> {
    if delete.returning.is_some() {
        return Err(refuse("DELETE … RETURNING is not supported: the API returns nothing for a deletion"));
    }
    let tables = match &delete.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [table] = tables.as_slice() else {
        return Err(refuse("DELETE removes rows of one resource at a time"));
    };
    let name = table_name(table)?;
    let (provider, resource) = resolve(session, name)?;
    let path_params: Vec<String> = resource
        .methods_for(SqlVerb::Delete)
        .flat_map(|(_, m)| m.params.iter().filter(|p| p.required).map(|p| p.name.clone()))
        .collect();
    let (method_name, method) = choose(&resource, SqlVerb::Delete, &path_params)?;
    let targets = targets(session, &resource, method, name, delete.selection.as_ref(), &[], mode).await?;
    let mut plan = MutationPlan {
        kind: Kind::Delete,
        provider,
        resource: resource.clone(),
        method_name: method_name.to_string(),
        method: method.clone(),
        calls: vec![],
        deferred: targets.deferred.map(|read| Deferred { read, each: format!("{} {}", method.verb, method.path) }),
        returning: None,
        await_ready: false,
        upload: None,
    };
    for params in targets.rows {
        let subject = subject_of(&params);
        let (call, _) = call_for(method, params, false, subject)?;
        plan.calls.push(call);
    }
    Ok(plan)
}

fn plan_exec(session: &Session, name: &ObjectName, parameters: &[Expr]) -> Result<MutationPlan, Error> {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.clone())).collect();
    let [provider_id, service, resource_name, method_name] = parts.as_slice() else {
        return Err(refuse(format!("EXEC needs provider.service.resource.method, not {name}")));
    };
    let (provider, resource) = resolve(
        session,
        &ObjectName::from(
            [provider_id, service, resource_name]
                .iter()
                .map(|s| datafusion::sql::sqlparser::ast::Ident::new(s.as_str()))
                .collect::<Vec<_>>(),
        ),
    )?;
    let Some(method) = resource.methods.get(method_name.as_str()).cloned() else {
        let names: Vec<&str> = resource.methods.keys().map(String::as_str).collect();
        return Err(unknown_name(format!("{} has no method {method_name}", resource.full_name), method_name, &names));
    };
    let upload_param = method.upload.as_ref().map(|u| u.param.clone());
    let mut values: Vec<(String, Value)> = Vec::new();
    let mut upload = None;
    for parameter in parameters {
        let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = parameter else {
            return Err(refuse(format!("EXEC parameters are @name = value, separated by commas; got {parameter}")));
        };
        let Expr::Identifier(ident) = left.as_ref() else {
            return Err(refuse(format!("EXEC parameters are @name = value; got {left}")));
        };
        let value = values::literal(right)
            .ok_or_else(|| refuse(format!("{ident}: EXEC parameters take literals, not {right}")))?;
        match ident.value.as_str() {
            "@@json" => {
                let text = value.as_str().ok_or_else(|| refuse("@@json takes a JSON object in a string"))?;
                let Ok(Value::Object(body)) = serde_json::from_str::<Value>(text) else {
                    return Err(refuse(format!("@@json is not a JSON object: {text}")));
                };
                let fields: Vec<&str> = method.body.iter().map(|f| f.name.as_str()).collect();
                for (key, value) in body {
                    if !fields.contains(&key.as_str()) {
                        return Err(unknown_name(format!("{method_name} takes no key {key} in @@json"), &key, &fields));
                    }
                    values.push((key, value));
                }
            }
            other => {
                let Some(param) = other.strip_prefix('@') else {
                    return Err(refuse(format!("EXEC parameters start with @: {other}")));
                };
                if upload_param.as_deref() == Some(param) {
                    upload = Some(PathBuf::from(
                        value.as_str().ok_or_else(|| refuse(format!("@{param} takes a file name")))?,
                    ));
                    continue;
                }
                let mut valid = accepted(&method);
                valid.extend(upload_param.as_deref());
                if !valid.contains(&param) {
                    return Err(unknown_name(format!("{method_name} takes no parameter @{param}"), param, &valid));
                }
                values.push((param.to_string(), value));
            }
        }
    }
    for param in method.params.iter().filter(|p| p.required) {
        if !values.iter().any(|(n, _)| n == &param.name) {
            return Err(refuse(format!(
                "EXEC {}.{method_name} needs @{}='…' ({})",
                resource.full_name,
                param.name,
                param.description.trim_end_matches('.')
            )));
        }
    }
    if let Some(protected) = &resource.protected
        && method.verb != HttpVerb::Get
        && let Some(id) = values
            .iter()
            .filter(|(n, _)| method.params.iter().any(|p| &p.name == n && p.column.is_some()))
            .filter_map(|(_, v)| v.as_str())
            .find(|id| protected.protects_id(id))
    {
        return Err(refuse(format!("{id}: {}", protected.reason)));
    }
    if let Some(path) = &upload {
        crate::upload::inspect(path, method.upload.as_ref().expect("only upload methods take a file"))?;
    }
    let (call, problems) = call_for(&method, values, true, "call".into())?;
    all_valid(Kind::Exec, &resource, vec![("@@json".into(), problems)])?;
    Ok(MutationPlan {
        kind: Kind::Exec,
        provider,
        resource,
        method_name: method_name.clone(),
        method,
        calls: vec![call],
        deferred: None,
        returning: None,
        await_ready: false,
        upload,
    })
}
