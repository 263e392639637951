//! The dry run of a change (EXPLAIN of it, or any change while `imageql.dry_run` is on): its
//! input rows are read and every call is built and validated as for a real run, and nothing
//! is sent. One row per request names the resource it touches with the columns the provider
//! file's `preview` lists, and for a deletion the monthly cost it frees; the last row gives
//! the totals.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use super::accounts::{ACCOUNT, Part, Scope, each_or_problems};
use super::execute::{calls, input_rows};
use super::sets;
use super::values::rows_of_batches;
use super::{Bound, Call};
use crate::api::ApiClient;
use crate::cancel::CancelToken;
use crate::error::Error;
use crate::provider::{Kind, Method, Resource, Verb};

/// The column of what a deletion frees per month.
const FREES: &str = "frees_monthly_usd";
/// Money in cents, as the cost views give it.
const CENTS_PRECISION: u8 = 14;

/// The columns of a change's dry run: the account (over an account set), the step, the
/// request, the previewed columns of the resource (whole numbers as numbers, the rest as
/// text) and, for a deletion, what it frees.
pub fn preview_schema(resource: &Resource, verb: Verb, scope: &Scope) -> SchemaRef {
    let mut fields = match scope {
        Scope::Single => vec![],
        // The last total, of every account, has none.
        Scope::Set | Scope::Account(_) => vec![ArrowField::new(ACCOUNT, DataType::Utf8, true)],
    };
    fields.extend([ArrowField::new("step", DataType::Utf8, false), ArrowField::new("request", DataType::Utf8, false)]);
    for (name, numeric) in preview_columns(resource) {
        fields.push(ArrowField::new(name, if numeric { DataType::Int64 } else { DataType::Utf8 }, true));
    }
    if frees(resource, verb).is_some() {
        fields.push(ArrowField::new(FREES, DataType::Decimal128(CENTS_PRECISION, 2), true));
    }
    Arc::new(Schema::new(fields))
}

/// The previewed columns, each with whether it holds whole numbers.
fn preview_columns(resource: &Resource) -> Vec<(&str, bool)> {
    let Some(preview) = &resource.preview else { return vec![] };
    preview.columns.iter().map(|c| (c.as_str(), resource.field(c).is_some_and(|f| f.kind == Kind::Integer))).collect()
}

/// Where a deletion's freed cost is read (`view`, `column`), for deletions only.
fn frees(resource: &Resource, verb: Verb) -> Option<(String, &str)> {
    let frees = resource.preview.as_ref()?.frees.as_ref()?;
    let service = resource.full_name.rsplit_once('.').map(|(s, _)| s)?;
    (verb == Verb::Delete).then(|| (format!("{service}.{}", frees.view), frees.column.as_str()))
}

/// One output row.
#[derive(Default)]
struct Line {
    account: Option<String>,
    step: String,
    request: String,
    shown: Vec<Option<Value>>,
    frees: Option<f64>,
}

impl Line {
    fn note(step: &str, request: String) -> Line {
        Line { step: step.into(), request, ..Line::default() }
    }
}

/// The dry run: reads what the change needs, builds and checks every call, sends none.
pub async fn preview(bound: &Bound, api: &ApiClient, cancel: &CancelToken) -> Result<RecordBatch, Error> {
    let (mut lines, calls) = lines(bound, api, cancel).await?;
    let columns = preview_columns(&bound.resource);
    lines.push(total(bound, &calls, &lines, &columns));
    batch(bound, lines)
}

