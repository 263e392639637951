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

    let rows = sandbox
        .imageql(&[
            "-o",
            "ndjson",
            "-e",
            r#"EXEC /*+ AWAIT */ linode.images.images.post_replicate_image @imageId='private/1001', @@json='{"regions": ["us-east", "us-mia"]}'"#,
        ])
        .rows();
    let expected = json!([{"region": "us-east", "status": "available"}, {"region": "us-mia", "status": "available"}]);
    assert_eq!(rows[0]["regions"], expected, "AWAIT waits for every region");
    assert_eq!(image(&sandbox, "private/1001").await.1["regions"], expected);

    // Body fields may be given as @name too.
    sandbox
        .imageql(&["-e", "EXEC linode.images.images.put_image @imageId='private/1002', @label='renamed-by-exec'"])
        .ok();
    assert_eq!(image(&sandbox, "private/1002").await.1["label"], "renamed-by-exec");
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
            "nonexistent",
        ),
        ("EXEC linode.images.images.post_uplaod_image @@json='{}'", "did you mean post_upload_image?"),
        ("UPDATE linode.images.images SET label = 'x' WHERE id = 'private/1001'", "use REPLACE"),
        ("INSERT INTO linode.images.images (disk_id) VALUES (67890) RETURNING nope", "RETURNING"),
        ("REPLACE linode.images.images SET label = '' WHERE label LIKE 'golden%'", "Length must be 1-50"),
    ];
    for (sql, words) in cases {
        let mark = sandbox.log().len();
        let stderr = sandbox.imageql(&["-e", sql]).fails();
        assert!(stderr.contains(words), "{sql}: {stderr}");
        assert!(sandbox.log_since(mark).is_empty(), "{sql} made requests");
    }
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

#[test]
fn explain_shows_mutation_requests_and_sends_none() {
    let sandbox = sandbox();
    let mark = sandbox.log().len();
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN INSERT INTO linode.images.images (disk_id, label, tags) VALUES (67890, 'a', '[\"abc\"]')",
        ])
        .ok();
    assert_eq!(out.trim(), r#"1	POST /images {"disk_id":67890,"label":"a","tags":["abc"]}"#);
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN DELETE FROM linode.images.images WHERE label LIKE 'golden%' AND NOT is_public",
        ])
        .ok();
    assert!(out.contains("ResourceScanExec: linode.images.images: GET /images"), "{out}");
    assert!(out.contains("for each row\tDELETE /images/{imageId}"), "{out}");
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN REPLACE /*+ AWAIT */ linode.images.images SET description = 'x' WHERE id = 'private/1001'",
        ])
        .ok();
    assert!(out.contains(r#"PUT /images/private%2F1001 {"description":"x"}"#), "{out}");
    assert!(out.contains("until status is available"), "{out}");
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN REPLACE linode.images.images SET description = (SELECT max(label) FROM linode.images.images) WHERE id = 'private/1001'",
        ])
        .ok();
    assert!(out.contains("for each row"), "a value that reads is computed later: {out}");
    assert!(sandbox.log_since(mark).is_empty(), "EXPLAIN sent requests");
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
