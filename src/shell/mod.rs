/*! The interactive shell, in psql's manner: statements over several lines until `;` (the
prompt turns to `imageql->` while one is pending; Ctrl-D or Ctrl-C there discards it),
history in the user's data directory, completion of keywords, resource and column names and
EXEC methods (a second Tab lists the candidates), backslash commands ([`command`]), expanded
display, and Ctrl-C that stops the running statement without leaving the shell. */

mod command;

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use command::{Command, Expanded, Pager};
use futures::FutureExt;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::engine::{CancelToken, Prepared, Session, Statement};
use crate::error::Error;
use crate::outcome::Outcome;
use crate::output::{self, Format};
use crate::provider::Registry;
use crate::sql::{is_complete, split_statements};
use crate::template;
use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::Decimal128Type;
use datafusion::common::ParamValues;

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ILIKE",
    "IS",
    "NULL",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "LEFT",
    "INNER",
    "ON",
    "AS",
    "DISTINCT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "WITH",
    "UNION",
    "ALL",
    "ASC",
    "DESC",
    "INSERT",
    "INTO",
    "VALUES",
    "RETURNING",
    "REPLACE",
    "SET",
    "DELETE",
    "EXEC",
    "EXPLAIN",
    "DESCRIBE",
    "SHOW",
    "PROVIDERS",
    "SERVICES",
    "RESOURCES",
    "METHODS",
    "METHOD",
    "EXTENDED",
    "COPY",
    "TO",
    "TRUE",
    "FALSE",
    "unnest",
    "array_has",
    "cardinality",
];

/// Names the shell completes, taken from the provider files.
struct Names {
    /// `provider.service.resource` and views.
    tables: Vec<String>,
    /// `provider.service.resource.method`.
    methods: Vec<String>,
    /// Column names by table, lowercased table names.
    columns: HashMap<String, Vec<String>>,
}

impl Names {
    fn new(registry: &Registry) -> Names {
        let mut names = Names { tables: vec![], methods: vec![], columns: HashMap::new() };
        for (provider, service, resource) in registry.resources() {
            names.tables.push(resource.full_name.clone());
            names.methods.extend(resource.methods.keys().map(|m| format!("{}.{m}", resource.full_name)));
            let mut columns: Vec<String> = resource.fields.iter().map(|f| f.name.clone()).collect();
            columns.extend(resource.param_columns().into_iter().map(|p| p.name.clone()));
            names.columns.insert(resource.full_name.to_lowercase(), columns);
            for view in service.views.keys() {
                let full = format!("{}.{}.{view}", provider.id, service.id);
                if !names.tables.contains(&full) {
                    names.tables.push(full);
                }
            }
        }
        // The shortened names that stand for one table (`images`, `images.storage_costs`),
        // completed and their columns offered as for the full name.
        let mut short = Vec::new();
        for full in &names.tables {
            let parts: Vec<&str> = full.split('.').collect();
            for name in [parts[2..].join("."), parts[1..].join(".")] {
                if registry.completed(&name).as_ref() == Some(full) {
                    short.push((name, full.to_lowercase()));
                }
            }
        }
        for (name, full) in short {
            if let Some(columns) = names.columns.get(&full).cloned() {
                names.columns.insert(name.to_lowercase(), columns);
            }
            names.tables.push(name);
        }
        names
    }
}

