/*! `imageql serve`: the Postgres wire protocol over the engine, so that psql, drivers and BI
tools query images.

A server is shared by people and tools it cannot trust, so everything a client sends is
checked before it is used: messages are framed with size limits ([`wire`]) and decoded with
every count checked ([`frontend`]), parameters decoded against their own bytes ([`params`]),
logins throttled per address and cancel requests matched to a random secret ([`access`]).
Each connection authenticates with a password (the API token its queries run with, or with
`--token-from-env` a password the operator sets) and gets an engine [`Session`] of its own in
the Postgres dialect, under the remote [`Policy`]: no files of the server unless the operator
allows a directory, no tables, views or settings of the engine, and a memory bound per
statement within one the server's statements share. Every statement goes through the same
[`Session::prepare`] and [`Session::run`] as on the command line ([`connection`]); errors carry
the SQLSTATE of their [`Error`]. */

mod access;
mod catalog;
mod composite;
mod connection;
mod copy;
mod frontend;
mod functions;
mod params;
mod reply;
mod settings;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::api::{self, Token};
use crate::engine::{FileAccess, Memory, Policy, Session};
use crate::error::Error;
use crate::provider::Registry;
use crate::scan::ScanOptions;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The first line printed is the
    /// connection URL.
    #[arg(long, default_value = "127.0.0.1:5466", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Run every connection's queries with this process's LINODE_TOKEN; connections then
    /// authenticate with the password in --password-file
    #[arg(long, requires = "password_file")]
    pub token_from_env: bool,
    /// Serve an account set: every connection reads these profiles (`a,b`, a wildcard, a
    /// group of config.toml), each with its own token; connections give --password-file's password
    #[arg(long = "profile", value_name = "SET", requires = "password_file", conflicts_with = "token_from_env")]
    pub profiles: Option<String>,
    /// Serve every profile of both configuration files as one account set
    #[arg(long, requires = "password_file", conflicts_with_all = ["token_from_env", "profiles"])]
    pub all_profiles: bool,
    /// The password connections give with --token-from-env or an account set (the file's first line)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// TLS certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept passwords from other machines without TLS: they then cross the network in clear
    #[arg(long)]
    pub insecure_listen: bool,
    /// Let clients read and write files in DIR (COPY … TO 'file', @file uploads); paths are
    /// taken inside it and may not lead out of it. Without it clients touch no files
    #[arg(long, value_name = "DIR")]
    pub allow_files: Option<PathBuf>,
    /// Accept an empty password as an anonymous session that sees public images only
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Most connections at once; more are refused (53300)
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,
    /// MiB all statements of the server may hold together (sorts, joins, aggregates)
    #[arg(long, default_value_t = 1024, value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    pub memory_limit: u64,
    /// MiB one statement may hold
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub statement_memory: u64,
    /// Record the served accounts into the history store this often (600, 90s, 10min, 2h),
    /// as `imageql record` does; needs --token-from-env or an account set
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub record_every: Option<Duration>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    crate::engine::duration("--record-every", text).map_err(|e| e.to_string())
}

/// How connections prove who they are, and the token their queries then run with.
#[derive(Debug, Clone)]
enum Auth {
    /// The password is the API token; an empty one is an anonymous session if `anonymous`.
    TokenIsPassword { anonymous: bool },
    /// The server's own token; connections give the operator's password.
    Fixed { token: Option<Token>, password: String },
}

