/*! The command line: options, the front ends (`-e`, `-f`, standard input, `sandbox`) and exit
codes (0 ok, 1 a statement failed, 2 usage error). */

use std::collections::HashMap;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::{DEFAULT_CACHE_TTL, Shared, Token};
use crate::engine::{
    ACCOUNTS_ON_ERROR, AWAIT_TIMEOUT, AccountOptions, HistoryOptions, Memory, OwnSetting, Policy, Session,
    SessionOptions,
};
use crate::error::Error;
use crate::mutate::Defaults;
use crate::outcome::Outcome;
use crate::output::dir::OutputDir;
use crate::output::{self, Format};
use crate::profile::SetSpec;
use crate::provider::Registry;
use crate::sandbox::{Sandbox, SandboxArgs};
use crate::scan::ScanOptions;
use crate::serve::{ServeArgs, Server};
use crate::sql::{Dialect, Piece, split_statements};
use crate::{profile, shell, template};

#[derive(Debug, Parser)]
#[command(
    name = "imageql",
    version,
    about = "SQL over Linode images, with a built-in sandbox of the Linode Images API",
    after_help = "Without -e or -f, imageql starts an interactive shell on a terminal, and otherwise reads \
                  statements from standard input. LINODE_TOKEN holds the API token; without it, the default \
                  profile of ~/.config/imageql/config.toml or linode-cli's default user gives one.\n\
                  Exit codes: 0 ok, 1 a statement failed, 2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run SQL and exit (repeatable; after any -f files)
    #[arg(short = 'e', long = "execute", value_name = "SQL", allow_hyphen_values = true)]
    execute: Vec<String>,
    /// Run a script and exit; stops at the first failing statement (repeatable)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Result format [default: the profile's, or table]
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Format>,
    /// Write each result set of -e/-f to a file of its own in DIR (created if missing), named
    /// by a `-- name: NAME` comment before the statement or by its number: `DIR/NAME.csv`
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Take the token and defaults from profile NAME (imageql's config.toml or linode-cli's users);
    /// several (`a,b`), a wildcard (`cust_*`) or a group of config.toml make an account set
    #[arg(long, value_name = "NAME", conflicts_with = "sandbox")]
    profile: Option<String>,
    /// Read every profile of both configuration files as one account set
    #[arg(long, conflicts_with_all = ["sandbox", "profile"])]
    all_profiles: bool,
    /// In an account set, answer from the accounts that did not fail (`skip`) instead of
    /// failing (`fail`, the default); the failures are warnings on stderr
    #[arg(long, value_name = "fail|skip")]
    accounts_on_error: Option<String>,
    /// Run against a sandbox started in this process instead of the real API
    #[arg(long, global = true)]
    sandbox: bool,
    /// API base URL [default: the provider's, https://api.linode.com/v4]
    #[arg(long, value_name = "URL", conflicts_with = "sandbox", global = true)]
    api_url: Option<String>,
    /// Read provider files from DIR instead of the built-in ones
    #[arg(long, value_name = "DIR")]
    providers: Option<PathBuf>,
    /// Evaluate every predicate and LIMIT locally; scans list everything
    #[arg(long, global = true)]
    no_pushdown: bool,
    /// Preview every change (INSERT, REPLACE, DELETE, EXEC) instead of sending it: one row per
    /// request it would send; reads still run
    #[arg(long)]
    dry_run: bool,
    /// How long /*+ AWAIT */ waits at most: seconds, or 90s, 10min, 2h [default: 30min]
    #[arg(long, value_name = "DURATION")]
    await_timeout: Option<String>,
    /// Fill `{{ NAME }}` in statements with VALUE (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Seconds one API call may take before it counts as failed (reads are retried)
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS", value_parser = parse_timeout, global = true)]
    timeout: f64,
    /// Rows per page when listing (clamped to what the API allows)
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    page_size: u32,
    /// Reuse an API answer for this many seconds within the process; a change drops them
    #[arg(long, default_value_t = DEFAULT_CACHE_TTL.as_secs(), value_name = "SECONDS", global = true)]
    cache_ttl: u64,
    /// Read everything from the API afresh (the same as --cache-ttl 0)
    #[arg(long, conflicts_with = "cache_ttl", global = true)]
    no_cache: bool,
    /// The history store `record` writes and `linode.history.*` reads
    /// [default: $XDG_DATA_HOME/imageql/history, ~/.local/share/imageql/history]
    #[arg(long, value_name = "DIR", global = true)]
    history: Option<PathBuf>,
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

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 86_400.0 => Ok(seconds),
        _ => Err("expected a number of seconds above 0 and at most 86400".into()),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the sandbox API until interrupted; the first line printed is its base URL
    Sandbox(SandboxArgs),
    /// Serve the Postgres wire protocol over the engine until interrupted; the first line
    /// printed is the connection URL
    Serve(ServeArgs),
    /// Append what changed since the last recording to the history store: the recorded
    /// tables of the account (or account set), one row per account and table
    Record(RecordArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct RecordArgs {
    /// Keep this many days of history (`400d`); what is older is folded into each row's last
    /// observation before then
    #[arg(long, value_name = "DAYS", value_parser = parse_days)]
    keep: Option<i64>,
}

fn parse_days(text: &str) -> Result<i64, String> {
    match text.trim().trim_end_matches('d').parse::<i64>() {
        Ok(days) if (1..=36_500).contains(&days) => Ok(days),
        _ => Err("expected a number of days from 1 to 36500, such as 400d".into()),
    }
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
    if let Some(Command::Serve(args)) = &cli.command {
        let registry = load_registry(&cli)?;
        let Target { sandbox: _sandbox, base_url, token, .. } = target(&cli, &registry).await?;
        let timeout = Duration::from_secs_f64(cli.timeout);
        let spec = match (&args.profiles, args.all_profiles) {
            (_, true) => Some(SetSpec::All),
            (Some(names), false) => Some(SetSpec::Names(names)),
            (None, false) => None,
        };
        let accounts = spec.map(|spec| accounts_of(spec, &cli)).transpose()?.unwrap_or_default();
        let answers = shared(&cli);
        let server = Server::bind(args, registry, base_url, token, scan_options(&cli), timeout, answers, accounts)
            .await?
            .with_history(history_options(&cli));
        let mut stdout = std::io::stdout().lock();
        // Scripts wait for this line to learn the port, so it must not sit in a buffer.
        let _ = writeln!(stdout, "{}", server.url()).and_then(|_| stdout.flush());
        drop(stdout);
        return server.run().await;
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
    let recording = matches!(cli.command, Some(Command::Record(_)));
    let interactive = scripts.is_empty() && !recording && std::io::stdin().is_terminal();
    if cli.output_dir.is_some() && (interactive || recording) {
        return Err(Error::Usage("--output-dir writes the results of -e, -f or standard input".into()));
    }
    if scripts.is_empty() && !interactive && !recording {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .map_err(|e| Error::Usage(format!("cannot read statements from standard input: {e}")))?;
        scripts.push(("<stdin>".into(), text));
    }
    let registry = load_registry(&cli)?;
    // The in-process sandbox lives as long as the session that talks to it.
    let Target { sandbox: _sandbox, base_url, token, output, defaults } = target(&cli, &registry).await?;
    let accounts = account_set(&cli)?;
    let format = cli.output.or(output).unwrap_or(Format::Table);
    let options = SessionOptions {
        base_url,
        token,
        registry,
        scan: scan_options(&cli),
        progress: output::progress::terminal(),
        default_catalog: None,
        timeout: Duration::from_secs_f64(cli.timeout),
        shared: shared(&cli),
        dialect: Dialect::Generic,
        policy: Policy::local(),
        token_source: None,
        memory: Memory::default(),
        defaults,
        history: history_options(&cli),
        accounts,
    };
    let session = Session::new(options).await?;
    if let Some(Command::Record(args)) = &cli.command {
        let history = history_options(&cli)
            .ok_or_else(|| Error::Usage("no history store: give --history DIR (HOME is not set)".into()))?;
        let store = crate::history::Store::new(history.dir);
        let keep = args.keep.map(chrono::Duration::days);
        let recorded = crate::history::record(&session, &store, &history.account, keep).await?;
        let mut out = BufWriter::new(std::io::stdout().lock());
        return output::print(Outcome::batch(recorded_batch(&recorded)?, None), format, &mut out).await.map(|_| ());
    }
    if let Some(mode) = &cli.accounts_on_error {
        let own = OwnSetting::Set { name: ACCOUNTS_ON_ERROR.into(), value: Some(mode.clone()) };
        session.apply_own_setting(&own).map_err(|e| Error::Usage(format!("--accounts-on-error: {e}")))?;
    }
    if cli.dry_run {
        session.force_dry_run();
    }
    if let Some(timeout) = &cli.await_timeout {
        let own = OwnSetting::Set { name: AWAIT_TIMEOUT.into(), value: Some(timeout.clone()) };
        session.apply_own_setting(&own).map_err(|e| Error::Usage(format!("--await-timeout: {e}")))?;
    }
    let vars: HashMap<String, String> = cli.vars.into_iter().collect();
    if interactive {
        return shell::run(session, format, vars).await;
    }
    let stdout = std::io::stdout();
    let pieces: Vec<(String, Vec<Piece>)> =
        scripts.into_iter().map(|(origin, text)| (origin, split_statements(&text))).collect();
    // Several results are told apart: in table output each ends with its row count and a
    // blank line, as in psql; in csv a blank line comes between result sets (each has its
    // header). json (an array per result), ndjson and text need nothing.
    // Every placeholder of every script is filled before the first statement runs: a
    // report never stops half-printed for a variable that was not given.
    let mut statements = Vec::new();
    for (origin, pieces) in &pieces {
        for piece in pieces {
            let at = |source: Error| Error::At { origin: origin.clone(), line: piece.line, source: Box::new(source) };
            let text = template::bind_values(&piece.text, |name| vars.get(name).cloned())
                .map_err(|e| at(Error::Placeholder(e)))?;
            statements.push((format!("{origin}:{}", piece.line), at, text));
        }
    }
    if let Some(dir) = &cli.output_dir {
        let dir = OutputDir::new(dir, format);
        let texts: Vec<(String, &str)> =
            statements.iter().map(|(place, _, text)| (place.clone(), text.as_str())).collect();
        let files = dir.files(&texts)?;
        dir.create()?;
        for ((_, at, statement), file) in statements.into_iter().zip(files) {
            let outcome = session.execute(&statement).await.map_err(&at)?;
            dir.write(outcome, &file).await.map_err(&at)?;
        }
        return Ok(());
    }
    let several = statements.len() > 1;
    let mut printed = false;
    for (_, at, statement) in statements {
        let outcome = session.execute(&statement).await.map_err(&at)?;
        let mut out = BufWriter::new(stdout.lock());
        let shown = several
            && match outcome {
                Outcome::Done => false,
                Outcome::Copied(_) => matches!(format, Format::Table | Format::Text),
                _ => true,
            };
        let write = |out: &mut BufWriter<_>, text: String| {
            out.write_all(text.as_bytes()).map_err(|e| at(Error::Output(e.into())))
        };
        if shown && printed && format == Format::Csv {
            write(&mut out, "\n".into())?;
        }
        let rows = output::print(outcome, format, &mut out).await.map_err(&at)?;
        if shown && format == Format::Table {
            write(&mut out, rows.map(|n| format!("{}\n\n", output::row_count(n, ""))).unwrap_or("\n".into()))?;
        }
        printed |= shown;
    }
    Ok(())
}

/// The history store and the name a session of one account reads it under.
fn history_options(cli: &Cli) -> Option<HistoryOptions> {
    let dir = cli.history.clone().or_else(crate::history::Store::default_dir)?;
    let account = match (&cli.profile, cli.all_profiles) {
        (Some(name), false) if !profile::names_a_set(name).unwrap_or(true) => name.clone(),
        _ => "default".to_string(),
    };
    Some(HistoryOptions { dir, account })
}

/// What `record` did, a row per account and table.
fn recorded_batch(recorded: &[crate::history::Recorded]) -> Result<datafusion::arrow::array::RecordBatch, Error> {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("account", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("written", DataType::Int64, false),
    ]));
    let text = |f: fn(&crate::history::Recorded) -> &str| {
        Arc::new(StringArray::from(recorded.iter().map(f).collect::<Vec<_>>())) as _
    };
    let number = |f: fn(&crate::history::Recorded) -> usize| {
        Arc::new(Int64Array::from(recorded.iter().map(|r| f(r) as i64).collect::<Vec<_>>())) as _
    };
    Ok(datafusion::arrow::array::RecordBatch::try_new(
        schema,
        vec![text(|r| &r.account), text(|r| &r.table), number(|r| r.rows), number(|r| r.written)],
    )?)
}

