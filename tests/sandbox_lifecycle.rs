//! The sandbox's image lifecycle over HTTP: capture, upload, update, delete, replicate,
//! recovery images, account limits, persistence, rate limits, faults and tenant isolation.

mod common;

use std::io::{Read, Write};

use common::{SandboxProcess, TOKEN, gzip, json_of};
use serde_json::{Value, json};

/// Capturable ext4 disk of the seeded instance web-1 (us-east), using 2430 MB.
const EXT4_DISK: u64 = 67890;
const SWAP_DISK: u64 = 67891;
const FULL_DISK: u64 = 67892;
const RAW_DISK: u64 = 67893;

fn fast() -> SandboxProcess {
    SandboxProcess::start(&["--time-scale", "0.01"])
}

#[tokio::test]
async fn captures_an_ext_disk_into_an_image_that_becomes_available() {
    let sandbox = fast();
    let http = sandbox.client();
    let (status, image) = http
        .send("POST", "/images", Some(json!({"disk_id": EXT4_DISK, "cloud_init": true, "tags": ["web", "abc", "web"]})))
        .await;
    assert_eq!(status, 200, "{image}");
    assert_eq!(image["status"], "creating");
    assert_eq!(image["label"], "Debian 12 Disk", "the label defaults to the disk's");
    assert_eq!(image["size"], 2430, "the size is the disk's used space");
    assert_eq!(image["capabilities"], json!(["cloud-init"]));
    assert_eq!(image["tags"], json!(["abc", "web"]));
    assert_eq!(image["regions"], json!([]));
    assert_eq!(image["description"], "");
    assert_eq!(image["created_by"], "sandbox-user");
    let id = image["id"].as_str().unwrap();
    let done = http.poll(&format!("/images/{id}"), 10, |i| i["status"] == "available").await;
    assert_eq!(done["regions"], json!([{"region": "us-east", "status": "available"}]));

    let (_, labelled) = http.send("POST", "/images", Some(json!({"disk_id": EXT4_DISK, "label": "golden"}))).await;
    assert_eq!(labelled["label"], "golden");

    for (disk, words) in [(RAW_DISK, "raw"), (SWAP_DISK, "swap"), (FULL_DISK, "90%"), (424242, "does not exist")] {
        let (status, body) = http.send("POST", "/images", Some(json!({"disk_id": disk}))).await;
        assert_eq!(status, 400, "{disk}");
        assert_eq!(body["errors"][0]["field"], "disk_id");
        assert!(body["errors"][0]["reason"].as_str().unwrap().contains(words), "{body}");
    }
    let (status, body) = http.send("POST", "/images", Some(json!({"label": "x"}))).await;
    assert_eq!((status, body), (400, json!({"errors": [{"reason": "disk_id is required", "field": "disk_id"}]})));
    let (status, body) =
        http.send("POST", "/images", Some(json!({"disk_id": EXT4_DISK, "tags": ["ab"], "label": "bad/label"}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "every invalid field is reported: {body}");
    let (status, _) = http.send_as(None, "POST", "/images", Some(json!({"disk_id": EXT4_DISK}))).await;
    assert_eq!(status, 401);
}

/// PUTs `data` to an upload URL the way linode-cli does.
async fn put_upload(url: &str, data: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(url)
        .header("Content-Type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    json_of(response).await
}

async fn create_upload(http: &common::Http, label: &str) -> (String, String) {
    let (status, body) = http
        .send("POST", "/images/upload", Some(json!({"label": label, "region": "us-ord", "tags": ["upload"]})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["image"]["status"], "pending_upload");
    assert_eq!(body["image"]["size"], 0);
    (body["image"]["id"].as_str().unwrap().to_string(), body["upload_to"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn uploads_stream_gzip_data_and_make_the_image_available() {
    let sandbox = fast();
    let http = sandbox.client();
    let (id, url) = create_upload(&http, "uploaded").await;
    assert!(url.starts_with(&format!("{}/", sandbox.origin())), "{url} is served by the sandbox itself");
    let (_, other_url) = create_upload(&http, "another").await;
    assert_ne!(url, other_url);

    // 3 MiB and one byte: 4 MB once rounded up.
    let raw: Vec<u8> = (0..3 * 1024 * 1024 + 1).map(|i| (i % 251) as u8).collect();
    let (status, body) = put_upload(&url, gzip(&raw)).await;
    assert_eq!((status, body), (200, json!({})));
    let (_, image) = http.get(&format!("/images/{id}"), Some(TOKEN), None).await;
    assert_eq!(image["status"], "available");
    assert_eq!(image["size"], 4);
    assert_eq!(image["regions"], json!([{"region": "us-ord", "status": "available"}]));
    let (status, _) = put_upload(&url, gzip(b"again")).await;
    assert_eq!(status, 403, "an upload URL is used once");

    for (region, words) in [("in-maa", "Object Storage"), ("xx-nowhere", "does not exist")] {
        let (status, body) = http.send("POST", "/images/upload", Some(json!({"label": "x", "region": region}))).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], "region");
        assert!(body["errors"][0]["reason"].as_str().unwrap().contains(words), "{body}");
    }
    let (status, body) = http.send("POST", "/images/upload", Some(json!({"region": "us-east"}))).await;
    assert_eq!((status, body["errors"][0]["field"].clone()), (400, json!("label")));
}

#[tokio::test]
async fn corrupt_truncated_and_oversized_uploads_are_refused() {
    let sandbox = fast();
    let http = sandbox.client();
    let (id, url) = create_upload(&http, "bad-data").await;
    let (status, body) = put_upload(&url, b"this is not gzip at all".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("gzip"), "{body}");
    let data: Vec<u8> = (0..1_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let compressed = gzip(&data);
    let (status, _) = put_upload(&url, compressed[..compressed.len() / 2].to_vec()).await;
    assert_eq!(status, 400, "a truncated upload is refused");
    let (status, _) = put_upload(&url, Vec::new()).await;
    assert_eq!(status, 400, "an empty upload is refused");
    let (_, image) = http.get(&format!("/images/{id}"), Some(TOKEN), None).await;
    assert_eq!(image["status"], "pending_upload", "a failed upload can be retried");

    // A Content-Length over 5 GB is refused before any data is read.
    let path = url.strip_prefix(&sandbox.origin()).unwrap();
    let mut stream = std::net::TcpStream::connect(sandbox.origin().trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: sandbox\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        5u64 * 1024 * 1024 * 1024 + 1
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("5 GB"), "{answer}");
}

#[tokio::test]
async fn a_gzip_bomb_is_stopped_at_6_gb_with_bounded_memory() {
    let sandbox = fast();
    let http = sandbox.client();
    let (id, url) = create_upload(&http, "bomb").await;
    let bomb = common::gzip_bomb();
    assert!(bomb.len() < 16 << 20);
    let (status, body) = put_upload(&url, bomb).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("6 GB"), "{body}");
    let (_, image) = http.get(&format!("/images/{id}"), Some(TOKEN), None).await;
    assert_eq!(image["status"], "pending_upload");
    let status = std::fs::read_to_string(format!("/proc/{}/status", sandbox.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap();
    assert!(peak_kb < 256 * 1024, "the sandbox's peak memory was {peak_kb} kB");
}

#[tokio::test]
async fn upload_urls_and_pending_uploads_expire_after_24_hours() {
    let sandbox = fast();
    let http = sandbox.client();
    let (id, url) = create_upload(&http, "late").await;
    let clock = format!("{}/sandbox/clock", sandbox.origin());
    let (status, _) = json_of(
        http.client.post(&clock).bearer_auth(TOKEN).json(&json!({"advance_seconds": 23 * 3600})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = http.get(&format!("/images/{id}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "still within the window");
    json_of(http.client.post(&clock).bearer_auth(TOKEN).json(&json!({"advance_seconds": 3600})).send().await.unwrap())
        .await;
    let (status, _) = json_of(
        http.client
            .post(&clock)
            .bearer_auth(TOKEN)
            .json(&json!({"advance_seconds": 10_000_000_000_000i64}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "the clock refuses to overflow");
    let (status, body) = put_upload(&url, gzip(b"too late")).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = http.get(&format!("/images/{id}"), Some(TOKEN), None).await;
    assert_eq!(status, 404, "an upload not completed within 24 h is deleted");
}

#[tokio::test]
async fn updates_change_only_label_description_and_tags() {
    let sandbox = fast();
    let http = sandbox.client();
    let (_, before) = http.get("/images/private/1003", Some(TOKEN), None).await;
    let clock = format!("{}/sandbox/clock", sandbox.origin());
    json_of(http.client.post(&clock).bearer_auth(TOKEN).json(&json!({"advance_seconds": 60})).send().await.unwrap())
        .await;
    let (status, after) = http
        .send(
            "PUT",
            "/images/private/1003",
            Some(json!({"label": "ci-runner-v2", "description": "new", "tags": ["zeta", "alpha"], "size": 1, "status": "creating"})),
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!((after["label"].clone(), after["description"].clone()), (json!("ci-runner-v2"), json!("new")));
    assert_eq!(after["tags"], json!(["alpha", "zeta"]));
    assert_eq!((after["size"].clone(), after["status"].clone()), (before["size"].clone(), json!("available")));
    assert_ne!(after["updated"], before["updated"]);
    assert_eq!(after["created"], before["created"]);
    let (_, read_back) = http.get("/images/private%2F1003", Some(TOKEN), None).await;
    assert_eq!(read_back, after);

    let (status, body) = http.send("PUT", "/images/private/1003", Some(json!({"tags": ["ab"]}))).await;
    assert_eq!(
        (status, body),
        (400, json!({"errors": [{"reason": "Tag 0 (ab) length must be 3-50 characters", "field": "tags"}]}))
    );
    let (status, _) = http.send("PUT", "/images/private/1003", Some(json!({"label": "x".repeat(51)}))).await;
    assert_eq!(status, 400);
    let (status, _) = http.send("PUT", "/images/private/1003", Some(json!({"description": "d".repeat(65001)}))).await;
    assert_eq!(status, 400);
    let (status, _) = http.send("PUT", "/images/linode/debian12", Some(json!({"label": "mine"}))).await;
    assert_eq!(status, 403);
    let (status, _) = http.send("PUT", "/images/private/999", Some(json!({"label": "mine"}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn deletes_private_images_only() {
    let sandbox = fast();
    let http = sandbox.client();
    let (status, body) = http.send("DELETE", "/images/private%2F1013", None).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, _) = http.get("/images/private/1013", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    let (status, _) = http.send("DELETE", "/images/private/1013", None).await;
    assert_eq!(status, 404);
    let (status, _) = http.send("DELETE", "/images/linode/debian12", None).await;
    assert_eq!(status, 403);
    let (status, _) = http.get("/images/linode/debian12", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn replication_moves_regions_through_their_states() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0.2"]);
    let http = sandbox.client();
    // private/1001 is in us-east and eu-west.
    let (status, image) =
        http.send("POST", "/images/private/1001/regions", Some(json!({"regions": ["us-east", "us-iad"]}))).await;
    assert_eq!(status, 200, "{image}");
    assert_eq!(
        image["regions"],
        json!([
            {"region": "us-east", "status": "available"},
            {"region": "eu-west", "status": "pending deletion"},
            {"region": "us-iad", "status": "pending replication"}
        ])
    );
    let done = http
        .poll("/images/private/1001", 20, |i| {
            let statuses: Vec<String> =
                i["regions"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_string()).collect();
            statuses.iter().all(|s| s == "available") && statuses.len() == 2
        })
        .await;
    assert_eq!(
        done["regions"],
        json!([{"region": "us-east", "status": "available"}, {"region": "us-iad", "status": "available"}])
    );
    assert_eq!(done["total_size"], json!(2650 * 2));

    for (body, field_words) in [
        (json!({"regions": []}), "at least one region"),
        (json!({"regions": ["xx-nowhere"]}), "does not exist"),
        (json!({"regions": ["in-maa"]}), "Object Storage"),
        (json!({}), "regions is required"),
    ] {
        let (status, answer) = http.send("POST", "/images/private/1001/regions", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert!(answer["errors"][0]["reason"].as_str().unwrap().contains(field_words), "{answer}");
    }
    let (status, answer) =
        http.send("POST", "/images/private/1010/regions", Some(json!({"regions": ["us-east"]}))).await;
    assert_eq!(status, 400, "a creating image cannot be replicated: {answer}");
    let (status, _) = http.send("POST", "/images/linode/debian12/regions", Some(json!({"regions": ["us-east"]}))).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn deleting_an_instance_leaves_a_free_recovery_image() {
    // The seeded account already holds 12 custom images: at the limit, captures fail...
    let sandbox = SandboxProcess::start(&["--time-scale", "0.01", "--max-images", "12"]);
    let http = sandbox.client();
    let (status, body) = http.send("POST", "/images", Some(json!({"disk_id": EXT4_DISK}))).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("Image limit"), "{body}");
    // ...but recovery images are free.
    let (status, body) = http.send("DELETE", "/linode/instances/12345", None).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, _) = http.get("/linode/instances/12345", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    let (_, list) = http
        .get("/images?page_size=500", Some(TOKEN), Some(r#"{"type": "automatic", "label": "web-1-recovery"}"#))
        .await;
    let recovery = &list["data"][0];
    assert_eq!(recovery["size"], 2430);
    let created =
        chrono::NaiveDateTime::parse_from_str(recovery["created"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S").unwrap();
    let expiry =
        chrono::NaiveDateTime::parse_from_str(recovery["expiry"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S").unwrap();
    assert_eq!(expiry - created, chrono::Duration::days(7));
    let id = recovery["id"].as_str().unwrap();
    http.poll(&format!("/images/{id}"), 10, |i| i["status"] == "available").await;
}

/// 50 captures of the seeded ext4 disk at once.
async fn fifty_captures(sandbox: &SandboxProcess) -> Vec<(u16, Value)> {
    let http = std::sync::Arc::new(sandbox.client());
    let attempts = (0..50).map(|_| {
        let http = http.clone();
        tokio::spawn(async move { http.send("POST", "/images", Some(json!({"disk_id": EXT4_DISK}))).await })
    });
    futures::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect()
}

#[tokio::test]
async fn limits_hold_under_50_concurrent_captures() {
    // 12 custom images are seeded; 8 more fit under a limit of 20.
    let results = fifty_captures(&SandboxProcess::start(&["--max-images", "20"])).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 8);
    let refused = results.iter().filter(|(s, _)| *s != 200);
    assert!(refused.clone().count() == 42);
    assert!(
        refused.clone().all(|(s, b)| *s == 400 && b["errors"][0]["reason"].as_str().unwrap().contains("Image limit"))
    );

    // Storage: 49790 MB are in use; 55 GB (56320 MB) leave room for two 2430 MB captures.
    let results = fifty_captures(&SandboxProcess::start(&["--max-total-gb", "55"])).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 2);
    assert!(
        results.iter().any(|(_, b)| b["errors"][0]["reason"].as_str().is_some_and(|r| r.contains("Storage limit")))
    );
}

#[tokio::test]
async fn acknowledged_changes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut sandbox = SandboxProcess::start(&["--data-dir", data_dir, "--time-scale", "0"]);
    let http = std::sync::Arc::new(sandbox.client());
    let (_, updated) = http.send("PUT", "/images/private/1002", Some(json!({"label": "db-golden"}))).await;
    let (status, _) = http.send("DELETE", "/images/private/1013", None).await;
    assert_eq!(status, 200);
    // Captures race the kill: every one acknowledged before it must survive.
    let captures: Vec<_> = (0..40)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move {
                http.send("POST", "/images", Some(json!({"disk_id": EXT4_DISK, "tags": ["kill"]}))).await
            })
        })
        .collect();
    let acknowledged = http.poll("/images?page_size=500", 10, |list| {
        list["data"].as_array().unwrap().iter().filter(|i| i["tags"] == json!(["kill"])).count() >= 3
    });
    acknowledged.await;
    sandbox.kill();
    let mut created: Vec<String> = Vec::new();
    for capture in captures {
        if let Ok((200, image)) = capture.await {
            created.push(image["id"].as_str().unwrap().to_string());
        }
    }
    assert!(created.len() >= 3, "some captures were acknowledged before the kill");

    let restarted = SandboxProcess::start(&["--data-dir", data_dir, "--time-scale", "0"]);
    let http = restarted.client();
    let (_, image) = http.get("/images/private/1002", Some(TOKEN), None).await;
    assert_eq!(image["label"], "db-golden");
    assert_eq!(image["updated"], updated["updated"]);
    let (status, _) = http.get("/images/private/1013", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    for id in &created {
        let (status, image) = http.get(&format!("/images/{id}"), Some(TOKEN), None).await;
        assert_eq!(status, 200, "{id} was acknowledged but lost");
        assert_eq!(image["status"], "available", "time-based state is derived from stored timestamps");
    }
}

#[tokio::test]
async fn list_rate_limits_answer_429_with_retry_after() {
    let sandbox = SandboxProcess::start(&["--rate-limit-list", "3"]);
    let http = sandbox.client();
    for remaining in [2, 1, 0] {
        let response = http.client.get(format!("{}/images", http.base)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        assert_eq!(response.headers()["x-ratelimit-remaining"], remaining.to_string().as_str());
        assert!(response.headers().contains_key("x-ratelimit-reset"));
    }
    let response = http.client.get(format!("{}/images", http.base)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let (_, body) = json_of(response).await;
    assert_eq!(body["errors"][0]["reason"], "Too Many Requests");
    // Other requests have their own, larger budget; without the option lists are unlimited.
    let unlimited = SandboxProcess::start(&[]);
    for _ in 0..30 {
        assert_eq!(unlimited.client().get("/images", Some(TOKEN), None).await.0, 200);
    }
    let (status, _) = http.get("/images/private/1001", Some(TOKEN), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn injected_faults_cover_the_mix_and_only_lost_answers_hide_changes() {
    let sandbox = SandboxProcess::start(&["--fail-rate", "1", "--stall-ms", "50"]);
    let http = sandbox.client();
    let quiet = |request: reqwest::RequestBuilder| request.bearer_auth(TOKEN).header("X-Sandbox-Faults", "off");
    let (_, truth) =
        json_of(quiet(http.client.get(format!("{}/images?page=2&page_size=25", http.base))).send().await.unwrap())
            .await;
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..80 {
        let sent = http.client.get(format!("{}/images?page=2&page_size=25", http.base)).bearer_auth(TOKEN).send().await;
        let kind = match sent {
            Err(_) => "reset".to_string(),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                match response.text().await {
                    Err(_) => "reset".to_string(),
                    Ok(text) => match serde_json::from_str::<Value>(&text) {
                        Err(_) => {
                            assert_eq!(status, 200, "{text}");
                            "truncated".to_string()
                        }
                        Ok(body) if status == 200 => {
                            assert_ne!(body["results"], truth["results"], "a fault changes something");
                            "list changed".to_string()
                        }
                        Ok(body) => {
                            assert!(body["errors"][0]["reason"].is_string(), "{body}");
                            format!("{status}{}", if retry_after { " with Retry-After" } else { "" })
                        }
                    },
                }
            }
        };
        kinds.insert(kind);
    }
    assert!(kinds.len() >= 8, "{kinds:?}");

    // A fault answered with a status struck before the handler: nothing changed. A lost
    // answer (reset, truncated) came after it: the change happened.
    let (_, list) =
        json_of(quiet(http.client.get(format!("{}/images?page_size=500", http.base))).send().await.unwrap()).await;
    let private: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["is_public"] == false)
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    for id in private {
        let sent = http.client.delete(format!("{}/images/{id}", http.base)).bearer_auth(TOKEN).send().await;
        let answered = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
                (status != 200 && body.is_some()).then_some(status)
            }
            Err(_) => None,
        };
        let (still, _) =
            json_of(quiet(http.client.get(format!("{}/images/{id}", http.base))).send().await.unwrap()).await;
        match answered {
            Some(status) => assert_eq!(still, 200, "{id}: a {status} fault changed something"),
            None => assert_eq!(still, 404, "{id}: the answer was lost after the change"),
        }
    }
    let run = sandbox.imageql(&["--timeout", "1", "-e", "SELECT count(*) FROM linode.images.images"]);
    let stderr = run.fails();
    assert!(stderr.contains("GET http"), "{stderr}");
}

#[tokio::test]
async fn accounts_never_see_each_other() {
    let sandbox = SandboxProcess::start(&["--account", "agency:agency-token", "--time-scale", "0"]);
    let http = sandbox.client();
    let other = Some("agency-token");
    for (method, path, body) in [
        ("GET", "/images/private/1001", None),
        ("PUT", "/images/private/1001", Some(json!({"label": "stolen"}))),
        ("DELETE", "/images/private/1001", None),
        ("POST", "/images/private/1001/regions", Some(json!({"regions": ["us-east"]}))),
    ] {
        let (status, _) = http.send_as(other, method, path, body).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, body) = http.send_as(other, "POST", "/images", Some(json!({"disk_id": EXT4_DISK}))).await;
    assert_eq!(status, 400, "another account's disk: {body}");
    let (_, instances) = http.send_as(other, "GET", "/linode/instances", None).await;
    let disk = instances["data"][0]["id"].as_u64().unwrap();
    let (_, disks) = http.send_as(other, "GET", &format!("/linode/instances/{disk}/disks"), None).await;
    let own_disk = disks["data"][0]["id"].as_u64().unwrap();
    assert_ne!(own_disk, EXT4_DISK);
    let (status, mine) = http.send_as(other, "POST", "/images", Some(json!({"disk_id": own_disk}))).await;
    assert_eq!(status, 200);
    let id = mine["id"].as_str().unwrap();
    let (status, _) = http.get(&format!("/images/{id}"), Some(TOKEN), None).await;
    assert_eq!(status, 404, "the default account cannot see the agency's image");
    let (_, list) = http.send_as(other, "GET", "/images?page_size=500", None).await;
    let private: Vec<&Value> = list["data"].as_array().unwrap().iter().filter(|i| i["is_public"] == false).collect();
    assert_eq!(private.len(), 1);
    assert_eq!(private[0]["created_by"], "agency");
}

#[tokio::test]
async fn instances_are_provisioned_booted_and_rebuilt_on_the_clock() {
    let sandbox = SandboxProcess::start(&[]);
    let http = sandbox.client();
    let clock = format!("{}/sandbox/clock", sandbox.origin());
    let advance = |seconds: i64| {
        let request = http.client.post(&clock).bearer_auth(TOKEN).json(&json!({"advance_seconds": seconds}));
        async move { assert_eq!(json_of(request.send().await.unwrap()).await.0, 200) }
    };
    let status = |id: u64| {
        let http = sandbox.client();
        async move { http.get(&format!("/linode/instances/{id}"), Some(TOKEN), None).await.1["status"].clone() }
    };
    let body = json!({"region": "us-east", "type": "g6-nanode-1", "image": "linode/debian12", "label": "clocked", "root_pass": "Clock-pass-123"});
    let (code, made) = http.send("POST", "/linode/instances", Some(body)).await;
    assert_eq!(code, 200, "{made}");
    let id = made["id"].as_u64().unwrap();
    assert_eq!(made["status"], "provisioning");
    assert!(made.get("root_pass").is_none(), "the password is not answered back");
    advance(3).await;
    assert_eq!(status(id).await, "booting");
    advance(2).await;
    assert_eq!(status(id).await, "running");
    let (_, disks) = http.get(&format!("/linode/instances/{id}/disks"), Some(TOKEN), None).await;
    let sizes: Vec<(Value, Value)> =
        disks["data"].as_array().unwrap().iter().map(|d| (d["filesystem"].clone(), d["size"].clone())).collect();
    assert_eq!(sizes, [(json!("ext4"), json!(25600 - 512)), (json!("swap"), json!(512))]);

    let (code, rebuilt) = http
        .send(
            "POST",
            &format!("/linode/instances/{id}/rebuild"),
            Some(json!({"image": "linode/ubuntu24.04", "authorized_users": ["ops"]})),
        )
        .await;
    assert_eq!(
        (code, &rebuilt["status"], &rebuilt["image"]),
        (200, &json!("rebuilding"), &json!("linode/ubuntu24.04"))
    );
    advance(5).await;
    assert_eq!(status(id).await, "running");

    // Made without booting: offline once provisioned.
    let body = json!({"region": "us-east", "type": "g6-nanode-1", "label": "unbooted", "booted": false});
    let (_, made) = http.send("POST", "/linode/instances", Some(body)).await;
    advance(5).await;
    assert_eq!(status(made["id"].as_u64().unwrap()).await, "offline");

    // What the API answers besides: types, availability, events marked seen.
    let (code, plan) = http.get("/linode/types/g6-nanode-1", None, None).await;
    assert_eq!((code, &plan["disk"], &plan["price"]["monthly"]), (200, &json!(25600), &json!(5.0)));
    let (_, everywhere) = http.get("/regions/availability?page_size=100", None, None).await;
    assert_eq!(everywhere["results"], 66);
    let (code, here) = http.get("/regions/us-mia/availability", None, None).await;
    let unavailable: Vec<&Value> = here.as_array().unwrap().iter().filter(|r| r["available"] == false).collect();
    assert_eq!((code, unavailable.len(), &unavailable[0]["plan"]), (200, 1, &json!("g7-highmem-1")));
    let (_, events) = http.get("/account/events", Some(TOKEN), None).await;
    let newest = events["data"][0]["id"].as_u64().unwrap();
    assert_eq!(events["data"][0]["action"], "linode_create");
    let (code, _) = http.send("POST", &format!("/account/events/{newest}/seen"), None).await;
    assert_eq!(code, 200);
    let (_, events) = http.get("/account/events", Some(TOKEN), None).await;
    assert!(events["data"].as_array().unwrap().iter().all(|e| e["seen"] == true));
    let (code, _) = http.send("POST", "/account/events/999999/seen", None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn an_accounts_file_hosts_many_accounts_each_with_its_own_images() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts");
    std::fs::write(&file, "# customers\nacme:tok-acme\n\nglobex:tok-globex\n").unwrap();
    let sandbox = SandboxProcess::start(&["--accounts-file", file.to_str().unwrap(), "--seed-images", "7"]);
    let http = sandbox.client();
    let private = |token: &'static str| {
        let http = sandbox.client();
        async move {
            let images = http.all_images(Some(token)).await;
            images.into_iter().filter(|i| i["is_public"] == false).collect::<Vec<Value>>()
        }
    };
    let (acme, globex) = (private("tok-acme").await, private("tok-globex").await);
    assert_eq!((acme.len(), globex.len()), (7, 7));
    assert!(acme.iter().all(|i| i["created_by"] == "acme") && globex.iter().all(|i| i["created_by"] == "globex"));
    let ids = |images: &[Value]| images.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(ids(&acme).iter().all(|id| !ids(&globex).contains(id)), "no image is shared");
    // The same every time: a second sandbox seeds the same images.
    let again = SandboxProcess::start(&["--accounts-file", file.to_str().unwrap(), "--seed-images", "7"]);
    let images = again.client().all_images(Some("tok-acme")).await;
    let same: Vec<Value> = images.into_iter().filter(|i| i["is_public"] == false).collect();
    assert_eq!(ids(&same), ids(&acme));
    assert_eq!(
        same.iter().map(|i| &i["size"]).collect::<Vec<_>>(),
        acme.iter().map(|i| &i["size"]).collect::<Vec<_>>()
    );
    // Each account has its own instances; a token sees only its own.
    let (_, instances) = http.get("/linode/instances", Some("tok-globex"), None).await;
    assert_eq!(instances["results"], 3);
    // A line that is not NAME:TOKEN is refused, naming the line and not echoing it.
    std::fs::write(&file, "acme:tok-acme\nsecret-looking-line\n").unwrap();
    let out = std::process::Command::new(common::binary())
        .args(["sandbox", "--listen", "127.0.0.1:0", "--accounts-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2: expected NAME:TOKEN") && !stderr.contains("secret-looking-line"), "{stderr}");
}
