//! Changes over an account set. A change is bound over the set's tables, so that its WHERE
//! picks exactly the rows a SELECT with the same WHERE answers, and each input row ends with
//! the account it came from (an INSERT or EXEC names it: `account`, `@account`). The rows are
//! then split by account and each account's part becomes a change of its own, checked and
//! sent with that account's token, its references and dry-run reads answered by that account
//! alone. Every part is read and checked before any part sends anything.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SessionState;
use futures::TryStreamExt;
use serde_json::Value;

use super::execute::{prepare, send};
use super::{Bound, Input};
use crate::api::ApiClient;
use crate::cancel::CancelToken;
use crate::error::{Error, Partial, Validation};
use crate::outcome::{Change, Outcome};
use crate::provider::Verb;

/// The column that names a row's account.
pub const ACCOUNT: &str = "account";

/// Which accounts a change acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A session of one account: no account anywhere.
    Single,
    /// An account set: each input row ends with its account's name.
    Set,
    /// One account's part of a change over a set.
    Account(String),
}

/// One account's part of a change over an account set.
pub struct Part {
    pub account: String,
    pub bound: Bound,
    pub api: Arc<ApiClient>,
}

/// One account's input rows, with each row's number in the statement's rows (from 1).
#[derive(Debug, PartialEq)]
pub struct AccountRows {
    pub account: String,
    pub rows: Vec<Vec<Value>>,
    pub numbers: Vec<usize>,
}

/// The input rows of a change over a set, grouped by the account each ends with, in the
/// order the set names its accounts; the account is taken off each row.
pub fn split(rows: Vec<Vec<Value>>, accounts: &[String]) -> Result<Vec<AccountRows>, Error> {
    let mut parts: Vec<AccountRows> =
        accounts.iter().map(|a| AccountRows { account: a.clone(), rows: vec![], numbers: vec![] }).collect();
    for (i, mut row) in rows.into_iter().enumerate() {
        let named = row.pop().unwrap_or(Value::Null);
        let Some(part) = parts.iter_mut().find(|p| named.as_str() == Some(p.account.as_str())) else {
            return Err(Error::Refused(format!(
                "row {}: the account {named} is not one of this session's: {}",
                i + 1,
                accounts.join(", ")
            )));
        };
        part.rows.push(row);
        part.numbers.push(i + 1);
    }
    parts.retain(|p| !p.rows.is_empty());
    Ok(parts)
}

/// Each part's result, or what stops them all: every part's problems with its values at
/// once (each named by its account), else the first other failure.
pub(super) fn each_or_problems<T>(results: Vec<(&str, Result<T, Error>)>) -> Result<Vec<T>, Error> {
    let mut done = Vec::with_capacity(results.len());
    let mut invalid: Option<Validation> = None;
    let mut other = None;
    for (account, result) in results {
        match result {
            Ok(value) => done.push(value),
            Err(Error::Validation(found)) => {
                let named = found.problems.iter().map(|(subject, v)| (format!("{account}: {subject}"), v.clone()));
                match &mut invalid {
                    Some(all) => all.problems.extend(named),
                    None => invalid = Some(Validation { problems: named.collect(), ..found }),
                }
            }
            Err(error) => {
                other.get_or_insert(error);
            }
        }
    }
    match (invalid, other) {
        (Some(invalid), _) => Err(Error::Validation(invalid)),
        (None, Some(error)) => Err(error),
        (None, None) => Ok(done),
    }
}

impl Bound {
    /// The part of this change (bound over a set) that one account's rows make, checked and
    /// read in `state`, that account's session.
    pub fn part(&self, rows: AccountRows, state: SessionState) -> Bound {
        let AccountRows { account, rows, numbers } = rows;
        Bound {
            verb: self.verb,
            provider: self.provider.clone(),
            resource: self.resource.clone(),
            method_name: self.method_name.clone(),
            columns: self.columns.clone(),
            input: Input::Rows(rows),
            constants: self.constants.clone(),
            defaulted: self.defaulted.clone(),
            protected_flag: self.protected_flag,
            keep_nulls: self.keep_nulls,
            returning: self.returning.clone(),
            await_ready: self.await_ready,
            await_timeout: self.await_timeout,
            upload: self.upload.clone(),
            set_change: self.set_change.clone(),
            state,
            scope: Scope::Account(account),
            row_numbers: numbers,
        }
    }
}

/// `batch` with a leading `account` column when the change is over a set.
pub fn with_account(batch: RecordBatch, scope: &Scope) -> Result<RecordBatch, Error> {
    let name = match scope {
        Scope::Single => return Ok(batch),
        Scope::Set => "",
        Scope::Account(name) => name.as_str(),
    };
    let mut fields = vec![Arc::new(Field::new(ACCOUNT, DataType::Utf8, false))];
    fields.extend(batch.schema().fields().iter().cloned());
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![name; batch.num_rows()]))];
    columns.extend(batch.columns().iter().cloned());
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
}