/// The dry run of a change over an account set: each account's part, with its total, and
/// the total of them all. Every part is read and checked; nothing is sent.
pub async fn preview_parts(parts: &[Part], cancel: &CancelToken) -> Result<Option<RecordBatch>, Error> {
    let Some(first) = parts.first() else { return Ok(None) };
    let columns = preview_columns(&first.bound.resource);
    let mut found = Vec::with_capacity(parts.len());
    for part in parts {
        found.push((part.account.as_str(), lines(&part.bound, &part.api, cancel).await));
    }
    let (mut all_lines, mut all_calls) = (Vec::new(), Vec::new());
    for (part, (mut lines, calls)) in parts.iter().zip(each_or_problems(found)?) {
        let mut total = total(&part.bound, &calls, &lines, &columns);
        total.account = Some(part.account.clone());
        lines.push(total);
        all_lines.extend(lines);
        all_calls.extend(calls);
    }
    let mut total = total(&first.bound, &all_calls, &all_lines, &columns);
    if let Some(sent) = total.request.strip_suffix(", none sent") {
        let plural = if parts.len() == 1 { "" } else { "s" };
        total.request = format!("{sent} in {} account{plural}, none sent", parts.len());
    }
    all_lines.push(total);
    Ok(Some(batch(&first.bound, all_lines)?))
}

/// Each request of a change and what it reads and does, with the calls.
async fn lines(bound: &Bound, api: &ApiClient, cancel: &CancelToken) -> Result<(Vec<Line>, Vec<Call>), Error> {
    let method = bound.method();
    let mut rows = input_rows(bound, cancel).await?;
    let key = bound.resource.key();
    let id_at = key.as_ref().and_then(|k| bound.columns.iter().position(|c| *c == k.param.name));
    let ids: Vec<Option<String>> = rows
        .iter()
        .map(|row| match (bound.verb, id_at) {
            (Verb::Insert, _) | (_, None) => None,
            (_, Some(i)) => row.get(i).map(text_of),
        })
        .collect();
    let sets = sets::resolve(bound, api, &mut rows).await?;
    let calls = calls(bound, rows).await?;
    let touched = touched_rows(bound, &ids).await?;
    let freed = match frees(&bound.resource, bound.verb) {
        Some((view, column)) => freed_costs(bound, &view, column, &ids).await?,
        None => HashMap::new(),
    };
    let columns = preview_columns(&bound.resource);
    let mut lines = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let set = sets.get(i);
        if let Some(set) = set {
            lines.push(Line::note("read", format!("GET {} ({} now: {})", set.read, set.field, set.current.join(", "))));
        }
        let id = ids.get(i).cloned().flatten();
        let row = id.as_ref().and_then(|id| touched.get(id));
        let missing = id.is_some() && row.is_none() && key.is_some();
        // A row to be made is shown by its body; one that is not found, by its id alone.
        let shown = columns
            .iter()
            .map(|(name, _)| match (row, &id) {
                (Some(row), _) => row.get(*name).cloned(),
                (None, Some(id)) => key.as_ref().filter(|k| k.column == *name).map(|_| Value::String(id.clone())),
                (None, None) => call.body.as_ref().and_then(|b| b.get(*name)).cloned(),
            })
            .collect();
        let request = match missing {
            true => format!("{} (no such row: the API will answer 404)", request_text(call, method)),
            false => request_text(call, method),
        };
        let frees = id.as_ref().and_then(|id| freed.get(id)).copied();
        lines.push(Line { step: (i + 1).to_string(), request, shown, frees, account: None });
        if let Some(destroyed) = &method.destroys {
            lines.push(Line::note("destroys", destroyed.clone()));
        }
        if let Some(set) = set {
            let named = |members: &[String]| if members.is_empty() { "nothing".into() } else { members.join(", ") };
            lines.push(Line::note("adds", named(&set.added)));
            lines.push(Line::note("removes", named(&set.removed)));
        }
    }
    if !bound.defaulted.is_empty() {
        let given: Vec<String> = bound
            .constants
            .iter()
            .filter(|(name, _)| bound.defaulted.contains(name))
            .map(|(name, value)| {
                format!("{name} = {}", value.as_str().map(str::to_string).unwrap_or(value.to_string()))
            })
            .collect();
        lines.push(Line::note(
            "defaults",
            format!("{} (from the profile; give the column to override)", given.join(", ")),
        ));
    }
    if let (Some(file), Some(spec)) = (&bound.upload, &method.upload) {
        let size = std::fs::metadata(&file.path).map(|m| m.len()).unwrap_or(0);
        let what = format!("PUT the {size} bytes of {} to the response's {}", file.shown.display(), spec.url_field);
        lines.push(Line::note("then", what));
    }
    if let Some(wait) = awaited(bound) {
        lines.push(Line::note("then", wait));
    }
    if let Scope::Account(account) = &bound.scope {
        for line in lines.iter_mut() {
            line.account = Some(account.clone());
        }
    }
    Ok((lines, calls))
}

