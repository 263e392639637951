//! Running a bound change: its input rows are read, every call is built and validated, and
//! only then are the calls sent, in order and never retried; then an upload of the file the
//! response asks for, `/*+ AWAIT */` polling, and the outcome: RETURNING rows (evaluated by
//! DataFusion over the response rows), an EXEC's response rows, or a summary. A failure
//! part-way reports what was done and what was not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr as LogicalExpr, ident};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ExprWithAlias, SelectItem};
use serde_json::{Map, Value};

use super::accounts::with_account;
use super::sets::{self, SetPlan};
use super::values::{coerce, rows_of_batches};
use super::{Bound, Call, Input, upload};
use crate::api::{ApiClient, Event, Request};
use crate::cancel::CancelToken;
use crate::error::{AwaitProblem, Error, Forbidden, Partial, Validation};
use crate::outcome::{Change, Outcome};
use crate::provider::{HttpVerb, Method, ParamLocation, Resource, SqlVerb, Verb, encode_segment, resource_schema};
use crate::scan::to_batch;
use crate::validate::{Violation, check_body};

/// Builds the path and body of one call from named values; nulls are left out unless
/// `keep_nulls`. Returns the call and every problem found with its values.
pub fn call_for(
    method: &Method,
    values: Vec<(String, Value)>,
    keep_nulls: bool,
    subject: String,
) -> (Call, Vec<Violation>) {
    let mut path = method.path.clone();
    let mut query = Vec::new();
    let mut body = Map::new();
    let mut problems = Vec::new();
    for (name, value) in values {
        if let Some(param) = method.params.iter().find(|p| p.name == name) {
            let text = match &value {
                Value::String(s) => s.clone(),
                Value::Null => {
                    problems.push(Violation { reason: format!("{name} must not be null"), field: name });
                    continue;
                }
                other => other.to_string(),
            };
            match param.location {
                ParamLocation::Path => path = path.fill(&name, &text),
                ParamLocation::Query => query.push(format!("{}={}", encode_segment(&name), encode_segment(&text))),
            }
        } else if let Some(field) = method.body.iter().find(|f| f.name == name) {
            if value.is_null() && !keep_nulls {
                continue;
            }
            match coerce(field, value) {
                Ok(value) => {
                    body.insert(name, value);
                }
                Err(reason) => problems.push(Violation { field: name, reason }),
            }
        }
    }
    let mut path = path.to_string();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    problems.extend(check_body(method, &body));
    let body = (method.verb != HttpVerb::Get && method.verb != HttpVerb::Delete).then_some(body);
    (Call { verb: method.verb, path, body, subject }, problems)
}

pub fn validation(verb: Verb, resource: &str, method: &str, problems: Vec<(String, Violation)>) -> Error {
    Error::Validation(Validation { verb, resource: resource.into(), method: method.into(), problems })
}

/// The input rows: given, or read by the bound query (stopped by `cancel`).
pub async fn input_rows(bound: &Bound, cancel: &CancelToken) -> Result<Vec<Vec<Value>>, Error> {
    match &bound.input {
        Input::Rows(rows) => Ok(rows.clone()),
        Input::Query(frame) => tokio::select! {
            batches = frame.clone().collect() => rows_of_batches(&batches?),
            _ = cancel.cancelled() => Err(Error::Cancelled),
        },
    }
}

/// One call per row, every one of them checked; nothing is sent when any is invalid.
pub(super) async fn calls(bound: &Bound, rows: Vec<Vec<Value>>) -> Result<Vec<Call>, Error> {
    let method = bound.method();
    let mut rows = rows;
    if bound.protected_flag {
        let protected = bound.resource.protected.as_ref().expect("a flag means a protection");
        let params = method.params.iter().filter(|p| p.required).count();
        let blocked: Vec<String> = rows
            .iter()
            .filter(|row| row.get(params) == Some(&Value::Bool(true)))
            .map(|row| subject_of(row.first()))
            .collect();
        if !blocked.is_empty() {
            return Err(Error::Forbidden(Forbidden::Protected {
                ids: blocked,
                reason: protected.reason.clone(),
                column: Some(protected.column.clone()),
            }));
        }
        for row in rows.iter_mut() {
            row.remove(params);
        }
    }
    let mut calls = Vec::with_capacity(rows.len());
    let mut problems = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let subject = match bound.verb {
            Verb::Insert => format!("row {}", bound.row_numbers.get(i).copied().unwrap_or(i + 1)),
            Verb::Replace | Verb::Delete => subject_of(row.first()),
            Verb::Exec => "@@json".to_string(),
        };
        let values = bound.columns.iter().cloned().zip(row).chain(bound.constants.iter().cloned()).collect();
        let (call, found) = call_for(method, values, bound.keep_nulls, subject.clone());
        problems.extend(found.into_iter().map(|v| (subject.clone(), v)));
        calls.push(match bound.verb {
            Verb::Exec => Call { subject: "call".into(), ..call },
            _ => call,
        });
    }
    // Every problem at once: the values' own, and those of the rows they name elsewhere.
    problems.extend(super::references::problems(bound, &calls).await?);
    if !problems.is_empty() {
        return Err(validation(bound.verb, &bound.resource.full_name, &bound.method_name, problems));
    }
    Ok(calls)
}

