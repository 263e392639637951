//! `imageql serve` under a hostile client: what a remote client sends never reaches the
//! server's files, engine settings or other connections, never ends the process, and is told
//! the truth about the changes it made. Real psql and psycopg for what drivers send; a raw
//! wire client (`common::pgwire`) for what they never would.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::pgwire::{self, RawClient, Reply};
use common::{SandboxProcess, ServeProcess, TOKEN, postgres_clients};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// The SQLSTATE psql printed for the last error (it prints them with VERBOSITY verbose).
fn psql_verbose(server: &ServeProcess, commands: &[&str]) -> Output {
    let mut command = Command::new("psql");
    command.arg(server.url_for("reporter")).args(["-X", "-A", "-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=verbose"]);
    for c in commands {
        command.args(["-c", c]);
    }
    command.env("PGPASSWORD", TOKEN).env("PGCONNECT_TIMEOUT", "10").output().expect("psql runs")
}

/// Runs a Python script with psycopg against the server; returns its stdout (it must succeed).
fn python(server: &ServeProcess, script: &str) -> String {
    let venv = postgres_clients();
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .env("IMAGEQL_URL", server.url_for("reporter"))
        .env("IMAGEQL_PASSWORD", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn private_count(sandbox: &SandboxProcess) -> usize {
    sandbox.rows("SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public")[0]["n"].as_u64().unwrap()
        as usize
}

#[test]
fn clients_reach_no_server_file_engine_setting_or_definition() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("leak");
    std::fs::write(dir.path().join("disk.img.gz"), common::gzip(b"not a disk")).unwrap();
    let refused = [
        (format!("COPY (SELECT 1 AS a) TO '{}.csv'", target.display()), "42501"),
        (format!("COPY (SELECT 1 AS a) TO '{}.json'", target.display()), "42501"),
        (format!("COPY (SELECT 1 AS a) TO '{}.parquet' STORED AS PARQUET", target.display()), "42501"),
        (format!("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}/'", dir.path().display()), "25006"),
        (
            format!(
                "EXEC linode.images.images.post_upload_image @file='{}/disk.img.gz', @@json='{{\"label\":\"x\",\"region\":\"us-east\"}}'",
                dir.path().display()
            ),
            "42501",
        ),
        ("DROP TABLE linode.images.images".into(), "25006"),
        ("CREATE VIEW mine AS SELECT 1 AS a".into(), "25006"),
        ("CREATE TABLE mine AS SELECT 1 AS a".into(), "25006"),
        ("SET datafusion.execution.batch_size = 1".into(), "42501"),
        ("RESET datafusion.execution.batch_size".into(), "42501"),
    ];
    let before = sandbox.log().len();
    for (sql, code) in &refused {
        let out = psql_verbose(&server, &[sql]);
        let err = stderr(&out);
        assert!(err.contains(&format!("ERROR:  {code}")), "{sql}: {err}");
        assert!(!err.contains(&std::env::current_dir().unwrap().display().to_string()), "no server path: {err}");
    }
    let sent: Vec<_> = sandbox.log_since(before).into_iter().filter(|r| r["path"] != "/v4/profile").collect();
    assert!(sent.is_empty(), "nothing refused reached the API: {sent:?}");
    let left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(left, ["disk.img.gz"], "no file was written");
    // The connection's own settings still work.
    let out = server.psql(TOKEN, &["SET application_name = 'dash'", "SHOW application_name"]);
    assert!(text(&out.stdout).contains("dash"), "{}{}", text(&out.stdout), stderr(&out));
}

#[test]
fn allowed_files_stay_inside_the_directory_the_operator_gave() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("exports");
    std::fs::create_dir(&allowed).unwrap();
    std::os::unix::fs::symlink(dir.path(), allowed.join("up")).unwrap();
    let server = ServeProcess::start(&sandbox, &["--allow-files", allowed.to_str().unwrap()], &[]);
    let out = psql_verbose(&server, &["COPY (SELECT 7 AS a) TO 'report.csv'"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(allowed.join("report.csv")).unwrap(), "a\n7\n");
    for outside in ["../escape.csv", "up/escape.csv", "/tmp/escape.csv"] {
        let out = psql_verbose(&server, &[&format!("COPY (SELECT 1 AS a) TO '{outside}'")]);
        let err = stderr(&out);
        assert!(err.contains("ERROR:  42501") && err.contains("outside the directory"), "{outside}: {err}");
        assert!(!err.contains(allowed.to_str().unwrap()), "the allowed directory is not revealed: {err}");
    }
    assert!(!dir.path().join("escape.csv").exists());
    // A missing upload file is named as written, without the server's directories.
    let out = psql_verbose(
        &server,
        &[
            "EXEC linode.images.images.post_upload_image @file='missing.img.gz', @@json='{\"label\":\"x\",\"region\":\"us-east\"}'",
        ],
    );
    let err = stderr(&out);
    assert!(err.contains("missing.img.gz") && err.contains("no such file"), "{err}");
    assert!(!err.contains(allowed.to_str().unwrap()) && !err.contains("relative to"), "{err}");
}

#[test]
fn no_input_ends_the_server() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let address = server.address();
    // A binary text[] whose header claims 2^31-1 elements, in 69 bytes of message.
    let (mut client, _, _) = RawClient::login(&address, TOKEN);
    let mut bomb = Vec::new();
    for n in [1i32, 0, 25, i32::MAX, 1] {
        bomb.extend(n.to_be_bytes());
    }
    client.send(&pgwire::parse("", "SELECT $1::text[] AS a", &[1009]));
    client.send(&pgwire::bind("", "", 1, &[Some(bomb)]));
    client.send(&pgwire::sync());
    let replies = client.until_ready();
    assert_eq!(pgwire::error(&replies).and_then(Reply::code).as_deref(), Some("22P03"), "{replies:?}");
    client.send(&pgwire::query("SELECT 1"));
    assert!(pgwire::error(&client.until_ready()).is_none(), "the same connection goes on");
    // Statements nested past the limits.
    let terms = format!("SELECT {}1", "1+".repeat(2000));
    let ors = format!("SELECT 1 WHERE {}false", "false OR ".repeat(2000));
    let unions = vec!["SELECT 1"; 3000].join(" UNION ALL ");
    for sql in [&terms, &ors, &unions] {
        client.send(&pgwire::query(sql));
        let replies = client.until_ready();
        assert_eq!(pgwire::error(&replies).and_then(Reply::code).as_deref(), Some("54001"), "{}", &sql[..40]);
    }
    let out = server.psql(TOKEN, &["SELECT 41 + 1 AS answer"]);
    assert!(text(&out.stdout).contains("42"), "the server still answers: {}", stderr(&out));
}