/// A call as it would be sent: verb, path, and the body when there is one, its secrets masked.
fn request_text(call: &Call, method: &Method) -> String {
    let body = call.body.as_ref().map(|body| {
        let mut shown = body.clone();
        for field in method.body.iter().filter(|f| f.secret) {
            if let Some(value) = shown.get_mut(&field.name) {
                *value = Value::String("********".into());
            }
        }
        format!(" {}", Value::Object(shown))
    });
    format!("{} {}{}", call.verb, call.path, body.unwrap_or_default())
}

/// What `/*+ AWAIT */` would wait for.
fn awaited(bound: &Bound) -> Option<String> {
    let (true, Some(lifecycle), Some(key)) = (bound.await_ready, &bound.resource.lifecycle, bound.resource.key())
    else {
        return None;
    };
    let until = if bound.verb == Verb::Delete {
        "it is gone (404)".to_string()
    } else {
        let places = lifecycle
            .regions
            .as_ref()
            .map(|p| format!(" and every {} entry is {}", p.field, p.ready.join(" or ")))
            .unwrap_or_default();
        format!("{} is {}{places}", lifecycle.status, lifecycle.ready.join(" or "))
    };
    Some(format!("poll {} until {until}", key.method_name))
}

/// The totals: how many requests of each verb, the sums of whole-number columns and of what
/// deletions free.
fn total(bound: &Bound, calls: &[Call], lines: &[Line], columns: &[(&str, bool)]) -> Line {
    let mut verbs: Vec<(String, usize)> = Vec::new();
    for call in calls {
        let verb = call.verb.to_string();
        match verbs.iter_mut().find(|(v, _)| *v == verb) {
            Some((_, n)) => *n += 1,
            None => verbs.push((verb, 1)),
        }
    }
    let plural = if calls.len() == 1 { "" } else { "s" };
    let by_verb: Vec<String> = verbs.iter().map(|(v, n)| format!("{n} {v}")).collect();
    let request = match calls.len() {
        0 => "no request: no row matches".to_string(),
        n => format!("{n} request{plural} ({}), none sent", by_verb.join(", ")),
    };
    let requests: Vec<&Line> = lines.iter().filter(|l| l.step.parse::<usize>().is_ok()).collect();
    // Sums of whole numbers (sizes), but not of ids.
    let key = bound.resource.key().map(|k| k.column);
    let shown = columns
        .iter()
        .enumerate()
        .map(|(i, (name, numeric))| {
            let values: Vec<i64> =
                requests.iter().filter_map(|l| l.shown[i].as_ref().and_then(Value::as_i64)).collect();
            (*numeric && key != Some(*name) && !values.is_empty()).then(|| Value::from(values.iter().sum::<i64>()))
        })
        .collect();
    let frees = frees(&bound.resource, bound.verb).map(|_| requests.iter().filter_map(|l| l.frees).sum::<f64>());
    // `+ 0.0` turns the -0.0 of an empty sum into 0.
    Line { step: "total".into(), request, shown, frees, account: None }
}

