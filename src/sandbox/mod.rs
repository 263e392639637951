/*! The sandbox: a local implementation of the Linode Images API over real HTTP.

`imageql sandbox` serves it until interrupted; `imageql --sandbox` starts it in-process on a
free loopback port and talks to it over HTTP like any other API. What it emulates, and how
faithfully, is described in `docs/sandbox.md`.

The modules depend on each other in one direction: `router` mounts the handlers (`images`,
`instances`, `generic`, `clock`), which build on `app` (shared state and options), `wire`
(the API's envelopes, paging and filters) and `store` (the typed state, with `seed` and
`persist` making and keeping it). */

mod app;
mod clock;
mod deploy;
mod fault;
mod generic;
mod images;
mod instances;
mod persist;
mod router;
mod seed;
mod store;
mod upload;
mod wire;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::provider::{HttpVerb, Registry};
use app::{App, Limits, Options};
use fault::Faults;
use persist::DataDir;
use seed::SeedOptions;
use store::Pace;
use wire::RateLimiter;

/// The seeded account's token unless `--token` says otherwise.
pub const DEFAULT_TOKEN: &str = "sandbox-token";
/// Generated images are held in memory: this many take a few hundred MB.
const MAX_SEED_IMAGES: u64 = 200_000;
/// An account limit beyond which the check means nothing.
const MAX_IMAGES_LIMIT: u64 = 1_000_000;
/// A petabyte: far beyond any account, and far from overflowing when counted in MB.
const MAX_TOTAL_GB: u64 = 1 << 20;

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port. The first line printed is the API base URL.
    #[arg(long, default_value = "127.0.0.1:8765", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Bearer token of the seeded account; other tokens get 401, no token sees public images only.
    #[arg(long, env = "IMAGEQL_SANDBOX_TOKEN", hide_env_values = true, default_value = DEFAULT_TOKEN, hide_default_value = true)]
    pub token: String,
    /// Read the seeded account's token from FILE (its first line), so that it does not show in `ps`.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// One more account with its own token, instances and disks, and no private images (repeatable).
    #[arg(long = "account", value_name = "NAME:TOKEN", value_parser = parse_account)]
    pub accounts: Vec<(String, String)>,
    /// Accounts from FILE, one `NAME:TOKEN` per line (`#` comments and blank lines skipped), each
    /// with its own instances and `--seed-images` generated images of its own.
    #[arg(long, value_name = "FILE")]
    pub accounts_file: Option<PathBuf>,
    /// Keep the state in DIR across restarts (default: in memory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Add N generated private images (deterministic), for scale tests.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u64).range(..=MAX_SEED_IMAGES))]
    pub seed_images: u64,
    /// Milliseconds added to every response, to model a real network.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u64).range(..=600_000))]
    pub latency_ms: u64,
    /// Append one JSON object per request to FILE.
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// Multiply every simulated delay (captures, replication) by F; 0 makes them instant.
    #[arg(long, default_value_t = 1.0, value_name = "F", value_parser = parse_scale)]
    pub time_scale: f64,
    /// Image list requests (GET /images) allowed per minute and token; more get 429; 0 means
    /// unlimited [default: the provider files' limit for image listing, 20 as the real API's].
    #[arg(long, value_name = "N")]
    pub rate_limit_list: Option<u32>,
    /// Fraction of API requests that meet a fault: 429, 5xx, a reset or truncated body, a stall,
    /// or a list that changes between pages (see docs/sandbox.md).
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_fraction)]
    pub fail_rate: f64,
    /// How long a stalled response (a fault) waits before its 504, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(..=600_000))]
    pub stall_ms: u64,
    /// Custom images an account may hold.
    #[arg(long, default_value_t = 25, value_name = "N", value_parser = clap::value_parser!(u64).range(..=MAX_IMAGES_LIMIT))]
    pub max_images: u64,
    /// Instances an account may have.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u64).range(..=100_000))]
    pub max_instances: u64,
    /// Storage an account's custom images may use, in GB (size × regions).
    #[arg(long, default_value_t = 150, value_name = "GB", value_parser = clap::value_parser!(u64).range(..=MAX_TOTAL_GB))]
    pub max_total_gb: u64,
    /// Serve the resources the provider files in DIR describe, instead of the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub providers: Option<PathBuf>,
}

impl Default for SandboxArgs {
    fn default() -> Self {
        SandboxArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: DEFAULT_TOKEN.into(),
            token_file: None,
            accounts: vec![],
            accounts_file: None,
            data_dir: None,
            seed_images: 0,
            latency_ms: 0,
            access_log: None,
            time_scale: 1.0,
            rate_limit_list: None,
            fail_rate: 0.0,
            stall_ms: 30_000,
            max_images: 25,
            max_instances: 50,
            max_total_gb: 150,
            providers: None,
        }
    }
}

/// The `NAME:TOKEN` lines of an accounts file.
fn read_accounts(path: &std::path::Path) -> Result<Vec<(String, String)>, SandboxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SandboxError::Accounts(format!("cannot read the accounts file {}: {e}", path.display())))?;
    let lines = text.lines().enumerate().map(|(i, line)| (i + 1, line.trim()));
    lines
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| {
            parse_account(line)
                .map_err(|why| SandboxError::Accounts(format!("{} line {number}: {why}", path.display())))
        })
        .collect()
}

fn parse_account(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, token)) if !name.is_empty() && !token.is_empty() => Ok((name.into(), token.into())),
        _ => Err("expected NAME:TOKEN".into()),
    }
}

