//! `--data-dir`: the state as one JSON file, replaced atomically (write, fsync, rename,
//! fsync the directory) before a change is acknowledged, so a kill -9 loses nothing the
//! sandbox answered with success. The file holds every account's token, so only its owner
//! may read it; a saved state the sandbox could not run with is refused at start.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::clock::MAX_OFFSET;
use super::store::State;

const STATE_FILE: &str = "state.json";

#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
}

impl DataDir {
    /// Opens (creating) the directory and reads the state saved there, if any.
    pub fn open(dir: &Path) -> std::io::Result<(DataDir, Option<State>)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(STATE_FILE);
        let state = match fs::read(&path) {
            Ok(bytes) => {
                let invalid = |e: String| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
                };
                let state: State = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
                if !(0..=MAX_OFFSET).contains(&state.clock_offset) {
                    return Err(invalid(format!("clock_offset must be from 0 to {MAX_OFFSET} seconds")));
                }
                Some(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok((DataDir { dir: dir.to_path_buf() }, state))
    }

    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        let temp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut file = File::options().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
        // A file left by an older version keeps its mode through `open`.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.dir.join(STATE_FILE))?;
        // The rename itself must reach the disk too.
        File::open(&self.dir)?.sync_all()
    }
}