/// Reads and checks every part, then sends them one account after another. A failure
/// part-way names, account by account, what was sent and what was not.
pub async fn execute_parts(parts: Vec<Part>, cancel: &CancelToken) -> Result<Vec<(String, Outcome)>, Error> {
    let mut prepared = Vec::with_capacity(parts.len());
    for part in &parts {
        prepared.push((part.account.as_str(), prepare(&part.bound, &part.api, cancel).await));
    }
    let ready = each_or_problems(prepared)?;
    let subjects: Vec<Vec<String>> = parts
        .iter()
        .zip(&ready)
        .map(|(part, ready)| ready.calls.iter().map(|c| format!("{}: {}", part.account, c.subject)).collect())
        .collect();
    let (verb, resource) = match parts.first() {
        Some(part) => (part.bound.verb, part.bound.resource.full_name.clone()),
        None => return Ok(vec![]),
    };
    let several = parts.len() > 1;
    let mut outcomes = Vec::with_capacity(parts.len());
    let mut done: Vec<String> = Vec::new();
    for (index, (part, ready)) in parts.into_iter().zip(ready).enumerate() {
        let calls = ready.calls.len();
        let sent = send(part.bound, &part.api, ready, cancel).await;
        part.api.forget_reads();
        let cause = match sent {
            Ok(outcome) => {
                done.extend(with_ids(verb, &subjects[index], &outcome));
                outcomes.push((part.account, outcome));
                continue;
            }
            Err(cause) if !several => return Err(cause),
            Err(cause) => cause,
        };
        let named = |subject: &String| format!("{}: {subject}", part.account);
        let later = subjects[index + 1..].iter().flatten().cloned();
        let partial = match cause {
            Error::Partial(partial) => Partial {
                done: done.into_iter().chain(partial.done.iter().map(named)).collect(),
                failed: partial.failed.as_ref().map(named),
                not_sent: partial.not_sent.iter().map(named).chain(later).collect(),
                ..*partial
            },
            // The part failed at its one call, or before sending anything.
            cause => {
                let only_call = calls == 1 && matches!(cause, Error::Api(_));
                let own = &subjects[index];
                Partial {
                    verb,
                    resource,
                    done,
                    failed: only_call.then(|| own[0].clone()),
                    not_sent: own.iter().skip(usize::from(only_call)).cloned().chain(later).collect(),
                    cause,
                    cleanup: None,
                }
            }
        };
        return Err(Error::Partial(Box::new(partial)));
    }
    Ok(outcomes)
}

/// A part's calls as a report of what was done names them: a made row with its id.
fn with_ids(verb: Verb, subjects: &[String], outcome: &Outcome) -> Vec<String> {
    let ids = match outcome {
        Outcome::Changed(change) | Outcome::Rows { changed: Some(change), .. } => change.ids.as_slice(),
        _ => &[],
    };
    match matches!(verb, Verb::Insert | Verb::Exec) && ids.len() == subjects.len() {
        true => subjects.iter().zip(ids).map(|(subject, id)| format!("{subject} ({id})")).collect(),
        false => subjects.to_vec(),
    }
}

/// What a change did that sent no call.
pub fn nothing_changed(bound: &Bound) -> Change {
    Change {
        verb: bound.verb,
        resource: bound.resource.full_name.clone(),
        method: bound.method_name.clone(),
        count: 0,
        ids: vec![],
    }
}

/// The outcome of a change over a set, from its parts': one summary, and the rows each part
/// returned, account after account (`schema` when no part returned any).
pub async fn combined(
    outcomes: Vec<(String, Outcome)>,
    mut change: Change,
    schema: Option<SchemaRef>,
) -> Result<Outcome, Error> {
    let mut batches: Vec<RecordBatch> = Vec::new();
    for (_, outcome) in outcomes {
        let (rows, done) = match outcome {
            Outcome::Rows { stream, changed } => (Some(stream), changed),
            Outcome::Changed(done) => (None, Some(done)),
            Outcome::Done | Outcome::Copied(_) => (None, None),
        };
        if let Some(done) = done {
            change.count += done.count;
            change.ids.extend(done.ids);
        }
        if let Some(stream) = rows {
            batches.extend(stream.try_collect::<Vec<_>>().await?);
        }
    }
    let schema = batches.first().map(|b| b.schema()).or(schema);
    match schema {
        Some(schema) => Ok(Outcome::batch(concat_batches(&schema, &batches)?, Some(change))),
        None => Ok(Outcome::Changed(change)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_go_to_the_account_they_end_with_in_the_sets_order() {
        let set = ["acme", "globex", "initech"].map(String::from);
        let rows = vec![
            vec![json!("private/3"), json!("initech")],
            vec![json!("private/1"), json!("acme")],
            vec![json!("private/4"), json!("initech")],
        ];
        let parts = split(rows, &set).unwrap();
        let rows = |account: &str, rows: Vec<Vec<Value>>, numbers: Vec<usize>| AccountRows {
            account: account.into(),
            rows,
            numbers,
        };
        assert_eq!(
            parts,
            [
                rows("acme", vec![vec![json!("private/1")]], vec![2]),
                rows("initech", vec![vec![json!("private/3")], vec![json!("private/4")]], vec![1, 3]),
            ]
        );
    }

    #[test]
    fn a_row_of_an_account_outside_the_set_is_refused() {
        let set = ["acme".to_string()];
        let message = split(vec![vec![json!(1), json!("acme")], vec![json!(2), json!("umbrella")]], &set)
            .unwrap_err()
            .to_string();
        assert!(message.contains("row 2: the account \"umbrella\" is not one of this session's: acme"), "{message}");
        assert!(split(vec![vec![json!(1), Value::Null]], &set).is_err(), "a row without an account");
    }
}
