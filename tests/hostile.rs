//! Hostile input, one regression test per finding of the hostile-input probe: each is run
//! through the real binary against a real sandbox, and its effect (or its lack of one) is
//! read back from the sandbox's API and access log.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SandboxProcess, TOKEN};
use serde_json::{Value, json};

fn sandbox() -> SandboxProcess {
    SandboxProcess::start(&["--time-scale", "0"])
}

/// Every private image id the account holds, read from the API.
async fn private_ids(sandbox: &SandboxProcess) -> Vec<String> {
    let images = sandbox.client().all_images(Some(TOKEN)).await;
    let mut ids: Vec<String> =
        images.iter().filter(|i| i["is_public"] == false).map(|i| i["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// Requests in `log` that are not reads.
fn changes(log: &[Value]) -> usize {
    log.iter().filter(|r| r["method"] != "GET").count()
}

#[tokio::test]
async fn statements_imageql_does_not_implement_are_refused_and_change_nothing() {
    let sandbox = sandbox();
    let before = private_ids(&sandbox).await;
    let cases = [
        ("DROP TABLE linode.images.images", "DROP TABLE on linode.images.images is not supported"),
        ("DROP VIEW linode.images.storage_costs", "DROP VIEW"),
        ("CREATE VIEW linode.images.mine AS SELECT 1", "CREATE VIEW"),
        ("CREATE TABLE linode.images.copy AS SELECT 1 AS a", "CREATE TABLE"),
        ("DROP SCHEMA linode.images CASCADE", "DROP SCHEMA"),
        ("TRUNCATE linode.images.images", "TRUNCATE on linode.images.images is not supported"),
        ("COPY (SELECT 1 AS a) TO '/tmp/imageql-never.csv' STORED AS NOPE", "STORED AS NOPE is not supported"),
        ("INSERT OVERWRITE linode.images.images SELECT * FROM linode.images.images", "not supported"),
        ("INSERT INTO linode.images.images (disk_id) VALUES (67890) ON CONFLICT DO NOTHING", "not supported"),
        ("REPLACE INTO linode.images.images (disk_id) VALUES (67890)", "not supported"),
        ("INSERT IGNORE INTO linode.images.images (disk_id) VALUES (67890)", "not supported"),
        ("REPLACE linode.images.images SET label = 'a', label = 'b' WHERE id = 'private/1001'", "label"),
        ("REPLACE linode.images.images SET label = 'a' WHERE NOT is_public LIMIT 1", "LIMIT"),
        ("REPLACE linode.images.images SET label = 'a' WHERE NOT is_public ORDER BY id", "ORDER BY"),
        ("DELETE FROM linode.images.images WHERE NOT is_public ORDER BY id LIMIT 1", "ORDER BY"),
    ];
    for (sql, words) in cases {
        let mark = sandbox.log().len();
        let stderr = sandbox.imageql(&["-e", sql]).fails();
        assert!(stderr.contains(words), "{sql}: {stderr}");
        assert_eq!(changes(&sandbox.log_since(mark)), 0, "{sql} sent a change");
    }
    assert!(!std::path::Path::new("/tmp/imageql-never.csv").exists());
    assert_eq!(private_ids(&sandbox).await, before);
}

#[tokio::test]
async fn delete_with_limit_deletes_exactly_that_many() {
    let sandbox = sandbox();
    let before = private_ids(&sandbox).await;
    let deletable = sandbox.client().all_images(Some(TOKEN)).await;
    assert!(deletable.iter().filter(|i| i["is_public"] == false).count() > 2);
    let out = sandbox.imageql(&["-e", "DELETE FROM linode.images.images WHERE NOT is_public LIMIT 2"]).ok();
    let after = private_ids(&sandbox).await;
    assert_eq!(after.len(), before.len() - 2, "{out}");
    let gone: Vec<&String> = before.iter().filter(|id| !after.contains(id)).collect();
    for id in gone {
        assert!(out.contains(id.as_str()), "the summary names {id}: {out}");
    }
}

/// `n` copies of `term` joined by `op`.
fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

#[test]
fn statements_nested_too_deep_fail_with_a_message_not_a_crash() {
    let sandbox = sandbox();
    let long = [
        format!("SELECT {}", chain("1", "+", 5000)),
        format!("SELECT count(*) FROM linode.images.images WHERE {}", chain("label = 'x'", " OR ", 5000)),
        format!("SELECT count(*) FROM linode.images.images WHERE {}", chain("size > 1", " AND ", 5000)),
        format!("EXPLAIN DELETE FROM linode.images.images WHERE {}", chain("label = 'x'", " OR ", 5000)),
        format!("SELECT count(*) FROM ({})", chain("SELECT 1 AS a", " UNION ALL ", 5000)),
        format!(
            "SELECT count(*) FROM (SELECT 1 AS a) t0 {}",
            (1..2000).map(|i| format!("JOIN (SELECT 1 AS a) t{i} ON true")).collect::<Vec<_>>().join(" ")
        ),
        format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000)),
    ];
    for sql in &long {
        let run = sandbox.imageql(&["-e", sql]);
        assert_eq!(run.code(), 1, "{}…: {}", &sql[..60], run.stderr());
        assert!(run.stderr().contains("imageql: error:") && run.stderr().len() < 2000, "{}", run.stderr());
    }
    // Within the documented depth (1000), long chains run and answer correctly.
    let terms = 900;
    let rows = sandbox.rows(&format!("SELECT {} AS total", chain("1", "+", terms)));
    assert_eq!(rows[0]["total"], json!(terms));
}

/// Runs imageql with a deadline: a hang is a failure, not a stuck test.
fn run_with_deadline(command: &mut Command, seconds: u64) -> common::Run {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("imageql did not finish within {seconds} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    common::Run(child.wait_with_output().unwrap())
}

#[test]
fn copy_checks_its_destination_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let cases = [
        ("/proc/x.csv".to_string(), "cannot create files in /proc"),
        (format!("{}/x.csv", dangling.display()), "symbolic link to nothing"),
        (format!("{}/missing/x.csv", dir.path().display()), "does not exist"),
    ];
    std::os::unix::fs::symlink(dir.path().join("nowhere.csv"), dir.path().join("dangling.csv")).unwrap();
    let cases = cases.into_iter().chain([(dir.path().join("dangling.csv").display().to_string(), "symbolic link")]);
    for (target, words) in cases {
        let sql = format!("COPY (SELECT 1 AS a) TO '{target}'");
        let run = run_with_deadline(Command::new(common::binary()).args(["--sandbox", "-e", &sql]), 30);
        assert_eq!(run.code(), 1, "{sql}: {}", run.stderr());
        assert!(run.stderr().contains(words), "{sql}: {}", run.stderr());
    }
    let good = dir.path().join("out.csv");
    let sql = format!("COPY (SELECT 7 AS a) TO '{}'", good.display());
    run_with_deadline(Command::new(common::binary()).args(["--sandbox", "-e", &sql]), 30).ok();
    assert_eq!(std::fs::read_to_string(good).unwrap(), "a\n7\n");
}

#[test]
fn usage_errors_exit_2_whatever_the_input_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad_provider = dir.path().join("providers");
    std::fs::create_dir_all(bad_provider.join("linode/services")).unwrap();
    std::fs::write(bad_provider.join("linode/provider.yaml"), "id: linode\nbaseUrl: [not, a, string]\n").unwrap();
    let script = dir.path().join("bad.sql");
    std::fs::write(&script, b"SELECT 1;\xff\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--api-url".into(), "not a url".into()], "not a URL"),
        (vec!["--api-url".into(), "http://".into()], "not a URL"),
        (vec!["--api-url".into(), "http:".into()], "not a URL"),
        (vec!["--api-url".into(), "http:images".into()], "names no host"),
        (vec!["--api-url".into(), "http://images.example/v4".into()], "plain http"),
        (vec!["--providers".into(), "/nonexistent".into()], "/nonexistent"),
        (vec!["--providers".into(), bad_provider.display().to_string()], "provider.yaml"),
        (vec!["-f".into(), script.display().to_string()], "UTF-8"),
    ];
    for (args, words) in cases {
        let run = common::Run(
            Command::new(common::binary())
                .args(&args)
                .args(["-e", "SELECT 1"])
                .env("LINODE_TOKEN", TOKEN)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        );
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        assert!(run.stderr().contains(words), "{args:?}: {}", run.stderr());
        assert!(!run.stderr().contains(TOKEN));
    }
    // The same bytes on standard input: the same exit code.
    let mut child = Command::new(common::binary())
        .arg("--sandbox")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"SELECT 1;\xff\n").unwrap();
    let run = common::Run(child.wait_with_output().unwrap());
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("UTF-8"), "{}", run.stderr());
}

