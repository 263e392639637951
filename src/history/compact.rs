//! Keeping the store small: after a recording, the files of each past day are merged into
//! one, and with a retention, the days before it are folded into the last observation of
//! each row still there (so the rows keep their history from then on, and a row unchanged
//! for longer than the retention is not recorded again as new). Merged files are written
//! whole and renamed before their sources go; one recorder at a time compacts a table (a
//! lock file; one left by a killed recorder expires).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;
use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use serde_json::Value;

use super::store::Store;
use crate::error::Error;
use crate::mutate::rows_of_batches;
use crate::provider::Resource;

/// How long a compaction lock holds off others, at most.
const LOCK_EXPIRES: Duration = Duration::from_secs(600);

/// Merges the past days of an account's table, and folds the days before `keep_from`.
pub fn compact(
    store: &Store,
    resource: &Resource,
    account: &str,
    today: NaiveDate,
    keep_from: Option<NaiveDate>,
) -> Result<(), Error> {
    let table = &resource.full_name;
    let Some(_lock) = Lock::take(&store.table_dir(account, table))? else { return Ok(()) };
    let days = store.days(account, table)?;
    if let Some(keep_from) = keep_from {
        let old: Vec<&(NaiveDate, Vec<PathBuf>)> = days.iter().filter(|(day, _)| *day < keep_from).collect();
        if let Some((last_day, _)) = old.last() {
            let files: Vec<PathBuf> = old.iter().flat_map(|(_, files)| files.clone()).collect();
            let folded = last_observations(resource, &store.read_files(&files)?)?;
            replace(store, &files, folded, account, table, *last_day)?;
        }
    }
    for (day, files) in store.days(account, table)? {
        if day < today && files.len() > 1 {
            let merged = store.read_files(&files)?;
            let schema = merged.first().map(|b| b.schema());
            let batch = match schema {
                Some(schema) => Some(concat_batches(&schema, &merged)?),
                None => None,
            };
            replace(store, &files, batch, account, table, day)?;
        }
    }
    Ok(())
}

/// Writes `batch` (when there is one) in place of `files`, then removes them.
fn replace(
    store: &Store,
    files: &[PathBuf],
    batch: Option<RecordBatch>,
    account: &str,
    table: &str,
    day: NaiveDate,
) -> Result<(), Error> {
    // Named as the first file it replaces, so that it sorts where they did.
    let first = files.first().and_then(|f| f.file_name()).and_then(|n| n.to_str()).unwrap_or("0");
    if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
        let name = format!("{}-compacted.parquet", first.trim_end_matches(".parquet"));
        store.write(account, table, day, &name, &batch)?;
    }
    for file in files {
        std::fs::remove_file(file).map_err(|e| Error::Query(format!("cannot remove {}: {e}", file.display())))?;
        if let Some(dir) = file.parent() {
            // An emptied day goes too; one with files left stays.
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(())
}

/// Of stored observations (oldest first), the last of each row, unless it said the row was gone.
fn last_observations(resource: &Resource, batches: &[RecordBatch]) -> Result<Option<RecordBatch>, Error> {
    let Some(schema) = batches.first().map(|b| b.schema()) else { return Ok(None) };
    let all = concat_batches(&schema, batches)?;
    let key = resource.key().map(|k| k.column).unwrap_or("id");
    let keys = rows_of_batches(&[all.project(&[schema.index_of(key)?])?])?;
    let deleted = rows_of_batches(&[all.project(&[schema.index_of(super::DELETED)?])?])?;
    let mut last: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        last.insert(key.first().map(Value::to_string).unwrap_or_default(), i);
    }
    let mut kept: Vec<u32> =
        last.values().filter(|i| deleted[**i].first() != Some(&Value::Bool(true))).map(|i| *i as u32).collect();
    kept.sort();
    Ok(Some(take_record_batch(&all, &UInt32Array::from(kept))?))
}

/// A table's compaction lock, released when dropped.
struct Lock(PathBuf);

impl Lock {
    fn take(dir: &Path) -> Result<Option<Lock>, Error> {
        let path = dir.join(".compacting");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(Some(Lock(path))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .unwrap_or_default();
                    if age < LOCK_EXPIRES {
                        return Ok(None);
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::Query(format!("cannot lock {}: {e}", dir.display()))),
            }
        }
        Ok(None)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
