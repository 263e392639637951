//! The history store's files: plain Parquet, one directory per account, table and day,
//!
//! ```text
//! DIR/account=acme/table=linode.images.images/day=2026-12-07/20261207T013000Z-4242-1.parquet
//! ```
//!
//! Each file holds what one recording saw change: `observed_at`, `deleted` and the table's
//! columns (account, table and day are in the path, as Hive partitions, so that DuckDB,
//! pyarrow or Spark read them as columns). A file is written under a hidden name and renamed
//! into place whole: readers, which take only `*.parquet`, never see half of one, and two
//! recorders never write the same name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::Error;

/// Where the history is kept.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Files written by this process, told apart.
static WRITTEN: AtomicU64 = AtomicU64::new(0);

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store { root }
    }

    /// `--history DIR`, else `$XDG_DATA_HOME/imageql/history` (`~/.local/share/imageql/history`).
    pub fn default_dir() -> Option<PathBuf> {
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))?;
        Some(data.join("imageql/history"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn table_dir(&self, account: &str, table: &str) -> PathBuf {
        self.root.join(format!("account={}", encoded(account))).join(format!("table={table}"))
    }

    /// Every file of an account's table, oldest first (their names start with the time).
    pub fn files(&self, account: &str, table: &str) -> Result<Vec<PathBuf>, Error> {
        Ok(self.days(account, table)?.into_iter().flat_map(|(_, files)| files).collect())
    }

    /// The days of an account's table, oldest first, each with its files, oldest first.
    pub fn days(&self, account: &str, table: &str) -> Result<Vec<(NaiveDate, Vec<PathBuf>)>, Error> {
        let entries = match std::fs::read_dir(self.table_dir(account, table)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.failed("read", e)),
        };
        let mut days = Vec::new();
        for entry in entries {
            let dir = entry.map_err(|e| self.failed("read", e))?.path();
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(day) = name.strip_prefix("day=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            else {
                continue;
            };
            let mut files = Vec::new();
            for file in std::fs::read_dir(&dir).map_err(|e| self.failed("read", e))? {
                let path = file.map_err(|e| self.failed("read", e))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if name.ends_with(".parquet") && !name.starts_with('.') {
                    files.push(path);
                }
            }
            files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
            days.push((day, files));
        }
        days.sort_by_key(|(day, _)| *day);
        Ok(days)
    }

    /// What the files of an account's table hold, oldest first.
    pub fn read(&self, account: &str, table: &str) -> Result<Vec<RecordBatch>, Error> {
        self.read_files(&self.files(account, table)?)
    }

    /// What `files` hold, in their order.
    pub fn read_files(&self, files: &[PathBuf]) -> Result<Vec<RecordBatch>, Error> {
        let mut batches = Vec::new();
        for path in files {
            let file = File::open(path).map_err(|e| self.failed("read", e))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|builder| builder.build())
                .map_err(|e| Error::Query(format!("the history file {} is not Parquet: {e}", path.display())))?;
            for batch in reader {
                batches.push(batch?);
            }
        }
        Ok(batches)
    }

    /// Adds what a recording at `observed_at` saw change: written whole, then renamed.
    pub fn append(
        &self,
        account: &str,
        table: &str,
        observed_at: DateTime<Utc>,
        batch: &RecordBatch,
    ) -> Result<PathBuf, Error> {
        let name = format!(
            "{}-{}-{}.parquet",
            observed_at.format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id(),
            WRITTEN.fetch_add(1, Ordering::Relaxed)
        );
        self.write(account, table, observed_at.date_naive(), &name, batch)
    }

    /// Writes `batch` as the file `name` of a day: under a hidden name, then renamed.
    pub fn write(
        &self,
        account: &str,
        table: &str,
        day: NaiveDate,
        name: &str,
        batch: &RecordBatch,
    ) -> Result<PathBuf, Error> {
        let dir = self.table_dir(account, table).join(format!("day={}", day.format("%Y-%m-%d")));
        std::fs::create_dir_all(&dir).map_err(|e| self.failed("write", e))?;
        let hidden = dir.join(format!(".{name}.tmp"));
        let written = (|| {
            let file = File::create(&hidden)?;
            let mut writer = ArrowWriter::try_new(file.try_clone()?, batch.schema(), None)?;
            writer.write(batch)?;
            writer.close()?;
            file.sync_all()?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&hidden);
            return Err(Error::Query(format!("cannot write the history file in {}: {e}", dir.display())));
        }
        let path = dir.join(name);
        std::fs::rename(&hidden, &path).map_err(|e| self.failed("write", e))?;
        Ok(path)
    }

    /// The accounts the store has a history of.
    pub fn accounts(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return vec![] };
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("account=").map(decoded)).collect();
        names.sort();
        names
    }

    fn failed(&self, what: &str, error: std::io::Error) -> Error {
        Error::Query(format!("cannot {what} the history store {}: {error}", self.root.display()))
    }
}

/// A profile's name as a directory name: letters, digits, `.`, `-` and `_` as they are, any
/// other byte as `%XX` (a name is never a path).
fn encoded(name: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => out.push(byte as char),
            b'.' if !out.is_empty() => out.push('.'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn decoded(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{decoded, encoded};

    #[test]
    fn an_account_name_is_never_a_path() {
        for name in ["acme", "cust.one", "../etc", "a/b", "..", "naïve", "%41"] {
            let dir = encoded(name);
            assert!(!dir.contains('/') && !dir.starts_with('.'), "{name} → {dir}");
            assert_eq!(decoded(&dir), name);
        }
        assert_eq!(encoded("cust.one"), "cust.one");
    }
}
