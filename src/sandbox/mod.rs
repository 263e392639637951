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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::provider::{HttpVerb, Registry};
use app::{App, Limits, Options};
use persist::DataDir;
use seed::SeedOptions;
use store::Pace;
use wire::RateLimiter;

/// The seeded account's token unless `--token` says otherwise.
pub const DEFAULT_TOKEN: &str = "sandbox-token";

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port. The first line printed is the API base URL.
    #[arg(long, default_value = "127.0.0.1:8765", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Bearer token of the seeded account; other tokens get 401, no token sees public images only.
    #[arg(long, default_value = DEFAULT_TOKEN, hide_default_value = true)]
    pub token: String,
    /// One more account with its own token, instances and disks, and no private images (repeatable).
    #[arg(long = "account", value_name = "NAME:TOKEN", value_parser = parse_account)]
    pub accounts: Vec<(String, String)>,
    /// Keep the state in DIR across restarts (default: in memory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Add N generated private images (deterministic), for scale tests.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed_images: u64,
    /// Milliseconds added to every response, to model a real network.
    #[arg(long, default_value_t = 0, value_name = "N")]
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
    /// Fraction of requests answered with 500, 502 or 503.
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_fraction)]
    pub fail_rate: f64,
    /// Custom images an account may hold.
    #[arg(long, default_value_t = 25, value_name = "N")]
    pub max_images: usize,
    /// Storage an account's custom images may use, in GB (size × regions).
    #[arg(long, default_value_t = 150, value_name = "GB")]
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
            accounts: vec![],
            data_dir: None,
            seed_images: 0,
            latency_ms: 0,
            access_log: None,
            time_scale: 1.0,
            rate_limit_list: None,
            fail_rate: 0.0,
            max_images: 25,
            max_total_gb: 150,
            providers: None,
        }
    }
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
    #[error("sandbox server failed: {0}")]
    Serve(std::io::Error),
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
        let mut tokens: Vec<&str> = vec![args.token.as_str()];
        for (name, token) in &args.accounts {
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
            token: args.token.clone(),
            extra_accounts: args.accounts.clone(),
            generated_images: args.seed_images,
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
            state: Arc::new(Mutex::new(state)),
            registry,
            options: Arc::new(Options {
                latency: Duration::from_millis(args.latency_ms),
                pace: Pace { scale: args.time_scale },
                limits: Limits { max_images: args.max_images, max_total_mb: args.max_total_gb * 1024 },
                rate_limit: rate_limit.unwrap_or(u32::MAX),
                rate_limit_list: list_limit,
                fail_rate: args.fail_rate,
            }),
            data_dir,
            access_log,
            limiter: Arc::new(Mutex::new(RateLimiter::default())),
            origin: Arc::new(format!("http://{addr}")),
        };
        let router = router::router(app).map_err(SandboxError::Serving)?;
        let router = router.into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Sandbox { base_url: format!("http://{addr}/v4"), token: args.token.clone(), task })
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
