/*! `imageql serve`: the Postgres wire protocol over the engine, so that psql, drivers and BI
tools query images.

Each connection authenticates with a password (the API token its queries run with, or with
`--token-from-env` a password the operator sets) and gets an engine [`Session`] of its own,
whose DataFusion context also holds a `pg_catalog` for the introspection queries tools send.
Statements only the engine runs (SHOW/DESCRIBE, INSERT/REPLACE/DELETE/EXEC and EXPLAIN of
them) go to the session; everything else is planned by `datafusion-postgres` in the same
context, which understands Postgres' dialect. Errors are sent with the SQLSTATE of their
[`Error`] and the text the command line prints. */

mod compat;
mod connection;

use datafusion_postgres::pgwire;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::api::{self, Token};
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
    /// The password connections give with --token-from-env (the file's first line)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// TLS certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS (passwords then cross the network in clear)
    #[arg(long)]
    pub insecure_listen: bool,
}

/// How connections prove who they are, and the token their queries then run with.
#[derive(Debug, Clone)]
enum Auth {
    /// The password is the API token.
    TokenIsPassword,
    /// The server's own token; connections give the operator's password.
    Fixed { token: Option<Token>, password: String },
}

/// What every connection shares: the registry, where the API is, how to authenticate.
#[derive(Debug)]
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
    cancels: Arc<ConnectionManager>,
    /// The connections by their cancel key, for the cancel requests that name them.
    connections: Mutex<HashMap<(i32, Vec<u8>), Weak<connection::Connection>>>,
}

impl Shared {
    fn register(&self, pid: i32, secret: &[u8], connection: &Arc<connection::Connection>) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|_, c| c.strong_count() > 0);
        connections.insert((pid, secret.to_vec()), Arc::downgrade(connection));
    }

    fn connection(&self, pid: i32, secret: &[u8]) -> Option<Arc<connection::Connection>> {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.get(&(pid, secret.to_vec())).and_then(Weak::upgrade)
    }
}

pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
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
    ) -> Result<Server, Error> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        if !args.listen.ip().is_loopback() && tls.is_none() && !args.insecure_listen {
            return Err(Error::Usage(format!(
                "refusing to listen on {} without TLS: passwords are API tokens; give --tls-cert and --tls-key, \
                 or --insecure-listen",
                args.listen
            )));
        }
        let auth = match (&args.password_file, args.token_from_env) {
            (Some(file), true) => Auth::Fixed { token: env_token, password: read_password(file)? },
            (Some(_), false) => {
                return Err(Error::Usage("--password-file goes with --token-from-env".into()));
            }
            (None, _) => Auth::TokenIsPassword,
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
            cancels: Arc::default(),
            connections: Mutex::default(),
        };
        Ok(Server { listener, tls, shared: Arc::new(shared) })
    }

    /// `postgresql://host:port/database`, without credentials.
    pub fn url(&self) -> String {
        let addr = self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        format!("postgresql://{addr}/{}", self.shared.database)
    }

    /// Serves connections until the process is interrupted.
    pub async fn run(self) -> Result<(), Error> {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            // A failed accept (too many open files) is the peer's problem, not the server's.
            let Ok((socket, _)) = accepted else { continue };
            let handlers = connection::Handlers::new(self.shared.clone());
            let tls = self.tls.clone();
            tokio::spawn(async move {
                // The connection's errors were sent to its client.
                let _ = pgwire::tokio::process_socket(socket, tls, handlers).await;
            });
        }
    }
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
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