#[test]
fn oversized_and_malformed_messages_get_an_answer_and_cost_nothing() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let address = server.address();
    // Before authentication: a password message that claims a gigabyte.
    let mut client = RawClient::connect(&address);
    client.send(&pgwire::startup_packet("tester", "linode"));
    assert_eq!(client.read().unwrap().kind, b'R');
    let mut huge = vec![b'p'];
    huge.extend((1i32 << 30).to_be_bytes());
    client.send(&huge);
    let reply = client.read().expect("an answer, not a silent close");
    assert_eq!((reply.severity().as_deref(), reply.code().as_deref()), (Some("FATAL"), Some("08P01")), "{reply:?}");
    assert!(client.closed());
    // A startup packet that claims a gigabyte.
    let mut client = RawClient::connect(&address);
    client.send(&(1i32 << 30).to_be_bytes());
    assert_eq!(client.read().and_then(|r| r.code()).as_deref(), Some("08P01"));
    // After authentication: malformed messages are errors of that client only.
    let (mut client, _, _) = RawClient::login(&address, TOKEN);
    let mut lying = pgwire::cstring("");
    lying.extend(pgwire::cstring(""));
    lying.extend(0i16.to_be_bytes());
    lying.extend(i16::MAX.to_be_bytes());
    client.send(&pgwire::message(b'B', &lying));
    client.send(&pgwire::sync());
    let replies = client.until_ready();
    assert_eq!(pgwire::error(&replies).and_then(Reply::code).as_deref(), Some("08P01"), "{replies:?}");
    for (sql, code) in [("SHOW", "42601"), ("SELECT 1; SELECT 2", "")] {
        client.send(&pgwire::parse("", sql, &[]));
        client.send(&pgwire::sync());
        let replies = client.until_ready();
        let expected = if code.is_empty() { "42601" } else { code };
        assert_eq!(pgwire::error(&replies).and_then(Reply::code).as_deref(), Some(expected), "{sql}: {replies:?}");
    }
    client.send(&pgwire::query("SHOW"));
    assert_eq!(pgwire::error(&client.until_ready()).and_then(Reply::code).as_deref(), Some("42601"));
    // Prepared statements are capped per connection.
    let mut capped = None;
    for i in 0..1100 {
        client.send(&pgwire::parse(&format!("s{i}"), "SELECT 1", &[]));
        client.send(&pgwire::sync());
        if let Some(error) = pgwire::error(&client.until_ready()) {
            capped = Some((i, error.code()));
            break;
        }
    }
    assert_eq!(capped, Some((1000, Some("53400".to_string()))));
    // So are cursors, each holding a running statement.
    client.send(&pgwire::query("BEGIN"));
    client.until_ready();
    let mut capped = None;
    for i in 0..1100 {
        client.send(&pgwire::query(&format!("DECLARE c{i} CURSOR FOR SELECT 1 AS one")));
        if let Some(error) = pgwire::error(&client.until_ready()) {
            capped = Some((i, error.code()));
            break;
        }
    }
    assert_eq!(capped, Some((1000, Some("53400".to_string()))));
    client.send(&pgwire::query("ROLLBACK"));
    client.until_ready();
    // An unknown message type ends that connection with an answer.
    client.send(&pgwire::message(b'Y', b""));
    let reply = client.read().unwrap();
    assert_eq!((reply.severity().as_deref(), reply.code().as_deref()), (Some("FATAL"), Some("08P01")));
    let out = server.psql(TOKEN, &["SELECT 1 AS one"]);
    assert!(out.status.success(), "others are not affected: {}", stderr(&out));
}