fn load_registry(cli: &Cli) -> Result<Arc<Registry>, Error> {
    Ok(Arc::new(match &cli.providers {
        Some(dir) => Registry::from_dir(dir)?,
        None => Registry::embedded()?,
    }))
}

/// The response cache and rate budget every session of this process shares.
fn shared(cli: &Cli) -> Shared {
    Shared::new(Duration::from_secs(if cli.no_cache { 0 } else { cli.cache_ttl }))
}

fn scan_options(cli: &Cli) -> ScanOptions {
    ScanOptions { pushdown: !cli.no_pushdown, page_size: cli.page_size }
}

/// Where the API is, the token for it and a profile's output format.
struct Target {
    /// An in-process sandbox, kept alive by the caller.
    sandbox: Option<Sandbox>,
    base_url: Option<String>,
    token: Option<Token>,
    output: Option<Format>,
    defaults: Defaults,
}

/// The accounts of an account set (`--all-profiles`, `--profile a,b`, a group), each with
/// its profile's token and API URL; none for a session of one account.
fn account_set(cli: &Cli) -> Result<Vec<AccountOptions>, Error> {
    let spec = match (&cli.profile, cli.all_profiles) {
        (_, true) => SetSpec::All,
        (Some(name), false) if profile::names_a_set(name)? => SetSpec::Names(name),
        _ => return Ok(vec![]),
    };
    accounts_of(spec, cli)
}