fn parse_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1000.0).contains(&f) => Ok(f),
        _ => Err("expected a number from 0 to 1000".into()),
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("expected a fraction between 0 and 1".into()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the access log {path}: {source}")]
    AccessLog { path: PathBuf, source: std::io::Error },
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Providers(#[from] crate::provider::LoadError),
    /// Provider files that load but that the sandbox cannot serve.
    #[error("cannot serve the provider files: {0}")]
    Serving(String),
    #[error("{0}")]
    Accounts(String),
    #[error("cannot read the token file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
    #[error("sandbox server failed: {0}")]
    Serve(std::io::Error),
}

/// How long a client may take to send a request's headers before its connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the task is dropped. Each is served by hyper with a timeout on
/// reading headers, so half-sent requests cannot hold connections open.
async fn serve(listener: TcpListener, router: axum::Router) -> Result<(), std::io::Error> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors or a connection gone before it was accepted: go on.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), request)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Above the router's own limits, so that their answers carry the API's envelope.
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_headers(256);
            // Failed connections (resets, timeouts) concern only their client.
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

impl SandboxError {
    /// A mistake in how the sandbox was started (its options or their files).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SandboxError::Providers(_)
                | SandboxError::Serving(_)
                | SandboxError::Accounts(_)
                | SandboxError::TokenFile { .. }
        )
    }
}

/// The first line of a token file, which must hold one.
fn read_token(path: &std::path::Path) -> Result<String, SandboxError> {
    let failed = |reason: String| SandboxError::TokenFile { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    match token.is_empty() {
        true => Err(failed("it is empty; write the token on its first line".into())),
        false => Ok(token.to_string()),
    }
}

/// A running sandbox; dropping it stops the server.
pub struct Sandbox {
    pub base_url: String,
    pub token: String,
    task: JoinHandle<Result<(), std::io::Error>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sandbox {
    pub async fn start(args: &SandboxArgs) -> Result<Sandbox, SandboxError> {
        let registry = Arc::new(match &args.providers {
            Some(dir) => Registry::from_dir(dir)?,
            None => Registry::embedded()?,
        });
        // One limit for every request, so the strictest of the providers'.
        let rate_limits = || registry.providers.values().filter_map(|p| p.rate_limits.as_ref());
        let rate_limit = rate_limits().map(|r| r.per_minute).min();
        let list_limit = match args.rate_limit_list {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                rate_limits().filter_map(|r| r.class_for(HttpVerb::Get, "/images", true)).map(|c| c.per_minute).min()
            }
        };
        let token = match &args.token_file {
            None => args.token.clone(),
            Some(path) => read_token(path)?,
        };
        let seeded_accounts = match &args.accounts_file {
            Some(path) => read_accounts(path)?,
            None => vec![],
        };
        let mut names: Vec<&str> = vec!["default"];
        for (name, _) in args.accounts.iter().chain(&seeded_accounts) {
            if names.contains(&name.as_str()) {
                return Err(SandboxError::Accounts(format!("two accounts are named {name}")));
            }
            names.push(name);
        }
        let mut tokens: Vec<&str> = vec![token.as_str()];
        for (name, token) in args.accounts.iter().chain(&seeded_accounts) {
            if tokens.contains(&token.as_str()) {
                return Err(SandboxError::Accounts(format!("account {name} reuses a token another account has")));
            }
            tokens.push(token);
        }
        let access_log = match &args.access_log {
            None => None,
            Some(path) => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SandboxError::AccessLog { path: path.clone(), source })?;
                Some(Arc::new(Mutex::new(file)))
            }
        };
        let seed = SeedOptions {
            token: token.clone(),
            extra_accounts: args.accounts.clone(),
            generated_images: args.seed_images,
            seeded_accounts,
        };
        let (data_dir, state) = match &args.data_dir {
            None => (None, seed::initial_state(&seed, store::wall_clock())),
            Some(path) => {
                let data_error = |source| SandboxError::DataDir { path: path.clone(), source };
                let (dir, saved) = DataDir::open(path).map_err(data_error)?;
                let state = match saved {
                    Some(state) => seed::reconcile(state, &seed),
                    None => seed::initial_state(&seed, store::wall_clock()),
                };
                dir.save(&state).map_err(data_error)?;
                (Some(Arc::new(dir)), state)
            }
        };
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|source| SandboxError::Listen { addr: args.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Listen { addr: args.listen, source })?;
        let app = App {
            state: Arc::new(RwLock::new(state)),
            registry,
            options: Arc::new(Options {
                latency: Duration::from_millis(args.latency_ms),
                pace: Pace { scale: args.time_scale },
                limits: Limits { max_images: args.max_images as usize, max_total_mb: args.max_total_gb * 1024 },
                max_instances: args.max_instances as usize,
                rate_limit: rate_limit.unwrap_or(u32::MAX),
                rate_limit_list: list_limit,
                faults: Faults { rate: args.fail_rate, stall: Duration::from_millis(args.stall_ms) },
            }),
            data_dir,
            access_log,
            limiter: Arc::new(Mutex::new(RateLimiter::default())),
            origin: Arc::new(format!("http://{addr}")),
        };
        let router = router::router(app).map_err(SandboxError::Serving)?;
        let task = tokio::spawn(serve(listener, router));
        Ok(Sandbox { base_url: format!("http://{addr}/v4"), token, task })
    }

    /// Serves until the process is interrupted or the server fails.
    pub async fn run_until_interrupted(mut self) -> Result<(), SandboxError> {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            result = &mut self.task => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SandboxError::Serve(e)),
                Err(e) => Err(SandboxError::Serve(std::io::Error::other(e))),
            },
        }
    }
}