#[tokio::test]
async fn clients_are_told_every_change_and_no_rollback_that_did_not_happen() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let before = private_count(&sandbox);
    // A failing second statement does not hide the first one's change.
    let out = server.psql(
        TOKEN,
        &["INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'told') RETURNING id; SELECT * FROM missing"],
    );
    assert!(text(&out.stdout).contains("INSERT 0 1"), "{}{}", text(&out.stdout), stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    assert_eq!(private_count(&sandbox), before + 1);
    // A statement that does not parse stops the whole Query before anything runs.
    let out =
        server.psql(TOKEN, &["INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'never'); SELEC 1"]);
    assert!(stderr(&out).contains("syntax error"), "{}", stderr(&out));
    assert_eq!(private_count(&sandbox), before + 1, "nothing of a Query that does not parse runs");
    // Changes are refused inside a transaction block, whose ROLLBACK would not undo them.
    let report = python(
        &server,
        r#"
import os, psycopg
conn = psycopg.connect(os.environ["IMAGEQL_URL"], password=os.environ["IMAGEQL_PASSWORD"])
try:
    conn.execute("INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'in-a-block')")
    print("ran")
except psycopg.Error as e:
    print(e.sqlstate)
conn.rollback()
conn.autocommit = True
print(conn.execute("INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'autocommit')").rowcount)
"#,
    );
    assert_eq!(report.split_whitespace().collect::<Vec<_>>(), ["25001", "1"]);
    assert_eq!(private_count(&sandbox), before + 2);
}