struct ShellHelper {
    names: Names,
    /// The lines of a statement typed so far, for completing columns of its tables.
    pending: String,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
        let start =
            line[..pos].char_indices().rev().find(|(_, c)| !is_word(*c)).map(|(i, c)| i + c.len_utf8()).unwrap_or(0);
        let word = &line[start..pos];
        let mut before = line[..start].trim_end();
        // `EXEC /*+ AWAIT */ …`: the hint is not the word before.
        if before.ends_with("*/")
            && let Some(open) = before.rfind("/*")
        {
            before = before[..open].trim_end();
        }
        let previous = before.rsplit(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
        let mut candidates: Vec<String> = Vec::new();
        if previous.eq_ignore_ascii_case("EXEC") {
            candidates.extend(self.names.methods.iter().cloned());
        } else if word.contains('.') {
            candidates.extend(self.names.tables.iter().cloned());
        } else {
            // Columns of the resources the statement names, then keywords and table names.
            let lowered = format!("{} {line}", self.pending).to_lowercase();
            for (table, columns) in &self.names.columns {
                if lowered.contains(table.as_str()) {
                    candidates.extend(columns.iter().cloned());
                }
            }
            candidates.extend(KEYWORDS.iter().map(|k| k.to_string()));
            candidates.extend(self.names.tables.iter().cloned());
        }
        let lowered = word.to_lowercase();
        let mut seen = Vec::new();
        let pairs = candidates
            .into_iter()
            .filter(|c| c.to_lowercase().starts_with(&lowered) && c.len() > word.len())
            .filter(|c| {
                !seen.contains(c) && {
                    seen.push(c.clone());
                    true
                }
            })
            .map(|c| Pair { display: c.clone(), replacement: c })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

/// `$XDG_DATA_HOME/imageql/history`, or `~/.local/share/imageql/history`.
fn history_file() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))?;
    let dir = data.join("imageql");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

struct Shell {
    session: Session,
    format: Format,
    timing: bool,
    expanded: Expanded,
    pager: Pager,
    /// Ask before a change that sends more than one request.
    confirm: bool,
    vars: HashMap<String, String>,
    /// SIGINT, caught from the start: a Ctrl-C while a statement runs (the terminal is not in
    /// raw mode then) must stop the statement, not the shell.
    interrupts: Signal,
}

pub async fn run(session: Session, format: Format, vars: HashMap<String, String>) -> Result<(), Error> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_space(true)
        .max_history_size(5000)
        .map_err(readline)?
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(config).map_err(readline)?;
    editor.set_helper(Some(ShellHelper { names: Names::new(session.registry()), pending: String::new() }));
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("imageql {}: end statements with ;  \\? for help, \\q to quit", env!("CARGO_PKG_VERSION"));
    let interrupts = signal(SignalKind::interrupt())
        .map_err(|e| Error::Usage(format!("the interactive shell cannot catch Ctrl-C: {e}")))?;
    let secrets = session.registry().secret_fields();
    let mut shell = Shell {
        session,
        format,
        timing: true,
        expanded: Expanded::Off,
        pager: Pager::On,
        confirm: true,
        vars,
        interrupts,
    };
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "imageql> " } else { "imageql-> " };
        if let Some(helper) = editor.helper_mut() {
            helper.pending.clone_from(&pending);
        }
        let line = match tokio::task::block_in_place(|| editor.readline(prompt)) {
            Ok(line) => line,
            // Ctrl-C or Ctrl-D on a pending statement discards it; Ctrl-D on nothing leaves.
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) if !pending.is_empty() => {
                pending.clear();
                println!("(the pending statement was discarded)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            // Bytes that are not UTF-8 (a binary paste): the line is lost, the shell is not.
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                eprintln!("imageql: error: the input was not UTF-8 text and was ignored; type or paste the line again");
                continue;
            }
            Err(e) => return Err(readline(e)),
        };
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        // A backslash command acts at the continuation prompt too (as in psql): `\q` leaves,
        // the others keep the pending statement.
        if let Some(command) = line.trim().strip_prefix('\\') {
            remember(&mut editor, &history, line.trim());
            match command.parse::<Command>() {
                Ok(command) => {
                    if !shell.command(command).await {
                        break;
                    }
                }
                Err(problem) => eprintln!("imageql: {problem}"),
            }
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(&line);
        if !is_complete(pending.trim()) {
            continue;
        }
        let input = std::mem::take(&mut pending);
        // Statements pasted together are recalled one by one; one that gives a secret (a
        // root password) is not kept.
        for piece in split_statements(input.trim()).iter().filter(|p| !mentions_any(&p.text, &secrets)) {
            remember(&mut editor, &history, &format!("{};", piece.text));
        }
        shell.run_text(input.trim()).await;
    }
    Ok(())
}

