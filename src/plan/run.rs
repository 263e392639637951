//! Running a mutation: the calls in order, never retried; an upload of the file the response
//! asks for; `/*+ AWAIT */` polling; and the result: RETURNING rows, the response rows of an
//! EXEC, or a one-line summary. A failure part-way reports what was done and what was not.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema};
use datafusion::prelude::SessionContext;
use indicatif::ProgressBar;
use serde_json::{Map, Value, json};

use super::{Kind, MutationPlan};
use crate::api::{ApiClient, Request};
use crate::error::Error;
use crate::output::{Format, Printer};
use crate::provider::{HttpVerb, Resource, SqlVerb, fill_path, resource_schema};
use crate::session::Session;
use crate::table::to_batch;

/// How long `/*+ AWAIT */` waits before giving up.
pub const AWAIT_DEADLINE: Duration = Duration::from_secs(30 * 60);

pub async fn execute(
    session: &Session,
    plan: MutationPlan,
    format: Format,
    out: &mut dyn Write,
) -> Result<Option<usize>, Error> {
    let api = session.client(&plan.provider.id);
    let mut done: Vec<String> = Vec::new();
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    let mut extras: Vec<Map<String, Value>> = Vec::new();
    for (index, call) in plan.calls.iter().enumerate() {
        if session.take_interrupt() {
            return Err(interrupted(&plan, &done, index));
        }
        let request = Request::new(call.verb, call.path.clone(), call.body.clone().map(Value::Object));
        let response = match api.send(&request).await {
            Ok(response) => response,
            Err(e) => return Err(partial(&plan, &done, index, e)),
        };
        let (found, extra) = rows_of(&plan, &response);
        if let (Some(file), Some(spec)) = (&plan.upload, &plan.method.upload) {
            let sent = match response.get(&spec.url_field).and_then(Value::as_str) {
                Some(url) => tokio::select! {
                    sent = crate::upload::send(&api, url, file, spec) => sent,
                    _ = session.interrupted() => Err(Error::Mutation("the upload was interrupted".into())),
                },
                None => Err(Error::Query(format!("the response of {} has no {}", plan.method_name, spec.url_field))),
            };
            if let Err(e) = sent {
                return Err(abandon_upload(&plan, &api, found.first(), e).await);
            }
            // The upload changed the row: read it again.
            let ids = row_ids(&plan.resource, &found);
            let reread = reread(&plan.resource, &api, &ids).await;
            rows.extend(reread.map_err(|e| after_changes(&plan, &ids, e))?);
        } else {
            rows.extend(found);
            extras.push(extra);
        }
        done.push(match row_ids(&plan.resource, &rows[rows.len().saturating_sub(1)..]).pop() {
            Some(id) if plan.kind == Kind::Insert || plan.kind == Kind::Exec => format!("{} ({id})", call.subject),
            _ => call.subject.clone(),
        });
    }
    finish(session, &plan, rows, extras, format, out).await.map_err(|e| after_changes(&plan, &done, e))
}

/// Waiting and printing, once every call was made.
async fn finish(
    session: &Session,
    plan: &MutationPlan,
    mut rows: Vec<Map<String, Value>>,
    extras: Vec<Map<String, Value>>,
    format: Format,
    out: &mut dyn Write,
) -> Result<Option<usize>, Error> {
    if plan.await_ready {
        let api = session.client(&plan.provider.id);
        let ids = match plan.kind {
            Kind::Insert | Kind::Exec => row_ids(&plan.resource, &rows),
            Kind::Replace | Kind::Delete => plan.calls.iter().map(|c| c.subject.clone()).collect(),
        };
        let finished = await_all(session, &plan.resource, &api, &ids, plan.kind == Kind::Delete).await?;
        if plan.kind != Kind::Delete {
            rows = finished;
        }
    }
    if let Some(items) = &plan.returning {
        return returning(&plan.resource, &rows, items, format, out).await.map(Some);
    }
    if plan.kind == Kind::Exec && !rows.is_empty() {
        return print_rows(&plan.resource, &rows, &extras, format, out).map(Some);
    }
    summary(plan, &rows, format, out).map(|_| None)
}