#[test]
fn a_cancelled_change_reports_what_it_made_and_forgets_stale_reads() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0", "--latency-ms", "300"]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let count = "SELECT count(*) FROM linode.images.images WHERE NOT is_public";
    let counted = |out: Output| text(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse::<usize>().ok()).unwrap();
    let before = counted(server.psql(TOKEN, &[count]));
    let (mut client, pid, secret) = RawClient::login(&server.address(), TOKEN);
    let values: Vec<String> = (0..8).map(|i| format!("(67890, 'batch-{i}')")).collect();
    let mark = sandbox.log().len();
    client.send(&pgwire::query(&format!(
        "INSERT INTO linode.images.images (disk_id, label) VALUES {}",
        values.join(", ")
    )));
    let posts = || sandbox.log_since(mark).iter().filter(|r| r["method"] == "POST").count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while posts() < 2 {
        assert!(Instant::now() < deadline, "the insert never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    pgwire::cancel(&server.address(), pid, secret);
    let replies = client.until_ready();
    let error = pgwire::error(&replies).expect("the cancel is an error");
    assert_eq!(error.code().as_deref(), Some("57014"), "{replies:?}");
    let made = posts();
    assert!((2..8).contains(&made), "the cancel came part-way: {made}");
    let warning = replies.iter().find(|r| r.kind == b'N').and_then(Reply::message).unwrap_or_default();
    let reported = error.message().unwrap_or_default().matches(": done").count();
    assert_eq!(reported, made, "every image made is in the error: {:?}", error.message());
    assert_eq!(
        warning.matches("batch-").count() + warning.matches("row ").count(),
        made,
        "and in a warning: {warning}"
    );
    assert_eq!(counted(server.psql(TOKEN, &[count])), before + made, "another connection reads the API again");
}

#[test]
fn a_statement_stops_at_its_timeout_and_when_its_client_leaves() {
    let sandbox = SandboxProcess::start(&["--latency-ms", "400", "--seed-images", "10000"]);
    let server = ServeProcess::start(&sandbox, &["--page-size", "25"], &[]);
    let out = psql_verbose(
        &server,
        &[
            "SET statement_timeout = '700ms'",
            "SELECT count(*) FROM linode.images.images",
            "RESET statement_timeout",
            "SELECT 1 AS still",
        ],
    );
    let err = stderr(&out);
    assert!(err.contains("57014") && err.contains("statement timeout"), "{err}");
    assert!(text(&out.stdout).contains("still"), "{}", text(&out.stdout));
    // A client that leaves in the middle of a long listing: the listing stops.
    let mark = sandbox.log().len();
    let (mut client, _, _) = RawClient::login(&server.address(), TOKEN);
    client.send(&pgwire::parse("", "SELECT id FROM linode.images.images", &[]));
    client.send(&pgwire::bind("", "", 0, &[]));
    client.send(&pgwire::execute("", 0));
    client.send(&pgwire::sync());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.log_since(mark).len() < 2 {
        assert!(Instant::now() < deadline, "the listing never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
    let lists = |mark: usize| sandbox.log_since(mark).iter().filter(|r| r["path"] == "/v4/images").count();
    // Settled: no list request is logged for a second and a half.
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = loop {
        let seen = lists(mark);
        std::thread::sleep(Duration::from_millis(1500));
        if lists(mark) == seen {
            break seen;
        }
        assert!(Instant::now() < deadline, "the listing went on after its client left");
    };
    // What was in flight when it left completes; nothing is asked for after that.
    assert!(settled < 100, "{settled} of 403 pages were asked for after the client left");
}

#[test]
fn rows_stream_in_portions_and_a_cancel_stops_them() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let address = server.address();
    let (mut client, pid, secret) = RawClient::login(&address, TOKEN);
    client.send(&pgwire::parse("", "SELECT value FROM generate_series(1, 2000000000) AS t(value)", &[]));
    client.send(&pgwire::bind("", "", 0, &[]));
    client.send(&pgwire::execute("", 5));
    client.send(&pgwire::sync());
    let replies = client.until_ready();
    let rows = replies.iter().filter(|r| r.kind == b'D').count();
    assert_eq!(rows, 5, "{replies:?}");
    assert!(replies.iter().any(|r| r.kind == b's'), "the portal is suspended, not run to its end");
    // All of it, stopped by a cancel request while rows stream.
    client.send(&pgwire::parse("", "SELECT value FROM generate_series(1, 2000000000) AS t(value)", &[]));
    client.send(&pgwire::bind("", "", 0, &[]));
    client.send(&pgwire::execute("", 0));
    client.send(&pgwire::sync());
    let mut rows = 0;
    while rows < 1000 {
        let reply = client.read().unwrap();
        assert!(matches!(reply.kind, b'1' | b'2' | b'D'), "{reply:?}");
        rows += usize::from(reply.kind == b'D');
    }
    pgwire::cancel(&address, pid, secret);
    let replies = client.until_ready();
    assert_eq!(pgwire::error(&replies).and_then(Reply::code).as_deref(), Some("57014"));
    client.send(&pgwire::query("SELECT 1"));
    assert!(pgwire::error(&client.until_ready()).is_none());
}

#[test]
fn memory_is_bounded_per_statement() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &["--statement-memory", "32"], &[]);
    for sql in [
        "SELECT length(repeat('x', 2147483647)) AS n",
        "SELECT cardinality(array_repeat(1, 100000000)) AS n",
        "SELECT length(lpad('', 900000000)) AS n",
        "SELECT cardinality(range(1, 1000000000)) AS n",
        "SELECT cardinality(array_agg(value)) AS n FROM generate_series(1, 20000000) AS t(value)",
        "SELECT max(r) AS n FROM (SELECT row_number() OVER (ORDER BY value DESC) AS r FROM generate_series(1, 5000000) AS t(value))",
    ] {
        let out = psql_verbose(&server, &[sql]);
        let err = stderr(&out);
        assert!(err.contains("ERROR:  53200"), "{sql}: {err}{}", text(&out.stdout));
    }
    let out = server.psql(TOKEN, &["SELECT length(repeat('x', 1000)) AS n"]);
    assert!(text(&out.stdout).contains("1000"), "small values are fine: {}", stderr(&out));
}