/// The accounts of an account set, each with its profile's token and API URL (`--api-url`
/// first).
fn accounts_of(spec: SetSpec, cli: &Cli) -> Result<Vec<AccountOptions>, Error> {
    let set = profile::select_set(spec)?;
    Ok(set
        .into_iter()
        .map(|(name, profile)| AccountOptions {
            base_url: cli.api_url.clone().or(profile.api_url),
            token: profile.token.and_then(Token::new),
            name,
        })
        .collect())
}

/// An in-process sandbox for `--sandbox`; otherwise `--api-url` or the provider's, with the
/// token from the environment or a profile.
async fn target(cli: &Cli, registry: &Registry) -> Result<Target, Error> {
    if cli.sandbox {
        // It serves what the session's provider files describe.
        let args = SandboxArgs { providers: cli.providers.clone(), ..SandboxArgs::default() };
        let sandbox = Sandbox::start(&args).await?;
        let (base_url, token) = (Some(sandbox.base_url.clone()), Token::new(sandbox.token.clone()));
        return Ok(Target { sandbox: Some(sandbox), base_url, token, output: None, defaults: Defaults::new() });
    }
    let from_env = registry.providers.values().find_map(|p| std::env::var(&p.auth.env_var).ok());
    // An explicit --profile beats the environment; the default profile does not.
    let in_a_set = cli.all_profiles || cli.profile.as_deref().map(profile::names_a_set).transpose()?.unwrap_or(false);
    let profile = match (&cli.profile, &from_env) {
        // Each account of a set has its own profile.
        _ if in_a_set => None,
        (None, Some(_)) => None,
        (name, _) => profile::select(name.as_deref())?,
    }
    .unwrap_or_default();
    let output = match profile.output.as_deref() {
        Some(name) => Some(Format::from_str(name, true).map_err(|_| {
            Error::Usage(format!("the profile's output {name:?} is not a format (table, json, ndjson, csv, text)"))
        })?),
        None => None,
    };
    let token = if cli.profile.is_some() { profile.token.or(from_env) } else { from_env.or(profile.token) };
    Ok(Target {
        sandbox: None,
        base_url: cli.api_url.clone().or(profile.api_url),
        token: token.and_then(Token::new),
        output,
        defaults: profile.defaults,
    })
}
