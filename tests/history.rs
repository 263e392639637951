//! The history store through the real binary and the sandbox's clock: recordings that keep
//! only what changed, the past at any moment, every change of a period, and the files read
//! back by DuckDB.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{SandboxProcess, TOKEN};
use serde_json::{Value, json};

struct History {
    sandbox: SandboxProcess,
    store: tempfile::TempDir,
}

impl History {
    fn start() -> History {
        History {
            sandbox: SandboxProcess::start(&["--time-scale", "0", "--seed-images", "3"]),
            store: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> common::Run {
        let mut all = vec!["--no-cache", "--history", self.store.path().to_str().unwrap(), "-o", "ndjson"];
        all.extend(args);
        self.sandbox.imageql(&all)
    }

    fn rows(&self, sql: &str) -> Vec<Value> {
        self.run(&["-e", sql]).rows()
    }

    /// Written rows per table of one recording.
    fn record(&self) -> BTreeMap<String, i64> {
        self.run(&["record"])
            .rows()
            .iter()
            .map(|r| (r["table"].as_str().unwrap().to_string(), r["written"].as_i64().unwrap()))
            .collect()
    }

    fn files(&self) -> usize {
        walk(self.store.path()).iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count()
    }

    /// Moves the sandbox's clock by `seconds`; returns its time.
    fn advance(&self, seconds: i64) -> String {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
                "-H",
                "content-type: application/json",
            ])
            .args([
                "-d",
                &json!({"advance_seconds": seconds}).to_string(),
                &format!("{}/sandbox/clock", self.sandbox.origin()),
            ])
            .output()
            .unwrap();
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        body["now"].as_str().unwrap().to_string()
    }

    /// The label of each of `ids` at `moment`, from the history.
    fn labels_at(&self, moment: &str, ids: &[&str]) -> BTreeMap<String, String> {
        let wanted: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
        self.rows(&format!(
            "SELECT id, label FROM linode.history.images_at('{moment}') WHERE id IN ({})",
            wanted.join(", ")
        ))
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["label"].as_str().unwrap().to_string()))
        .collect()
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { found.extend(walk(&path)) } else { found.push(path) }
    }
    found
}

