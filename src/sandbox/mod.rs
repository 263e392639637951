/*! The sandbox: a local implementation of the Linode Images API over real HTTP.

`imageql sandbox` serves it until interrupted; `imageql --sandbox` starts it in-process on a
free loopback port and talks to it over HTTP like any other API. What it emulates, and how
faithfully, is described in `docs/sandbox.md`. */

mod http;
mod seed;
mod store;

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::provider::{Registry, Resource};
use seed::SeedOptions;
use store::State;

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
    /// One more account with its own token and no private images (repeatable).
    #[arg(long = "account", value_name = "NAME:TOKEN", value_parser = parse_account)]
    pub accounts: Vec<(String, String)>,
    /// Add N generated private images (deterministic), for scale tests.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed_images: u64,
    /// Milliseconds added to every response, to model a real network.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub latency_ms: u64,
    /// Append one JSON object per request to FILE.
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,
}

impl Default for SandboxArgs {
    fn default() -> Self {
        SandboxArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: DEFAULT_TOKEN.into(),
            accounts: vec![],
            seed_images: 0,
            latency_ms: 0,
            access_log: None,
        }
    }
}

fn parse_account(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, token)) if !name.is_empty() && !token.is_empty() => Ok((name.into(), token.into())),
        _ => Err("expected NAME:TOKEN".into()),
    }
}

#[derive(Debug)]
struct Options {
    latency: Duration,
}

/// Shared by every request handler.
#[derive(Clone)]
struct App {
    state: Arc<Mutex<State>>,
    images: Arc<Resource>,
    options: Arc<Options>,
    access_log: Option<Arc<Mutex<File>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the access log {path}: {source}")]
    AccessLog { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Providers(#[from] crate::provider::LoadError),
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
        let registry = Registry::embedded()?;
        let (_, images) = registry
            .resource("linode", "images", "images")
            .expect("the embedded registry describes linode.images.images");
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
        let state = seed::initial_state(&SeedOptions {
            token: args.token.clone(),
            extra_accounts: args.accounts.clone(),
            generated_images: args.seed_images,
        });
        let app = App {
            state: Arc::new(Mutex::new(state)),
            images: Arc::new(images.clone()),
            options: Arc::new(Options { latency: Duration::from_millis(args.latency_ms) }),
            access_log,
        };
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|source| SandboxError::Listen { addr: args.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Listen { addr: args.listen, source })?;
        let router = http::router(app);
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

/// `imageql sandbox`: print the base URL as the first line, then serve.
pub async fn serve(args: &SandboxArgs) -> Result<(), SandboxError> {
    let sandbox = Sandbox::start(args).await?;
    let mut stdout = std::io::stdout().lock();
    // Scripts wait for this line to learn the port, so it must not sit in a buffer.
    let _ = writeln!(stdout, "{}", sandbox.base_url).and_then(|_| stdout.flush());
    drop(stdout);
    sandbox.run_until_interrupted().await
}
