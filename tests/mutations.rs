//! INSERT, REPLACE, DELETE and EXEC through the real binary against a real sandbox. Each
//! effect is checked with an independent read of the API, not with imageql's own SELECT.

mod common;

use common::{SandboxProcess, TOKEN};
use serde_json::{Value, json};

fn sandbox() -> SandboxProcess {
    SandboxProcess::start(&["--time-scale", "0.02"])
}

/// The mutating requests (anything but GET) in `log`.
fn changes(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|r| r["method"] != "GET")
        .map(|r| format!("{} {} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap(), r["status"]))
        .collect()
}

async fn image(sandbox: &SandboxProcess, id: &str) -> (u16, Value) {
    sandbox.client().get(&format!("/images/{id}"), Some(TOKEN), None).await
}

/// The ids of the account's private images with `label`, read straight from the API.
async fn ids_labelled(sandbox: &SandboxProcess, label: &str) -> Vec<String> {
    let filter = json!({ "label": label }).to_string();
    let (_, list) = sandbox.client().get("/images?page_size=500", Some(TOKEN), Some(&filter)).await;
    list["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn insert_values_posts_one_capture_per_row_in_order() {
    let sandbox = sandbox();
    let mark = sandbox.log().len();
    let out = sandbox
        .imageql(&[
            "-e",
            r#"INSERT INTO linode.images.images (disk_id, label, description, tags, cloud_init)
               VALUES (67890, 'golden-web', 'from SQL', '["web", "prod"]', true),
                      (67895, 'alpine-base', NULL, '[]', false)"#,
        ])
        .ok();
    let web = ids_labelled(&sandbox, "golden-web").await;
    let alpine = ids_labelled(&sandbox, "alpine-base").await;
    assert_eq!(out.trim(), format!("inserted 2 into linode.images.images: {}, {}", web[0], alpine[0]));
    assert_eq!(changes(&sandbox.log_since(mark)), ["POST /v4/images 200", "POST /v4/images 200"]);
    let (_, created) = image(&sandbox, &web[0]).await;
    assert_eq!(created["tags"], json!(["prod", "web"]));
    assert_eq!(created["description"], "from SQL");
    assert_eq!(created["capabilities"], json!(["cloud-init"]));
    assert_eq!(created["size"], 2430);
    let (_, created) = image(&sandbox, &alpine[0]).await;
    assert_eq!((created["size"].clone(), created["description"].clone()), (json!(700), json!("")));

    // Lists may also be written as array expressions; RETURNING evaluates expressions.
    let rows = sandbox.rows(
        "INSERT INTO linode.images.images (disk_id, label, tags) VALUES (67890, 'arrays', ['one-tag', 'two-tag'])
             RETURNING id, status, tags, upper(label) AS shout, size * 2 AS double",
    );
    let id = ids_labelled(&sandbox, "arrays").await.remove(0);
    assert_eq!(
        rows,
        vec![
            json!({"id": id, "status": "creating", "tags": ["one-tag", "two-tag"], "shout": "ARRAYS", "double": 4860})
        ]
    );
}

#[tokio::test]
async fn insert_select_captures_disks_found_by_a_query() {
    let sandbox = sandbox();
    let mark = sandbox.log().len();
    let rows = sandbox.rows(
        "INSERT INTO linode.images.images (disk_id, label)
             SELECT id, 'golden-' || label FROM linode.linode.disks WHERE linodeId = 12345 AND filesystem = 'ext4'
             RETURNING id, label",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["label"], "golden-Debian 12 Disk");
    let log = sandbox.log_since(mark);
    assert_eq!(log[0]["path"], "/v4/linode/instances/12345/disks");
    assert_eq!(changes(&log), ["POST /v4/images 200"]);
    let (status, created) = image(&sandbox, rows[0]["id"].as_str().unwrap()).await;
    assert_eq!((status, created["size"].clone()), (200, json!(2430)));

    // A SELECT that misses the required parameter fails before any request.
    let mark = sandbox.log().len();
    let stderr = sandbox
        .imageql(&["-e", "INSERT INTO linode.images.images (disk_id) SELECT id FROM linode.linode.disks"])
        .fails();
    assert!(stderr.contains("linodeId") && stderr.contains("WHERE linodeId ="), "{stderr}");
    assert!(sandbox.log_since(mark).is_empty());
}

#[tokio::test]
async fn replace_puts_the_new_values_and_refuses_read_only_fields() {
    let sandbox = sandbox();
    let rows = sandbox.rows(
        "REPLACE linode.images.images SET description = 'v2', tags = ['ci-tag', 'runner'] WHERE id = 'private/1003'
             RETURNING id, description, tags",
    );
    assert_eq!(rows, vec![json!({"id": "private/1003", "description": "v2", "tags": ["ci-tag", "runner"]})]);
    let (_, after) = image(&sandbox, "private/1003").await;
    assert_eq!((after["description"].clone(), after["label"].clone()), (json!("v2"), json!("ci-runner")));

    // A general predicate selects the rows first; expressions may use each row's values.
    let mark = sandbox.log().len();
    let out = sandbox
        .imageql(&["-e", "REPLACE linode.images.images SET label = label || '-old' WHERE label LIKE 'golden-web-%' AND NOT is_public"])
        .ok();
    assert_eq!(out.trim(), "replaced 3 in linode.images.images: private/1001, private/1004, private/1010");
    let log = sandbox.log_since(mark);
    assert_eq!(log[0]["method"], "GET", "the matching rows are read first");
    assert_eq!(changes(&log).len(), 3);
    for id in ["private/1001", "private/1004", "private/1010"] {
        assert!(image(&sandbox, id).await.1["label"].as_str().unwrap().ends_with("-old"));
    }

    // The same column twice, and a value read from each row.
    sandbox
        .imageql(&["-e", "REPLACE linode.images.images SET description = id, label = label WHERE label = 'ci-runner'"])
        .ok();
    assert_eq!(image(&sandbox, "private/1003").await.1["description"], "private/1003");

    let mark = sandbox.log().len();
    let stderr =
        sandbox.imageql(&["-e", "REPLACE linode.images.images SET size = 1 WHERE id = 'private/1003'"]).fails();
    assert!(stderr.contains("size is read-only") && stderr.contains("label, description, tags"), "{stderr}");
    assert!(sandbox.log_since(mark).is_empty());
}

#[tokio::test]
async fn delete_by_id_by_list_and_by_predicate() {
    let sandbox = sandbox();
    let out = sandbox.imageql(&["-e", "DELETE FROM linode.images.images WHERE id = 'private/1013'"]).ok();
    assert_eq!(out.trim(), "deleted 1 from linode.images.images: private/1013");
    assert_eq!(image(&sandbox, "private/1013").await.0, 404);

    sandbox.imageql(&["-e", "DELETE FROM linode.images.images WHERE imageId IN ('private/1003', 'private/1008')"]).ok();
    assert_eq!(image(&sandbox, "private/1003").await.0, 404);
    assert_eq!(image(&sandbox, "private/1008").await.0, 404);

    let mark = sandbox.log().len();
    let out =
        sandbox.imageql(&["-e", "DELETE FROM linode.images.images WHERE type = 'automatic' AND NOT is_public"]).ok();
    assert_eq!(out.trim(), "deleted 2 from linode.images.images: private/1007, private/1012");
    let log = sandbox.log_since(mark);
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(changes(&log), ["DELETE /v4/images/private%2F1007 200", "DELETE /v4/images/private%2F1012 200"]);
    assert_eq!(image(&sandbox, "private/1012").await.0, 404);
}

#[tokio::test]
async fn exec_calls_methods_with_params_and_json_bodies() {
    let sandbox = sandbox();
    let rows = sandbox
        .imageql(&[
            "-o",
            "ndjson",
            "-e",
            r#"EXEC linode.images.images.post_upload_image @@json='{"label": "manual-upload", "region": "us-east", "tags": ["later"]}'"#,
        ])
        .rows();
    assert_eq!(rows[0]["status"], "pending_upload");
    let upload_to = rows[0]["upload_to"].as_str().unwrap();
    assert!(upload_to.starts_with(&sandbox.origin()), "the upload URL is returned: {upload_to}");
    let (_, pending) = image(&sandbox, rows[0]["id"].as_str().unwrap()).await;
    assert_eq!(pending["status"], "pending_upload");

    let before = region_names(&image(&sandbox, "private/1001").await.1);
    let rows = sandbox
        .imageql(&[
            "-o",
            "ndjson",
            "-e",
            "EXEC /*+ AWAIT */ linode.images.images.post_replicate_image @imageId='private/1001', @add='us-mia'",
        ])
        .rows();
    let expected: Vec<Value> = before
        .iter()
        .map(String::as_str)
        .chain(["us-mia"])
        .map(|region| json!({"region": region, "status": "available"}))
        .collect();
    let expected = Value::Array(expected);
    assert_eq!(rows[0]["regions"], expected, "AWAIT waits for every region");
    assert_eq!(image(&sandbox, "private/1001").await.1["regions"], expected);

    // Body fields may be given as @name too.
    sandbox
        .imageql(&["-e", "EXEC linode.images.images.put_image @imageId='private/1002', @label='renamed-by-exec'"])
        .ok();
    assert_eq!(image(&sandbox, "private/1002").await.1["label"], "renamed-by-exec");
}

#[tokio::test]
async fn exec_returning_evaluates_items_over_the_response() {
    let sandbox = sandbox();
    let rows = sandbox.rows(
        "EXEC linode.images.images.put_image @imageId='private/1002', @label='renamed' RETURNING id, upper(label) AS shout, size",
    );
    let (_, after) = image(&sandbox, "private/1002").await;
    assert_eq!(after["label"], "renamed");
    assert_eq!(rows, vec![json!({"id": "private/1002", "shout": "RENAMED", "size": after["size"]})]);

    // The response's other values too: an upload's URL, a replication's regions.
    let rows = sandbox.rows(
        r#"EXEC linode.images.images.post_upload_image @@json='{"label": "returned", "region": "us-east"}' RETURNING id, upload_to"#,
    );
    assert!(rows[0]["upload_to"].as_str().unwrap().starts_with(&sandbox.origin()), "{rows:?}");
    assert_eq!(image(&sandbox, rows[0]["id"].as_str().unwrap()).await.1["label"], "returned");
    let rows = sandbox.rows(
        "EXEC linode.images.images.post_replicate_image @imageId='private/1002', @add='us-mia' RETURNING added, removed",
    );
    assert_eq!(rows, vec![json!({"added": "us-mia", "removed": ""})]);

    // A mistake in RETURNING is found before anything is sent.
    let mark = sandbox.log().len();
    let stderr = sandbox
        .imageql(&["-e", "EXEC linode.images.images.put_image @imageId='private/1002', @label='x' RETURNING lable"])
        .fails();
    assert!(stderr.contains("RETURNING") && stderr.contains("did you mean label?"), "{stderr}");
    assert!(sandbox.log_since(mark).is_empty());
}

/// The regions an image is in, in the API's order.
fn region_names(image: &Value) -> Vec<String> {
    image["regions"].as_array().unwrap().iter().map(|r| r["region"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn replicate_removes_only_the_regions_it_is_told_to_remove() {
    let sandbox = sandbox();
    let id = "private/1001";
    let before = image(&sandbox, id).await.1;
    let current = region_names(&before);
    assert!(current.len() >= 2 && !current.contains(&"us-mia".to_string()), "seed: {current:?}");
    let (kept, dropped) = (&current[0], &current[1]);
    let whole_list = format!(
        r#"EXEC linode.images.images.post_replicate_image @imageId='{id}', @@json='{{"regions": ["{kept}", "us-mia"]}}'"#
    );

    // The whole list, leaving a region out: refused, naming it, and nothing is changed.
    let mark = sandbox.log().len();
    let stderr = sandbox.imageql(&["-e", &whole_list]).fails();
    assert!(stderr.contains(&format!("would remove {id} from {dropped}")), "{stderr}");
    assert!(
        stderr.contains(&format!("@remove='{dropped}'")) && stderr.contains("@add="),
        "says what to write: {stderr}"
    );
    let log = sandbox.log_since(mark);
    assert!(changes(&log).is_empty(), "nothing is sent: {log:?}");
    assert_eq!(image(&sandbox, id).await.1["regions"], before["regions"]);

    // EXPLAIN reads the image and shows what would be added and removed, and changes nothing.
    let explained = format!("EXPLAIN {whole_list}, @remove='{dropped}'");
    let steps: Vec<(String, String)> = sandbox
        .imageql(&["-o", "ndjson", "-e", &explained])
        .rows()
        .iter()
        .map(|r| (r["step"].as_str().unwrap().to_string(), r["request"].as_str().unwrap().to_string()))
        .collect();
    assert!(steps.contains(&("adds".into(), "us-mia".into())), "{steps:?}");
    assert!(steps.contains(&("removes".into(), dropped.clone())), "{steps:?}");
    assert!(steps.iter().any(|(step, request)| step == "read" && request.contains(&current.join(", "))), "{steps:?}");
    assert_eq!(image(&sandbox, id).await.1["regions"], before["regions"], "EXPLAIN changes nothing");

    // Meant: the removal is made and named in the result.
    let rows = sandbox.imageql(&["-o", "ndjson", "-e", &format!("{whole_list}, @remove='{dropped}'")]).rows();
    assert_eq!((rows[0]["added"].as_str(), rows[0]["removed"].as_str()), (Some("us-mia"), Some(dropped.as_str())));
    let after = image(&sandbox, id).await.1;
    let status = |region: &str| {
        after["regions"].as_array().unwrap().iter().find(|r| r["region"] == region).map(|r| r["status"].clone())
    };
    // The sandbox moves regions on with time: a removed one is pending deletion, then gone.
    assert!(status(dropped).is_none_or(|s| s == "pending deletion"), "{after}");
    assert!(status("us-mia").is_some_and(|s| s != "pending deletion"), "{after}");
    assert_eq!(status(kept), Some(json!("available")));

    // @add keeps every current region; a region being deleted is not current.
    let rows = sandbox
        .imageql(&[
            "-o",
            "ndjson",
            "-e",
            &format!("EXEC linode.images.images.post_replicate_image @imageId='{id}', @add='us-ord'"),
        ])
        .rows();
    assert_eq!((rows[0]["added"].as_str(), rows[0]["removed"].as_str()), (Some("us-ord"), Some("")));
    let again = image(&sandbox, id).await.1;
    let statuses: Vec<(String, String)> = again["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["region"].as_str().unwrap().into(), r["status"].as_str().unwrap().into()))
        .collect();
    for region in [kept.as_str(), "us-mia", "us-ord"] {
        assert!(statuses.iter().any(|(r, s)| r == region && s != "pending deletion"), "{region} is held: {statuses:?}");
    }
    assert!(!statuses.iter().any(|(r, s)| r != dropped && s == "pending deletion"), "{statuses:?}");
    assert!(!statuses.iter().any(|(r, s)| r == dropped && s != "pending deletion"), "{dropped} stays removed");

    // Removing a region the image is not in is refused before anything is sent.
    let mark = sandbox.log().len();
    let stderr = sandbox
        .imageql(&[
            "-e",
            &format!("EXEC linode.images.images.post_replicate_image @imageId='{id}', @remove='ap-south'"),
        ])
        .fails();
    assert!(stderr.contains("ap-south") && stderr.contains("cannot remove"), "{stderr}");
    assert!(changes(&sandbox.log_since(mark)).is_empty());
}

#[tokio::test]
async fn exec_uploads_a_real_ext4_image() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let file = common::ext4_image(dir.path(), 24);
    let sql = format!(
        r#"EXEC /*+ AWAIT */ linode.images.images.post_upload_image @file='{}', @@json='{{"label": "ext4-upload", "region": "us-ord", "cloud_init": true}}'"#,
        file.display()
    );
    let run = sandbox.imageql(&["-o", "ndjson", "-e", &sql]);
    let rows = run.rows();
    assert!(!run.stderr().contains("warning"), "a real ext4 image draws no warning: {}", run.stderr());
    assert_eq!(rows[0]["status"], "available");
    assert_eq!(rows[0]["size"], 24);
    let (_, uploaded) = image(&sandbox, rows[0]["id"].as_str().unwrap()).await;
    assert_eq!((uploaded["status"].clone(), uploaded["size"].clone()), (json!("available"), json!(24)));
    assert_eq!(uploaded["regions"], json!([{"region": "us-ord", "status": "available"}]));

    // Not a filesystem: a warning, and the upload still happens.
    let noise = dir.path().join("noise.img.gz");
    std::fs::write(&noise, common::gzip(&vec![7u8; 1 << 20])).unwrap();
    let sql = format!(
        r#"EXEC linode.images.images.post_upload_image @file='{}', @@json='{{"label": "noise", "region": "us-east"}}'"#,
        noise.display()
    );
    let run = sandbox.imageql(&["-o", "ndjson", "-e", &sql]);
    assert!(run.stderr().contains("warning") && run.stderr().contains("ext"), "{}", run.stderr());
    assert_eq!(run.rows()[0]["size"], 1);
}

#[tokio::test]
async fn an_upload_over_the_decoded_limit_is_aborted_and_cleaned_up() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.img.gz");
    std::fs::write(&bomb, common::gzip_bomb()).unwrap();
    let sql = format!(
        r#"EXEC linode.images.images.post_upload_image @file='{}', @@json='{{"label": "bomb", "region": "us-east"}}'"#,
        bomb.display()
    );
    let stderr = sandbox.imageql(&["-e", &sql]).fails();
    assert!(stderr.contains("decompresses to more than"), "{stderr}");
    assert!(stderr.contains("deleted again"), "{stderr}");
    assert!(ids_labelled(&sandbox, "bomb").await.is_empty(), "nothing is left behind");
}

#[test]
fn invalid_statements_make_no_request() {
    let sandbox = sandbox();
    let cases = [
        ("INSERT INTO linode.images.images (label) VALUES ('x')", "needs disk_id"),
        ("INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'bad/label')", "Must only contain"),
        ("INSERT INTO linode.images.images (disk_id, label) VALUES (67890, '')", "Length must be 1-50"),
        (
            "INSERT INTO linode.images.images (disk_id, tags) VALUES (67890, '[\"ab\"]')",
            "Tag 0 (ab) length must be 3-50",
        ),
        (
            "INSERT INTO linode.images.images (disk_id, description) VALUES (67890, repeat('d', 65001))",
            "65000 characters or less",
        ),
        ("INSERT INTO linode.images.images (disk_id, lable) VALUES (67890, 'x')", "did you mean label?"),
        ("INSERT INTO linode.images.images (disk_id, cloud_init) VALUES ('x', 'yes')", "Must be an integer"),
        ("REPLACE linode.images.images SET status = 'available' WHERE id = 'private/1001'", "read-only"),
        ("REPLACE linode.images.images SET tags = '[\"ab\"]' WHERE id = 'private/1001'", "Tag 0 (ab)"),
        ("DELETE FROM linode.images.images", "WHERE clause is required"),
        ("DELETE FROM linode.images.images WHERE id = 'linode/debian12'", "cannot be changed"),
        ("EXEC linode.images.images.post_replicate_image @@json='{\"regions\": [\"us-east\"]}'", "needs @imageId"),
        (
            "EXEC linode.images.images.post_replicate_image @imageId='private/1001', @@json='{\"regions\": []}'",
            "at least one region",
        ),
        (
            "EXEC linode.images.images.post_upload_image @@json='{\"lable\": \"x\", \"region\": \"us-east\"}'",
            "did you mean label?",
        ),
        ("EXEC linode.images.images.post_upload_image @@json='{\"label\": \"x\"}'", "region is required"),
        (
            "EXEC linode.images.images.post_upload_image @file='/nonexistent.img.gz', @@json='{\"label\": \"x\", \"region\": \"us-east\"}'",
            "/nonexistent.img.gz: no such file: give @file the path of a gzip'd raw disk image",
        ),
        ("EXEC linode.images.images.post_uplaod_image @@json='{}'", "did you mean post_upload_image?"),
        ("UPDATE linode.images.images SET label = 'x' WHERE id = 'private/1001'", "use REPLACE"),
        ("INSERT INTO linode.images.images (disk_id) VALUES (67890) RETURNING nope", "RETURNING"),
        ("REPLACE linode.images.images SET label = '' WHERE label LIKE 'golden%'", "Length must be 1-50"),
        (
            "INSERT /*+ AWAT */ INTO linode.images.images (disk_id, label) VALUES (67890, 'x')",
            "unknown hint /*+ AWAT */: did you mean AWAIT?",
        ),
        ("SELECT /*+ AWAIT */ 1", "AWAIT on a query waits for the rows of one resource"),
        ("PREPARE d(text) AS DELETE FROM linode.images.images WHERE id = $1", "PREPARE of a change is not supported"),
        (
            "WITH x AS (SELECT id FROM linode.images.images) SELECT /*+ AWAIT */ * FROM x",
            "a hint goes right after the statement's first word",
        ),
        ("SELECT * FROM (SELECT /*+ AWAIT */ id FROM linode.images.images) t", "a hint goes right after"),
        ("SELECT /*+ AWAIT */ id FROM linode.regions.regions", "linode.regions.regions has no status to wait for"),
    ];
    for (sql, words) in cases {
        let mark = sandbox.log().len();
        let stderr = sandbox.imageql(&["-e", sql]).fails();
        assert!(stderr.contains(words), "{sql}: {stderr}");
        assert!(sandbox.log_since(mark).is_empty(), "{sql} made requests");
    }
}

#[test]
fn regions_are_checked_for_what_images_need_before_anything_is_sent() {
    let sandbox = sandbox();
    let cases = [
        (
            "EXEC linode.images.images.post_replicate_image @imageId='private/1001', @add='br-gru'",
            "regions: br-gru has no Object Storage; regions with Object Storage: ap-south",
        ),
        (
            "EXPLAIN EXEC linode.images.images.post_replicate_image @imageId='private/1001', @add='br-gru'",
            "br-gru has no Object Storage",
        ),
        (
            r#"EXEC linode.images.images.post_upload_image @@json='{"label": "x", "region": "mars-1"}'"#,
            "region: mars-1 is not in linode.regions.regions (known: ap-south",
        ),
        ("EXEC linode.images.images.post_replicate_image @imageId='private/1001', @add='br-gru,xx-nope'", "2 problems"),
    ];
    let mark = sandbox.log().len();
    for (sql, words) in cases {
        let stderr = sandbox.imageql(&["-e", sql]).fails();
        assert!(stderr.contains(words), "{sql}: {stderr}");
    }
    assert!(sent_changes(&sandbox.log_since(mark)).is_empty());
    // A region that has it is fine.
    let rows =
        sandbox.rows("EXPLAIN EXEC linode.images.images.post_replicate_image @imageId='private/1001', @add='us-mia'");
    assert!(rows[1]["request"].as_str().unwrap().contains("us-mia"), "{rows:?}");
}

#[test]
fn a_select_awaits_an_image_someone_else_started_within_its_timeout() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0.5"]);
    // Someone else starts a capture (at least 2 s at time scale 1).
    let started =
        sandbox.rows("INSERT INTO linode.images.images (disk_id, label) VALUES (67895, 'theirs') RETURNING id, status");
    let id = started[0]["id"].as_str().unwrap().to_string();
    assert_eq!(started[0]["status"], "creating");
    // Too short a wait says so, and how to wait longer.
    let stderr = sandbox
        .imageql(&[
            "--await-timeout",
            "0.2s",
            "-e",
            &format!("SELECT /*+ AWAIT */ status FROM linode.images.images WHERE id = '{id}'"),
        ])
        .fails();
    assert!(stderr.contains(&format!("gave up waiting for {id} after 0.2 s; it is creating")), "{stderr}");
    assert!(stderr.contains("imageql.await_timeout"), "{stderr}");
    // A long enough one answers once it is ready, with the row as it is then.
    let rows = sandbox.rows(&format!(
        "SELECT /*+ AWAIT */ id, status, regions FROM linode.images.images WHERE label = 'theirs' AND NOT is_public"
    ));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "available", "{rows:?}");
    let polls = sandbox.log().iter().filter(|r| r["path"] == format!("/v4/images/{}", id.replace('/', "%2F"))).count();
    assert!(polls >= 1, "the wait polls the image");
    // The timeout is a setting of the session too.
    let out = sandbox
        .imageql(&["-o", "csv", "-e", "SET imageql.await_timeout = '10min'", "-e", "SHOW imageql.await_timeout"])
        .ok();
    assert!(out.contains("10 min"), "{out}");
    let stderr = sandbox.imageql(&["-e", "SET imageql.await_timeout = 'soon'"]).fails();
    assert!(stderr.contains("invalid value for parameter \"imageql.await_timeout\""), "{stderr}");
}

#[tokio::test]
async fn a_failure_part_way_reports_what_was_done_and_nothing_is_retried() {
    let sandbox = sandbox();
    let mark = sandbox.log().len();
    let stderr = sandbox
        .imageql(&[
            "-e",
            "INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'first-row'), (67893, 'raw-disk'), (67895, 'never-sent')",
        ])
        .fails();
    let first = ids_labelled(&sandbox, "first-row").await;
    assert_eq!(first.len(), 1);
    assert!(stderr.contains("stopped at 2 of 3"), "{stderr}");
    assert!(stderr.contains(&format!("row 1 ({}): done", first[0])), "{stderr}");
    assert!(stderr.contains("row 2: failed") && stderr.contains("raw filesystem"), "{stderr}");
    assert!(stderr.contains("row 3: not sent"), "{stderr}");
    assert!(ids_labelled(&sandbox, "never-sent").await.is_empty());
    assert_eq!(changes(&sandbox.log_since(mark)), ["POST /v4/images 200", "POST /v4/images 400"]);

    // Every request meets a fault (any of the mix: a status, a stall, a lost answer).
    let failing = SandboxProcess::start(&["--fail-rate", "1", "--stall-ms", "100"]);
    let stderr = failing.imageql(&["-e", "DELETE FROM linode.images.images WHERE id = 'private/1001'"]).fails();
    assert!(stderr.contains("DELETE http") && stderr.contains("images/private%2F1001"), "{stderr}");
    assert_eq!(changes(&failing.log()).len(), 1, "a mutation is sent once, never retried");
}

/// The requests of a log that change something.
fn sent_changes(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|r| r["method"] != "GET")
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect()
}

#[test]
fn a_dry_run_lists_every_request_with_what_it_touches_and_sends_none() {
    let sandbox = sandbox();
    let mark = sandbox.log().len();

    // EXPLAIN of a change: one row per request, the rows it touches, what a deletion frees.
    let rows = sandbox.rows("EXPLAIN DELETE FROM linode.images.images WHERE label LIKE 'golden%' AND NOT is_public");
    let golden = sandbox.rows(
        "SELECT id, label, size, monthly_usd FROM linode.images.storage_costs WHERE label LIKE 'golden%' ORDER BY id",
    );
    assert!(golden.len() >= 3, "{golden:?}");
    assert_eq!(rows.len(), golden.len() + 1, "a row per request and the totals: {rows:#?}");
    for (row, image) in rows.iter().zip(&golden) {
        let id = image["id"].as_str().unwrap();
        assert_eq!(row["request"], format!("DELETE /images/{}", id.replace('/', "%2F")));
        assert_eq!((&row["id"], &row["label"], &row["size"]), (&image["id"], &image["label"], &image["size"]));
        assert_eq!(row["frees_monthly_usd"], image["monthly_usd"]);
        assert!(!row["request"].as_str().unwrap().contains('\n'));
    }
    let total = rows.last().unwrap();
    let frees: f64 = golden.iter().map(|g| g["monthly_usd"].as_f64().unwrap()).sum();
    let size: i64 = golden.iter().map(|g| g["size"].as_i64().unwrap()).sum();
    assert_eq!(total["step"], "total");
    assert_eq!(total["request"], format!("{n} requests ({n} DELETE), none sent", n = golden.len()));
    assert!((total["frees_monthly_usd"].as_f64().unwrap() - frees).abs() < 1e-6, "{total}");
    assert_eq!(total["size"], size);
    let regions = rows[0]["regions"].as_str().unwrap();
    assert!(regions.contains("us-east (available)"), "{regions}");

    // Inserts show their body; a value read by a subquery is computed; AWAIT is explained.
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN INSERT INTO linode.images.images (disk_id, label, tags) VALUES (67890, 'a', '[\"abc\"]')",
        ])
        .ok();
    assert!(out.starts_with("1\tPOST /images {\"disk_id\":67890,\"label\":\"a\",\"tags\":[\"abc\"]}\t\ta\t"), "{out}");
    let rows = sandbox.rows(
        "EXPLAIN REPLACE /*+ AWAIT */ linode.images.images SET description = (SELECT max(label) FROM linode.images.images WHERE NOT is_public) WHERE id = 'private/1001'",
    );
    assert_eq!(rows[0]["request"], r#"PUT /images/private%2F1001 {"description":"windows-less-bastion"}"#);
    assert_eq!(rows[0]["label"], "golden-web-2024");
    assert!(rows[1]["request"].as_str().unwrap().contains("until status is available"), "{rows:?}");
    // A PostgreSQL array literal is a list, as drivers bind lists on the client side.
    let rows =
        sandbox.rows("EXPLAIN REPLACE linode.images.images SET tags = '{web,\"two words\"}' WHERE id = 'private/1001'");
    assert_eq!(rows[0]["request"], r#"PUT /images/private%2F1001 {"tags":["web","two words"]}"#);
    let rows = sandbox.rows("EXPLAIN REPLACE linode.images.images SET label = 'x' WHERE id = 'private/9999'");
    assert!(rows[0]["request"].as_str().unwrap().ends_with("(no such row: the API will answer 404)"), "{rows:?}");
    assert!(sent_changes(&sandbox.log_since(mark)).is_empty(), "EXPLAIN sent a change");

    // --dry-run: every change of a script is previewed, its reads still run.
    let script = [
        "INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'dry')",
        "REPLACE linode.images.images SET tags = '[\"dry-run\"]' WHERE label LIKE 'golden%'",
        "DELETE FROM linode.images.images WHERE NOT is_public AND size > 2000 RETURNING id",
        "EXEC linode.images.images.post_replicate_image @imageId='private/1002', @add='eu-west'",
        "SELECT count(*) AS private FROM linode.images.images WHERE NOT is_public",
    ];
    let mut args = vec!["--dry-run", "-o", "ndjson"];
    for sql in &script {
        args.extend(["-e", sql]);
    }
    let mark = sandbox.log().len();
    let rows = sandbox.imageql(&args).rows();
    let totals: Vec<&str> =
        rows.iter().filter(|r| r["step"] == "total").map(|r| r["request"].as_str().unwrap()).collect();
    assert_eq!(totals.len(), 4, "{rows:#?}");
    assert_eq!(totals[0], "1 request (1 POST), none sent");
    assert!(totals[1].ends_with("PUT), none sent") && totals[2].ends_with("DELETE), none sent"), "{totals:?}");
    assert_eq!(rows.last().unwrap()["private"], 14, "reads still run");
    let log = sandbox.log_since(mark);
    assert!(sent_changes(&log).is_empty(), "a dry run sent {:?}", sent_changes(&log));
    assert!(log.iter().any(|r| r["path"] == "/v4/images"), "the dry run read what it needed");

    // The same as a setting of the session.
    let out = sandbox
        .imageql(&[
            "-o",
            "ndjson",
            "-e",
            "SET imageql.dry_run = on",
            "-e",
            "DELETE FROM linode.images.images WHERE id = 'private/1003'",
            "-e",
            "SET imageql.dry_run = off",
            "-e",
            "SHOW imageql.dry_run",
        ])
        .ok();
    assert!(out.contains("DELETE /images/private%2F1003") && out.contains(r#""imageql.dry_run":"off""#), "{out}");
    // --dry-run holds for the whole run: its script cannot turn it off.
    let run = sandbox.imageql(&[
        "--dry-run",
        "-e",
        "RESET imageql.dry_run",
        "-e",
        "DELETE FROM linode.images.images WHERE id = 'private/1003'",
        "-e",
        "SET imageql.dry_run = off",
    ]);
    assert!(run.stdout().contains("none sent"), "{}", run.stdout());
    assert!(run.stderr().contains("--dry-run is on for this run"), "{}", run.stderr());
    let stderr = sandbox.imageql(&["-e", "SET imageql.dry_run = perhaps"]).fails();
    assert!(stderr.contains("invalid value for parameter \"imageql.dry_run\""), "{stderr}");
    assert!(sent_changes(&sandbox.log_since(mark)).is_empty());
}

#[test]
fn delete_returning_gives_the_rows_as_they_were() {
    let sandbox = sandbox();
    let before = sandbox
        .rows("SELECT id, label, size, created FROM linode.images.images WHERE label LIKE 'golden%2024' ORDER BY id");
    assert_eq!(before.len(), 2);
    let returned = sandbox
        .rows("DELETE FROM linode.images.images WHERE label LIKE 'golden%2024' RETURNING id, label, size, created");
    assert_eq!(returned, before);
    assert!(sandbox.rows("SELECT id FROM linode.images.images WHERE label LIKE 'golden%2024'").is_empty());
    let returned =
        sandbox.rows("DELETE FROM linode.images.images WHERE id = 'private/1003' RETURNING upper(label) AS shout");
    assert_eq!(returned, [json!({"shout": "CI-RUNNER"})]);
}

#[tokio::test]
async fn await_waits_for_a_capture_to_become_available() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0.2"]);
    let rows = sandbox.rows("INSERT /*+ AWAIT */ INTO linode.images.images (disk_id, label) VALUES (67895, 'awaited') RETURNING id, status, regions");
    assert_eq!(rows[0]["status"], "available");
    assert_eq!(rows[0]["regions"], json!([{"region": "eu-west", "status": "available"}]));
    assert_eq!(image(&sandbox, rows[0]["id"].as_str().unwrap()).await.1["status"], "available");
    let polls = sandbox
        .log()
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"].as_str().unwrap().starts_with("/v4/images/"))
        .count();
    assert!(polls >= 1);
}

#[tokio::test]
async fn a_delete_through_an_alias_and_unquoted_column_names_in_any_case() {
    let sandbox = sandbox();
    let mark = sandbox.log().len();
    sandbox.imageql(&["-e", "REPLACE linode.images.images SET LABEL = 'Renamed' WHERE id = 'private/1002'"]).ok();
    assert_eq!(image(&sandbox, "private%2F1002").await.1["label"], "Renamed");
    let out = sandbox
        .imageql(&[
            "-o",
            "ndjson",
            "-e",
            "DELETE FROM linode.images.images AS x WHERE x.label = 'Renamed' RETURNING x.id",
        ])
        .ok();
    assert!(out.contains("private/1002"), "{out}");
    assert_eq!(image(&sandbox, "private%2F1002").await.0, 404);
    assert_eq!(
        changes(&sandbox.log_since(mark)),
        ["PUT /v4/images/private%2F1002 200", "DELETE /v4/images/private%2F1002 200"]
    );
}
