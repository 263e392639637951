/*! `--output-dir DIR`: each result set of a script in a file of its own, which any tool loads
as it is (one CSV header per file). A file is named by the statement's `-- name: NAME` comment,
or else by its number in the script (`3.csv`); statements without rows (SET, COPY, CREATE VIEW)
write none. Every name is checked before the first statement runs, and a file is written under
a hidden name and renamed once complete: a failing statement leaves no partial file. */

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::outcome::Outcome;
use crate::output::{Format, print};

/// Where each statement's result set goes.
pub struct OutputDir {
    dir: PathBuf,
    format: Format,
}

impl OutputDir {
    pub fn new(dir: &Path, format: Format) -> OutputDir {
        OutputDir { dir: dir.to_path_buf(), format }
    }

    /// Creates the directory when it does not exist.
    pub fn create(&self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::Usage(format!("--output-dir {}: {e}", self.dir.display())))
    }

    /// The file of each statement (given with where it is, `report.sql:12`), in order; a name
    /// given twice or one that is not a plain file name is a usage error.
    pub fn files(&self, statements: &[(String, &str)]) -> Result<Vec<PathBuf>, Error> {
        let extension = match self.format {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Table | Format::Text => "txt",
        };
        let mut files = Vec::with_capacity(statements.len());
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (i, (at, statement)) in statements.iter().enumerate() {
            let name = match result_name(statement) {
                Some(name) => {
                    plain_name(name).map_err(|why| Error::Usage(format!("{at}: `-- name: {name}` {why}")))?;
                    // `-- name: costs.csv` is `costs`.
                    name.strip_suffix(&format!(".{extension}")).unwrap_or(name).to_string()
                }
                None => (i + 1).to_string(),
            };
            if let Some(first) = seen.insert(name.clone(), at) {
                return Err(Error::Usage(format!(
                    "{first} and {at} both write {name}.{extension}: give them different `-- name:`s"
                )));
            }
            files.push(self.dir.join(format!("{name}.{extension}")));
        }
        Ok(files)
    }

    /// Writes `outcome` to `file` when it has rows (or is a change's summary); `true` when it
    /// wrote the file.
    pub async fn write(&self, outcome: Outcome, file: &Path) -> Result<bool, Error> {
        if matches!(outcome, Outcome::Done | Outcome::Copied(_)) {
            return Ok(false);
        }
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let partial = file.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let failed = |source| Error::File { path: file.display().to_string(), source };
        let result = async {
            let mut out = BufWriter::new(std::fs::File::create(&partial).map_err(failed)?);
            print(outcome, self.format, &mut out).await?;
            out.into_inner().map_err(|e| failed(e.into_error()))?.sync_all().map_err(failed)?;
            std::fs::rename(&partial, file).map_err(failed)
        };
        let written = result.await;
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written.map(|_| true)
    }
}

/// The name the last `-- name: NAME` comment before the statement gives its result.
pub fn result_name(statement: &str) -> Option<&str> {
    statement
        .lines()
        .map(str::trim)
        .take_while(|line| line.is_empty() || line.starts_with("--"))
        .filter_map(|line| line.trim_start_matches('-').trim().strip_prefix("name:"))
        .last()
        .map(str::trim)
}

/// Why `name` cannot name a file in the directory, if it cannot.
fn plain_name(name: &str) -> Result<(), &'static str> {
    // Room for the extension and the hidden partial name within a file name's 255 bytes.
    const LONGEST: usize = 200;
    if name.is_empty() {
        Err("is empty")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        Err("cannot name a file: use letters, digits, `_`, `-` and `.`")
    } else if name.starts_with('.') {
        Err("cannot start with a dot (a hidden file)")
    } else if name.len() > LONGEST {
        Err("is longer than 200 characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_name_comment_names_the_result() {
        assert_eq!(result_name("-- name: by_region\nSELECT 1"), Some("by_region"));
        assert_eq!(result_name("-- costs per image\n--name:costs\nSELECT 1"), Some("costs"));
        assert_eq!(result_name("SELECT 1 -- name: late"), None);
        assert_eq!(result_name("SELECT 1\n-- name: inside"), None);
        assert_eq!(result_name("-- name: first\n-- name: last\nSELECT 1"), Some("last"));
    }

    #[test]
    fn names_are_plain_and_distinct() {
        let dir = OutputDir { dir: PathBuf::from("out"), format: Format::Csv };
        let at = |texts: &[&'static str]| texts.iter().map(|t| ("-e".to_string(), *t)).collect::<Vec<_>>();
        let files = dir.files(&at(&["SELECT 1", "-- name: b\nSELECT 2", "-- name: c.csv\nSELECT 3"])).unwrap();
        let expected = ["out/1.csv", "out/b.csv", "out/c.csv"].map(PathBuf::from);
        assert_eq!(files, expected);
        let long = format!("-- name: {}\nSELECT 1", "a".repeat(201));
        for refused in ["-- name: ../x\nSELECT 1", "-- name: .hidden\nSELECT 1", "-- name:\nSELECT 1", long.as_str()] {
            assert!(dir.files(&[("-e".to_string(), refused)]).is_err(), "{refused}");
        }
        assert!(dir.files(&at(&["-- name: 2\nSELECT 1", "SELECT 2"])).is_err());
        assert!(dir.files(&at(&["-- name: 2.csv\nSELECT 1", "SELECT 2"])).is_err());
    }
}