#[test]
fn logins_are_checked_throttled_and_distinct() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    // Every connection has its own process id.
    let report = python(
        &server,
        r#"
import os, psycopg
conns = [psycopg.connect(os.environ["IMAGEQL_URL"], password=os.environ["IMAGEQL_PASSWORD"]) for _ in range(8)]
print(len({c.info.backend_pid for c in conns}))
"#,
    );
    assert_eq!(report.trim(), "8");
    // An empty password is no anonymous session unless the operator allows one.
    let refused = RawClient::try_login(&server.address(), "").err().expect("refused");
    assert_eq!(refused.code().as_deref(), Some("28P01"), "{refused:?}");
    let open = ServeProcess::start(&sandbox, &["--allow-anonymous"], &[]);
    let (mut anonymous, _, _) = RawClient::login(&open.address(), "");
    anonymous.send(&pgwire::query("SELECT count(*) FROM linode.images.images WHERE NOT is_public"));
    assert_eq!(pgwire::first_column(&anonymous.until_ready()), ["0"], "anonymous sees no private image");
    // A wrong token is refused at login, and failures slow the address down (the empty
    // password above was the first).
    for _ in 0..5 {
        let out = server.psql("wrong-token", &["SELECT 1"]);
        assert!(stderr(&out).contains("password authentication failed"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("LINODE_TOKEN") && !stderr(&out).contains(&sandbox.url), "{}", stderr(&out));
    }
    let out = server.psql(TOKEN, &["SELECT 1"]);
    assert!(stderr(&out).contains("too many failed logins"), "even the right token waits: {}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.psql(TOKEN, &["SELECT 1"]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the address is never let in again: {}", stderr(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Forged cancel requests count as failures too.
    let open_address = open.address();
    for secret in 0..8 {
        pgwire::cancel(&open_address, 12345, secret);
    }
    let refused = RawClient::try_login(&open_address, "").err().expect("refused");
    assert!(refused.message().unwrap_or_default().contains("too many failed logins"), "{refused:?}");
}

#[test]
fn errors_name_no_internal_address_or_environment() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let out = psql_verbose(&server, &["SELECT * FROM linode.linode.disks WHERE linodeId = 999999"]);
    let err = stderr(&out);
    assert!(err.contains("404") && err.contains("/linode/instances/999999/disks"), "{err}");
    assert!(!err.contains("127.0.0.1") && !err.contains("LINODE_TOKEN"), "{err}");
    let help = Command::new(common::binary()).args(["serve", "--help"]).output().unwrap();
    assert!(text(&help.stdout).contains("cross the network in clear"), "{}", text(&help.stdout));
}

#[test]
fn a_session_is_freed_when_its_connection_closes() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let address = server.address();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    };
    let cycle = || {
        let (mut client, _, _) = RawClient::login(&address, TOKEN);
        client.send(&pgwire::query("SELECT count(*) FROM pg_catalog.pg_class"));
        assert!(pgwire::error(&client.until_ready()).is_none());
        client.send(&pgwire::message(b'X', b""));
    };
    for _ in 0..30 {
        cycle();
    }
    let warm = rss();
    for _ in 0..200 {
        cycle();
    }
    let grown = rss().saturating_sub(warm);
    // A session held on after its connection costs megabytes: 200 of them would be a gigabyte.
    assert!(grown < 150, "RSS grew by {grown} MiB over 200 connections (from {warm} MiB)");
}