/// A loopback server that answers every request with `answer` and keeps what it received.
fn recording_server(answer: String) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buffer = [0u8; 8192];
            let n = stream.read(&mut buffer).unwrap_or(0);
            let _ = sender.send(String::from_utf8_lossy(&buffer[..n]).into_owned());
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (address, received)
}

#[test]
fn the_token_goes_to_the_configured_api_only() {
    let sandbox = sandbox();
    // A proxy in the environment is not used for plain http: it would see the token.
    let (proxy, proxied) = recording_server("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".into());
    let run = common::Run(
        Command::new(common::binary())
            .args(["--api-url", &sandbox.url, "-o", "csv", "-e", "SELECT count(*) AS n FROM linode.images.images"])
            .env("LINODE_TOKEN", TOKEN)
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy)
            .env("ALL_PROXY", &proxy)
            .output()
            .unwrap(),
    );
    run.ok();
    assert!(proxied.try_recv().is_err(), "the proxy received a request");

    // A redirect to another origin is not followed with the token (nor at all).
    let (elsewhere, seen_elsewhere) = recording_server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".into());
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: {elsewhere}/v4/images\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let (redirecting, _) = recording_server(redirect);
    let run = common::Run(
        Command::new(common::binary())
            .args(["--api-url", &format!("{redirecting}/v4"), "-e", "SELECT id FROM linode.images.images"])
            .env("LINODE_TOKEN", TOKEN)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(run.stderr().contains("302"), "{}", run.stderr());
    assert!(seen_elsewhere.try_recv().is_err(), "the redirect was followed to another origin");
}

