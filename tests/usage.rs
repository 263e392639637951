//! A month of image usage, driven through the sandbox's clock: captures, an upload, a
//! replication, a deletion and a recovery image; then `linode.images.usage(from, to)` against a
//! hand computation, and the account's events as the sandbox recorded them.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDateTime};
use common::{SandboxProcess, ext4_image};
use serde_json::{Value, json};

/// An account with instances and disks but no seeded images, so every event is the test's.
const ACCOUNT: &str = "usage:usage-token";
const TOKEN: &str = "usage-token";
const HOUR: i64 = 3600;
const TIME: &str = "%Y-%m-%dT%H:%M:%S";

struct Month {
    sandbox: SandboxProcess,
    http: reqwest::Client,
    token: &'static str,
}

impl Month {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.sandbox.client().send_as(Some(self.token), method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        body
    }

    /// Moves the sandbox's clock by `seconds` and returns its time.
    async fn advance(&self, seconds: i64) -> NaiveDateTime {
        let url = format!("{}/sandbox/clock", self.sandbox.origin());
        let request = self.http.post(url).bearer_auth(self.token).json(&json!({"advance_seconds": seconds}));
        let response = request.send().await.unwrap();
        let (status, body) = common::json_of(response).await;
        assert_eq!(status, 200, "{body}");
        NaiveDateTime::parse_from_str(body["now"].as_str().unwrap(), TIME).unwrap()
    }

    /// Captures disk `disk_id` and waits until the image is available; returns its id.
    async fn capture(&self, disk_id: u64, label: &str) -> String {
        let image = self.send("POST", "/images", Some(json!({"disk_id": disk_id, "label": label}))).await;
        let id = image["id"].as_str().unwrap().to_string();
        self.wait_available(&id).await;
        id
    }

