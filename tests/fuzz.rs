//! Property targets, searched by a seeded generator for a fixed time each (CI runs them as
//! part of `cargo test`): the SQL front end never panics and every error has a message; the
//! X-Filter grammar round-trips and refuses hostile JSON; pushdown returns the rows local
//! evaluation does; the provider loader names the file of a broken provider file.
//!
//! Each target first replays its regression corpus (`tests/corpus/`), then generates inputs
//! (from a grammar, and by mutating the corpus) until its budget is spent. The seed is printed;
//! `IMAGEQL_FUZZ_SEED=N` replays a run, `IMAGEQL_FUZZ_SECONDS=S` changes every budget. A
//! failing input is printed: add it to the corpus with its fix.

mod common;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, TryStreamExt};
use imageql::engine::{Session, SessionOptions, meta};
use imageql::outcome::Outcome;
use imageql::provider::{FilterOp, Registry};
use imageql::sandbox::{Sandbox, SandboxArgs};
use imageql::sql;
use imageql::xfilter::{Filter, XFilter};
use serde_json::{Value, json};

/// splitmix64: small, fast and good enough to drive a search.
struct Rng(u64);

impl Rng {
    fn new(target: &str) -> Rng {
        let seed = std::env::var("IMAGEQL_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("{target}: IMAGEQL_FUZZ_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// How long a target searches.
fn budget(default_seconds: u64) -> Duration {
    let seconds = std::env::var("IMAGEQL_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seconds);
    Duration::from_secs(seconds)
}

fn corpus(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(str::to_string).collect()
}

/// Fragments that matter to a lexer and a splitter.
const FRAGMENTS: &[&str] = &[
    "'",
    "\"",
    "`",
    ";",
    "--",
    "/*",
    "*/",
    "/*+ AWAIT */",
    "\n",
    "(",
    ")",
    "{{",
    "}}",
    "{{ x }}",
    "\\",
    "é",
    "日本",
    "\u{0}",
    "\u{1b}[31m",
    " OR ",
    " AND ",
    " NOT ",
    "SELECT ",
    " FROM ",
    " WHERE ",
    "linode.images.images",
    "EXPLAIN ",
    "@@json='{}'",
    "@imageId='private/1'",
    "''",
    " LIMIT 1",
    " ORDER BY id",
    " RETURNING *",
    ",",
    "*",
    "[",
    "]",
    "=",
    "1e308",
    "-9223372036854775809",
    "NULL",
    "\t",
    "\r\n",
    "$1",
    "?",
    "::",
    " UNION ALL ",
    "unnest(",
    "'\\'",
];

/// Short strings of the characters a splitter and lexer decide on, in every order.
fn lexical(rng: &mut Rng) -> String {
    const ALPHABET: &[&str] =
        &["'", "\"", "`", "-", "/", "*", ";", "\n", " ", "a", "1", "é", "\\", "{", "}", "+", "SELECT ", "$", "@"];
    (0..1 + rng.below(24)).map(|_| *rng.pick(ALPHABET)).collect()
}

/// The corpus line changed in one to four places.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 => {
                let fragment: Vec<char> = rng.pick(FRAGMENTS).chars().collect();
                chars.splice(at..at, fragment);
            }
            1 if !chars.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            2 if !chars.is_empty() => {
                let start = rng.below(chars.len());
                let end = (start + 1 + rng.below(16)).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(at..at, copy);
            }
            _ => chars.insert(at, char::from_u32(rng.below(0x3000) as u32).unwrap_or('x')),
        }
    }
    chars.into_iter().collect()
}

/// Columns of `linode.images.images` with values from the seed, for predicates.
struct Values {
    labels: Vec<String>,
    tags: Vec<String>,
    vendors: Vec<String>,
    sizes: Vec<i64>,
    ids: Vec<String>,
}