#[tokio::test]
async fn non_ascii_values_filter_on_the_server_as_they_do_locally() {
    let sandbox = sandbox();
    sandbox
        .imageql(&[
            "-e",
            "REPLACE linode.images.images SET tags = '[\"ünïcode\", \"日本語\"]' WHERE id = 'private/1001'",
        ])
        .ok();
    let mark = sandbox.log().len();
    for (sql, expected) in [
        ("SELECT id FROM linode.images.images WHERE label = 'café'", vec![]),
        ("SELECT id FROM linode.images.images WHERE array_has(tags, '日本語')", vec![json!({"id": "private/1001"})]),
        ("SELECT id FROM linode.images.images WHERE array_has(tags, 'ünïcode')", vec![json!({"id": "private/1001"})]),
    ] {
        let pushed = sandbox.rows(sql);
        let local = sandbox.imageql(&["--no-pushdown", "-o", "ndjson", "-e", sql]).rows();
        assert_eq!(pushed, expected, "{sql}");
        assert_eq!(pushed, local, "{sql}");
    }
    let filters: Vec<String> =
        sandbox.log_since(mark).iter().filter_map(|r| r["x_filter"].as_str().map(str::to_string)).collect();
    assert!(filters.iter().any(|f| f.contains("caf\\u00e9")), "{filters:?}");
    assert!(filters.iter().all(|f| f.is_ascii()), "{filters:?}");
    sandbox.imageql(&["-e", "DELETE FROM linode.images.images WHERE array_has(tags, '日本語')"]).ok();
    let (status, _) = sandbox.client().get("/images/private/1001", Some(TOKEN), None).await;
    assert_eq!(status, 404);
}