/// How a call on a row is named in reports: by its first path parameter (the id).
fn subject_of(value: Option<&Value>) -> String {
    value.map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).unwrap_or_default()
}

pub async fn execute(bound: Bound, api: &Arc<ApiClient>, cancel: &CancelToken) -> Result<Outcome, Error> {
    let outcome = match prepare(&bound, api, cancel).await {
        Ok(ready) => send(bound, api, ready, cancel).await,
        Err(e) => Err(e),
    };
    // Whatever was sent, even in part, may have changed what earlier reads saw.
    api.forget_reads();
    outcome
}

/// A change read and checked, nothing sent yet: its calls in order, what each does to a set
/// and, for a deletion's RETURNING, the rows as they were.
pub struct Ready {
    pub calls: Vec<Call>,
    sets: Vec<SetPlan>,
    before: Vec<Map<String, Value>>,
}

/// Reads the input rows and the rows the calls act on, and builds and checks every call.
pub async fn prepare(bound: &Bound, api: &ApiClient, cancel: &CancelToken) -> Result<Ready, Error> {
    let mut rows = input_rows(bound, cancel).await?;
    let sets = sets::resolve(bound, api, &mut rows).await?;
    let calls = calls(bound, rows).await?;
    // What a deletion's RETURNING gives: the rows as they were, read before any is deleted.
    let before = match (bound.verb, &bound.returning) {
        (Verb::Delete, Some(_)) => {
            let ids: Vec<String> = calls.iter().map(|c| c.subject.clone()).collect();
            super::preview::rows_by_id(bound, &ids).await?
        }
        _ => vec![],
    };
    Ok(Ready { calls, sets, before })
}

/// Sends the calls in order, then uploads, waits and builds the outcome.
pub async fn send(bound: Bound, api: &Arc<ApiClient>, ready: Ready, cancel: &CancelToken) -> Result<Outcome, Error> {
    let Ready { calls, sets, before } = ready;
    let method = bound.method();
    if let Some(warning) = bound.upload.as_ref().and_then(|u| u.warning) {
        let path = bound.upload.as_ref().map(|u| u.shown.display().to_string()).unwrap_or_default();
        api.progress().report(Event::Warning(&format!("{path}: {warning}")));
    }
    let mut done: Vec<String> = Vec::new();
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    let mut extras: Vec<Map<String, Value>> = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(partial(&bound, &calls, done, None, Error::Cancelled));
        }
        let request = Request::new(call.verb, call.path.clone(), call.body.clone().map(Value::Object));
        let response = match api.send(&request).await {
            Ok(response) => response,
            Err(e) => return Err(partial(&bound, &calls, done, Some(index), Error::Api(e))),
        };
        let (found, extra) = rows_of(method, &response);
        if let (Some(file), Some(spec)) = (&bound.upload, &method.upload) {
            let sent = match response.get(&spec.url_field).and_then(Value::as_str) {
                Some(url) => tokio::select! {
                    sent = upload::send(api, url, &file.path, &file.shown, spec) => sent.map(|_| ()),
                    _ = cancel.cancelled() => Err(Error::Cancelled),
                },
                None => Err(Error::Query(format!("the response of {} has no {}", bound.method_name, spec.url_field))),
            };
            if let Err(cause) = sent {
                return Err(Error::Partial(Box::new(Partial {
                    verb: bound.verb,
                    resource: bound.resource.full_name.clone(),
                    failed: Some(call.subject.clone()),
                    not_sent: calls.iter().skip(index + 1).map(|c| c.subject.clone()).collect(),
                    done,
                    cause,
                    cleanup: abandon_upload(&bound, api, found.first()).await,
                })));
            }
            // The upload changed the row: read it again.
            let ids = row_ids(&bound.resource, &found);
            match reread(&bound.resource, api, &ids).await {
                Ok(fresh) => rows.extend(fresh),
                Err(e) => return Err(partial(&bound, &calls, ids, None, e)),
            }
        } else if bound.verb == Verb::Delete {
            rows.extend(
                before
                    .iter()
                    .filter(|row| row_ids(&bound.resource, std::slice::from_ref(*row)) == [call.subject.clone()])
                    .cloned(),
            );
        } else {
            rows.extend(found);
            let mut extra = extra;
            for (name, members) in sets.get(index).map(SetPlan::columns).into_iter().flatten() {
                extra.insert(name.into(), Value::String(members));
            }
            extras.push(extra);
        }
        done.push(match row_ids(&bound.resource, &rows[rows.len().saturating_sub(1)..]).pop() {
            Some(id) if matches!(bound.verb, Verb::Insert | Verb::Exec) => format!("{} ({id})", call.subject),
            _ => call.subject.clone(),
        });
    }
    finish(&bound, &calls, rows, extras, api, cancel).await.map_err(|e| partial(&bound, &calls, done, None, e))
}