/// Whether `text` names any of `words` as a word of its own, in any case.
fn mentions_any(text: &str, words: &[String]) -> bool {
    let lower = text.to_lowercase();
    let mut names = lower.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    names.any(|name| words.iter().any(|w| w == name))
}

/// Adds a statement or command to the history, saved at once so that a killed shell keeps
/// what was typed.
fn remember(editor: &mut Editor<ShellHelper, FileHistory>, history: &Option<PathBuf>, entry: &str) {
    let _ = editor.add_history_entry(entry);
    if let Some(path) = history {
        let _ = editor.save_history(path);
    }
}

fn readline(e: ReadlineError) -> Error {
    Error::Usage(format!("the interactive shell cannot start: {e}"))
}

impl Shell {
    /// Runs the statements of `text` in order; Ctrl-C stops what was typed, pasted or read
    /// after the interrupted statement too.
    async fn run_text(&mut self, text: &str) -> Ran {
        for piece in split_statements(text) {
            if self.statement(&piece.text).await == Ran::Interrupted {
                return Ran::Interrupted;
            }
        }
        Ran::Done
    }

    /// A backslash command; false to quit.
    async fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Quit => return false,
            Command::Help => print_table(command::help()).await,
            Command::Syntax(topic) => match command::syntax(topic.as_deref()) {
                Ok(batch) => print_table(batch).await,
                Err(problem) => eprintln!("imageql: {problem}"),
            },
            Command::Expanded(setting) => {
                self.expanded = setting.unwrap_or(match self.expanded {
                    Expanded::Off => Expanded::On,
                    _ => Expanded::Off,
                });
                let name = match self.expanded {
                    Expanded::Off => "off",
                    Expanded::On => "on",
                    Expanded::Auto => "auto",
                };
                println!("expanded display is {name}");
            }
            Command::Include(file) => match std::fs::read_to_string(&file) {
                Ok(text) => {
                    self.run_text(&text).await;
                }
                Err(e) => eprintln!("imageql: error: cannot read {file}: {e}; give a path relative to {}", cwd()),
            },
            Command::Describe(None) => {
                let resources = self.session.list_resources();
                self.run(Ok(resources)).await;
            }
            Command::Describe(Some(name)) => {
                let described = self.session.describe_named(&name);
                self.run(described).await;
            }
            Command::Timing(setting) => {
                self.timing = setting.unwrap_or(!self.timing);
                println!("timing is {}", if self.timing { "on" } else { "off" });
            }
            Command::Pager(setting) => {
                self.pager = setting.unwrap_or(match self.pager {
                    Pager::Off => Pager::On,
                    _ => Pager::Off,
                });
                let name = match self.pager {
                    Pager::Off => "not used",
                    Pager::On => "used for results taller than the terminal",
                    Pager::Always => "always used",
                };
                println!("the pager is {name}");
            }
            Command::Set(None) => {
                let on_off = |on: bool| if on { "on" } else { "off" };
                println!("dry_run = {}", on_off(self.session.dry_run()));
                println!("confirm = {}", on_off(self.confirm));
                let mut vars: Vec<_> = self.vars.iter().collect();
                vars.sort();
                for (name, value) in vars {
                    println!("{name} = {value}");
                }
            }
            Command::Set(Some((name, value))) => match name.as_str() {
                "dry_run" | "confirm" => match switch(&value) {
                    Some(on) if name == "dry_run" => {
                        self.session.set_dry_run(on);
                        println!("dry_run is {value}: changes are {}", if on { "previewed, not sent" } else { "sent" });
                    }
                    Some(on) => {
                        self.confirm = on;
                        println!("confirm is {value}");
                    }
                    None => eprintln!("imageql: \\set {name} takes on or off, not {value}"),
                },
                _ => {
                    self.vars.insert(name, value);
                }
            },
            Command::Output(None) => println!("output format: {}", format_name(self.format)),
            Command::Output(Some(format)) => {
                self.format = format;
                println!("output format: {}", format_name(format));
            }
        }
        true
    }

    /// Runs one statement. Ctrl-C stops a query at once; a change stops before its next
    /// request (an upload or a wait at once) and reports what it did.
    async fn statement(&mut self, text: &str) -> Ran {
        let text = match template::bind_values(text, |name| self.vars.get(name).cloned()) {
            Ok(text) => text,
            Err(problem) => {
                eprintln!("imageql: error: {problem}");
                return Ran::Done;
            }
        };
        let statement = self.session.parse(&text);
        self.run(statement).await
    }

    /// Whether a change may go: one that sends more than one request is previewed, and sent
    /// only when the user says yes.
    async fn confirmed(&mut self, prepared: &Prepared) -> Result<bool, Error> {
        if !prepared.changes() {
            return Ok(true);
        }
        let Some(preview) = self.session.preview(prepared, &CancelToken::new()).await? else { return Ok(true) };
        let (requests, frees) = requests_and_savings(&preview);
        if requests <= 1 {
            return Ok(true);
        }
        let mut stdout = std::io::stdout();
        output::print(Outcome::batch(preview, None), Format::Table, &mut stdout).await?;
        let frees = frees.map(|usd| format!(", freeing ${usd:.2} a month")).unwrap_or_default();
        print!("This changes {requests} resources{frees}. Send {requests} requests? [y/N] ");
        let _ = stdout.flush();
        let mut answer = String::new();
        tokio::task::block_in_place(|| std::io::stdin().read_line(&mut answer))
            .map_err(|e| Error::Usage(format!("cannot read the answer: {e}")))?;
        Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
    }

    /// Runs a statement, as read or as a backslash command made it.
    async fn run(&mut self, statement: Result<Statement, Error>) -> Ran {
        let started = Instant::now();
        // A Ctrl-C pressed after the last statement ended must not cancel this one.
        while self.interrupts.recv().now_or_never().is_some() {}
        let cancel = CancelToken::new();
        let mut interrupted = false;
        let prepared = match statement {
            Ok(statement) => self.session.prepare(statement).await,
            Err(e) => Err(e),
        };
        if let Ok(prepared) = &prepared
            && self.confirm
            && !self.session.dry_run()
        {
            match self.confirmed(prepared).await {
                Ok(true) => {}
                Ok(false) => {
                    println!("nothing was sent");
                    return Ran::Done;
                }
                Err(e) => {
                    eprintln!("imageql: error: {e}");
                    return Ran::Done;
                }
            }
        }
        let session = &self.session;
        let running = async { session.run(&prepared?, &ParamValues::List(vec![]), &cancel).await };
        tokio::pin!(running);
        let executed = match unless_interrupted(&mut self.interrupts, &mut running).await {
            Some(result) => result,
            None => {
                interrupted = true;
                eprintln!("imageql: stopping before the next request (an upload stops at once)…");
                cancel.cancel();
                running.await
            }
        };
        // What may go through the pager is written out once it is complete.
        let paging = self.pager != Pager::Off && std::io::stdout().is_terminal();
        let (mut held, stdout) = (Vec::new(), std::io::stdout());
        let mut locked = stdout.lock();
        let out: &mut dyn Write = if paging { &mut held } else { &mut locked };
        let result = match executed {
            Ok(_) if interrupted => Err(Error::Cancelled),
            Ok(outcome) => {
                let width = match self.expanded {
                    Expanded::On => Some(0),
                    Expanded::Auto => terminal_width(),
                    Expanded::Off => None,
                };
                let printing = match width.filter(|_| self.format == Format::Table) {
                    Some(width) => output::print_expanded(outcome, width, &mut *out).boxed_local(),
                    None => output::print(outcome, self.format, &mut *out).boxed_local(),
                };
                let printed = unless_interrupted(&mut self.interrupts, printing);
                printed.await.unwrap_or_else(|| {
                    interrupted = true;
                    Err(Error::Cancelled)
                })
            }
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed().as_secs_f64();
        let time = if self.timing { format!(" in {elapsed:.3} s") } else { String::new() };
        match result {
            Ok(Some(rows)) => {
                let _ = writeln!(out, "{}", output::row_count(rows, &time));
            }
            Ok(None) if self.timing => {
                let _ = writeln!(out, "({elapsed:.3} s)");
            }
            Ok(None) => {}
            Err(e) => eprintln!("imageql: error: {e}"),
        }
        if paging {
            tokio::task::block_in_place(|| show(&held, self.pager, &mut locked));
        }
        let _ = locked.flush();
        if interrupted { Ran::Interrupted } else { Ran::Done }
    }
}

