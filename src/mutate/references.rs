//! Values that name rows of another table (an upload's region, the image an instance is
//! deployed from) are checked against that table before anything is sent: the row must exist
//! and be what the provider file asks of it (a region that offers Object Storage, an image
//! that is available, has a copy in the instance's region and fits the disk). The table is
//! read through the session's scan, and so its cache.

use std::collections::BTreeMap;

use datafusion::logical_expr::col;
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use super::values::rows_of_batches;
use super::{Bound, Call};
use crate::error::Error;
use crate::provider::Reference;
use crate::validate::Violation;

/// Rows listed by id in a message when there are no more than this many.
const LISTED: usize = 20;

/// Every problem of the calls' references, by call; none when the method declares none.
pub async fn problems(bound: &Bound, calls: &[Call]) -> Result<Vec<(String, Violation)>, Error> {
    let method = bound.method();
    let mut problems = Vec::new();
    let mut tables: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    for field in method.body.iter().filter(|f| f.references.is_some()) {
        let reference = field.references.as_ref().expect("filtered");
        for call in calls {
            let Some(body) = &call.body else { continue };
            let named: Vec<&str> = match body.get(&field.name) {
                Some(Value::String(one)) => vec![one.as_str()],
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => continue,
            };
            if named.is_empty() {
                continue;
            }
            if !tables.contains_key(&reference.table) {
                tables.insert(reference.table.clone(), rows(bound, reference).await?);
            }
            let rows = &tables[&reference.table];
            for name in named {
                let row = rows.iter().find(|row| row.get(&reference.column).and_then(Value::as_str) == Some(name));
                if let Some(reason) = problem(reference, name, row, rows, body) {
                    problems.push((call.subject.clone(), Violation { field: field.name.clone(), reason }));
                }
            }
        }
    }
    Ok(problems)
}

/// What is wrong with the row `name` names, given the rest of the call's `body`.
fn problem(
    reference: &Reference,
    name: &str,
    row: Option<&Map<String, Value>>,
    rows: &[Map<String, Value>],
    body: &Map<String, Value>,
) -> Option<String> {
    let ids = |keep: &dyn Fn(&Map<String, Value>) -> bool| {
        let ids: Vec<&str> =
            rows.iter().filter(|r| keep(r)).filter_map(|r| r.get(&reference.column)?.as_str()).collect();
        match ids.len() {
            0 => "none".to_string(),
            n if n <= LISTED => ids.join(", "),
            n => format!("{} and {} more", ids[..LISTED].join(", "), n - LISTED),
        }
    };
    let Some(row) = row else {
        return Some(format!("{name} is not in {} (known: {})", reference.table, ids(&|_| true)));
    };
    if let Some(has) = &reference.has {
        let holds = |row: &Map<String, Value>| match row.get(&has.field) {
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(has.value.as_str())),
            Some(value) => value.as_str() == Some(has.value.as_str()),
            None => false,
        };
        if !holds(row) {
            let kind = reference.table.rsplit('.').next().unwrap_or_default();
            return Some(match row.get(&has.field) {
                Some(Value::Array(_)) => {
                    format!("{name} has no {value}; {kind} with {value}: {}", ids(&holds), value = has.value)
                }
                other => {
                    format!("{name} is {}, not {}", other.and_then(Value::as_str).unwrap_or("without one"), has.value)
                }
            });
        }
    }
    if let Some(place) = &reference.placed_in
        && let (Some(Value::Array(copies)), Some(wanted)) =
            (row.get(&place.list), body.get(&place.field).and_then(Value::as_str))
    {
        let ready = |copy: &Value| copy.get(&place.status).and_then(Value::as_str) == Some(place.ready.as_str());
        let here = copies.iter().any(|c| c.get(&place.item).and_then(Value::as_str) == Some(wanted) && ready(c));
        if !here {
            let held: Vec<&str> =
                copies.iter().filter(|c| ready(c)).filter_map(|c| c.get(&place.item)?.as_str()).collect();
            let fix =
                reference.fix.as_ref().map(|fix| format!("; to copy it there first: {}", filled(fix, name, body)));
            return Some(format!(
                "{name} has no {} copy in {wanted} (it has one in: {}){}",
                place.ready,
                if held.is_empty() { "none".into() } else { held.join(", ") },
                fix.unwrap_or_default()
            ));
        }
    }
    if let Some(fits) = &reference.fits
        && let (Some(needed), Some(given)) =
            (row.get(&fits.field).and_then(Value::as_i64), body.get(&fits.at_most).and_then(Value::as_i64))
        && needed > given
    {
        return Some(format!("{name} needs a {} of at least {needed}; {} is {given}", fits.at_most, fits.at_most));
    }
    None
}

/// `{value}` and `{field}` of the body filled into a statement.
fn filled(template: &str, value: &str, body: &Map<String, Value>) -> String {
    let mut text = template.replace("{value}", value);
    for (name, given) in body {
        if let Some(given) = given.as_str() {
            text = text.replace(&format!("{{{name}}}"), given);
        }
    }
    text
}

/// The columns of the referenced table that the checks need, as JSON objects.
async fn rows(bound: &Bound, reference: &Reference) -> Result<Vec<Map<String, Value>>, Error> {
    let ctx = SessionContext::new_with_state(bound.state.clone());
    let mut names = vec![reference.column.as_str()];
    names.extend(reference.has.iter().map(|h| h.field.as_str()));
    names.extend(reference.placed_in.iter().map(|p| p.list.as_str()));
    names.extend(reference.fits.iter().map(|f| f.field.as_str()));
    names.dedup();
    let columns: Vec<_> = names.iter().map(|n| col(*n)).collect();
    let frame = ctx.table(reference.table.as_str()).await?.select(columns)?;
    let rows = rows_of_batches(&frame.collect().await?)?;
    Ok(rows.into_iter().map(|row| names.iter().map(|n| n.to_string()).zip(row).collect()).collect())
}
