//! Calls whose body replaces a whole set the row holds (the regions of an image, declared as
//! `completeSet` in the provider file): the API removes the members left out, so the current
//! set is read before the call, and a member is removed only when the statement names it in
//! the remove parameter. `@add` spells "the current ones and these" without listing them.

use serde_json::Value;

use super::Bound;
use super::execute::calls;
use crate::api::{ApiClient, Request};
use crate::error::Error;
use crate::provider::{CompleteSet, SetMembers};

/// The members a statement adds and removes by name.
#[derive(Debug, Clone, Default)]
pub struct SetChange {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// What one call does to the set, found from the row as it is now.
#[derive(Debug, Clone)]
pub struct SetPlan {
    pub field: String,
    /// The request that read the row.
    pub read: String,
    pub current: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl SetPlan {
    /// The columns a statement's result gets.
    pub const COLUMNS: [&'static str; 2] = ["added", "removed"];

    /// The plan's columns for a statement's result: (name, members as `a, b`).
    pub fn columns(&self) -> [(&'static str, String); 2] {
        let [added, removed] = Self::COLUMNS;
        [(added, self.added.join(", ")), (removed, self.removed.join(", "))]
    }
}

/// The members an EXEC parameter names: `'eu-west'`, `'eu-west, us-mia'` or a JSON list.
pub fn members(parameter: &str, value: &Value) -> Result<Vec<String>, Error> {
    let refused =
        || Error::Refused(format!("@{parameter} takes names: '{parameter}-a', 'a, b' or a JSON list, not {value}"));
    let text = value.as_str().ok_or_else(refused)?;
    let names: Vec<String> = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(text).map_err(|_| refused())?
    } else {
        text.split(',').map(|n| n.trim().to_string()).collect()
    };
    let mut unique: Vec<String> = Vec::new();
    for name in names.into_iter().filter(|n| !n.is_empty()) {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    if unique.is_empty() {
        return Err(refused());
    }
    Ok(unique)
}

/// The members a row holds now, leaving out those already being removed.
fn current_members(spec: &SetMembers, row: &Value) -> Vec<String> {
    let items = row.get(&spec.field).and_then(Value::as_array).into_iter().flatten();
    items
        .filter(|item| {
            let status = spec.status.as_ref().and_then(|s| item.get(s)).and_then(Value::as_str);
            !status.is_some_and(|s| spec.leaving.iter().any(|l| l == s))
        })
        .filter_map(|item| item.get(&spec.item).and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The whole set a statement gives in the body, when it gives one.
fn given(spec: &CompleteSet, value: &Value) -> Result<Option<Vec<String>>, Error> {
    let list = match value {
        Value::Null => return Ok(None),
        Value::String(text) => serde_json::from_str::<Value>(text).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let names: Option<Vec<String>> =
        list.as_array().and_then(|items| items.iter().map(|i| i.as_str().map(str::to_string)).collect());
    names.map(Some).ok_or_else(|| Error::Refused(format!("{} takes a list of names, not {value}", spec.field)))
}

/// Reads each row the calls act on, fills in the set each call sends and says what it adds
/// and removes; refuses a removal the statement does not name. Nothing is changed here.
pub async fn resolve(bound: &Bound, api: &ApiClient, rows: &mut [Vec<Value>]) -> Result<Vec<SetPlan>, Error> {
    let (Some(change), Some(spec)) = (&bound.set_change, &bound.method().complete_set) else { return Ok(vec![]) };
    let position = |name: &str| bound.columns.iter().position(|c| c == name);
    let field = position(&spec.field).expect("binding gives the set's column");
    let key = bound.resource.key().ok_or_else(|| {
        Error::Refused(format!(
            "{} has no method that reads a row by id, needed for {}",
            bound.resource.full_name, spec.field
        ))
    })?;
    let id_column = position(&key.param.name)
        .ok_or_else(|| Error::Refused(format!("{} needs @{}", bound.method_name, key.param.name)))?;
    let mut plans = Vec::with_capacity(rows.len());
    for row in rows.iter_mut() {
        let whole = given(spec, &row[field])?;
        if whole.is_some() && !change.add.is_empty() {
            return Err(Error::Refused(format!(
                "give either the whole list of {} or @{}, not both: @{} adds to the current ones",
                spec.field, spec.add, spec.add
            )));
        }
        if whole.is_some() {
            // What can be found wrong without reading is found first.
            calls(bound, vec![row.clone()]).await?;
        }
        let id = row[id_column].as_str().map(str::to_string).unwrap_or_else(|| row[id_column].to_string());
        let read = key.path(&id).to_string();
        let current = current_members(&spec.current, &api.read(&Request::get(read.clone())).await?);
        let about = format!("{id} is in {}", if current.is_empty() { "none".into() } else { current.join(", ") });
        if let Some(absent) = change.remove.iter().find(|r| !current.contains(r)) {
            return Err(Error::Refused(format!("@{} names {absent}, which it cannot remove: {about}", spec.remove)));
        }
        let mut target = whole.clone().unwrap_or_else(|| current.clone());
        if let Some(kept) = change.remove.iter().find(|r| target.contains(r) && whole.is_some()) {
            return Err(Error::Refused(format!("{kept} is both in {} and in @{}: say which", spec.field, spec.remove)));
        }
        target.extend(change.add.iter().filter(|a| !current.contains(a)).cloned());
        target.retain(|m| !change.remove.contains(m));
        let unmeant: Vec<&String> =
            current.iter().filter(|c| !target.contains(c) && !change.remove.contains(c)).collect();
        if !unmeant.is_empty() {
            let unmeant: Vec<&str> = unmeant.iter().map(|s| s.as_str()).collect();
            return Err(Error::Refused(format!(
                "{} would remove {id} from {}, as {} is the complete list and {about}; to remove those, add @{}='{}'; \
                 to add without removing, give @{}='…' instead of the list",
                bound.method_name,
                unmeant.join(", "),
                spec.field,
                spec.remove,
                unmeant.join(", "),
                spec.add
            )));
        }
        if target.is_empty() {
            return Err(Error::Refused(format!(
                "this would leave {id} in no {}: delete it instead (DELETE FROM {} WHERE …)",
                spec.field, bound.resource.full_name
            )));
        }
        let added = target.iter().filter(|t| !current.contains(t)).cloned().collect();
        let removed = current.iter().filter(|c| !target.contains(c)).cloned().collect();
        row[field] = Value::Array(target.into_iter().map(Value::String).collect());
        plans.push(SetPlan { field: spec.field.clone(), read, current, added, removed });
    }
    Ok(plans)
}
