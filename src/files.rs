//! Where statements may read and write the files of this machine: `COPY … TO 'file'` and the
//! `@file` of an upload. A front end's policy decides (the command line: anywhere; a server:
//! nowhere, or inside the one directory its operator allows, with `..` and symbolic links
//! leading out of it refused). Refusals name the path as the statement wrote it, never where
//! the allowed directory is.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, FileRefusal, Forbidden};

/// Where statements may read and write files of this machine (`COPY … TO`, `@file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAccess {
    Anywhere,
    Nowhere,
    /// Inside this directory only (canonical: symbolic links resolved); relative paths are
    /// taken from it.
    Within(PathBuf),
}

impl FileAccess {
    /// Files inside `directory`, which must exist.
    pub fn within(directory: &Path) -> Result<FileAccess, Error> {
        let canonical = directory
            .canonicalize()
            .map_err(|e| Error::Usage(format!("--allow-files {}: {e}", directory.display())))?;
        match canonical.is_dir() {
            true => Ok(FileAccess::Within(canonical)),
            false => Err(Error::Usage(format!("--allow-files {}: not a directory", directory.display()))),
        }
    }

    /// The path a statement may write `written` at (a file or a directory to create).
    pub fn writable(&self, written: &str) -> Result<PathBuf, Error> {
        let path = self.jailed(written)?;
        // A symbolic link in the last place would lead the write anywhere.
        if matches!(self, FileAccess::Within(_)) && path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(outside(written));
        }
        Ok(path)
    }

    /// The file a statement may read at `written`.
    pub fn readable(&self, written: &str) -> Result<PathBuf, Error> {
        let path = self.jailed(written)?;
        match self {
            FileAccess::Within(directory) => match path.canonicalize() {
                Ok(real) if real.starts_with(directory) => Ok(real),
                Ok(_) => Err(outside(written)),
                // Missing: reported by the reader, with the path as written.
                Err(_) => Ok(path),
            },
            _ => Ok(path),
        }
    }

    /// How to name `path` to the user: inside an allowed directory, relative to it.
    pub fn shown(&self, path: &Path) -> String {
        match self {
            FileAccess::Within(directory) => match path.strip_prefix(directory) {
                Ok(relative) if relative.as_os_str().is_empty() => ".".into(),
                Ok(relative) => relative.display().to_string(),
                Err(_) => "a directory outside the allowed one".into(),
            },
            _ => path.display().to_string(),
        }
    }

    /// `written` resolved against the allowed directory, or refused.
    fn jailed(&self, written: &str) -> Result<PathBuf, Error> {
        let directory = match self {
            FileAccess::Anywhere => return Ok(PathBuf::from(written)),
            FileAccess::Nowhere => {
                return Err(Error::Forbidden(Forbidden::File { path: written.into(), why: FileRefusal::NoFiles }));
            }
            FileAccess::Within(directory) => directory,
        };
        let given = Path::new(written);
        let relative = given.strip_prefix(directory).unwrap_or(given);
        if relative.is_absolute() || written.contains("://") {
            return Err(outside(written));
        }
        // Lexically first (`..` never leaves), then through the links of what exists.
        let mut path = directory.clone();
        for part in relative.components() {
            match part {
                Component::Normal(name) => path.push(name),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(outside(written)),
            }
        }
        let existing = path.ancestors().find(|p| p.exists()).unwrap_or(directory);
        match existing.canonicalize() {
            Ok(real) if real.starts_with(directory) => Ok(path),
            _ => Err(outside(written)),
        }
    }
}

fn outside(written: &str) -> Error {
    Error::Forbidden(Forbidden::File { path: written.into(), why: FileRefusal::Outside })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_inside_the_allowed_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("reports")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
        let access = FileAccess::within(&root).unwrap();
        assert_eq!(access.writable("out.csv").unwrap(), root.join("out.csv"));
        assert_eq!(access.writable("reports/./a.csv").unwrap(), root.join("reports/a.csv"));
        assert_eq!(access.writable(&root.join("b.csv").display().to_string()).unwrap(), root.join("b.csv"));
        for written in ["/tmp/x.csv", "../x.csv", "reports/../../x.csv", "escape/x.csv", "passwd", "s3://b/x"] {
            assert!(
                matches!(
                    access.writable(written),
                    Err(Error::Forbidden(Forbidden::File { why: FileRefusal::Outside, .. }))
                ),
                "{written}"
            );
        }
        assert!(access.readable("passwd").is_err() && access.readable("escape/hosts").is_err());
        assert!(matches!(
            FileAccess::Nowhere.readable("a.gz"),
            Err(Error::Forbidden(Forbidden::File { why: FileRefusal::NoFiles, .. }))
        ));
    }
}