#[test]
fn recordings_keep_what_changed_and_answer_any_moment_and_period() {
    let history = History::start();
    let images = "linode.images.images";
    let first = history.record();
    let private =
        history.rows("SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public")[0]["n"].as_i64().unwrap();
    assert_eq!(first[images], private, "the first recording keeps every private image, no public one");
    let files = history.files();
    // An unchanged account writes nothing.
    let again = history.record();
    assert!(again.values().all(|n| *n == 0), "{again:?}");
    assert_eq!(history.files(), files);
    // What a recorder killed mid-write leaves (a hidden, unfinished file) is never read.
    let day = walk(history.store.path()).into_iter().find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
    std::fs::write(day.with_file_name(".killed-mid-write.parquet.tmp"), b"PAR1 half a file").unwrap();
    assert!(history.record().values().all(|n| *n == 0));
    assert_eq!(history.rows("SELECT count(*) AS n FROM linode.history.images")[0]["n"], json!(private));

    let t0 = history.advance(0);
    let ids: Vec<String> = history
        .rows("SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id LIMIT 3")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let (a, c) = (ids[0].as_str(), ids[2].as_str());
    let before = history.labels_at(&t0, &[a, c]);

    // An hour later: a renamed, b made.
    history.advance(3600);
    history.run(&["-e", &format!("REPLACE linode.images.images SET label = 'renamed' WHERE id = '{a}'")]).ok();
    let instance =
        history.rows("SELECT id FROM linode.linode.instances ORDER BY id LIMIT 1")[0]["id"].as_i64().unwrap();
    let disk = history
        .rows(&format!("SELECT id FROM linode.linode.disks WHERE linodeId = {instance} ORDER BY id LIMIT 1"))[0]["id"]
        .as_i64()
        .unwrap();
    let made = history.rows(&format!(
        "INSERT /*+ AWAIT */ INTO linode.images.images (disk_id, label) VALUES ({disk}, 'made') RETURNING id"
    ));
    let b = made[0]["id"].as_str().unwrap().to_string();
    history.record();
    // Taken after the recording, which may have seen a later second.
    let t1 = history.advance(0);
    // Another hour: c deleted, b renamed.
    history.advance(3600);
    history.run(&["-e", &format!("DELETE FROM linode.images.images WHERE id = '{c}'")]).ok();
    history.run(&["-e", &format!("REPLACE linode.images.images SET label = 'made-2' WHERE id = '{b}'")]).ok();
    history.record();
    let t2 = history.advance(0);

    // The rows at a moment, as a hand-kept log has them.
    assert_eq!(history.labels_at(&t0, &[a, &b, c]), before);
    let at_t1: BTreeMap<String, String> =
        [(a.to_string(), "renamed".to_string()), (b.clone(), "made".into()), (c.to_string(), before[c].clone())].into();
    assert_eq!(history.labels_at(&t1, &[a, &b, c]), at_t1);
    let at_t2: BTreeMap<String, String> = [(a.to_string(), "renamed".to_string()), (b.clone(), "made-2".into())].into();
    assert_eq!(history.labels_at(&t2, &[a, &b, c]), at_t2);

    // Every change of the period, with the fields that changed.
    let changes = history.rows(&format!(
        "SELECT id, change, at, fields FROM linode.history.changes('{t0}'::timestamp + interval '1 second', \
                                                                   '{t2}'::timestamp + interval '1 second') \
         WHERE id IN ('{a}', '{b}', '{c}') ORDER BY at, id"
    ));
    let seen: Vec<(String, String, bool)> = changes
        .iter()
        .map(|r| {
            let fields = r["fields"].as_str().unwrap_or_default();
            (
                r["id"].as_str().unwrap().to_string(),
                r["change"].as_str().unwrap().to_string(),
                fields.split(", ").any(|f| f == "label"),
            )
        })
        .collect();
    let mut expected = vec![(a.to_string(), "changed".to_string(), true), (b.clone(), "created".into(), false)];
    expected.sort();
    let mut later = vec![(b.clone(), "changed".to_string(), true), (c.to_string(), "deleted".into(), false)];
    later.sort();
    expected.extend(later);
    assert_eq!(seen, expected, "{changes:?}");
    // Versions: a's first ended when it was renamed.
    let versions = history.rows(&format!(
        "SELECT label, valid_to FROM linode.history.images_versions WHERE id = '{a}' ORDER BY valid_from"
    ));
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["valid_to"], Value::Null, "the current version");

    // usage bills the deleted image exactly from what the history saw of it (it was made
    // before the events the API keeps); without the history it is an estimate.
    let bill = |store: &str| {
        let sql = format!(
            "SELECT gb, copies, estimated FROM linode.images.usage('{t2}'::timestamp - interval '30 days', '{t2}') WHERE id = '{c}'"
        );
        history.sandbox.imageql(&["--no-cache", "--history", store, "-o", "ndjson", "-e", &sql]).rows()
    };
    let seen = bill(history.store.path().to_str().unwrap());
    let elsewhere = tempfile::tempdir().unwrap();
    let unseen = bill(elsewhere.path().to_str().unwrap());
    assert_eq!((&seen[0]["estimated"], &unseen[0]["estimated"]), (&json!(false), &json!(true)), "{seen:?} {unseen:?}");
    assert!(seen[0]["gb"].as_f64().unwrap() > 0.0 && seen[0]["copies"].as_i64().unwrap() > 0, "{seen:?}");

    // The files are plain Parquet: DuckDB reads them, partitions as columns.
    let python = common::parquet_readers().join("bin/python");
    let script = "import duckdb, sys\n\
                  rows = duckdb.sql(f\"SELECT account, \\\"table\\\", count(*) FROM read_parquet('{sys.argv[1]}/**/*.parquet', hive_partitioning = true) GROUP BY ALL ORDER BY ALL\").fetchall()\n\
                  print(rows)";
    let out = std::process::Command::new(python)
        .args(["-c", script, history.store.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let observations = history.rows("SELECT count(*) AS n FROM linode.history.images")[0]["n"].as_i64().unwrap();
    assert!(stdout.contains(&format!("('default', 'linode.images.images', {observations})")), "{stdout}");
}

/// The parquet files of each day of the images table, oldest day first.
fn files_per_day(store: &Path) -> Vec<(String, usize)> {
    let table = walk(store)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| p.to_string_lossy().contains("table=linode.images.images"));
    let mut days: BTreeMap<String, usize> = BTreeMap::new();
    for file in table {
        let day = file.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
        *days.entry(day).or_default() += 1;
    }
    days.into_iter().collect()
}