impl Values {
    fn from_images(images: &[Value]) -> Values {
        let strings = |key: &str| -> Vec<String> {
            let mut found: Vec<String> = images.iter().filter_map(|i| i[key].as_str().map(str::to_string)).collect();
            found.sort();
            found.dedup();
            found
        };
        let mut tags: Vec<String> = images
            .iter()
            .flat_map(|i| i["tags"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        tags.sort();
        tags.dedup();
        tags.push("no-such-tag".into());
        Values {
            labels: strings("label"),
            tags,
            vendors: strings("vendor"),
            sizes: images.iter().filter_map(|i| i["size"].as_i64()).collect(),
            ids: strings("id"),
        }
    }
}

fn quoted(text: impl AsRef<str>) -> String {
    format!("'{}'", text.as_ref().replace('\'', "''"))
}

/// A predicate over the images columns, from the shapes pushdown handles and a few it does not.
fn predicate(rng: &mut Rng, values: &Values, depth: usize) -> String {
    if depth > 0 && rng.chance(45) {
        let left = predicate(rng, values, depth - 1);
        let right = predicate(rng, values, depth - 1);
        return match rng.below(3) {
            0 => format!("({left} AND {right})"),
            1 => format!("({left} OR {right})"),
            _ => format!("NOT ({left})"),
        };
    }
    let label = quoted(rng.pick(&values.labels));
    let size = rng.pick(&values.sizes) + rng.below(3) as i64 - 1;
    let fragment = {
        let l = rng.pick(&values.labels).clone();
        let start = rng.below(l.len().saturating_sub(2));
        l.get(start..(start + 3).min(l.len())).unwrap_or("a").to_string()
    };
    match rng.below(22) {
        0 => format!("label = {label}"),
        1 => format!("label <> {label}"),
        2 => format!("label LIKE '%{fragment}%'"),
        3 => format!("label ILIKE '%{}%'", fragment.to_uppercase()),
        4 => format!("label IN ({label}, {})", quoted(rng.pick(&values.labels))),
        5 => format!("size > {size}"),
        6 => format!("size >= {size}"),
        7 => format!("size < {size}"),
        8 => format!("size BETWEEN {size} AND {}", size + rng.below(5000) as i64),
        9 => "is_public".into(),
        10 => "NOT is_public".into(),
        11 => format!("is_public = {}", rng.chance(50)),
        12 => format!("status = {}", quoted(rng.pick(&["available", "creating", "pending_upload"]))),
        13 => format!("type = {}", quoted(rng.pick(&["manual", "automatic"]))),
        14 => format!("vendor = {}", quoted(rng.pick(&values.vendors))),
        15 => "vendor IS NULL".into(),
        16 => "vendor IS NOT NULL".into(),
        17 => format!("array_has(tags, {})", quoted(rng.pick(&values.tags))),
        18 => format!("id = {}", quoted(rng.pick(&values.ids))),
        19 => format!("id IN ({}, {})", quoted(rng.pick(&values.ids)), quoted(rng.pick(&values.ids))),
        20 => "deprecated".into(),
        _ => format!("description LIKE '%{fragment}%'"),
    }
}

/// A statement from the grammar imageql speaks.
fn statement(rng: &mut Rng, values: &Values) -> String {
    let filter = predicate(rng, values, 3);
    let label = quoted(rng.pick(&values.labels));
    match rng.below(8) {
        0 => format!("SELECT id, label FROM linode.images.images WHERE {filter} ORDER BY id LIMIT {}", rng.below(20)),
        1 => format!("SELECT vendor, count(*) FROM linode.images.images WHERE {filter} GROUP BY vendor"),
        2 => format!("DELETE FROM linode.images.images WHERE {filter}"),
        3 => format!("REPLACE linode.images.images SET label = {label} WHERE {filter}"),
        4 => format!("INSERT INTO linode.images.images (disk_id, label) VALUES ({}, {label})", rng.below(100_000)),
        5 => format!("EXEC linode.images.images.put_image @imageId={}, @label={label}", quoted(rng.pick(&values.ids))),
        6 => format!("SHOW METHODS IN linode.images.images LIKE '%{}%'", rng.below(10)),
        _ => format!("DESCRIBE {}", rng.pick(&["linode.images.images", "linode.linode.disks", "linode.nope.x"])),
    }
}

/// A sandbox in this process and a session against it.
async fn sandbox_session(pushdown: bool, sandbox: &Sandbox) -> Session {
    let mut options = SessionOptions::new(&sandbox.base_url, Some(&sandbox.token));
    options.scan.pushdown = pushdown;
    Session::new(options).await.unwrap()
}

/// Everything the front end does with one input, short of sending a change. Returns what
/// went wrong, if anything did.
async fn front_end(session: &Session, registry: &Registry, input: &str) -> Option<String> {
    let checked = std::panic::catch_unwind(|| {
        let _ = sql::is_complete(input);
        let vars: HashMap<&str, &str> = HashMap::from([("x", "1"), ("region", "us-east' OR '1")]);
        let pieces = sql::split_statements(input);
        for piece in &pieces {
            assert!(!piece.text.trim().is_empty(), "an empty piece");
            let text = imageql::template::bind_values(&piece.text, |n| vars.get(n).map(|v| v.to_string()));
            let text = text.unwrap_or_else(|e| {
                assert!(!e.to_string().trim().is_empty(), "a placeholder error without a message");
                String::new()
            });
            if let Some(Err(e)) = meta::parse(&text, registry) {
                assert!(!e.to_string().trim().is_empty(), "a meta error without a message");
            }
            if let Err(e) = sql::parse(&text, sql::Dialect::Generic) {
                assert!(!e.to_string().trim().is_empty(), "a parse error without a message");
            }
        }
        pieces
    });
    let pieces = match checked {
        Ok(pieces) => pieces,
        Err(panic) => return Some(format!("panicked: {}", panic_text(&panic))),
    };
    for piece in pieces {
        // Planned (EXPLAIN), never run: a generated change must not reach the sandbox.
        let explained = format!("EXPLAIN {}", piece.text);
        let text = match piece.text.trim_start().to_uppercase().starts_with("SHOW")
            || piece.text.trim_start().to_uppercase().starts_with("DESCRIBE")
        {
            true => piece.text.clone(),
            false => explained,
        };
        let run = async {
            match session.execute(&text).await {
                Ok(Outcome::Rows { stream, .. }) => {
                    stream.try_collect::<Vec<_>>().await.map(|_| ()).map_err(|e| e.into())
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        };
        match AssertUnwindSafe(run).catch_unwind().await {
            Err(panic) => return Some(format!("panicked planning {text:?}: {}", panic_text(&panic))),
            Ok(Err(e)) if e.to_string().trim().is_empty() => {
                return Some(format!("{text:?}: an error without a message"));
            }
            Ok(_) => {}
        }
    }
    None
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_sql_front_end_never_panics_and_every_error_has_a_message() {
    let mut rng = Rng::new("sql");
    let sandbox = Sandbox::start(&SandboxArgs { time_scale: 0.0, ..SandboxArgs::default() }).await.unwrap();
    let session = sandbox_session(true, &sandbox).await;
    let registry = Registry::embedded().unwrap();
    let images = common::Http { base: sandbox.base_url.clone(), client: reqwest::Client::new() }
        .all_images(Some(&sandbox.token))
        .await;
    let values = Values::from_images(&images);
    let seeds = corpus("sql.txt");
    let mut failures = Vec::new();
    let mut tried = 0;
    for line in &seeds {
        if let Some(problem) = front_end(&session, &registry, line).await {
            failures.push((line.clone(), problem));
        }
        tried += 1;
    }
    let deadline = Instant::now() + budget(10);
    while Instant::now() < deadline && failures.is_empty() {
        let input = match rng.below(4) {
            0 => statement(&mut rng, &values),
            1 => lexical(&mut rng),
            2 => {
                let seed = rng.pick(&seeds).clone();
                mutate(&mut rng, &seed)
            }
            _ => {
                let two = format!("{}\n{}", rng.pick(&seeds).clone(), statement(&mut rng, &values));
                mutate(&mut rng, &two)
            }
        };
        // The splitter and parser see every input; planning, a sample (it is slower).
        let problem = match rng.chance(15) {
            true => front_end(&session, &registry, &input).await,
            false => splitter_and_parser(&registry, &input),
        };
        if let Some(problem) = problem {
            failures.push((input, problem));
        }
        tried += 1;
    }
    println!("sql: {tried} inputs tried");
    assert!(failures.is_empty(), "{} failing inputs; the first: {:?}", failures.len(), failures[0]);
}

/// The cheap half of [`front_end`].
fn splitter_and_parser(registry: &Registry, input: &str) -> Option<String> {
    std::panic::catch_unwind(|| {
        let _ = sql::is_complete(input);
        for piece in sql::split_statements(input) {
            let _ = meta::parse(&piece.text, registry);
            if let Err(e) = sql::parse(&piece.text, sql::Dialect::Generic) {
                assert!(!e.to_string().trim().is_empty(), "a parse error without a message");
            }
        }
    })
    .err()
    .map(|panic| format!("panicked: {}", panic_text(&panic)))
}

/// A filter as the client builds them.
fn filter(rng: &mut Rng, depth: usize) -> Filter {
    if depth > 0 && rng.chance(40) {
        let parts: Vec<Filter> = (0..2 + rng.below(3)).map(|_| filter(rng, depth - 1)).collect();
        return if rng.chance(50) { Filter::all(parts) } else { Filter::any(parts) };
    }
    let field =
        rng.pick(&["label", "size", "tags", "is_public", "vendor", "weird \"field\"", "ünï", "a\\b"]).to_string();
    let op = *rng.pick(&[
        FilterOp::Eq,
        FilterOp::Neq,
        FilterOp::Gt,
        FilterOp::Gte,
        FilterOp::Lt,
        FilterOp::Lte,
        FilterOp::Contains,
    ]);
    let value = match rng.below(6) {
        0 => json!(rng.next() as i64),
        1 => json!(rng.chance(50)),
        2 => Value::Null,
        3 => json!(f64::from_bits(rng.next() & 0x7fef_ffff_ffff_ffff)),
        _ => {
            let text = *rng.pick(&["café", "x\",\"is_public\":true", "日本語 \u{1f600}", "\u{0}\u{1b}", ""]);
            json!(mutate(rng, text))
        }
    };
    Filter::cond(field, op, value)
}

/// Arbitrary JSON, biased to what could hurt a parser: deep nesting, long arrays, wrong types.
fn hostile_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 4 } else { 9 }) {
        0 => json!(rng.next()),
        1 => json!(rng.pick(&["+and", "+or", "+order_by", "+order", "+gt", "label", "asc"])),
        2 => Value::Null,
        3 => json!(rng.chance(50)),
        4 => Value::Array((0..rng.below(4)).map(|_| hostile_json(rng, depth - 1)).collect()),
        5 => {
            json!({ *rng.pick(&["+and", "+or"]): (0..rng.below(3000)).map(|_| json!({"label": "x"})).collect::<Vec<_>>() })
        }
        6 => {
            let mut deep = json!({"label": "x"});
            for _ in 0..rng.below(200) {
                deep = json!({ *rng.pick(&["+and", "+or"]): [deep] });
            }
            deep
        }
        _ => {
            let key = rng
                .pick(&["+and", "+or", "+order_by", "+order", "label", "size", "tags", "+contains", "+neq"])
                .to_string();
            json!({ key: hostile_json(rng, depth - 1) })
        }
    }
}

#[test]
fn x_filters_round_trip_and_hostile_json_is_refused_without_harm() {
    let mut rng = Rng::new("xfilter");
    let mut tried = 0;
    for line in corpus("xfilter.txt") {
        let parsed = std::panic::catch_unwind(|| XFilter::parse(&line));
        assert!(parsed.is_ok(), "the parser panicked on {line:?}");
        tried += 1;
    }
    let deadline = Instant::now() + budget(4);
    while Instant::now() < deadline {
        let generated = XFilter { filter: Some(filter(&mut rng, 3)), order: None };
        let text = generated.encode();
        assert!(text.is_ascii(), "{text}");
        if generated.fits() {
            let parsed = XFilter::parse(&text).map(|p| p.encode());
            assert_eq!(parsed.as_deref(), Ok(text.as_str()), "{text}");
        }
        let hostile = hostile_json(&mut rng, 6).to_string();
        let parsed = std::panic::catch_unwind(|| XFilter::parse(&hostile));
        assert!(parsed.is_ok(), "the parser panicked on {hostile:.200}");
        if let Ok(Ok(parsed)) = parsed {
            assert!(parsed.fits(), "a filter beyond the limits was accepted: {hostile:.200}");
        }
        tried += 2;
    }
    println!("xfilter: {tried} inputs tried");
}

#[tokio::test]
async fn pushdown_returns_the_rows_local_evaluation_does() {
    let mut rng = Rng::new("pushdown");
    let sandbox = Sandbox::start(&SandboxArgs { seed_images: 40, ..SandboxArgs::default() }).await.unwrap();
    let pushed = sandbox_session(true, &sandbox).await;
    let local = sandbox_session(false, &sandbox).await;
    let images = common::Http { base: sandbox.base_url.clone(), client: reqwest::Client::new() }
        .all_images(Some(&sandbox.token))
        .await;
    let values = Values::from_images(&images);
    let ids = |outcome: Result<Outcome, imageql::error::Error>| async move {
        let Outcome::Rows { stream, .. } = outcome.map_err(|e| e.to_string())? else { return Err("no rows".into()) };
        let batches: Vec<_> = stream.try_collect().await.map_err(|e| e.to_string())?;
        let formatted = datafusion::arrow::util::pretty::pretty_format_batches(&batches).map_err(|e| e.to_string())?;
        Ok::<String, String>(formatted.to_string())
    };
    let (mut tried, mut nonempty) = (0, 0);
    let deadline = Instant::now() + budget(10);
    while Instant::now() < deadline {
        let sql = format!("SELECT id FROM linode.images.images WHERE {} ORDER BY id", predicate(&mut rng, &values, 3));
        let remote = ids(pushed.execute(&sql).await).await;
        let reference = ids(local.execute(&sql).await).await;
        assert_eq!(remote, reference, "pushdown and local evaluation disagree on {sql}");
        tried += 1;
        nonempty += usize::from(reference.is_ok_and(|r| r.lines().count() > 4));
    }
    println!("pushdown: {tried} predicates, {nonempty} with rows");
    assert!(nonempty > 0 || tried < 10, "the generator never matched a row");
}

#[test]
fn the_provider_loader_names_the_file_of_a_broken_provider_file() {
    let mut rng = Rng::new("providers");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let yaml: Vec<_> = files.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")).cloned().collect();
    let words =
        ["", "~", "[]", "{}", "-1", "99999999999999999999", "\"\"", "yes", "{{ x }}", "'", "é", ": :", "- x", "\t"];
    let mut tried = 0;
    let deadline = Instant::now() + budget(5);
    while Instant::now() < deadline {
        let copy = tempfile::tempdir().unwrap();
        for file in &files {
            let target = copy.path().join(file.strip_prefix(&root).unwrap());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(file, target).unwrap();
        }
        let victim = rng.pick(&yaml).clone();
        let text = std::fs::read_to_string(&victim).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(lines.len());
            match rng.below(4) {
                0 => {
                    lines.remove(at);
                }
                1 => {
                    if let Some((key, _)) = lines[at].clone().split_once(':') {
                        lines[at] = format!("{key}: {}", rng.pick(&words));
                    }
                }
                2 => lines[at] = format!(" {}", lines[at]),
                _ => {
                    let copy = lines[at].clone();
                    lines.insert(at, copy);
                }
            }
        }
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(copy.path().join(victim.strip_prefix(&root).unwrap()), lines.join("\n")).unwrap();
        let loaded = std::panic::catch_unwind(|| Registry::from_dir(copy.path()).map(Arc::new));
        let Ok(loaded) = loaded else {
            panic!("the loader panicked on this {name}:\n{}", lines.join("\n"));
        };
        // The broken file, or a file that no longer agrees with it (a seed file), is named.
        if let Err(e) = loaded {
            let message = e.to_string();
            let names_a_file = files.iter().any(|f| message.contains(&*f.file_name().unwrap().to_string_lossy()));
            assert!(names_a_file && message.len() > name.len() + 10, "{message}\n{name}:\n{}", lines.join("\n"));
        }
        tried += 1;
    }
    println!("providers: {tried} mutated provider trees loaded");
}