/// Waiting and the outcome, once every call was made.
async fn finish(
    bound: &Bound,
    calls: &[Call],
    mut rows: Vec<Map<String, Value>>,
    extras: Vec<Map<String, Value>>,
    api: &ApiClient,
    cancel: &CancelToken,
) -> Result<Outcome, Error> {
    let ids = match bound.verb {
        Verb::Insert | Verb::Exec => row_ids(&bound.resource, &rows),
        Verb::Replace | Verb::Delete => calls.iter().map(|c| c.subject.clone()).collect(),
    };
    if bound.await_ready {
        let finished =
            await_all(&bound.resource, api, &ids, bound.verb == Verb::Delete, bound.await_timeout, cancel).await?;
        if bound.verb != Verb::Delete {
            rows = finished;
        }
    }
    let change = Change {
        verb: bound.verb,
        resource: bound.resource.full_name.clone(),
        method: bound.method_name.clone(),
        count: calls.len(),
        ids,
    };
    if bound.returning.is_some() {
        let stream = returning(bound, &rows, &extras).await?.execute_stream().await?;
        return Ok(Outcome::Rows { stream, changed: Some(change) });
    }
    if answers_rows(bound) {
        return Ok(Outcome::batch(with_account(response_rows(bound, &rows, &extras)?, &bound.scope)?, Some(change)));
    }
    Ok(Outcome::Changed(change))
}

/// A failure of the statement: a single call's own error, or what was done and what not.
fn partial(bound: &Bound, calls: &[Call], done: Vec<String>, failed: Option<usize>, cause: Error) -> Error {
    let only_call_failed = failed == Some(0) && calls.len() == 1;
    let failed_before_calls = failed.is_none() && !matches!(cause, Error::Cancelled);
    if done.is_empty() && (only_call_failed || failed_before_calls) {
        return cause;
    }
    let next = done.len() + usize::from(failed.is_some());
    Error::Partial(Box::new(Partial {
        verb: bound.verb,
        resource: bound.resource.full_name.clone(),
        failed: failed.map(|i| calls[i].subject.clone()),
        not_sent: calls.iter().skip(next).map(|c| c.subject.clone()).collect(),
        done,
        cause,
        cleanup: None,
    }))
}

/// The rows a response carries (at the method's `objectKey`, or the body itself), and the
/// other top-level values beside them (the `upload_to` of an upload).
fn rows_of(method: &Method, response: &Value) -> (Vec<Map<String, Value>>, Map<String, Value>) {
    let mut extra = Map::new();
    let found = match (&method.object_key, response) {
        (Some(key), Value::Object(object)) => {
            for (name, value) in object.iter().filter(|(k, v)| *k != key && !v.is_object() && !v.is_array()) {
                extra.insert(name.clone(), value.clone());
            }
            match object.get(key) {
                Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_object().cloned()).collect(),
                Some(Value::Object(row)) => vec![row.clone()],
                _ => vec![],
            }
        }
        (None, Value::Object(row)) if !row.is_empty() => vec![row.clone()],
        _ => vec![],
    };
    (found, extra)
}

fn row_ids(resource: &Resource, rows: &[Map<String, Value>]) -> Vec<String> {
    let Some(key) = resource.key() else { return vec![] };
    rows.iter().filter_map(|r| r.get(key.column)).map(|v| subject_of(Some(v))).collect()
}