#[test]
fn past_days_are_one_file_each_and_a_retention_folds_what_is_older() {
    let history = History::start();
    // Recordings at 01:00 and 02:00 of each day, so that a day's two stay on one date.
    let now = chrono::NaiveDateTime::parse_from_str(&history.advance(0), "%Y-%m-%dT%H:%M:%S").unwrap();
    let next = (now.date() + chrono::Duration::days(1)).and_hms_opt(1, 0, 0).unwrap();
    history.advance((next - now).num_seconds());
    let id = history.rows("SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id LIMIT 1")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rename = |label: String| {
        history.run(&["-e", &format!("REPLACE linode.images.images SET label = '{label}' WHERE id = '{id}'")]).ok();
    };
    for day in 0..5 {
        rename(format!("day-{day}-a"));
        history.record();
        history.advance(3600);
        rename(format!("day-{day}-b"));
        history.record();
        history.advance(86_400 - 3600);
    }
    let days = files_per_day(history.store.path());
    assert_eq!(days.len(), 5, "{days:?}");
    assert!(days[..4].iter().all(|(_, files)| *files == 1), "past days are merged: {days:?}");
    assert_eq!(days[4].1, 2, "today is not: {days:?}");
    let versions = |history: &History| {
        history.rows(&format!("SELECT label FROM linode.history.images_versions WHERE id = '{id}' ORDER BY valid_from"))
    };
    assert_eq!(versions(&history).len(), 10);
    let held = history.rows("SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public")[0]["n"].clone();

    // Keeping 2 days folds days 0, 1 and 2 into each row's last observation then.
    history.run(&["record", "--keep", "2d"]).ok();
    let kept: Vec<Value> = versions(&history).into_iter().map(|r| r["label"].clone()).collect();
    assert_eq!(kept, ["day-2-b", "day-3-a", "day-3-b", "day-4-a", "day-4-b"].map(|l| json!(l)));
    let days = files_per_day(history.store.path());
    let folded_into = format!("day={}", next.date() + chrono::Duration::days(2));
    assert_eq!(days[0].0, folded_into, "nothing older is left: {days:?}");
    assert!(days.iter().all(|(_, files)| *files == 1), "{days:?}");
    // Every row is still known: nothing is recorded again as new.
    let now = history.advance(0);
    let at = history.rows(&format!("SELECT count(*) AS n FROM linode.history.images_at('{now}')"));
    assert_eq!(at[0]["n"], held);
    assert!(history.record().values().all(|n| *n == 0));
}

#[test]
fn a_recorder_killed_at_any_moment_leaves_a_store_that_reads_whole() {
    let history = History {
        sandbox: SandboxProcess::start(&["--time-scale", "0", "--seed-images", "400", "--latency-ms", "5"]),
        store: tempfile::tempdir().unwrap(),
    };
    history.record();
    let ids: Vec<String> = history
        .rows("SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id LIMIT 12")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let store = history.store.path().to_str().unwrap().to_string();
    for (round, id) in ids.iter().enumerate() {
        history
            .run(&["-e", &format!("REPLACE linode.images.images SET label = 'round-{round}' WHERE id = '{id}'")])
            .ok();
        let mut recorder = common::imageql_command(history.store.path())
            .args(["--api-url", &history.sandbox.url, "--history", &store, "--no-cache", "record"])
            .env("LINODE_TOKEN", TOKEN)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed at a different moment each round: while reading, comparing, writing or renaming.
        std::thread::sleep(std::time::Duration::from_millis(10 * round as u64));
        let _ = recorder.kill(); // SIGKILL
        let _ = recorder.wait();
    }
    // Whatever was left, the store reads whole, and the next recording catches up.
    history.record();
    let labels = history.rows(&format!(
        "SELECT id, label FROM linode.history.images_at('{}') WHERE id IN ({}) ORDER BY id",
        history.advance(0),
        ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ")
    ));
    let expected: Vec<Value> =
        ids.iter().enumerate().map(|(round, id)| json!({"id": id, "label": format!("round-{round}")})).collect();
    let mut sorted = expected.clone();
    sorted.sort_by_key(|r| r["id"].as_str().unwrap().to_string());
    assert_eq!(labels, sorted);
    assert!(history.record().values().all(|n| *n == 0));
    // Every visible file reads as Parquet (a broken one would fail the query).
    let observations = history.rows("SELECT count(*) AS n FROM linode.history.images")[0]["n"].as_i64().unwrap();
    assert!(observations >= 400, "{observations}");
}