#[test]
fn text_and_table_output_escape_what_would_break_lines_or_drive_the_terminal() {
    let sandbox = sandbox();
    let description = "line one\nline two\ttabbed \u{1b}[2J\u{1b}]0;owned\u{7} \u{9b}31m back\\slash";
    let sql = format!(
        "REPLACE linode.images.images SET description = '{}' WHERE id = 'private/1002'",
        description.replace('\'', "''")
    );
    sandbox.imageql(&["-e", &sql]).ok();
    let select = "SELECT id, description FROM linode.images.images WHERE id = 'private/1002'";
    let text = sandbox.imageql(&["-o", "text", "-e", select]).ok();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let cells: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
    assert_eq!(cells[0], "private/1002");
    assert_eq!(cells[1], "line one\\nline two\\ttabbed \\x1b[2J\\x1b]0;owned\\x07 \\u009b31m back\\\\slash");
    let table = sandbox.imageql(&["-e", select]).ok();
    assert!(!text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{text:?}");
    assert!(!table.chars().any(|c| c.is_control() && c != '\n'), "{table:?}");
    // Machine formats carry the value as it is.
    let rows = sandbox.rows(select);
    assert_eq!(rows[0]["description"], json!(description));
}

#[tokio::test]
async fn the_sandbox_clock_moves_only_for_an_account() {
    let sandbox = sandbox();
    let http = sandbox.client();
    let clock = format!("{}/sandbox/clock", sandbox.origin());
    let (before, now) = common::json_of(http.client.get(&clock).send().await.unwrap()).await;
    assert_eq!(before, 200);
    let advance = json!({"advance_seconds": 48 * 3600});
    let (status, body) = common::json_of(http.client.post(&clock).json(&advance).send().await.unwrap()).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) =
        common::json_of(http.client.post(&clock).bearer_auth("not-a-token").json(&advance).send().await.unwrap()).await;
    assert_eq!(status, 401);
    let (_, unchanged) = common::json_of(http.client.get(&clock).send().await.unwrap()).await;
    let moved =
        |t: &Value| chrono_like_days(t["now"].as_str().unwrap()) - chrono_like_days(now["now"].as_str().unwrap());
    assert!(moved(&unchanged) < 1, "{now} → {unchanged}");
    let (status, after) =
        common::json_of(http.client.post(&clock).bearer_auth(TOKEN).json(&advance).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(moved(&after) >= 2, "{now} → {after}");
}

/// Days since the epoch of an API timestamp (`2024-05-01T12:00:00`), roughly.
fn chrono_like_days(timestamp: &str) -> i64 {
    let date: Vec<i64> = timestamp[..10].split('-').map(|p| p.parse().unwrap()).collect();
    date[0] * 372 + date[1] * 31 + date[2]
}

#[test]
fn the_sandbox_keeps_its_state_private_and_refuses_bad_options_and_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-a-file-token\n").unwrap();
    {
        let sandbox = SandboxProcess::start(&[
            "--data-dir",
            &data.display().to_string(),
            "--token-file",
            &token_file.display().to_string(),
        ]);
        let state = data.join("state.json");
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "state.json holds tokens");
        let run = sandbox.imageql_with_token(
            Some("from-a-file-token"),
            &["-o", "csv", "-e", "SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public"],
        );
        assert_ne!(run.ok().trim(), "n\n0");
        assert_eq!(sandbox.imageql(&["-e", "SELECT 1 FROM linode.images.images WHERE NOT is_public"]).code(), 1);
    }
    // A saved clock offset out of range is refused at start, not by every request.
    let state = data.join("state.json");
    let mut saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    saved["clock_offset"] = json!(i64::MAX);
    std::fs::write(&state, saved.to_string()).unwrap();
    let start = |args: &[&str]| {
        common::Run(
            Command::new(common::binary())
                .arg("sandbox")
                .args(["--listen", "127.0.0.1:0"])
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let run = start(&["--data-dir", &data.display().to_string()]);
    assert_ne!(run.code(), 0);
    assert!(run.stderr().contains("clock_offset"), "{}", run.stderr());
    for (args, words) in [
        (vec!["--seed-images", "99999999999999"], "--seed-images"),
        (vec!["--max-total-gb", "18446744073709551615"], "--max-total-gb"),
        (vec!["--max-images", "99999999999"], "--max-images"),
        (vec!["--latency-ms", "99999999999"], "--latency-ms"),
    ] {
        let run = start(&args);
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        assert!(run.stderr().contains(words), "{args:?}: {}", run.stderr());
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let run = start(&["--token-file", &empty.display().to_string()]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("empty"), "{}", run.stderr());
}

#[tokio::test]
async fn the_sandbox_answers_oversized_requests_in_its_envelope_and_drops_slow_ones() {
    let sandbox = sandbox();
    let http = sandbox.client();
    let long_path = format!("/images?label={}", "x".repeat(10_000));
    let (status, body) = http.get(&long_path, Some(TOKEN), None).await;
    assert_eq!(status, 414);
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("longer than"), "{body}");
    let mut request = http.client.get(format!("{}/images", http.base));
    for i in 0..80 {
        request = request.header(format!("x-padding-{i}"), "y");
    }
    let (status, body) = common::json_of(request.send().await.unwrap()).await;
    assert_eq!(status, 431);
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("headers"), "{body}");
    let (status, body) = http.get("/images", Some(TOKEN), Some(&"x".repeat(40_000))).await;
    assert_eq!(status, 431, "{body}");
    let (status, body) =
        http.get("/images", Some(TOKEN), Some(&format!("{}{}", "[".repeat(5000), "]".repeat(5000)))).await;
    assert_eq!(status, 400, "{body}");

    // Upload URLs: unguessable, and no path tricks reach another upload.
    let create = |label: &str| json!({"label": label, "region": "us-east"});
    let (_, first) = http.send("POST", "/images/upload", Some(create("up-one"))).await;
    let (_, second) = http.send("POST", "/images/upload", Some(create("up-two"))).await;
    let secret =
        |v: &Value| v["upload_to"].as_str().unwrap().split('/').nth(4).unwrap().split('?').next().unwrap().to_string();
    assert_ne!(secret(&first), secret(&second));
    assert!(secret(&first).len() >= 24, "{first}");
    for path in
        ["/sandbox-uploads/..%2F..%2Fv4%2Fimages", "/sandbox-uploads/../v4/images", "/sandbox-uploads/x%2F..%2Fy"]
    {
        let response = http.client.put(format!("{}{path}", sandbox.origin())).body("x").send().await.unwrap();
        let (status, body) = common::json_of(response).await;
        // Either refused as an upload, or (once the client resolved `..`) not an upload at all.
        assert!([400, 403, 404, 405].contains(&status), "{path}: {status} {body}");
    }

    // A client that never finishes its headers is disconnected (after 10 s).
    let address = sandbox.origin().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream.write_all(b"GET /v4/images HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(25), "the half-sent request was kept open");
}

#[test]
fn the_token_appears_nowhere_imageql_prints_or_writes() {
    let sandbox = sandbox();
    // Each run's output is checked for the token when it is dropped (see tests/common).
    for sql in [
        "EXPLAIN SELECT * FROM linode.images.images WHERE label = 'x'",
        "EXPLAIN DELETE FROM linode.images.images WHERE label LIKE 'golden%'",
        "EXPLAIN ANALYZE SELECT id FROM linode.images.images",
        "SELECT * FROM linode.images.images WHERE id = 'private/1001'",
        "DELETE FROM linode.images.images WHERE id = 'linode/debian12'",
        "SELECT nope FROM linode.images.images",
        "SHOW METHODS IN linode.images.images",
    ] {
        for format in ["table", "json", "text"] {
            let _ = sandbox.imageql(&["-o", format, "-e", sql]);
        }
    }
    // A rejected token is not repeated either.
    let wrong = "canary-rejected-8e2a41";
    let run = sandbox.imageql_with_token(Some(wrong), &["-e", "SELECT id FROM linode.images.images"]);
    assert_eq!(run.code(), 1);
    assert!(run.stderr().contains("LINODE_TOKEN") && !run.stderr().contains(wrong), "{}", run.stderr());
    let log = std::fs::read_to_string(&sandbox.access_log).unwrap();
    assert!(!log.contains(wrong) && !log.contains(TOKEN));
}
