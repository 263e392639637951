//! The sandbox's wire contract, checked over HTTP against what the real API answered in
//! recorded runs (distilled in `tests/fixtures/api_facts.json`) and the reference's rules for paging, X-Filter, errors and auth.

mod common;

use common::{SandboxProcess, TOKEN, gzip};
use serde_json::{Value, json};

/// What the real API answered to the image requests of ten recorded client runs, distilled
/// into `tests/fixtures/api_facts.json`: see its `about`.
fn recorded() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/api_facts.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let facts: Value = serde_json::from_str(&text).unwrap();
    facts["interactions"].as_array().unwrap().clone()
}

/// The interactions of one recorded run.
fn recording(name: &str) -> Vec<Value> {
    let of_run: Vec<Value> = recorded().into_iter().filter(|i| i["recording"] == name).collect();
    assert!(!of_run.is_empty(), "no recorded run {name}");
    of_run
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field the recording has, ours has, with the same JSON type (a leaf of `recorded` is
/// the type's name; null matches anything of a field the recording shows as null, and the
/// other way round). Lists are compared by their first elements.
fn assert_shape(recorded: &Value, ours: &Value, at: &str, exact_keys: bool) {
    match (recorded, ours) {
        (Value::Object(r), Value::Object(o)) => {
            for (key, value) in r {
                let mine = o.get(key).unwrap_or_else(|| panic!("{at}.{key} is missing from {ours}"));
                assert_shape(value, mine, &format!("{at}.{key}"), exact_keys);
            }
            if exact_keys {
                let extra: Vec<&String> = o.keys().filter(|k| !r.contains_key(*k)).collect();
                assert!(extra.is_empty(), "{at} has fields the API does not send: {extra:?}");
            }
        }
        (Value::Array(r), Value::Array(o)) => {
            if let (Some(r0), Some(o0)) = (r.first(), o.first()) {
                assert_shape(r0, o0, &format!("{at}[0]"), exact_keys);
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::String(r), o) => assert_eq!(r.as_str(), kind(o), "{at}: recorded a {r}, sandbox {o}"),
        (r, o) => panic!("{at}: the recorded shape {r} is not a type name (sandbox {o})"),
    }
}

/// Replays a recorded GET against the sandbox: the same status; returns the recorded
/// interaction's facts and our body.
async fn replay(sandbox: &SandboxProcess, interaction: &Value) -> (Value, Value) {
    let path = interaction["path"].as_str().unwrap();
    let mut builder = sandbox.client().client.get(format!("{}{}", sandbox.origin(), path));
    builder = builder.bearer_auth(TOKEN);
    if let Some(f) = interaction["x_filter"].as_str() {
        builder = builder.header("X-Filter", f);
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(response.headers().get("content-type").unwrap(), "application/json", "{path}: every response is JSON");
    let ours: Value = response.json().await.unwrap();
    assert_eq!(Value::from(status), interaction["status"], "{path}: status; body {ours}");
    (interaction.clone(), ours)
}

#[tokio::test]
async fn answers_the_recorded_requests_like_the_real_api() {
    let sandbox = SandboxProcess::start(&[]);
    // Errors and the empty list are compared byte for byte (as JSON values).
    for name in
        ["ExampleGetImage_missing", "TestImage_GetMissing", "ExampleListImages_badfilter", "ExampleListImages_notfound"]
    {
        for interaction in recording(name) {
            let (recorded, ours) = replay(&sandbox, &interaction).await;
            assert_eq!(ours, recorded["exact"], "{name}");
        }
    }
    // The 2024 public image: every field it has, we have, with the same types.
    let (recorded, ours) = replay(&sandbox, &recording("TestImage_GetFound")[0]).await;
    assert_shape(&recorded["shape"], &ours, "image", false);
    assert_eq!(ours["id"], recorded["facts"]["id"]);

    // The 2026 list: the envelope, and private and public images, field for field.
    let (recorded, ours) = replay(&sandbox, &recording("TestImages_List")[0]).await;
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&recorded["shape"]), "envelope fields in the recorded order");
    let publics = recorded["facts"]["data"].as_array().unwrap();
    for (shape, fact) in recorded["shape"]["data"].as_array().unwrap().iter().zip(publics) {
        let public = fact["is_public"] == true;
        let o = ours["data"].as_array().unwrap().iter().find(|i| i["is_public"] == public).unwrap();
        assert_shape(shape, o, if public { "public image" } else { "private image" }, true);
        assert_eq!(keys(o), keys(shape), "field order of a {} image", if public { "public" } else { "private" });
    }
    // Private images first (ascending id), then public ones.
    let ids: Vec<&str> = ours["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    let first_public = ids.iter().position(|i| i.starts_with("linode/")).unwrap();
    assert!(ids[first_public..].iter().all(|i| i.starts_with("linode/")));
    let numbers: Vec<u64> = ids[..first_public].iter().map(|i| i[8..].parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn pages_within_the_documented_limits() {
    let sandbox = SandboxProcess::start(&["--seed-images", "60"]);
    let http = sandbox.client();
    let (status, body) = http.get("/images?page=2&page_size=25", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["page"].clone(), body["pages"].clone(), body["results"].clone()),
        (json!(2), json!(5), json!(114))
    );
    assert_eq!(body["data"].as_array().unwrap().len(), 25);
    let (_, last) = http.get("/images?page=5&page_size=25", Some(TOKEN), None).await;
    assert_eq!(last["data"].as_array().unwrap().len(), 14);
    let (status, beyond) = http.get("/images?page=9&page_size=25", Some(TOKEN), None).await;
    assert_eq!((status, beyond["data"].clone(), beyond["page"].clone()), (200, json!([]), json!(9)));
    let (_, default) = http.get("/images", Some(TOKEN), None).await;
    assert_eq!(default["data"].as_array().unwrap().len(), 100);

    for (query, field) in
        [("page_size=24", "page_size"), ("page_size=501", "page_size"), ("page=0", "page"), ("page=x", "page")]
    {
        let (status, body) = http.get(&format!("/images?{query}"), Some(TOKEN), None).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn evaluates_every_x_filter_operator() {
    let sandbox = SandboxProcess::start(&[]);
    let http = sandbox.client();
    let ids = |body: &Value| -> Vec<String> {
        body["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
    };
    let list = |filter: &'static str| {
        let http = &http;
        async move {
            let (status, body) = http.get("/images?page_size=500", Some(TOKEN), Some(filter)).await;
            assert_eq!(status, 200, "{filter}: {body}");
            body
        }
    };
    assert_eq!(ids(&list(r#"{"label": "ci-runner"}"#).await), ["private/1003"]);
    assert_eq!(ids(&list(r#"{"tags": "db"}"#).await), ["private/1002"]);
    assert_eq!(ids(&list(r#"{"label": {"+contains": "GOLDEN-DB"}}"#).await), ["private/1002"]);
    assert_eq!(ids(&list(r#"{"+and": [{"tags": "prod"}, {"tags": "web"}]}"#).await), ["private/1001", "private/1004"]);
    assert_eq!(
        ids(&list(r#"{"+or": [{"status": "creating"}, {"+and": [{"type": "automatic"}, {"size": {"+gt": 4000}}]}]}"#)
            .await),
        ["private/1010", "private/1012"]
    );
    assert_eq!(ids(&list(r#"{"size": {"+gte": 5950}, "is_public": false}"#).await), ["private/1006"]);
    assert_eq!(
        ids(&list(r#"{"size": {"+lt": 500}, "deprecated": true}"#).await),
        ["linode/alpine3.19", "linode/alpine3.20"]
    );
    assert_eq!(ids(&list(r#"{"vendor": "Slackware"}"#).await), ["linode/slackware15.0"]);
    assert_eq!(list(r#"{"status": {"+neq": "available"}}"#).await["results"], 2);
    assert_eq!(list(r#"{"label": "not-found"}"#).await, json!({"pages": 0, "data": [], "results": 0, "page": 0}));

    // Sorting, at the top level (linode-cli) or inside +and (linode_api4).
    let sizes = |body: &Value| -> Vec<u64> {
        body["data"].as_array().unwrap().iter().map(|i| i["size"].as_u64().unwrap()).collect()
    };
    let top = list(r#"{"is_public": false, "+order_by": "size", "+order": "desc"}"#).await;
    let nested = list(r#"{"+and": [{"is_public": false}, {"+order_by": "size", "+order": "desc"}]}"#).await;
    assert_eq!(top, nested);
    let s = sizes(&top);
    assert!(s.windows(2).all(|w| w[0] >= w[1]) && s.len() == 14, "{s:?}");
    let by_type = list(r#"{"is_public": false, "+order_by": "type", "+order": "desc"}"#).await;
    assert_eq!(by_type["data"][0]["type"], "manual", "any filterable field but status sorts");
    let ascending = sizes(&list(r#"{"+and": [{"vendor": "Debian"}], "+order_by": "size"}"#).await);
    assert!(ascending.windows(2).all(|w| w[0] <= w[1]));

    for (filter, reason) in [
        (r#"{"foo": "bar"}"#, "Cannot filter on foo"),
        (r#"{"id": "private/1001"}"#, "Cannot filter on id"),
        (r#"{"+and": [{"description": "x"}]}"#, "Cannot filter on description"),
        (r#"{"+order_by": "status"}"#, "Cannot order by status"),
        (r#"{"label": "x""#, "Invalid JSON in X-Filter"),
    ] {
        let (status, body) = http.get("/images", Some(TOKEN), Some(filter)).await;
        assert_eq!((status, body), (400, json!({"errors": [{"reason": reason, "field": "X-Filter"}]})), "{filter}");
    }
    let (status, body) = http.get("/images", Some(TOKEN), Some(r#"{"label": {"+gt": 3}}"#)).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["field"], "X-Filter");
}

#[tokio::test]
async fn tokens_map_to_accounts() {
    let sandbox = SandboxProcess::start(&["--account", "other:other-token"]);
    let http = sandbox.client();
    let count_private =
        |body: &Value| body["data"].as_array().unwrap().iter().filter(|i| i["is_public"] == false).count();
    let (_, anonymous) = http.get("/images?page_size=500", None, None).await;
    assert_eq!((count_private(&anonymous), anonymous["results"].clone()), (0, json!(40)));
    let (_, empty_bearer) = http.get("/images?page_size=500", Some(""), None).await;
    assert_eq!(empty_bearer, anonymous);
    let (_, owner) = http.get("/images?page_size=500", Some(TOKEN), None).await;
    assert_eq!(count_private(&owner), 14);
    let (_, other) = http.get("/images?page_size=500", Some("other-token"), None).await;
    assert_eq!(count_private(&other), 0);
    let (status, _) = http.get("/images/private/1001", Some("other-token"), None).await;
    assert_eq!(status, 404, "another account's image does not exist for this token");

    let (status, body) = http.get("/images", Some("wrong"), None).await;
    assert_eq!((status, body), (401, json!({"errors": [{"reason": "Invalid Token"}]})));
    let (status, _) = http.get("/images/linode/debian12", Some("wrong"), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn image_ids_may_carry_a_raw_or_encoded_slash() {
    let sandbox = SandboxProcess::start(&[]);
    let http = sandbox.client();
    for path in [
        "/images/private/1001",
        "/images/private%2F1001",
        "/images/private%2f1001",
        "/images/private/1001?page=1&page_size=100",
    ] {
        let (status, body) = http.get(path, Some(TOKEN), None).await;
        assert_eq!((status, body["id"].clone()), (200, json!("private/1001")), "{path}");
    }
    let (status, body) = http.get("/images/linode/debian12", None, None).await;
    assert_eq!((status, body["vendor"].clone()), (200, json!("Debian")));
    let (status, _) = http.get("/images/private/1001", None, None).await;
    assert_eq!(status, 404, "private images need a token");
    let (status, body) = http.get("/nothing/here", None, None).await;
    assert_eq!((status, body), (404, json!({"errors": [{"reason": "Not found"}]})));

    let response =
        http.client.patch(format!("{}/images/private/1001", http.base)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    assert!(body["errors"][0]["reason"].is_string());
}

#[tokio::test]
async fn logs_each_request_as_received() {
    let sandbox = SandboxProcess::start(&["--latency-ms", "30"]);
    let http = sandbox.client();
    http.get("/images/private%2F1001?page=1", Some(TOKEN), Some(r#"{"a":1}"#)).await;
    http.get("/images", None, None).await;
    let log = sandbox.log();
    assert_eq!(log.len(), 2);
    let first = log[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(keys, ["method", "path", "account", "query", "x_filter", "status", "ms", "bytes"]);
    // Whose token a request carried, by the account's name, never the token.
    assert!(log[0]["account"].is_string() && log[1]["account"].is_null(), "{log:?}");
    assert!(!serde_json::to_string(&log).unwrap().contains(TOKEN));
    let (_, body) = http.get("/images/private%2F1001", Some(TOKEN), None).await;
    assert_eq!(log[0]["bytes"], body.to_string().len(), "the size of the body sent");
    assert_eq!(log[0]["path"], "/v4/images/private%2F1001");
    assert_eq!(log[0]["query"], "page=1");
    assert_eq!(log[0]["x_filter"], r#"{"a":1}"#);
    assert_eq!(log[0]["status"], 200);
    assert_eq!((log[1]["query"].clone(), log[1]["x_filter"].clone()), (Value::Null, Value::Null));
    assert!(log.iter().all(|l| l["ms"].as_u64().unwrap() >= 30), "latency is added to every response: {log:?}");
}

/// Replays every image request of every recorded run in order, against a fresh sandbox
/// each: same status codes, the recorded fields with the same types, and the same values
/// where the sandbox can know them (status, label, description, tags, regions). Ids the API
/// assigned are mapped to the sandbox's; the recorded disk becomes a seeded ext4 disk; the
/// data of an upload is sent just before the recording first saw the image available.
#[tokio::test]
async fn replays_every_recorded_image_interaction() {
    let all = recorded();
    let mut names: Vec<&str> = all.iter().map(|i| i["recording"].as_str().unwrap()).collect();
    names.dedup();
    assert_eq!(names.len(), 10);
    let mut replayed = 0;
    for name in names {
        let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
        let http = sandbox.client();
        let mut ids: Vec<(String, String)> = Vec::new();
        let mut pending_uploads: Vec<(String, String)> = Vec::new();
        for interaction in all.iter().filter(|i| i["recording"] == name) {
            let mut path = interaction["path"].as_str().unwrap().to_string();
            for (recorded, ours) in &ids {
                path = path.replace(&recorded.replace('/', "%2F"), &ours.replace('/', "%2F"));
            }
            let facts = &interaction["facts"];
            // The recording saw the upload's data arrive between two polls.
            if facts["status"] == "available"
                && let Some(at) = pending_uploads.iter().position(|(id, _)| path.ends_with(&id.replace('/', "%2F")))
            {
                let (_, upload_to) = pending_uploads.remove(at);
                let response = http.client.put(&upload_to).body(gzip(b"a tiny disk image")).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
            }
            let method = reqwest::Method::from_bytes(interaction["method"].as_str().unwrap().as_bytes()).unwrap();
            let mut builder = http.client.request(method, format!("{}{path}", sandbox.origin())).bearer_auth(TOKEN);
            if let Some(filter) = interaction["x_filter"].as_str() {
                builder = builder.header("X-Filter", filter);
            }
            if let Some(body) = interaction.get("body") {
                let mut body = body.clone();
                if body.get("disk_id").is_some() {
                    body["disk_id"] = json!(67890);
                }
                builder = builder.json(&body);
            }
            let (status, ours) = common::json_of(builder.send().await.unwrap()).await;
            assert_eq!(Value::from(status), interaction["status"], "{name}: {path}: {ours}");
            replayed += 1;
            if let Some(exact) = interaction.get("exact") {
                assert_eq!(&ours, exact, "{name}: {path}");
                continue;
            }
            assert_shape(&interaction["shape"], &ours, &format!("{name}: {path}"), false);
            let our_image = ours.get("image").unwrap_or(&ours);
            if let (Some(r), Some(o)) = (facts["id"].as_str(), our_image["id"].as_str())
                && r.starts_with("private/")
            {
                if !ids.iter().any(|(known, _)| known == r) {
                    ids.push((r.to_string(), o.to_string()));
                }
                for key in ["status", "label", "description", "tags", "regions"] {
                    if let Some(value) = facts.get(key) {
                        assert_eq!(&our_image[key], value, "{name}: {path}: {key}");
                    }
                }
            }
            if let Some(upload_to) = ours["upload_to"].as_str() {
                pending_uploads.push((our_image["id"].as_str().unwrap().to_string(), upload_to.to_string()));
            }
        }
    }
    assert!(replayed >= 20, "only {replayed} interactions replayed");
}