fn batch(bound: &Bound, lines: Vec<Line>) -> Result<RecordBatch, Error> {
    let schema = preview_schema(&bound.resource, bound.verb, &bound.scope);
    let mut arrays: Vec<ArrayRef> = Vec::new();
    if bound.scope != Scope::Single {
        arrays.push(Arc::new(StringArray::from(lines.iter().map(|l| l.account.clone()).collect::<Vec<_>>())));
    }
    arrays.extend([
        Arc::new(StringArray::from(lines.iter().map(|l| l.step.clone()).collect::<Vec<_>>())) as ArrayRef,
        Arc::new(StringArray::from(lines.iter().map(|l| l.request.clone()).collect::<Vec<_>>())),
    ]);
    for (i, (_, numeric)) in preview_columns(&bound.resource).iter().enumerate() {
        let values = lines.iter().map(|l| l.shown.get(i).cloned().flatten());
        arrays.push(match numeric {
            true => Arc::new(Int64Array::from(values.map(|v| v.as_ref().and_then(Value::as_i64)).collect::<Vec<_>>())),
            false => Arc::new(StringArray::from(values.map(|v| v.as_ref().and_then(shown)).collect::<Vec<_>>())),
        });
    }
    if frees(&bound.resource, bound.verb).is_some() {
        let cents = lines.iter().map(|l| l.frees.map(|usd| (usd * 100.0).round() as i128));
        arrays.push(Arc::new(Decimal128Array::from_iter(cents).with_precision_and_scale(CENTS_PRECISION, 2)?));
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// A value as a line of text: lists joined with commas, an object as its first value with the
/// others in parentheses (`us-east (available)`).
fn shown(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(items.iter().filter_map(shown).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => {
            let mut values = fields.values().filter_map(shown);
            let first = values.next().unwrap_or_default();
            let rest: Vec<String> = values.collect();
            Some(if rest.is_empty() { first } else { format!("{first} ({})", rest.join(", ")) })
        }
        other => Some(other.to_string()),
    }
}

fn text_of(value: &Value) -> String {
    value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())
}

/// The rows of the resource with these ids, whole, as JSON objects, read through the
/// session's scan (and so its cache); rows that no longer exist are left out.
pub(super) async fn rows_by_id(bound: &Bound, ids: &[String]) -> Result<Vec<Map<String, Value>>, Error> {
    let Some(key) = bound.resource.key() else { return Ok(vec![]) };
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let ctx = SessionContext::new_with_state(bound.state.clone());
    let wanted = ids.iter().map(|id| lit(id.as_str())).collect();
    let frame = ctx.table(bound.resource.full_name.as_str()).await?.filter(col(key.column).in_list(wanted, false))?;
    let mut rows = Vec::new();
    for batch in frame.collect().await? {
        let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        for row in rows_of_batches(std::slice::from_ref(&batch))? {
            rows.push(names.iter().cloned().zip(row).collect());
        }
    }
    Ok(rows)
}

/// The touched rows by id.
async fn touched_rows(bound: &Bound, ids: &[Option<String>]) -> Result<HashMap<String, Map<String, Value>>, Error> {
    let (Some(key), Some(_)) = (bound.resource.key(), &bound.resource.preview) else { return Ok(HashMap::new()) };
    let ids: Vec<String> = ids.iter().flatten().cloned().collect();
    let rows = rows_by_id(bound, &ids).await?;
    Ok(rows.into_iter().filter_map(|row| Some((text_of(row.get(key.column)?), row))).collect())
}

/// What deleting each row frees per month, from the provider's view.
async fn freed_costs(
    bound: &Bound,
    view: &str,
    column: &str,
    ids: &[Option<String>],
) -> Result<HashMap<String, f64>, Error> {
    let Some(key) = bound.resource.key() else { return Ok(HashMap::new()) };
    let wanted: Vec<_> = ids.iter().flatten().map(|id| lit(id.as_str())).collect();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let ctx = SessionContext::new_with_state(bound.state.clone());
    // The view's money may be an exact decimal; what a preview adds up is a float.
    let frame = ctx
        .table(view)
        .await?
        .filter(col(key.column).in_list(wanted, false))?
        .select(vec![col(key.column), cast(col(column), DataType::Float64)])?;
    let mut costs = HashMap::new();
    for row in rows_of_batches(&frame.collect().await?)? {
        if let [id, cost] = row.as_slice()
            && let Some(cost) = cost.as_f64()
        {
            costs.insert(text_of(id), cost);
        }
    }
    Ok(costs)
}