/// `on` or `off` (and their usual synonyms) as a switch.
fn switch(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// How many requests a dry run lists, and the monthly cost they free when it says.
fn requests_and_savings(preview: &RecordBatch) -> (usize, Option<f64>) {
    let steps = preview.column_by_name("step").and_then(|c| c.as_any().downcast_ref::<StringArray>());
    let requests = steps.map(|s| s.iter().flatten().filter(|step| step.parse::<usize>().is_ok()).count());
    let frees = preview.column_by_name("frees_monthly_usd").and_then(|c| c.as_primitive_opt::<Decimal128Type>());
    let total = frees.filter(|f| !f.is_empty()).map(|f| f.value(f.len() - 1) as f64 / 100.0);
    (requests.unwrap_or(0), total)
}

/// The result of `work`, or `None` when Ctrl-C came first (and `work` is dropped).
async fn unless_interrupted<T>(interrupts: &mut Signal, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        result = work => Some(result),
        _ = interrupts.recv() => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    Done,
    Interrupted,
}

async fn print_table(batch: datafusion::arrow::array::RecordBatch) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = output::print(Outcome::batch(batch, None), Format::Table, &mut out).await {
        eprintln!("imageql: error: {e}");
    }
}

fn cwd() -> String {
    std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| "the current directory".into())
}