    async fn wait_available(&self, id: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let image = self.send("GET", &format!("/images/{id}"), None).await;
            let regions = image["regions"].as_array().unwrap();
            if image["status"] == "available" && regions.iter().all(|r| r["status"] == "available") {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{id} never became available: {image}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn rows(&self, sql: &str) -> Vec<Value> {
        self.sandbox.imageql_with_token(Some(self.token), &["-o", "ndjson", "-e", sql]).rows()
    }
}

/// The charge of `gb` × `copies` for `hours`, at $0.10 per GB-month of 730 hours, in cents.
fn dollars(mb: f64, copies: f64, hours: f64) -> f64 {
    (mb / 1024.0 * copies * 0.10 * hours.min(730.0) / 730.0 * 100.0).round() / 100.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_month_of_usage_matches_a_hand_computation() {
    // Time scale 0: captures and replicas finish at once, so every time below is exact to
    // the request's second. Steps stop half an hour short of whole hours, so the seconds that
    // requests take never move a started hour.
    let month = Month {
        sandbox: SandboxProcess::start(&["--account", ACCOUNT, "--time-scale", "0"]),
        http: reqwest::Client::new(),
        token: TOKEN,
    };
    let start = month.advance(0).await;

    // Day 0: capture web-1's disk (ext4, 2430 MB used) and build-box's (ext3, 700 MB used) of
    // this account (instance ids shifted by 100), and keep the first in two regions.
    let web = month.capture(67990, "usage-web").await;
    let build = month.capture(67995, "usage-build").await;
    month.send("POST", &format!("/images/{web}/regions"), Some(json!({"regions": ["us-east", "eu-west"]}))).await;
    month.wait_available(&web).await;

    // Day 2 - 30 min: upload a 64 MiB ext4 disk image.
    month.advance(47 * HOUR + HOUR / 2).await;
    let dir = tempfile::tempdir().unwrap();
    let file = ext4_image(dir.path(), 64);
    let created =
        month.send("POST", "/images/upload", Some(json!({"label": "usage-upload", "region": "us-east"}))).await;
    let upload = created["image"]["id"].as_str().unwrap().to_string();
    let put = month.http.put(created["upload_to"].as_str().unwrap()).body(std::fs::read(&file).unwrap());
    assert_eq!(put.send().await.unwrap().status(), 200);

    // Day 10 - 30 min: delete the build image.
    month.advance(192 * HOUR).await;
    month.send("DELETE", &format!("/images/{build}"), None).await;

    // Day 12 - 30 min: delete db-1 (ext4, 5800 MB used): a free recovery image appears, and
    // expires 7 days later.
    month.advance(48 * HOUR).await;
    month.send("DELETE", "/linode/instances/12446", None).await;
    let images = month.sandbox.client().all_images(Some(TOKEN)).await;
    let recovery = images.iter().find(|i| i["type"] == "automatic").expect("a recovery image");
    let recovery = recovery["id"].as_str().unwrap().to_string();

    // An hour past the 30-day period.
    month.advance(18 * 24 * HOUR + HOUR).await;
    let (from, to) = (start, start + Duration::hours(720));

    // The hand computation, for the period [start, start + 720 h):
    //   usage-web     2430 MB × 2 copies, day 0 → end:            720 h  → 2430/1024 × 2 × 0.10 × 720/730 = 0.4681 → $0.47
    //   usage-build    700 MB × 1, day 0 → deleted day 10 - 30 min: 239.5 h → 240 h → 700/1024 × 0.10 × 240/730 = 0.0225 → $0.02
    //   usage-upload    64 MB × 1, day 2 - 30 min → end:           672.5 h → 673 h → 64/1024 × 0.10 × 673/730 = 0.0058 → $0.01
    //   db-1-recovery 5800 MB × 1, day 12 - 30 min → expiry 7 days later: 168 h, free → $0.00
    //   total $0.50
    let expected: BTreeMap<String, (f64, i64, i64, f64, bool)> = [
        (web.clone(), (2430.0, 2, 720, 0.47, false)),
        (build.clone(), (700.0, 1, 240, 0.02, false)),
        (upload.clone(), (64.0, 1, 673, 0.01, false)),
        (recovery.clone(), (5800.0, 1, 168, 0.00, true)),
    ]
    .into_iter()
    .collect();
    for (mb, copies, hours, usd, free) in expected.values() {
        let computed = if *free { 0.0 } else { dollars(*mb, *copies as f64, *hours as f64) };
        assert!((computed - usd).abs() < 1e-9, "the hand computation: {computed} vs {usd}");
    }

    let mark = month.sandbox.log().len();
    let sql = format!("SELECT * FROM linode.images.usage('{}', '{}') ORDER BY id", from.format(TIME), to.format(TIME));
    let rows = month.rows(&sql);
    let got: BTreeMap<String, (f64, i64, i64, f64, bool)> = rows
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap().to_string();
            let gb = r["gb"].as_f64().unwrap();
            let row = (
                (gb * 1024.0).round(),
                r["copies"].as_i64().unwrap(),
                r["hours"].as_i64().unwrap(),
                r["usd"].as_f64().unwrap(),
                r["free"].as_bool().unwrap(),
            );
            (id, row)
        })
        .collect();
    assert_eq!(got, expected, "{rows:#?}");
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"usage-build") && labels.contains(&"db-1-recovery"), "{labels:?}");
    let total = month.rows(&format!(
        "SELECT sum(usd) AS total FROM linode.images.usage('{}', '{}')",
        from.format(TIME),
        to.format(TIME)
    ));
    assert!((total[0]["total"].as_f64().unwrap() - 0.50).abs() < 1e-9, "{total:?}");

    // The function read the images and the events through the scans, with their filters.
    let log = month.sandbox.log_since(mark);
    let paths: Vec<&str> = log.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/v4/images") && paths.contains(&"/v4/account/events"), "{paths:?}");
    let events_filter = log.iter().find(|l| l["path"] == "/v4/account/events").unwrap()["x_filter"].as_str().unwrap();
    assert!(events_filter.contains("image_delete") && events_filter.contains("disk_imagize"), "{events_filter}");

    // A shorter period bills only what falls in it: days 1 to 11 hold usage-web (240 h) and
    // usage-upload from day 2 - 30 min (216.5 h → 217 h); usage-build until its deletion (215.5 h → 216 h).
    let rows = month.rows(&format!(
        "SELECT id, hours FROM linode.images.usage('{}', '{}') ORDER BY id",
        (start + Duration::days(1)).format(TIME),
        (start + Duration::days(11)).format(TIME)
    ));
    let hours: BTreeMap<&str, i64> =
        rows.iter().map(|r| (r["id"].as_str().unwrap(), r["hours"].as_i64().unwrap())).collect();
    let wanted: BTreeMap<&str, i64> =
        [(web.as_str(), 240), (upload.as_str(), 217), (build.as_str(), 216)].into_iter().collect();
    assert_eq!(hours, wanted);

    // The events, as the test made them.
    let counts: BTreeMap<String, i64> = month
        .rows("SELECT action, count(*) AS n FROM linode.account.events GROUP BY action")
        .iter()
        .map(|r| (r["action"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
        .collect();
    let did: BTreeMap<String, i64> = [
        ("disk_imagize", 3), // two captures and the recovery image
        ("image_update", 1), // the replication
        ("image_upload", 1),
        ("image_delete", 2), // the build image, and the recovery image when it expired
        ("linode_delete", 1),
    ]
    .into_iter()
    .map(|(a, n)| (a.to_string(), n))
    .collect();
    assert_eq!(counts, did);

    let mark = month.sandbox.log().len();
    let deleted =
        month.rows("SELECT entity['id'] AS id, username FROM linode.account.events WHERE action = 'image_delete'");
    let numbers: Vec<i64> =
        [&build, &recovery].iter().map(|i| i.trim_start_matches("private/").parse().unwrap()).collect();
    let mut got: Vec<i64> = deleted.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    got.sort();
    assert_eq!(got, numbers);
    assert!(deleted.iter().any(|r| r["username"].is_null()), "the expiry is the system's: {deleted:?}");
    let log = month.sandbox.log_since(mark);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["x_filter"], r#"{"action":"image_delete"}"#);

    // A nested field is sent as the API names it.
    let mark = month.sandbox.log().len();
    let captures = month.rows("SELECT secondary_entity['id'] AS image FROM linode.account.events WHERE entity['type'] = 'linode' AND action = 'disk_imagize'");
    assert_eq!(captures.len(), 3);
    let filter: Value = serde_json::from_str(month.sandbox.log_since(mark)[0]["x_filter"].as_str().unwrap()).unwrap();
    assert_eq!(
        common::normalize(&filter),
        common::normalize(&json!({"+and": [{"entity.type": "linode"}, {"action": "disk_imagize"}]}))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_persist_and_finish_on_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let args = ["--account", ACCOUNT, "--data-dir", data_dir];
    let mut sandbox = SandboxProcess::start(&args);
    let http = sandbox.client();
    let events = |http: common::Http| async move {
        let (status, body) = http.get("/account/events", Some(TOKEN), None).await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    };
    // A 2430 MB capture takes 2 s + 2430/700 s = 5.5 s at time scale 1.
    let (status, image) = http.send_as(Some(TOKEN), "POST", "/images", Some(json!({"disk_id": 67990}))).await;
    assert_eq!(status, 200, "{image}");
    let before = events(sandbox.client()).await;
    assert_eq!((before.len(), &before[0]["status"]), (1, &json!("started")), "{before:?}");
    sandbox.kill();

    let restarted = SandboxProcess::start(&args);
    let month = Month { sandbox: restarted, http: reqwest::Client::new(), token: TOKEN };
    assert_eq!(events(month.sandbox.client()).await[0]["id"], before[0]["id"]);
    month.advance(60).await;
    let after = events(month.sandbox.client()).await;
    assert_eq!(after[0]["status"], "finished", "{after:?}");
    assert_eq!(after[0]["percent_complete"], 100);
    assert_eq!(after[0]["duration"], 5.0, "from created to the end of the capture");
    assert_eq!(after[0]["secondary_entity"]["id"], image["id"]);
    month.send("DELETE", &format!("/images/{}", image["id"].as_str().unwrap()), None).await;
    let ids: Vec<u64> = events(month.sandbox.client()).await.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [before[0]["id"].as_u64().unwrap() + 1, before[0]["id"].as_u64().unwrap()]);
}

/// A past period's bill does not move when its images are deleted later, even images made
/// before the events the API keeps (the seeded ones have no event of their making).
#[tokio::test(flavor = "multi_thread")]
async fn a_past_bill_does_not_move_after_a_later_cleanup() {
    let month = Month {
        sandbox: SandboxProcess::start(&["--time-scale", "0"]),
        http: reqwest::Client::new(),
        token: common::TOKEN,
    };
    let now = month.advance(0).await;
    let (from, to) = ((now - Duration::days(31)).format(TIME), (now - Duration::days(1)).format(TIME));
    let usage = |month: &Month| {
        let sql = format!(
            "SELECT id, gb, copies, hours, usd, estimated, billed_from, billed_to FROM linode.images.usage('{from}', '{to}') ORDER BY id"
        );
        month.rows(&sql)
    };
    let total = |rows: &[Value]| rows.iter().map(|r| r["usd"].as_f64().unwrap()).sum::<f64>();
    let before = usage(&month);
    assert!(before.len() >= 8 && total(&before) > 1.0, "{before:#?}");
    assert!(before.iter().all(|r| r["estimated"] == false), "present images bill exactly: {before:#?}");

    // A day after the period, the five oldest manual images go.
    month.advance(24 * HOUR).await;
    let oldest = month.sandbox.rows(
        "SELECT id FROM linode.images.images WHERE NOT is_public AND type = 'manual' AND status = 'available' ORDER BY created LIMIT 5",
    );
    assert_eq!(oldest.len(), 5);
    let ids: Vec<&str> = oldest.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
    month.sandbox.imageql(&["-e", &format!("DELETE FROM linode.images.images WHERE id IN ({list})")]).ok();
    assert_eq!(month.sandbox.rows(&format!("SELECT id FROM linode.images.images WHERE id IN ({list})")).len(), 0);

    let after = usage(&month);
    assert!((total(&after) - total(&before)).abs() < 1e-9, "the bill moved:\n{before:#?}\n{after:#?}");
    let without_flag = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("estimated");
                r
            })
            .collect()
    };
    assert_eq!(without_flag(&after), without_flag(&before));
    // The deleted ones are billed from the period's start, as their making is not known.
    for row in &after {
        let deleted = ids.contains(&row["id"].as_str().unwrap());
        assert_eq!(row["estimated"], deleted, "{row}");
    }
}
