/*! The command line: options, the front ends (`-e`, `-f`, standard input, `sandbox`) and exit
codes (0 ok, 1 a statement failed, 2 usage error). */

use std::collections::HashMap;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::api::{DEFAULT_CACHE_TTL, Shared, Token};
use crate::engine::{Session, SessionOptions};
use crate::error::Error;
use crate::output::{self, Format};
use crate::provider::Registry;
use crate::sandbox::{Sandbox, SandboxArgs};
use crate::scan::ScanOptions;
use crate::sql::split_statements;
use crate::{shell, template};

#[derive(Debug, Parser)]
#[command(
    name = "imageql",
    version,
    about = "SQL over Linode images, with a built-in sandbox of the Linode Images API",
    after_help = "Without -e or -f, imageql starts an interactive shell on a terminal, and otherwise reads \
                  statements from standard input. LINODE_TOKEN holds the API token.\n\
                  Exit codes: 0 ok, 1 a statement failed, 2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run SQL and exit (repeatable; after any -f files)
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    execute: Vec<String>,
    /// Run a script and exit; stops at the first failing statement (repeatable)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Result format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Run against a sandbox started in this process instead of the real API
    #[arg(long)]
    sandbox: bool,
    /// API base URL [default: the provider's, https://api.linode.com/v4]
    #[arg(long, value_name = "URL", conflicts_with = "sandbox")]
    api_url: Option<String>,
    /// Read provider files from DIR instead of the built-in ones
    #[arg(long, value_name = "DIR")]
    providers: Option<PathBuf>,
    /// Evaluate every predicate and LIMIT locally; scans list everything
    #[arg(long)]
    no_pushdown: bool,
    /// Fill `{{ NAME }}` in statements with VALUE (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Rows per page when listing (clamped to what the API allows)
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    page_size: u32,
    /// Reuse an API answer for this many seconds within the process; a change drops them
    #[arg(long, default_value_t = DEFAULT_CACHE_TTL.as_secs(), value_name = "SECONDS")]
    cache_ttl: u64,
    /// Read everything from the API afresh (the same as --cache-ttl 0)
    #[arg(long, conflicts_with = "cache_ttl")]
    no_cache: bool,
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else { return Err("expected NAME=VALUE".into()) };
    let name = name.trim();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err(format!("{name:?} cannot appear in a {{{{ placeholder }}}}: use letters, digits, _ and ."));
    }
    Ok((name.to_string(), value.to_string()))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the sandbox API until interrupted; the first line printed is its base URL
    Sandbox(SandboxArgs),
}

pub async fn run(cli: Cli) -> ExitCode {
    match run_inner(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imageql: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run_inner(cli: Cli) -> Result<(), Error> {
    if let Some(Command::Sandbox(args)) = &cli.command {
        // `imageql --providers DIR sandbox` means `imageql sandbox --providers DIR`.
        let args = SandboxArgs { providers: args.providers.clone().or(cli.providers), ..args.clone() };
        let sandbox = Sandbox::start(&args).await?;
        let mut stdout = std::io::stdout().lock();
        // Scripts wait for this line to learn the port, so it must not sit in a buffer.
        let _ = writeln!(stdout, "{}", sandbox.base_url).and_then(|_| stdout.flush());
        drop(stdout);
        return Ok(sandbox.run_until_interrupted().await?);
    }
    let mut scripts: Vec<(String, String)> = Vec::new();
    for path in &cli.files {
        // A script that cannot be read is a mistake on the command line.
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("cannot read the script {}: {e}", path.display())))?;
        scripts.push((path.display().to_string(), text));
    }
    for (i, sql) in cli.execute.iter().enumerate() {
        let origin = if cli.execute.len() == 1 { "-e".to_string() } else { format!("-e #{}", i + 1) };
        scripts.push((origin, sql.clone()));
    }
    let interactive = scripts.is_empty() && std::io::stdin().is_terminal();
    if scripts.is_empty() && !interactive {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .map_err(|source| Error::File { path: "<stdin>".into(), source })?;
        scripts.push(("<stdin>".into(), text));
    }
    let registry = Arc::new(match &cli.providers {
        Some(dir) => Registry::from_dir(dir)?,
        None => Registry::embedded()?,
    });
    // The in-process sandbox lives as long as the session that talks to it.
    let (_sandbox, base_url, token) = match cli.sandbox {
        true => {
            // It serves what the session's provider files describe.
            let args = SandboxArgs { providers: cli.providers.clone(), ..SandboxArgs::default() };
            let sandbox = Sandbox::start(&args).await?;
            let (url, token) = (sandbox.base_url.clone(), Token::new(sandbox.token.clone()));
            (Some(sandbox), Some(url), token)
        }
        false => {
            let token = registry.providers.values().find_map(|p| std::env::var(&p.auth.env_var).ok());
            (None, cli.api_url, token.and_then(Token::new))
        }
    };
    let options = SessionOptions {
        base_url,
        token,
        registry,
        scan: ScanOptions { pushdown: !cli.no_pushdown, page_size: cli.page_size },
        progress: output::progress::terminal(),
        shared: Shared::new(Duration::from_secs(if cli.no_cache { 0 } else { cli.cache_ttl })),
    };
    let session = Session::new(options).await?;
    let vars: HashMap<String, String> = cli.vars.into_iter().collect();
    if interactive {
        return shell::run(session, cli.output, vars).await;
    }
    let stdout = std::io::stdout();
    for (origin, text) in scripts {
        for piece in split_statements(&text) {
            let at = |source: Error| Error::At { origin: origin.clone(), line: piece.line, source: Box::new(source) };
            let statement = template::fill(&piece.text, |name| vars.get(name).cloned()).map_err(|name| {
                at(Error::Refused(format!("undefined variable {{{{ {name} }}}}: give it with --var {name}=VALUE")))
            })?;
            let outcome = session.execute(&statement).await.map_err(at)?;
            let mut out = BufWriter::new(stdout.lock());
            output::print(outcome, cli.output, &mut out).await.map_err(at)?;
        }
    }
    Ok(())
}