/// Columns of the terminal on standard output, when it is one.
fn terminal_width() -> Option<usize> {
    terminal_size().map(|size| size.ws_col as usize).filter(|&columns| columns > 0)
}

fn terminal_size() -> Option<libc::winsize> {
    // SAFETY: TIOCGWINSZ fills the winsize it is given and reads nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    ok.then_some(size)
}

/// Writes a statement's output, through the pager when it is taller than the terminal (or
/// always, as set), the way psql does. Without a pager to run, it is written out as it is.
fn show(text: &[u8], pager: Pager, out: &mut dyn Write) {
    let rows = terminal_size().map(|size| size.ws_row as usize).filter(|&rows| rows > 0);
    let lines = text.iter().filter(|&&b| b == b'\n').count();
    let page = match pager {
        Pager::Off => false,
        Pager::On => rows.is_some_and(|rows| lines >= rows),
        Pager::Always => true,
    };
    if !(page && through_pager(text)) {
        let _ = out.write_all(text);
    }
}

/// `IMAGEQL_PAGER`, else `PAGER` (empty: none), else `less -SX` when there is a `less`: long
/// table rows are cut rather than folded, and what was shown stays on the screen.
fn pager_command() -> Option<String> {
    match std::env::var("IMAGEQL_PAGER").or_else(|_| std::env::var("PAGER")) {
        Ok(command) => Some(command).filter(|c| !c.trim().is_empty()),
        Err(_) => {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).any(|dir| dir.join("less").is_file()).then(|| "less -SX".into())
        }
    }
}

/// Runs the pager on `text`; false when it could not start. A pager quit early is fine.
fn through_pager(text: &[u8]) -> bool {
    let Some(command) = pager_command() else { return false };
    let child = std::process::Command::new("sh").args(["-c", &command]).stdin(std::process::Stdio::piped()).spawn();
    let Ok(mut child) = child else { return false };
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(text);
    }
    let _ = child.wait();
    true
}

fn format_name(format: Format) -> String {
    <Format as clap::ValueEnum>::to_possible_value(&format).map(|v| v.get_name().to_string()).unwrap_or_default()
}