#[test]
fn parameters_of_a_change_are_values_never_text_of_the_statement() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let before = private_count(&sandbox);
    let report = python(
        &server,
        r#"
import os, psycopg
conn = psycopg.connect(os.environ["IMAGEQL_URL"], password=os.environ["IMAGEQL_PASSWORD"], autocommit=True)
cur = conn.execute("INSERT INTO linode.images.images (disk_id, label) VALUES (%s, %s) RETURNING id", (67890, "bound"))
made = cur.fetchone()[0]
print(cur.rowcount)
print(conn.execute("REPLACE linode.images.images SET label = %s WHERE id = %s", ("rebound", made)).rowcount)
print(conn.execute("SELECT label FROM linode.images.images WHERE id = %s", (made,)).fetchone()[0])
print(conn.execute("DELETE FROM linode.images.images WHERE label = %s", ("zzz') OR NOT is_public OR ('x",)).rowcount)
print(conn.execute("DELETE FROM linode.images.images WHERE id = %s", (made,)).rowcount)
"#,
    );
    assert_eq!(report.split_whitespace().collect::<Vec<_>>(), ["1", "1", "rebound", "0", "1"]);
    assert_eq!(private_count(&sandbox), before, "the hostile value matched nothing");
}

#[test]
fn a_dry_run_and_await_settings_over_serve() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let mark = sandbox.log().len();
    let report = python(
        &server,
        r#"
import os, psycopg
conn = psycopg.connect(os.environ["IMAGEQL_URL"], password=os.environ["IMAGEQL_PASSWORD"], autocommit=True)
conn.execute("SET imageql.dry_run = on")
print(conn.execute("SHOW imageql.dry_run").fetchone()[0])
cur = conn.execute("DELETE FROM linode.images.images WHERE label LIKE %s", ("golden%",))
print(",".join(d.name for d in cur.description))
rows = cur.fetchall()
print(len(rows), rows[-1][0], rows[-1][1])
print(conn.execute("REPLACE linode.images.images SET label = %s WHERE id = %s", ("renamed", "private/1003")).fetchall()[0][1])
try:
    conn.execute("SET imageql.dry_run = perhaps")
except psycopg.Error as e:
    print(e.sqlstate)
conn.execute("RESET imageql.dry_run")
print(conn.execute("DELETE FROM linode.images.images WHERE id = %s RETURNING id, label", ("private/1003",)).fetchall())
conn.execute("SET imageql.await_timeout = '1s'")
try:
    conn.execute("SELECT /*+ AWAIT */ status FROM linode.images.images WHERE id = %s", ("private/1011",))
except psycopg.Error as e:
    print(str(e).splitlines()[0])
print(conn.execute("SELECT /*+ AWAIT */ status FROM linode.images.images WHERE id = %s", ("private/1002",)).fetchone()[0])
"#,
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "on");
    assert_eq!(lines[1], "step,request,id,label,size,regions,frees_monthly_usd");
    assert_eq!(lines[2], "5 total 4 requests (4 DELETE), none sent", "{report}");
    assert_eq!(lines[3], r#"PUT /images/private%2F1003 {"label":"renamed"}"#);
    assert_eq!(lines[4], "22023");
    assert_eq!(lines[5], "[('private/1003', 'ci-runner')]");
    assert!(lines[6].starts_with("gave up waiting for private/1011 after 1 s; it is pending_upload"), "{report}");
    assert_eq!(lines[7], "available");
    let changes: Vec<String> = sandbox
        .log_since(mark)
        .iter()
        .filter(|r| r["method"] != "GET")
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, ["DELETE /v4/images/private%2F1003"], "only the change made after the dry run was sent");
}

#[test]
fn changes_with_parameters_return_their_rows_over_the_extended_protocol() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    // Described before their values are given: a value binding would refuse (a null label)
    // must not stop the description.
    let report = python(
        &server,
        r#"
import os, psycopg
conn = psycopg.connect(os.environ["IMAGEQL_URL"], password=os.environ["IMAGEQL_PASSWORD"], autocommit=True)
print(conn.execute("REPLACE linode.images.images SET label = %s WHERE id = %s RETURNING id, label", ("renamed", "private/1006")).fetchall())
print(conn.execute("DELETE FROM linode.images.images WHERE id = %s RETURNING id, label", ("private/1006",)).fetchall())
print(conn.execute("EXEC linode.images.images.put_image @imageId=%s, @label=%s RETURNING id, upper(label) AS shout", ("private/1007", "yy")).fetchall())
"#,
    );
    assert_eq!(
        report.lines().collect::<Vec<_>>(),
        ["[('private/1006', 'renamed')]", "[('private/1006', 'renamed')]", "[('private/1007', 'YY')]"]
    );
}

