//! Test harness: a real `imageql sandbox` process on a loopback port, its access log, and
//! runs of the real `imageql` binary against it.
//!
//! The seeded account's token is a canary: every run of imageql checks that it appears
//! nowhere in what imageql printed, and every sandbox checks its access log and what it
//! printed when it stops, so the whole suite is a search for a leaked token.
#![allow(dead_code)] // each test crate uses a different part of the harness

pub mod pgwire;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// The seeded account's token in every test: a canary that must never be printed or logged.
pub const TOKEN: &str = "canary-3f9d1c7e5b-token";
/// The in-process sandbox's (`--sandbox`) token, checked like the canary.
pub const DEFAULT_TOKEN: &str = "sandbox-token";

/// Panics when `text` holds a token.
pub fn assert_no_token(what: &str, text: &str) {
    for token in [TOKEN, DEFAULT_TOKEN] {
        assert!(!text.contains(token), "the token {token} leaked into {what}:\n{text}");
    }
}

/// Panics when a file under `dir` holds a token, except owner-only files the sandbox keeps its
/// accounts in.
pub fn assert_no_token_in_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_no_token_in_dir(&path);
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
        let owner_only = path.metadata().is_ok_and(|m| m.permissions().mode() & 0o077 == 0);
        if path.file_name().is_some_and(|n| n == "state.json") && owner_only {
            continue;
        }
        assert_no_token(&path.display().to_string(), &text);
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_imageql")
}

