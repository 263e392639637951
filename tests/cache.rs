//! The response cache and the rate-limit budget, checked on the wire: what a process sends is
//! read from the sandbox's access log, and what it answers is compared with the sandbox's own
//! HTTP API.

mod common;

use std::time::Duration;

use common::{SandboxProcess, TOKEN};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use futures::TryStreamExt;
use imageql::api::Shared;
use imageql::engine::{Session, SessionOptions};
use imageql::outcome::Outcome;
use serde_json::Value;

const COUNT: &str = "SELECT count(*) AS n FROM linode.images.images";

/// The image list requests in a log, with their statuses.
fn listings(log: &[Value]) -> Vec<u64> {
    log.iter()
        .filter(|l| l["method"] == "GET" && l["path"] == "/v4/images")
        .map(|l| l["status"].as_u64().unwrap())
        .collect()
}

/// Results and pages of the token's full listing at `page_size`, from the sandbox itself.
async fn listing_size(sandbox: &SandboxProcess, token: &str, page_size: u32) -> (u64, usize) {
    let (status, body) = sandbox.client().get(&format!("/images?page_size={page_size}"), Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    (body["results"].as_u64().unwrap(), body["pages"].as_u64().unwrap() as usize)
}

/// The `n` of every count in `-o ndjson` output, in order.
fn counts(ndjson: &str) -> Vec<u64> {
    ndjson.lines().filter_map(|l| serde_json::from_str::<Value>(l).expect("ndjson")["n"].as_u64()).collect()
}

#[tokio::test]
async fn the_same_query_twice_in_one_process_is_sent_once() {
    let sandbox = SandboxProcess::start(&["--seed-images", "1200"]);
    let (results, pages) = listing_size(&sandbox, TOKEN, 500).await;
    assert!(pages > 1, "the listing spans pages");
    let before = sandbox.log().len();

    let out = sandbox.imageql(&["-o", "ndjson", "-e", COUNT, "-e", COUNT]).ok();
    assert_eq!(counts(&out), [results, results]);
    assert_eq!(listings(&sandbox.log_since(before)).len(), pages, "the second statement is answered from the cache");

    let before = sandbox.log().len();
    sandbox.imageql(&["--no-cache", "-o", "ndjson", "-e", COUNT, "-e", COUNT]).ok();
    assert_eq!(listings(&sandbox.log_since(before)).len(), 2 * pages, "--no-cache sends every statement");

    // EXPLAIN tells when the scan will be answered from the cache.
    let explain = format!("EXPLAIN {COUNT}");
    let out = sandbox.imageql(&["-o", "ndjson", "-e", &explain, "-e", COUNT, "-e", &explain]).ok();
    let (first, second) = out.split_once("{\"n\":").expect("the count between the plans");
    assert!(!first.contains("served from the cache"), "{first}");
    assert!(second.contains("served from the cache"), "{second}");
}

#[tokio::test]
async fn a_cached_whole_listing_answers_narrower_filters_without_requests() {
    let sandbox = SandboxProcess::start(&["--seed-images", "1200"]);
    let narrower = [
        "SELECT id, label FROM linode.images.images WHERE is_public = false AND size > 1000 ORDER BY id",
        "SELECT id, label FROM linode.images.images WHERE label LIKE '%web%' ORDER BY id",
        "SELECT id, label FROM linode.images.images WHERE vendor = 'Debian' OR 'prod' = ANY(tags) ORDER BY id",
    ];
    // What the API answers each filter with, from a process whose cache is empty.
    let mut expected = vec![];
    for sql in narrower {
        let before = sandbox.log().len();
        expected.push(sandbox.rows(sql));
        let sent = sandbox.log_since(before);
        assert!(sent.iter().any(|l| !l["x_filter"].is_null()), "{sql} is filtered by the API: {sent:?}");
    }
    assert!(expected.iter().all(|rows| !rows.is_empty()), "{expected:?}");

    let mut args = vec!["-o", "ndjson", "-e", "SELECT count(*) AS n FROM linode.images.images"];
    for sql in narrower {
        args.extend(["-e", sql]);
    }
    let explain = format!("EXPLAIN {}", narrower[0]);
    args.extend(["-e", &explain]);
    let (_, pages) = listing_size(&sandbox, TOKEN, 500).await;
    let before = sandbox.log().len();
    let out = sandbox.imageql(&args).ok();
    let sent = sandbox.log_since(before);
    assert_eq!(listings(&sent).len(), pages, "only the whole listing is sent: {sent:?}");
    assert!(sent.iter().all(|l| l["x_filter"].is_null()), "{sent:?}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut at = 1;
    for wanted in &expected {
        assert_eq!(&rows[at..at + wanted.len()], wanted.as_slice());
        at += wanted.len();
    }
    assert!(out.contains("served from the cached whole listing, filtered here"), "{out}");
}

#[tokio::test]
async fn cached_answers_expire_after_their_time_to_live() {
    // Every response takes 1.1 s, so a statement in between outlives a 1 s time to live.
    let sandbox = SandboxProcess::start(&["--latency-ms", "1100"]);
    let regions = "SELECT count(*) AS n FROM linode.regions.regions";
    let before = sandbox.log().len();
    sandbox.imageql(&["--cache-ttl", "1", "-o", "ndjson", "-e", COUNT, "-e", regions, "-e", COUNT]).ok();
    assert_eq!(listings(&sandbox.log_since(before)).len(), 2, "the expired answer is asked for again");

    let before = sandbox.log().len();
    sandbox.imageql(&["-o", "ndjson", "-e", COUNT, "-e", regions, "-e", COUNT]).ok();
    assert_eq!(listings(&sandbox.log_since(before)).len(), 1, "within the default time to live it is reused");
}

#[tokio::test]
async fn every_kind_of_change_drops_the_cached_answers() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let private = "SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public";
    let (_, filtered) = sandbox.client().get("/images", Some(TOKEN), Some(r#"{"is_public": false}"#)).await;
    let before_count = filtered["results"].as_u64().unwrap();
    let changes = [
        "INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'cached-away')",
        "REPLACE linode.images.images SET description = 'changed' WHERE id = 'private/1002'",
        "EXEC linode.images.images.post_replicate_image @imageId='private/1001', @add='us-mia'",
        "DELETE FROM linode.images.images WHERE id = 'private/1002'",
    ];
    let mut args = vec!["-o", "ndjson", "-e", private, "-e", private];
    for change in &changes {
        args.extend(["-e", change, "-e", private]);
    }
    let before = sandbox.log().len();
    let out = sandbox.imageql(&args).ok();

    // Lists and changes in the order sent: a list after the first (cached) and after each change.
    let log = sandbox.log_since(before);
    let sent: Vec<&str> = log
        .iter()
        .filter_map(|l| match (l["method"].as_str().unwrap(), l["path"].as_str().unwrap()) {
            ("GET", "/v4/images") => Some("list"),
            ("GET", _) => None,
            _ => Some("change"),
        })
        .collect();
    assert_eq!(sent, ["list", "change", "list", "change", "list", "change", "list", "change", "list"]);
    let expected = [before_count, before_count, before_count + 1, before_count + 1, before_count + 1, before_count];
    assert_eq!(counts(&out), expected);
}

/// A session over `sandbox` with `token`, sharing `shared` with others.
async fn session(sandbox: &SandboxProcess, token: &str, shared: &Shared) -> Session {
    let options = SessionOptions { shared: shared.clone(), ..SessionOptions::new(&sandbox.url, Some(token)) };
    Session::new(options).await.expect("a session over the sandbox")
}

/// The ids a query returns, in order.
async fn ids(session: &Session, sql: &str) -> Vec<String> {
    let Outcome::Rows { stream, .. } = session.execute(sql).await.unwrap() else { panic!("rows expected") };
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let ids = b.column_by_name("id").expect("an id column").as_string::<i32>().clone();
            (0..ids.len()).map(move |i| ids.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_share_answers_but_tokens_never_do() {
    let sandbox = SandboxProcess::start(&["--account", "other:other-token"]);
    let shared = Shared::new(Duration::from_secs(60));
    let all = "SELECT id FROM linode.images.images ORDER BY id";
    let before = sandbox.log().len();
    let first = ids(&session(&sandbox, TOKEN, &shared).await, all).await;
    let other = ids(&session(&sandbox, "other-token", &shared).await, all).await;
    let again = ids(&session(&sandbox, TOKEN, &shared).await, all).await;
    assert_eq!(listings(&sandbox.log_since(before)).len(), 2, "one listing per token");

    let expected = |token| {
        let http = sandbox.client();
        async move {
            let mut ids: Vec<String> =
                http.all_images(Some(token)).await.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(first, expected(TOKEN).await);
    assert_eq!(again, first);
    assert_eq!(other, expected("other-token").await);
    assert_ne!(other, first, "the other account sees no private images of the first");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_scans_send_one_set_of_requests() {
    let sandbox = SandboxProcess::start(&["--seed-images", "1200", "--latency-ms", "200"]);
    let (results, pages) = listing_size(&sandbox, TOKEN, 500).await;
    let shared = Shared::default();
    let (a, b) = (session(&sandbox, TOKEN, &shared).await, session(&sandbox, TOKEN, &shared).await);
    let all = "SELECT id FROM linode.images.images";
    let before = sandbox.log().len();
    let (first, second) = tokio::join!(ids(&a, all), ids(&b, all));
    assert_eq!(listings(&sandbox.log_since(before)).len(), pages, "every page was asked for once");
    assert_eq!(first.len() as u64, results);
    assert_eq!(first, second);
}

#[tokio::test]
async fn queries_wait_for_the_list_budget_instead_of_being_refused() {
    // The account's listing takes 20 pages of 100, a minute's worth at the real limit.
    let seed = ["--seed-images", "1940"];
    let (results, pages) = listing_size(&SandboxProcess::start(&seed), TOKEN, 100).await;
    assert_eq!(pages, 20);
    let sandbox = SandboxProcess::start(&[&seed[..], &["--rate-limit-list", "20"]].concat());

    // Three full listings without the cache: 60 list requests, three minutes' worth.
    let run =
        sandbox.imageql(&["--no-cache", "--page-size", "100", "-o", "ndjson", "-e", COUNT, "-e", COUNT, "-e", COUNT]);
    assert_eq!(counts(&run.ok()), [results; 3]);
    let statuses = listings(&sandbox.log());
    assert_eq!(statuses.len(), 3 * pages);
    assert!(statuses.iter().all(|&s| s == 200), "no request was refused: {statuses:?}");
    let stderr = run.stderr();
    assert!(
        stderr.contains("waiting") && stderr.contains("rate limit (image listing: 20 requests a minute)"),
        "{stderr}"
    );
}
