//! `imageql serve` against a real sandbox process, driven by real Postgres clients: psql
//! (Debian's postgresql-client), psycopg 3 and SQLAlchemy's inspector.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{SandboxProcess, ServeProcess as Server, TOKEN, binary, postgres_clients};
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The private images a token sees, straight from the API.
async fn private_ids(sandbox: &SandboxProcess, token: &str) -> Vec<String> {
    let mut ids: Vec<String> = sandbox
        .client()
        .all_images(Some(token))
        .await
        .into_iter()
        .filter(|i| i["is_public"] == false)
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn psql_lists_describes_queries_changes_and_survives_errors() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = Server::start(&sandbox, &[], &[]);

    let out = server.psql(TOKEN, &["\\dt linode.*"]);
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{listed}{}", text(&out.stderr));
    assert!(listed.contains("instances") && listed.contains("disks"), "{listed}");

    let out = server.psql(TOKEN, &["\\d images.images"]);
    let described = text(&out.stdout);
    assert!(out.status.success(), "{described}{}", text(&out.stderr));
    for column in ["id", "label", "size", "tags", "created"] {
        assert!(described.lines().any(|l| l.starts_with(&format!("{column}|"))), "{column}: {described}");
    }

    // Values as PostgreSQL writes them: a timestamp without a zero fraction, a difference of
    // timestamps in days, money as numeric, and short names.
    let out = server.psql(
        TOKEN,
        &["SELECT i.created, i.expiry - i.created AS lifetime, c.monthly_usd FROM images i \
           JOIN storage_costs c ON c.id = i.id WHERE i.id = 'private/1012'"],
    );
    let values = text(&out.stdout);
    assert!(out.status.success(), "{values}{}", text(&out.stderr));
    let row = values.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split('|').collect();
    assert_eq!(cells.len(), 3, "{values}");
    assert!(cells[0].len() == 19 && !cells[0].contains('.'), "{values}");
    assert_eq!(&cells[1..], ["7 days", "0.00"], "{values}");

    let out = server.psql(
        TOKEN,
        &["SELECT status, count(*) AS n FROM linode.images.images WHERE NOT is_public GROUP BY status ORDER BY status"],
    );
    let grouped = text(&out.stdout);
    assert!(out.status.success(), "{grouped}{}", text(&out.stderr));
    let images = sandbox.client().all_images(Some(TOKEN)).await;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for image in images.iter().filter(|i| i["is_public"] == false) {
        *counts.entry(image["status"].as_str().unwrap().to_string()).or_default() += 1;
    }
    for (status, n) in &counts {
        assert!(grouped.lines().any(|l| l == format!("{status}|{n}")), "{status}|{n} in {grouped}");
    }

    let out = server.psql(
        TOKEN,
        &[
            "SELECT nope FROM linode.images.images",
            "INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'over-the-wire') RETURNING id, label",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stderr.contains("No field named nope"), "{stderr}");
    assert!(stdout.contains("|over-the-wire") && stdout.contains("INSERT 0 1"), "the connection still works: {stdout}");
    let created = stdout.lines().find_map(|l| l.strip_suffix("|over-the-wire")).unwrap().to_string();
    assert!(private_ids(&sandbox, TOKEN).await.contains(&created));

    let out = server.psql(TOKEN, &["REPLACE linode.images.images SET label = 'x' WHERE id = 'linode/debian12'"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && stderr.contains("public images"), "{stderr}");

    let out = server.psql(TOKEN, &["EXPLAIN SELECT label FROM linode.images.images WHERE size > 2000"]);
    assert!(text(&out.stdout).contains("GET /images?page=1..&page_size=500"), "{}", text(&out.stdout));
    let out = server.psql(TOKEN, &[&format!("DELETE FROM linode.images.images WHERE id = '{created}'")]);
    assert!(text(&out.stdout).contains("DELETE 1"), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[tokio::test]
async fn each_connection_runs_with_its_own_token() {
    let sandbox = SandboxProcess::start(&["--account", "other:other-token"]);
    let server = Server::start(&sandbox, &[], &[]);
    let query = "SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id";
    for token in [TOKEN, "other-token"] {
        let out = server.psql(token, &[query]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let ids: Vec<String> =
            text(&out.stdout).lines().skip(1).filter(|l| l.contains('/')).map(str::to_string).collect();
        assert_eq!(ids, private_ids(&sandbox, token).await, "rows of {token:?}");
    }
    let out = server.psql("not-a-token", &[query]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && stderr.contains("password authentication failed"), "{stderr}");
    assert!(!stderr.contains("not-a-token"), "the token is never shown: {stderr}");
}

#[test]
fn a_wrong_password_is_refused_before_any_request() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "open sesame\n").unwrap();
    let server = Server::start(
        &sandbox,
        &["--token-from-env", "--password-file", password_file.to_str().unwrap()],
        &[("LINODE_TOKEN", TOKEN)],
    );
    let before = sandbox.log().len();
    let out = server.psql("wrong", &["SELECT 1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).to_lowercase().contains("password authentication failed"), "{}", text(&out.stderr));
    assert_eq!(sandbox.log().len(), before, "no request for a refused connection");
    let out = server.psql("open sesame", &["SELECT count(*) FROM linode.images.images WHERE NOT is_public"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn grafana_and_metabase_introspection_is_answered() {
    let sandbox = SandboxProcess::start(&[]);
    let server = Server::start(&sandbox, &[], &[]);
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/bi_introspection.sql");
    let out = Command::new("psql")
        .arg(server.url_for("grafana"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&queries)
        .env("PGPASSWORD", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("images"), "the images table is listed: {}", text(&out.stdout));
}

#[test]
fn tls_carries_passwords_from_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes a certificate");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let sandbox = SandboxProcess::start(&[]);
    let server =
        Server::start(&sandbox, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()], &[]);
    let out = Command::new("psql")
        .arg(format!("{}?sslmode=require", server.url_for("reporter")))
        .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM linode.images.images WHERE NOT is_public"])
        .env("PGPASSWORD", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim().parse::<usize>().unwrap() > 0);
}

#[test]
fn a_public_address_without_tls_is_refused() {
    let out = Command::new(binary())
        .args(["serve", "--sandbox", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--insecure-listen"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn psycopg_and_sqlalchemy_read_typed_values() {
    let sandbox = SandboxProcess::start(&[]);
    let server = Server::start(&sandbox, &[], &[]);
    let venv = postgres_clients();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/postgres.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(&script)
        .env("IMAGEQL_URL", server.url_for("reporter"))
        .env("IMAGEQL_PASSWORD", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let images = sandbox.client().all_images(Some(TOKEN)).await;
    let mut large: Vec<&str> = images
        .iter()
        .filter(|i| i["is_public"] == false && i["size"].as_u64().unwrap() > 2000)
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    large.sort();
    assert_eq!(report["large"], serde_json::json!(large));
    assert_eq!(report["tags_are_lists"], true);
    assert_eq!(report["created_is_datetime"], true);
    assert_eq!(report["any_ids"].as_array().unwrap().len(), 2);
    let expected = sandbox.rows("SELECT count(*) AS n FROM linode.images.usage('2026-12-01', '2026-12-02')");
    let counts = report["usage_counts"].as_array().unwrap();
    assert!(expected[0]["n"].as_i64().unwrap() > 0, "the day bills images");
    assert_eq!(counts.len(), 8);
    assert!(counts.iter().all(|n| *n == expected[0]["n"]), "{counts:?} vs {expected:?}");
    let columns: Vec<&str> = report["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(columns.contains(&"label") && columns.contains(&"tags"), "{columns:?}");
    assert!(report["tables"].as_array().unwrap().iter().any(|t| t == "images"), "{}", report["tables"]);
}

#[test]
fn a_cancel_request_stops_a_slow_scan() {
    let sandbox = SandboxProcess::start(&["--latency-ms", "3000"]);
    let server = Server::start(&sandbox, &[], &[]);
    let venv = postgres_clients();
    let script = r#"
import os, threading, psycopg
conn = psycopg.connect(os.environ["IMAGEQL_URL"], password=os.environ["IMAGEQL_PASSWORD"], autocommit=True)
threading.Timer(1.0, conn.cancel).start()
try:
    conn.execute("SELECT count(*) FROM linode.images.images")
    print("finished")
except psycopg.errors.QueryCanceled as e:
    print("cancelled", e.sqlstate)
"#;
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .env("IMAGEQL_URL", server.url_for("reporter"))
        .env("IMAGEQL_PASSWORD", TOKEN)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "cancelled 57014", "{}", text(&out.stderr));
}

/// Image list requests in the access log since `mark`, and how many were refused with 429.
fn listings(sandbox: &SandboxProcess, mark: usize) -> (usize, usize) {
    let log = sandbox.log_since(mark);
    let lists: Vec<_> = log.iter().filter(|r| r["method"] == "GET" && r["path"] == "/v4/images").collect();
    (lists.len(), lists.iter().filter(|r| r["status"] == 429).count())
}

#[test]
fn connections_share_answers_until_a_change() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = Server::start(&sandbox, &[], &[]);
    let query = "SELECT count(*) FROM linode.images.images WHERE NOT is_public";
    let mark = sandbox.log().len();
    let first = server.psql(TOKEN, &[query]);
    let second = server.psql(TOKEN, &[query]);
    assert!(first.status.success() && second.status.success(), "{}", text(&second.stderr));
    assert_eq!(text(&first.stdout), text(&second.stdout));
    assert_eq!(listings(&sandbox, mark), (1, 0), "two connections, one listing");

    let mark = sandbox.log().len();
    let out = server.psql(TOKEN, &["INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'fresh-one')"]);
    assert!(text(&out.stdout).contains("INSERT 0 1"), "{}", text(&out.stderr));
    let third = server.psql(TOKEN, &[query]);
    assert_eq!(listings(&sandbox, mark), (1, 0), "a change makes the next query read again");
    let count = |out: &Output| text(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse::<usize>().ok());
    assert_eq!(count(&third), count(&first).map(|n| n + 1));
}

#[test]
fn a_dashboard_stays_within_the_real_list_limit() {
    let sandbox = SandboxProcess::start(&["--rate-limit-list", "20"]);
    let server = Server::start(&sandbox, &[], &[]);
    let panels = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dashboard.sql")).unwrap();
    let panels: Vec<&str> =
        panels.split(';').map(str::trim).filter(|q| q.lines().any(|l| !l.starts_with("--"))).collect();
    assert_eq!(panels.len(), 3);
    let mark = sandbox.log().len();
    let refreshes: Vec<_> = (0..3)
        .map(|_| {
            let (url, panels) = (server.url_for("grafana"), panels.clone());
            let commands: Vec<String> = (0..10).map(|i| panels[i % panels.len()].to_string()).collect();
            std::thread::spawn(move || {
                let mut psql = Command::new("psql");
                psql.arg(url).args(["-X", "-v", "ON_ERROR_STOP=1"]);
                for c in &commands {
                    psql.args(["-c", c]);
                }
                psql.env("PGPASSWORD", TOKEN).output().unwrap()
            })
        })
        .collect();
    for refresh in refreshes {
        let out = refresh.join().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (lists, refused) = listings(&sandbox, mark);
    assert_eq!(refused, 0, "no 429 for 30 panel queries");
    assert!(lists <= 20, "{lists} listings for 30 panel queries");
}