#[test]
fn pools_prepared_statements_and_settings_behave_as_drivers_expect() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let puts = |sandbox: &SandboxProcess| sandbox.log().iter().filter(|r| r["method"] == "PUT").count();
    let report = python(
        &server,
        r#"
import asyncio, os, asyncpg, psycopg
url, password = os.environ["IMAGEQL_URL"], os.environ["IMAGEQL_PASSWORD"]

async def main():
    # A pool resets each connection it takes back (advisory locks, LISTEN, cursors, settings).
    pool = await asyncpg.create_pool(url, password=password, min_size=1, max_size=1)
    async with pool.acquire() as c:
        await c.fetchval("SELECT 1")
    async with pool.acquire() as c:
        # An EXEC without RETURNING answers the image: described so before it runs.
        rows = await c.fetch("EXEC linode.images.images.put_image @imageId=$1, @label=$2", "private/1003", "exec-1")
        print(rows[0]["label"])
        # Prepared during a dry run, run after it: prepared again, sent once.
        await c.execute("SET imageql.dry_run = on")
        sql = "REPLACE linode.images.images SET label = $1 WHERE id = $2 RETURNING id, label"
        print(len(await c.fetch(sql, "again-1", "private/1003")))
        await c.execute("SET imageql.dry_run = off")
        print((await c.fetch(sql, "again-1", "private/1003"))[0]["label"])
        print(list((await c.fetch("SHOW imageql.dry_run"))[0].keys()))
    await pool.close()

asyncio.run(main())
conn = psycopg.connect(url, password=password)
for _ in range(7):
    conn.execute("SELECT id FROM linode.images.images WHERE id = %s", ("private/1001",)).fetchall()
conn.rollback()
print("rolled back")
try:
    conn.execute("SELECT set_config('imageql.dry_run', 'on', false)")
except psycopg.Error as e:
    print("refused:", str(e).splitlines()[0])
conn.rollback()
conn.autocommit = True
try:
    conn.execute("INSERT INTO linode.linode.instances (region, type, image, label, root_pass) VALUES (%s, %s, %s, %s, CAST(%s AS INT))", ("us-east", "g6-nanode-1", "linode/debian12", "cast-2", "Serve-secret-pass"))
except psycopg.Error as e:
    print("masked:", "Serve-secret-pass" not in str(e))
"#,
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "exec-1", "{report}");
    assert_eq!(lines[1], "2", "the dry run's request and total");
    assert_eq!(lines[2], "again-1");
    assert_eq!(lines[3], "['imageql.dry_run']");
    assert_eq!(lines[4], "rolled back");
    assert!(lines[5].starts_with("refused: imageql.dry_run is set with SET"), "{report}");
    assert_eq!(lines[6], "masked: True");
    assert_eq!(puts(&sandbox), 2, "the EXEC and the REPLACE, each sent once");
}

#[test]
fn settings_follow_transaction_blocks_as_in_postgres() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let out = server.psql(
        TOKEN,
        &[
            "BEGIN",
            "SET LOCAL imageql.dry_run = on",
            "SHOW imageql.dry_run",
            "COMMIT",
            "SHOW imageql.dry_run",
            "BEGIN",
            "SET statement_timeout = '5s'",
            "ROLLBACK",
            "SHOW statement_timeout",
            "SET LOCAL statement_timeout = '1s'",
            "SHOW statement_timeout",
            "BEGIN",
            "SET imageql.dry_run = on",
            "COMMIT",
            "SHOW imageql.dry_run",
        ],
    );
    let shown: Vec<String> =
        text(&out.stdout).lines().filter(|l| ["on", "off", "0", "5s", "1s"].contains(l)).map(str::to_string).collect();
    // SET LOCAL ends with the block; a rolled-back SET is undone; SET LOCAL outside a block does nothing.
    assert_eq!(shown, ["on", "off", "0", "0", "on"], "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("SET LOCAL can only be used in transaction blocks"));
}
