//! Values that name rows of another table (an upload's region, a replication's regions) are
//! checked against that table before anything is sent: the row must exist and have what the
//! provider file asks of it (a region that offers Object Storage). The table is read through
//! the session's scan, and so its cache.

use std::collections::BTreeMap;

use datafusion::logical_expr::col;
use datafusion::prelude::SessionContext;
use serde_json::Value;

use super::values::rows_of_batches;
use super::{Bound, Call};
use crate::error::Error;
use crate::provider::Reference;
use crate::validate::Violation;

/// Every problem of the calls' references; nothing when the method declares none.
pub async fn check(bound: &Bound, calls: &[Call]) -> Result<(), Error> {
    let method = bound.method();
    let mut problems = Vec::new();
    let mut tables: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for field in method.body.iter().filter(|f| f.references.is_some()) {
        let reference = field.references.as_ref().expect("filtered");
        for call in calls {
            let named: Vec<&str> = match call.body.as_ref().and_then(|b| b.get(&field.name)) {
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
                let reason = match rows.iter().find(|(id, _)| id == name) {
                    None => format!("{name} is not in {} (known: {})", reference.table, ids(rows, |_| true)),
                    Some((_, false)) => {
                        let has = reference.has.as_ref().expect("only a requirement fails a row");
                        format!(
                            "{name} has no {value}; {} with {value}: {}",
                            reference.table.rsplit('.').next().unwrap_or_default(),
                            ids(rows, |fits| fits),
                            value = has.value,
                        )
                    }
                    Some(_) => continue,
                };
                problems.push((call.subject.clone(), Violation { field: field.name.clone(), reason }));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(super::execute::validation(bound.verb, &bound.resource.full_name, &bound.method_name, problems))
}

fn ids(rows: &[(String, bool)], keep: impl Fn(bool) -> bool) -> String {
    rows.iter().filter(|(_, fits)| keep(*fits)).map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
}

/// Each row's `column`, and whether it has what the reference asks.
async fn rows(bound: &Bound, reference: &Reference) -> Result<Vec<(String, bool)>, Error> {
    let ctx = SessionContext::new_with_state(bound.state.clone());
    let mut columns = vec![col(reference.column.as_str())];
    columns.extend(reference.has.iter().map(|h| col(h.field.as_str())));
    let frame = ctx.table(reference.table.as_str()).await?.select(columns)?;
    let mut found = Vec::new();
    for row in rows_of_batches(&frame.collect().await?)? {
        let id = row.first().and_then(Value::as_str).unwrap_or_default().to_string();
        let fits = match (&reference.has, row.get(1)) {
            (None, _) => true,
            (Some(has), Some(Value::Array(items))) => items.iter().any(|i| i.as_str() == Some(has.value.as_str())),
            (Some(has), Some(value)) => value.as_str() == Some(has.value.as_str()),
            (Some(_), None) => false,
        };
        found.push((id, fits));
    }
    Ok(found)
}