pub struct SandboxProcess {
    child: Child,
    pub url: String,
    pub access_log: PathBuf,
    printed: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl SandboxProcess {
    pub fn start(extra: &[&str]) -> SandboxProcess {
        SandboxProcess::start_with(&[], extra)
    }

    /// Starts `imageql GLOBAL… sandbox … EXTRA…`. Image lists are unlimited unless EXTRA
    /// gives `--rate-limit-list`: only the tests of rate limits run under the real one.
    pub fn start_with(global: &[&str], extra: &[&str]) -> SandboxProcess {
        let dir = tempfile::tempdir().unwrap();
        let access_log = dir.path().join("access.log");
        let own_token = extra.iter().any(|a| *a == "--token" || *a == "--token-file");
        let unlimited: &[&str] = if extra.contains(&"--rate-limit-list") { &[] } else { &["--rate-limit-list", "0"] };
        let mut child = Command::new(binary())
            .args(global)
            .args(["sandbox", "--listen", "127.0.0.1:0", "--access-log"])
            .arg(&access_log)
            .args(if own_token { vec![] } else { vec!["--token", TOKEN] })
            .args(unlimited)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the imageql binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/v4"), "first line is the base URL: {url:?}");
        // What the sandbox prints later is kept for the canary check (and passed on).
        let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let keep = |printed: std::sync::Arc<std::sync::Mutex<String>>, mut from: Box<dyn BufRead + Send>| {
            std::thread::spawn(move || {
                let mut line = String::new();
                while from.read_line(&mut line).is_ok_and(|n| n > 0) {
                    eprint!("{line}");
                    printed.lock().unwrap().push_str(&line);
                    line.clear();
                }
            })
        };
        let readers = vec![keep(printed.clone(), Box::new(stdout)), keep(printed.clone(), Box::new(stderr))];
        SandboxProcess { child, url, access_log, printed, readers, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process without warning (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The server's root (`http://127.0.0.1:port`), for paths outside the API.
    pub fn origin(&self) -> String {
        self.url.trim_end_matches("/v4").to_string()
    }

    /// Every request logged so far.
    pub fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("access log lines are JSON"))
            .collect()
    }

    /// Requests logged after the first `skip`.
    pub fn log_since(&self, skip: usize) -> Vec<Value> {
        self.log().into_iter().skip(skip).collect()
    }

    /// Runs imageql against this sandbox with the seeded account's token.
    pub fn imageql(&self, args: &[&str]) -> Run {
        self.imageql_with_token(Some(TOKEN), args)
    }

    /// The rows of one statement (run with `-o ndjson`), which must succeed.
    pub fn rows(&self, sql: &str) -> Vec<Value> {
        self.imageql(&["-o", "ndjson", "-e", sql]).rows()
    }

    pub fn imageql_with_token(&self, token: Option<&str>, args: &[&str]) -> Run {
        let mut command = imageql_command(&self._dir.path().join("home"));
        command.arg("--api-url").arg(&self.url).args(args).stdin(Stdio::null());
        match token {
            Some(t) => command.env("LINODE_TOKEN", t),
            None => command.env_remove("LINODE_TOKEN"),
        };
        Run(command.output().expect("imageql runs"))
    }

    pub fn client(&self) -> Http {
        Http { base: self.url.clone(), client: reqwest::Client::new() }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if !std::thread::panicking() {
            assert_no_token("the sandbox's output", &self.printed.lock().unwrap());
            assert_no_token("the access log", &std::fs::read_to_string(&self.access_log).unwrap_or_default());
        }
    }
}

/// A running `imageql serve`, killed when dropped.
pub struct ServeProcess {
    child: Child,
    /// `postgresql://127.0.0.1:PORT/linode`, as the server printed it.
    pub url: String,
}

impl ServeProcess {
    pub fn start(sandbox: &SandboxProcess, extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--api-url", &sandbox.url])
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("LINODE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("imageql serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().to_string();
        assert!(url.starts_with("postgresql://127.0.0.1:") && url.ends_with("/linode"), "first line: {url:?}");
        ServeProcess { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`, for raw connections.
    pub fn address(&self) -> String {
        self.url.trim_start_matches("postgresql://").trim_end_matches("/linode").to_string()
    }

    /// The URL with a user name, for clients that take the password separately.
    pub fn url_for(&self, user: &str) -> String {
        self.url.replacen("postgresql://", &format!("postgresql://{user}@"), 1)
    }

    /// psql with `password`, running each of `commands` in one session.
    pub fn psql(&self, password: &str, commands: &[&str]) -> Output {
        let mut command = Command::new("psql");
        command.arg(self.url_for("reporter")).args(["-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=0"]);
        for c in commands {
            command.args(["-c", c]);
        }
        command.env("PGPASSWORD", password).env("PGCONNECT_TIMEOUT", "10").output().expect("psql runs")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The imageql binary with `home` as its home directory, so that no configuration file of
/// the machine's user gives it a token or defaults.
pub fn imageql_command(home: &Path) -> Command {
    let mut command = Command::new(binary());
    command.env("HOME", home).env_remove("XDG_CONFIG_HOME").env_remove("XDG_DATA_HOME").env_remove("LINODE_CLI_CONFIG");
    command
}

/// A finished run of imageql; dropping it checks that it printed no token.
pub struct Run(pub Output);

impl Drop for Run {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_token("imageql's stdout", &self.stdout());
            assert_no_token("imageql's stderr", &self.stderr());
        }
    }
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> String {
        assert_eq!(self.code(), 0, "imageql failed:\nstdout: {}\nstderr: {}", self.stdout(), self.stderr());
        self.stdout()
    }

    /// Asserts exit code 1 with an empty stdout, and returns stderr.
    pub fn fails(&self) -> String {
        assert_eq!(self.code(), 1, "expected failure:\nstdout: {}\nstderr: {}", self.stdout(), self.stderr());
        self.stderr()
    }

    /// stdout of `-o ndjson` as JSON objects.
    pub fn rows(&self) -> Vec<Value> {
        self.ok().lines().map(|l| serde_json::from_str(l).expect("ndjson")).collect()
    }
}

/// A plain HTTP client for talking to the sandbox directly.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

/// Status and JSON body of a response; panics unless the body is JSON.
pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("body is JSON: {body:?}")))
}

impl Http {
    /// Sends `method path` with the seeded account's token and a JSON body.
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as(Some(TOKEN), method, path, body).await
    }

    pub async fn send_as(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_of(request.send().await.unwrap()).await
    }

    /// Polls GET `path` until `done` holds for the body, for at most `seconds`.
    pub async fn poll(&self, path: &str, seconds: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            let (status, body) = self.get(path, Some(TOKEN), None).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "{path} never reached the expected state: {status} {body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>, filter: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(f) = filter {
            request = request.header("X-Filter", f);
        }
        json_of(request.send().await.unwrap()).await
    }

    /// Every image the token can see, page by page, in the API's order.
    pub async fn all_images(&self, token: Option<&str>) -> Vec<Value> {
        let mut images = Vec::new();
        let mut page = 1;
        loop {
            let (status, body) = self.get(&format!("/images?page={page}&page_size=500"), token, None).await;
            assert_eq!(status, 200, "{body}");
            images.extend(body["data"].as_array().unwrap().iter().cloned());
            if page >= body["pages"].as_u64().unwrap() {
                return images;
            }
            page += 1;
        }
    }
}

/// The official clients pinned by these tests.
pub const PYTHON_CLIENTS: [&str; 2] = ["linode-cli==5.69.0", "linode-api4==5.48.0"];

/// Python clients of the Postgres wire protocol pinned by the server tests, at their current
/// releases.
pub const POSTGRES_CLIENTS: [&str; 5] =
    ["psycopg[binary]==3.3.9", "SQLAlchemy==2.1.9", "pandas==3.1.1", "pgcli==4.7.1", "asyncpg==0.32.0"];

/// node-postgres and its cursor and stream packages, at their current releases.
pub const NODE_CLIENTS: [&str; 3] = ["pg@8.23.1", "pg-cursor@2.22.0", "pg-query-stream@4.17.0"];

/// A virtualenv with linode-cli and linode_api4, made once per build directory (needs pip
/// to reach PyPI the first time).
pub fn python_clients() -> PathBuf {
    virtualenv("python-clients", &PYTHON_CLIENTS)
}

/// An independent Parquet reader, at its current release.
pub const PARQUET_READERS: [&str; 1] = ["duckdb==2.0.1"];

/// A virtualenv with DuckDB, made once per build directory.
pub fn parquet_readers() -> PathBuf {
    virtualenv("parquet-readers", &PARQUET_READERS)
}

/// A virtualenv with psycopg, SQLAlchemy, pandas, pgcli and asyncpg, made once per build
/// directory.
pub fn postgres_clients() -> PathBuf {
    virtualenv("postgres-clients", &POSTGRES_CLIENTS)
}

/// A `node_modules` with [`NODE_CLIENTS`], installed once per build directory (needs npm to
/// reach the registry the first time).
pub fn node_clients() -> PathBuf {
    installed("node-clients", &NODE_CLIENTS, |dir, packages| {
        let mut args = vec!["install", "--no-audit", "--no-fund", "--silent", "--prefix", dir.to_str().unwrap()];
        args.extend(packages);
        vec![(PathBuf::from("npm"), args.iter().map(|a| a.to_string()).collect())]
    })
    .join("node_modules")
}

/// pgJDBC's jar: `PGJDBC_JAR`, else where Debian's libpostgresql-jdbc-java puts it.
pub fn pgjdbc_jar() -> PathBuf {
    let jar =
        std::env::var_os("PGJDBC_JAR").map_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"), PathBuf::from);
    assert!(
        jar.is_file(),
        "{} is missing: install libpostgresql-jdbc-java (.ci/run does) or set PGJDBC_JAR",
        jar.display()
    );
    jar
}

fn virtualenv(name: &str, packages: &[&str]) -> PathBuf {
    installed(name, packages, |venv, packages| {
        let venv_path = venv.to_str().unwrap().to_string();
        let mut pip = vec!["install", "--quiet", "--disable-pip-version-check"];
        pip.extend(packages);
        vec![
            (PathBuf::from("python3"), vec!["-m".into(), "venv".into(), "--clear".into(), venv_path]),
            (venv.join("bin/pip"), pip.iter().map(|a| a.to_string()).collect()),
        ]
    })
}

/// A directory under the build directory holding `packages`, made by `commands` the first
/// time (and whenever the packages change); runs of the tests at once wait for each other.
fn installed(
    name: &str,
    packages: &[&str],
    commands: impl Fn(&Path, &[&str]) -> Vec<(PathBuf, Vec<String>)>,
) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let ready = dir.join("ready");
    let wanted = packages.join(" ");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if std::fs::read_to_string(&ready).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    for (program, args) in commands(&dir, packages) {
        let out = Command::new(&program).args(&args).output().unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed (the client tests install {wanted}):\n{}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(&ready, &wanted).unwrap();
    dir
}

/// Gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A gzip bomb: 97 members of 64 MiB of zeros, about 6 MB that inflate to 6.06 GiB.
pub fn gzip_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 64 << 20]).unwrap();
    encoder.finish().unwrap().repeat(97)
}

/// A raw disk image of `megabytes` MiB holding an ext4 filesystem (made by mkfs.ext4), gzip'd
/// as Linode expects uploads; returns the .gz file.
pub fn ext4_image(dir: &Path, megabytes: u64) -> PathBuf {
    let raw = dir.join("disk.img");
    std::fs::File::create(&raw).unwrap().set_len(megabytes << 20).unwrap();
    let mkfs =
        ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("mkfs.ext4");
    let status = Command::new(mkfs).args(["-q", "-F"]).arg(&raw).status().expect("mkfs.ext4 (e2fsprogs) is installed");
    assert!(status.success());
    let gz = dir.join("disk.img.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&raw).unwrap())).unwrap();
    gz
}

/// A filter with its `+and` / `+or` lists sorted, so that equal filters compare equal.
pub fn normalize(filter: &Value) -> Value {
    match filter {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("+and" | "+or", Value::Array(items)) => {
                            let mut items: Vec<Value> = items.iter().map(normalize).collect();
                            items.sort_by_key(|i| i.to_string());
                            Value::Array(items)
                        }
                        _ => normalize(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}