/// An error after changes were made must say that they were.
fn after_changes(plan: &MutationPlan, done: &[String], error: Error) -> Error {
    if done.is_empty() {
        return error;
    }
    Error::Mutation(format!(
        "{} on {} was done ({}), but then: {error}",
        plan.kind.keyword(),
        plan.resource.full_name,
        done.join(", ")
    ))
}

fn interrupted(plan: &MutationPlan, done: &[String], next: usize) -> Error {
    let mut lines = vec![format!(
        "{} on {} interrupted before {} of {}:",
        plan.kind.keyword(),
        plan.resource.full_name,
        next + 1,
        plan.calls.len()
    )];
    lines.extend(done.iter().map(|d| format!("  {d}: done")));
    lines.extend(plan.calls[next..].iter().map(|c| format!("  {}: not sent", c.subject)));
    Error::Mutation(lines.join("\n"))
}

/// The rows a response carries (at the method's `objectKey`, or the body itself), and the
/// other top-level values beside them (the `upload_to` of an upload).
fn rows_of(plan: &MutationPlan, response: &Value) -> (Vec<Map<String, Value>>, Map<String, Value>) {
    let mut extra = Map::new();
    let found = match (&plan.method.object_key, response) {
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

/// The column that identifies rows: the one the lifecycle's get method binds.
fn id_column(resource: &Resource) -> Option<(String, String, String)> {
    let lifecycle = resource.lifecycle.as_ref()?;
    let method = resource.methods.get(&lifecycle.get)?;
    let param = method.params.iter().find(|p| p.required && p.column.is_some())?;
    Some((param.column.clone()?, param.name.clone(), method.path.clone()))
}

fn row_ids(resource: &Resource, rows: &[Map<String, Value>]) -> Vec<String> {
    let column = id_column(resource).map(|(c, _, _)| c).unwrap_or_else(|| "id".into());
    rows.iter()
        .filter_map(|r| r.get(&column))
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        .collect()
}

fn get_path(resource: &Resource, id: &str) -> Option<String> {
    let (_, param, path) = id_column(resource)?;
    Some(fill_path(&path, &param, id))
}

async fn reread(resource: &Resource, api: &ApiClient, ids: &[String]) -> Result<Vec<Map<String, Value>>, Error> {
    let mut rows = Vec::new();
    for id in ids {
        let Some(path) = get_path(resource, id) else { continue };
        if let Value::Object(row) = api.read(&Request::get(path)).await? {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The upload failed after its row was created: remove that row so nothing is left behind,
/// and report both.
async fn abandon_upload(plan: &MutationPlan, api: &ApiClient, row: Option<&Map<String, Value>>, cause: Error) -> Error {
    let Some(id) = row.and_then(|r| row_ids(&plan.resource, std::slice::from_ref(r)).pop()) else {
        return cause;
    };
    let delete = plan.resource.methods_for(SqlVerb::Delete).next().map(|(_, m)| m.clone());
    let cleanup = match delete.as_ref().and_then(|m| {
        let param = m.params.iter().find(|p| p.required)?;
        Some(fill_path(&m.path, &param.name, &id))
    }) {
        Some(path) => match api.send(&Request::new(HttpVerb::Delete, path, None)).await {
            Ok(_) => format!("{id}, created for it, was deleted again"),
            Err(e) => format!("{id} was created for it and could not be deleted ({e}); delete it yourself"),
        },
        None => format!("{id} was created for it and remains"),
    };
    Error::Mutation(format!("{cause}\n  {cleanup}"))
}

fn partial(plan: &MutationPlan, done: &[String], failed: usize, error: crate::api::ApiError) -> Error {
    let what = format!("{} on {}", plan.kind.keyword(), plan.resource.full_name);
    if plan.calls.len() == 1 {
        return Error::Api(error);
    }
    let mut lines = vec![format!("{what} stopped at {} of {}:", failed + 1, plan.calls.len())];
    lines.extend(done.iter().map(|d| format!("  {d}: done")));
    lines.push(format!("  {}: failed: {error}", plan.calls[failed].subject));
    lines.extend(plan.calls[failed + 1..].iter().map(|c| format!("  {}: not sent", c.subject)));
    Error::Mutation(lines.join("\n"))
}

/// Polls each row until it is ready (or gone, for a delete), with a deadline.
async fn await_all(
    session: &Session,
    resource: &Arc<Resource>,
    api: &ApiClient,
    ids: &[String],
    gone: bool,
) -> Result<Vec<Map<String, Value>>, Error> {
    let lifecycle = resource.lifecycle.as_ref().expect("checked when planning");
    let spinner = ProgressBar::new_spinner();
    // Cleared however the wait ends.
    let _clear = ClearOnDrop(spinner.clone());
    let started = Instant::now();
    let mut finished = Vec::new();
    for id in ids {
        let path = get_path(resource, id)
            .ok_or_else(|| Error::Query(format!("{} has no way to re-read {id}", resource.full_name)))?;
        let mut pause = Duration::from_millis(200);
        loop {
            let row = match api.read(&Request::get(path.clone())).await {
                Ok(Value::Object(row)) => Some(row),
                Ok(_) => None,
                Err(e) if e.status() == Some(404) => None,
                Err(e) => return Err(e.into()),
            };
            let status = row.as_ref().and_then(|r| r.get(&lifecycle.status)).and_then(Value::as_str).unwrap_or("gone");
            spinner.set_message(format!("waiting for {id}: {status}"));
            spinner.tick();
            match (&row, gone) {
                (None, true) => break,
                (None, false) => {
                    return Err(Error::Mutation(format!("{id} disappeared while waiting for it to be ready")));
                }
                (Some(_), _) if lifecycle.failed.iter().any(|f| f == status) => {
                    return Err(Error::Mutation(format!("{id} ended {status}")));
                }
                (Some(row), false) if is_ready(resource, row) => {
                    finished.push(row.clone());
                    break;
                }
                _ => {}
            }
            if session.take_interrupt() {
                return Err(Error::Mutation(format!("stopped waiting for {id}: it is {status}")));
            }
            if started.elapsed() > AWAIT_DEADLINE {
                return Err(Error::Mutation(format!(
                    "gave up waiting for {id} after {} minutes; it is {status}",
                    AWAIT_DEADLINE.as_secs() / 60
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
    }
    Ok(finished)
}

struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn is_ready(resource: &Resource, row: &Map<String, Value>) -> bool {
    let lifecycle = resource.lifecycle.as_ref().expect("checked when planning");
    let status_ready =
        row.get(&lifecycle.status).and_then(Value::as_str).is_some_and(|s| lifecycle.ready.iter().any(|r| r == s));
    let places_ready = lifecycle.regions.as_ref().is_none_or(|places| {
        row.get(&places.field).and_then(Value::as_array).into_iter().flatten().all(|place| {
            place.get(&places.status).and_then(Value::as_str).is_some_and(|s| places.ready.iter().any(|r| r == s))
        })
    });
    status_ready && places_ready
}

/// RETURNING items evaluated by DataFusion over response rows.
async fn returning_frame(
    resource: &Resource,
    rows: &[Map<String, Value>],
    items: &[datafusion::sql::sqlparser::ast::SelectItem],
) -> Result<datafusion::dataframe::DataFrame, Error> {
    let schema = resource_schema(resource);
    let lenient = Arc::new(Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    let batch = to_batch(resource, lenient, rows.iter().cloned().map(Value::Object).collect())?;
    let ctx = SessionContext::new();
    ctx.register_batch("returning", batch)?;
    let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    Ok(ctx.sql(&format!("SELECT {} FROM returning", items.join(", "))).await?)
}

/// Plans RETURNING over no rows, so that a mistake in it is found before anything is sent.
pub async fn check_returning(
    resource: &Resource,
    items: &[datafusion::sql::sqlparser::ast::SelectItem],
) -> Result<(), Error> {
    returning_frame(resource, &[], items).await.map(|_| ()).map_err(|e| Error::Sql(format!("RETURNING: {e}")))
}

async fn returning(
    resource: &Resource,
    rows: &[Map<String, Value>],
    items: &[datafusion::sql::sqlparser::ast::SelectItem],
    format: Format,
    out: &mut dyn Write,
) -> Result<usize, Error> {
    let batches = returning_frame(resource, rows, items).await?.collect().await?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| Arc::new(Schema::empty()));
    let mut printer = Printer::new(format, schema, out)?;
    for batch in batches {
        printer.write(batch)?;
    }
    let count = printer.rows();
    printer.finish()?;
    Ok(count)
}

/// The rows an EXEC returned, with the response's other values (such as `upload_to`).
fn print_rows(
    resource: &Resource,
    rows: &[Map<String, Value>],
    extras: &[Map<String, Value>],
    format: Format,
    out: &mut dyn Write,
) -> Result<usize, Error> {
    let schema = resource_schema(resource);
    let mut fields: Vec<ArrowField> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let extra_names: Vec<String> = extras.iter().flat_map(|e| e.keys().cloned()).fold(Vec::new(), |mut names, n| {
        if !names.contains(&n) && schema.field_with_name(&n).is_err() {
            names.push(n);
        }
        names
    });
    fields.extend(extra_names.iter().map(|n| ArrowField::new(n, DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(fields));
    let merged: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut row = row.clone();
            for (name, value) in extras.get(i).into_iter().flatten() {
                row.insert(
                    name.clone(),
                    Value::String(value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())),
                );
            }
            Value::Object(row)
        })
        .collect();
    let batch = to_batch(resource, schema.clone(), merged)?;
    let count = batch.num_rows();
    let mut printer = Printer::new(format, schema, out)?;
    printer.write(batch)?;
    printer.finish()?;
    Ok(count)
}

/// One line in table and text output; one row elsewhere, so the output stays parseable.
fn summary(plan: &MutationPlan, rows: &[Map<String, Value>], format: Format, out: &mut dyn Write) -> Result<(), Error> {
    let ids = match plan.kind {
        Kind::Insert | Kind::Exec => row_ids(&plan.resource, rows),
        Kind::Replace | Kind::Delete => plan.calls.iter().map(|c| c.subject.clone()).collect(),
    };
    let count = plan.calls.len();
    let what = match plan.kind {
        Kind::Insert => format!("inserted {count} into {}", plan.resource.full_name),
        Kind::Replace => format!("replaced {count} in {}", plan.resource.full_name),
        Kind::Delete => format!("deleted {count} from {}", plan.resource.full_name),
        Kind::Exec => format!("EXEC {}.{}: done", plan.resource.full_name, plan.method_name),
    };
    if matches!(format, Format::Table | Format::Text) {
        let listed = if ids.is_empty() { String::new() } else { format!(": {}", ids.join(", ")) };
        writeln!(out, "{what}{listed}").map_err(|e| Error::Output(e.into()))?;
        return Ok(());
    }
    let schema = Arc::new(Schema::new(vec![
        ArrowField::new("statement", DataType::Utf8, false),
        ArrowField::new("resource", DataType::Utf8, false),
        ArrowField::new("count", DataType::Int64, false),
        ArrowField::new("ids", DataType::List(Arc::new(ArrowField::new("item", DataType::Utf8, true))), false),
    ]));
    let row =
        json!({"statement": plan.kind.keyword(), "resource": plan.resource.full_name, "count": count, "ids": ids});
    let batch = to_batch(&plan.resource, schema.clone(), vec![row])?;
    let mut printer = Printer::new(format, schema, out)?;
    printer.write(batch)?;
    printer.finish()?;
    Ok(())
}