/// What every connection shares.
struct Shared {
    registry: Arc<Registry>,
    base_url: Option<String>,
    scan: ScanOptions,
    /// How long one API call may take.
    timeout: Duration,
    /// The response cache and rate budget: a dashboard's panels cost the API one listing.
    answers: api::Shared,
    auth: Auth,
    /// The database clients name: the provider (`linode`).
    database: String,
    files: FileAccess,
    /// Cleartext passwords are accepted from other machines.
    insecure: bool,
    tls: Option<TlsAcceptor>,
    memory: Memory,
    catalog: Arc<PgCatalogStaticTables>,
    /// One permit per authenticated connection.
    slots: Arc<Semaphore>,
    backends: access::Backends,
    logins: access::Logins,
    tokens: access::Tokens,
    /// The account set every connection reads; empty for one account.
    accounts: Vec<crate::engine::AccountOptions>,
    /// The history store connections read, when the server holds the accounts' tokens (a
    /// connection with its own token reads no history: the store holds other accounts').
    history: Option<crate::engine::HistoryOptions>,
    record_every: Option<Duration>,
}

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the listener; checks the options first (a usage error names what is wrong).
    pub async fn bind(
        args: &ServeArgs,
        registry: Arc<Registry>,
        base_url: Option<String>,
        env_token: Option<Token>,
        scan: ScanOptions,
        timeout: Duration,
        answers: api::Shared,
        accounts: Vec<crate::engine::AccountOptions>,
    ) -> Result<Server, Error> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        if !args.listen.ip().is_loopback() && tls.is_none() && !args.insecure_listen {
            return Err(Error::Usage(format!(
                "refusing to listen on {} without TLS: passwords are API tokens; give --tls-cert and --tls-key, \
                 or --insecure-listen to accept them in clear",
                args.listen
            )));
        }
        let auth = match (&args.password_file, args.token_from_env) {
            (Some(file), true) => Auth::Fixed { token: env_token, password: read_password(file)? },
            // Each account of the set has its own token.
            (Some(file), false) if !accounts.is_empty() => Auth::Fixed { token: None, password: read_password(file)? },
            (Some(_), false) => {
                return Err(Error::Usage("--password-file goes with --token-from-env or an account set".into()));
            }
            (None, _) => Auth::TokenIsPassword { anonymous: args.allow_anonymous },
        };
        let files = match &args.allow_files {
            Some(dir) => FileAccess::within(dir)?,
            None => FileAccess::Nowhere,
        };
        if args.statement_memory > args.memory_limit {
            return Err(Error::Usage(format!(
                "--statement-memory {} is more than --memory-limit {}",
                args.statement_memory, args.memory_limit
            )));
        }
        let memory = Memory {
            statement: (args.statement_memory << 20) as usize,
            shared: Some(Arc::new(GreedyMemoryPool::new((args.memory_limit << 20) as usize))),
            spill: false,
        };
        let database = registry.providers.keys().next().cloned().unwrap_or_else(|| "imageql".into());
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
        let shared = Shared {
            registry,
            base_url,
            scan,
            timeout,
            answers,
            auth,
            database,
            files,
            insecure: args.insecure_listen,
            tls,
            memory,
            catalog: catalog::static_tables()?,
            slots: Arc::new(Semaphore::new(args.max_connections as usize)),
            backends: access::Backends::default(),
            logins: access::Logins::default(),
            tokens: access::Tokens::default(),
            accounts,
            history: None,
            record_every: args.record_every,
        };
        if args.record_every.is_some() && matches!(shared.auth, Auth::TokenIsPassword { .. }) {
            return Err(Error::Usage(
                "--record-every records the accounts the server holds tokens for: give --token-from-env or \
                 --profile SET, with --password-file"
                    .into(),
            ));
        }
        Ok(Server { listener, shared: Arc::new(shared) })
    }

    /// The history store: connections read it and `--record-every` records into it, when
    /// the server holds the tokens of the accounts it serves.
    pub fn with_history(mut self, history: Option<crate::engine::HistoryOptions>) -> Server {
        if let Some(shared) = Arc::get_mut(&mut self.shared)
            && matches!(shared.auth, Auth::Fixed { .. })
        {
            shared.history = history;
        }
        self
    }

    /// `postgresql://host:port/database`, without credentials.
    pub fn url(&self) -> String {
        let addr = self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        format!("postgresql://{addr}/{}", self.shared.database)
    }

    /// Serves connections until the process is interrupted.
    pub async fn run(self) -> Result<(), Error> {
        if let (Some(every), Some(history), Auth::Fixed { token, .. }) =
            (self.shared.record_every, &self.shared.history, &self.shared.auth)
        {
            let (shared, history, token) = (self.shared.clone(), history.clone(), token.clone());
            tokio::spawn(async move { record_every(shared, history, token, every).await });
        }
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            // A failed accept (too many open files) is the peer's problem, not the server's.
            let Ok((socket, _)) = accepted else { continue };
            tokio::spawn(connection::serve(self.shared.clone(), socket));
        }
    }
}

/// Records the served accounts every `every`, the first time at once; each recording's
/// outcome is a line on standard error.
async fn record_every(
    shared: Arc<Shared>,
    history: crate::engine::HistoryOptions,
    token: Option<Token>,
    every: Duration,
) {
    let store = crate::history::Store::new(history.dir.clone());
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let recorded = match session(&shared, token.clone(), "the server's LINODE_TOKEN").await {
            Ok(session) => crate::history::record(&session, &store, &history.account, None).await,
            Err(e) => Err(e),
        };
        match recorded {
            Ok(recorded) => {
                let written: usize = recorded.iter().map(|r| r.written).sum();
                eprintln!("imageql serve: recorded {} tables, {written} rows written", recorded.len());
            }
            Err(e) => eprintln!("imageql serve: recording failed: {e}"),
        }
    }
}

/// The engine session of an authenticated connection.
async fn session(shared: &Shared, token: Option<Token>, token_source: &str) -> Result<Session, Error> {
    let options = crate::engine::SessionOptions {
        history: shared.history.clone(),
        base_url: shared.base_url.clone(),
        token,
        registry: shared.registry.clone(),
        scan: shared.scan,
        progress: api::Progress::silent(),
        default_catalog: Some(shared.database.clone()),
        timeout: shared.timeout,
        shared: shared.answers.clone(),
        dialect: crate::sql::Dialect::Postgres,
        policy: Policy::remote(shared.files.clone()),
        token_source: Some(token_source.to_string()),
        memory: shared.memory.clone(),
        // A connection gives every field itself: no profile stands behind it.
        defaults: crate::mutate::Defaults::new(),
        accounts: shared.accounts.clone(),
    };
    Session::new(options).await
}

fn read_password(file: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::Usage(format!("cannot read the password file {}: {e}", file.display())))?;
    match text.lines().next().map(str::trim) {
        Some(password) if !password.is_empty() => Ok(password.to_string()),
        _ => Err(Error::Usage(format!("the password file {} is empty", file.display()))),
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let unusable = |what: &Path, e: &dyn std::fmt::Display| Error::Usage(format!("{}: {e}", what.display()));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unusable(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| unusable(key, &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
    // Clients that start with TLS (sslnegotiation=direct) name the protocol this way.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