async fn reread(resource: &Resource, api: &ApiClient, ids: &[String]) -> Result<Vec<Map<String, Value>>, Error> {
    let Some(key) = resource.key() else { return Ok(vec![]) };
    let mut rows = Vec::new();
    for id in ids {
        if let Value::Object(row) = api.read(&Request::get(key.path(id).to_string())).await? {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The upload failed after its row was created: remove that row so nothing is left behind,
/// and say what happened to it.
async fn abandon_upload(bound: &Bound, api: &ApiClient, row: Option<&Map<String, Value>>) -> Option<String> {
    let id = row_ids(&bound.resource, std::slice::from_ref(row?)).pop()?;
    let delete = bound.resource.methods_for(SqlVerb::Delete).next().map(|(_, m)| m);
    let path = delete.and_then(|m| {
        let param = m.params.iter().find(|p| p.required)?;
        Some(m.path.fill(&param.name, &id))
    });
    Some(match path {
        Some(path) => match api.send(&Request::new(HttpVerb::Delete, path.to_string(), None)).await {
            Ok(_) => format!("{id}, created for it, was deleted again"),
            Err(e) => format!("{id} was created for it and could not be deleted ({e}); delete it yourself"),
        },
        None => format!("{id} was created for it and remains"),
    })
}

/// Polls each row until it is ready (or gone, for a delete), for at most `timeout` in all.
pub async fn await_all(
    resource: &Resource,
    api: &ApiClient,
    ids: &[String],
    gone: bool,
    timeout: Duration,
    cancel: &CancelToken,
) -> Result<Vec<Map<String, Value>>, Error> {
    let lifecycle = resource.lifecycle.as_ref().expect("checked when binding");
    let progress = api.progress();
    let _ended = progress.until_dropped(Event::WaitEnded);
    let started = Instant::now();
    let mut finished = Vec::new();
    for id in ids {
        let key = resource.key().ok_or_else(|| Error::Await { id: id.clone(), problem: AwaitProblem::NoWayToRead })?;
        let path = key.path(id).to_string();
        let mut pause = Duration::from_millis(200);
        loop {
            let row = match api.read(&Request::get(path.clone())).await {
                Ok(Value::Object(row)) => Some(row),
                Ok(_) => None,
                Err(e) if e.status() == Some(404) => None,
                Err(e) => return Err(e.into()),
            };
            let status = row.as_ref().and_then(|r| r.get(&lifecycle.status)).and_then(Value::as_str).unwrap_or("gone");
            // What is not ready yet: the row, or one of its copies.
            let shown = row
                .as_ref()
                .and_then(|r| unready_place(resource, r))
                .map_or(status.to_string(), |place| format!("{status}, but its copy in {place}"));
            progress.report(Event::Waiting { id, status: &shown });
            let problem = |problem| Err(Error::Await { id: id.clone(), problem });
            match (&row, gone) {
                (None, true) => break,
                (None, false) => return problem(AwaitProblem::Disappeared),
                (Some(_), _) if lifecycle.failed.iter().any(|f| f == status) => {
                    return problem(AwaitProblem::Ended { status: status.into() });
                }
                (Some(row), false) if is_ready(resource, row) => {
                    finished.push(row.clone());
                    break;
                }
                _ => {}
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return problem(AwaitProblem::TimedOut { waited: timeout, status: shown.clone() });
            }
            tokio::select! {
                _ = tokio::time::sleep(pause.min(left)) => {}
                _ = cancel.cancelled() => return problem(AwaitProblem::Stopped { status: shown.clone() }),
            }
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
    }
    Ok(finished)
}

/// `eu-central replicating`: a copy of the row that is not ready yet.
fn unready_place(resource: &Resource, row: &Map<String, Value>) -> Option<String> {
    let places = resource.lifecycle.as_ref()?.regions.as_ref()?;
    row.get(&places.field).and_then(Value::as_array)?.iter().find_map(|place| {
        let status = place.get(&places.status).and_then(Value::as_str)?;
        let name = place.get("region").or_else(|| place.as_object()?.values().next()).and_then(Value::as_str)?;
        (!places.ready.iter().any(|r| r == status)).then(|| format!("{name} is {status}"))
    })
}

fn is_ready(resource: &Resource, row: &Map<String, Value>) -> bool {
    let lifecycle = resource.lifecycle.as_ref().expect("checked when binding");
    let status_ready =
        row.get(&lifecycle.status).and_then(Value::as_str).is_some_and(|s| lifecycle.ready.iter().any(|r| r == s));
    let places_ready = lifecycle.regions.as_ref().is_none_or(|places| {
        row.get(&places.field).and_then(Value::as_array).into_iter().flatten().all(|place| {
            place.get(&places.status).and_then(Value::as_str).is_some_and(|s| places.ready.iter().any(|r| r == s))
        })
    });
    status_ready && places_ready
}

/// The resource's columns, every one nullable: responses of changes may leave some out.
fn lenient_schema(resource: &Resource) -> SchemaRef {
    let schema = resource_schema(resource);
    Arc::new(Schema::new(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>()))
}

/// RETURNING items evaluated by DataFusion over the response rows.
/// An EXEC's rows carry the response's other values too (`RETURNING id, upload_to`).
pub async fn returning(
    bound: &Bound,
    rows: &[Map<String, Value>],
    extras: &[Map<String, Value>],
) -> Result<DataFrame, Error> {
    let items = bound.returning.as_deref().unwrap_or_default();
    let batch = match bound.verb {
        Verb::Exec => response_rows(bound, rows, extras)?,
        _ => to_batch(
            &bound.resource,
            lenient_schema(&bound.resource),
            rows.iter().cloned().map(Value::Object).collect(),
        )?,
    };
    let ctx = SessionContext::new_with_state(bound.state.clone());
    let frame = ctx.read_batch(with_account(batch, &bound.scope)?)?;
    let schema: DFSchema = frame.schema().clone();
    let mut exprs: Vec<LogicalExpr> = Vec::new();
    for item in items {
        match item {
            SelectItem::UnnamedExpr(expr) => exprs.push(
                bound
                    .state
                    .create_logical_expr_from_sql_expr(ExprWithAlias { expr: expr.clone(), alias: None }, &schema)?,
            ),
            SelectItem::ExprWithAlias { expr, alias } => exprs.push(bound.state.create_logical_expr_from_sql_expr(
                ExprWithAlias { expr: expr.clone(), alias: Some(alias.clone()) },
                &schema,
            )?),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                exprs.extend(schema.fields().iter().map(|f| ident(f.name())));
            }
            SelectItem::ExprWithAliases { .. } => {
                return Err(Error::Unsupported { what: format!("RETURNING {item}"), instead: None });
            }
        }
    }
    Ok(frame.select(exprs)?)
}

/// The rows an EXEC returned, with the response's other values (such as `upload_to`).
/// The names the method declares are always there, so that RETURNING can be checked before
/// anything is sent.
fn response_rows(
    bound: &Bound,
    rows: &[Map<String, Value>],
    extras: &[Map<String, Value>],
) -> Result<RecordBatch, Error> {
    let resource = &bound.resource;
    let method = bound.method();
    let declared: Vec<String> = method
        .upload
        .iter()
        .map(|u| u.url_field.clone())
        .chain(method.complete_set.iter().flat_map(|_| SetPlan::COLUMNS.map(String::from)))
        .collect();
    let schema = lenient_schema(resource);
    let mut fields: Vec<ArrowField> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut extra_names: Vec<&String> = Vec::new();
    for name in declared.iter().chain(extras.iter().flat_map(|e| e.keys())) {
        if !extra_names.contains(&name) && schema.field_with_name(name).is_err() {
            extra_names.push(name);
        }
    }
    fields.extend(extra_names.iter().map(|n| ArrowField::new(n.as_str(), DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(fields));
    let merged: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut row = row.clone();
            for (name, value) in extras.get(i).into_iter().flatten() {
                row.insert(name.clone(), Value::String(subject_of(Some(value))));
            }
            Value::Object(row)
        })
        .collect();
    Ok(to_batch(resource, schema, merged)?)
}

/// The columns of a change's rows: its RETURNING items; `None` when it returns no rows
/// (an EXEC's response rows are known only once it ran).
pub async fn result_schema(bound: &Bound) -> Result<Option<SchemaRef>, Error> {
    match bound.returning {
        Some(_) => Ok(Some(Arc::new(returning(bound, &[], &[]).await?.schema().as_arrow().clone()))),
        None if answers_rows(bound) => Ok(Some(with_account(response_rows(bound, &[], &[])?, &bound.scope)?.schema())),
        None => Ok(None),
    }
}

/// Whether an EXEC answers its response rows without RETURNING: every method but a DELETE,
/// so that a client told the columns beforehand gets them (none rows, at worst).
fn answers_rows(bound: &Bound) -> bool {
    bound.verb == Verb::Exec && bound.method().verb != HttpVerb::Delete
}
