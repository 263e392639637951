//! The other half of an image's life, in SQL against the sandbox: capture → replicate → deploy
//! → rebuild → delete, the checks made before any request, several deploys in one statement,
//! the profile's defaults, and the root password kept secret.

mod common;

use common::{SandboxProcess, TOKEN};
use serde_json::{Value, json};

/// The requests of a log that change something, as `METHOD path`.
fn changes(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|r| r["method"] != "GET")
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect()
}

const SECRET: &str = "Never-Printed-42";

#[test]
fn an_image_is_captured_replicated_deployed_rebuilt_and_its_instance_deleted() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0.05"]);
    let captured = sandbox.rows(
        "INSERT /*+ AWAIT */ INTO linode.images.images (disk_id, label) VALUES (67890, 'golden-deploy') RETURNING id, regions",
    );
    let image = captured[0]["id"].as_str().unwrap().to_string();
    assert_eq!(captured[0]["regions"], json!([{"region": "us-east", "status": "available"}]));

    // Not in eu-west yet: refused before any request, with the statement that fixes it.
    let mark = sandbox.log().len();
    let deploy = format!(
        "INSERT /*+ AWAIT */ INTO linode.linode.instances (region, type, image, label, root_pass) \
         VALUES ('eu-west', 'g6-standard-2', '{image}', 'deployed-1', '{SECRET}') RETURNING id, status, ipv4, image, region"
    );
    let stderr = sandbox.imageql(&["-e", &deploy]).fails();
    assert!(stderr.contains(&format!("{image} has no available copy in eu-west (it has one in: us-east)")), "{stderr}");
    assert!(
        stderr.contains(&format!("EXEC linode.images.images.post_replicate_image @imageId='{image}', @add='eu-west'")),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET));
    assert!(changes(&sandbox.log_since(mark)).is_empty());

    sandbox
        .imageql(&[
            "-e",
            &format!("EXEC /*+ AWAIT */ linode.images.images.post_replicate_image @imageId='{image}', @add='eu-west'"),
        ])
        .ok();
    let run = sandbox.imageql(&["-o", "ndjson", "-e", &deploy]);
    assert!(!run.stdout().contains(SECRET) && !run.stderr().contains(SECRET));
    let deployed = run.rows();
    let id = deployed[0]["id"].as_i64().unwrap();
    assert_eq!((&deployed[0]["status"], &deployed[0]["image"]), (&json!("running"), &json!(image)));
    assert_eq!(deployed[0]["region"], "eu-west");
    assert!(deployed[0]["ipv4"].as_array().is_some_and(|a| !a.is_empty()));
    let disks = sandbox.rows(&format!(
        "SELECT filesystem, size, status FROM linode.linode.disks WHERE linodeId = {id} ORDER BY size DESC"
    ));
    assert_eq!(
        disks,
        [
            json!({"filesystem": "ext4", "size": 81920 - 512, "status": "ready"}),
            json!({"filesystem": "swap", "size": 512, "status": "ready"})
        ]
    );

    // A rebuild says what it destroys, masks the password, and sends nothing when explained.
    let rebuild = format!(
        "EXEC /*+ AWAIT */ linode.linode.instances.rebuild @linodeId={id}, @image='linode/debian12', @root_pass='{SECRET}'"
    );
    let explained = sandbox.rows(&format!("EXPLAIN {rebuild}"));
    assert_eq!(
        explained[0]["request"],
        format!(r#"POST /linode/instances/{id}/rebuild {{"image":"linode/debian12","root_pass":"********"}}"#)
    );
    assert_eq!(
        (&explained[1]["step"], &explained[1]["request"]),
        (&json!("destroys"), &json!("every disk and configuration profile of the instance"))
    );
    let before: Vec<i64> = sandbox
        .rows(&format!("SELECT id FROM linode.linode.disks WHERE linodeId = {id}"))
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    let rebuilt = sandbox.rows(&format!("{rebuild} RETURNING status, image"));
    assert_eq!(rebuilt, [json!({"status": "running", "image": "linode/debian12"})]);
    let after = sandbox.rows(&format!("SELECT id FROM linode.linode.disks WHERE linodeId = {id}"));
    assert!(after.iter().all(|d| !before.contains(&d["id"].as_i64().unwrap())), "every disk is new");

    sandbox
        .imageql(&[
            "-e",
            &format!(
                "REPLACE linode.linode.instances SET label = 'deployed-renamed', tags = '[\"prod\"]' WHERE id = {id}"
            ),
        ])
        .ok();
    let renamed = sandbox.rows(&format!("SELECT label, tags FROM linode.linode.instances WHERE id = {id}"));
    assert_eq!(renamed, [json!({"label": "deployed-renamed", "tags": ["prod"]})]);

    // Deleting it leaves a recovery image, as the API does.
    sandbox.imageql(&["-e", "DELETE /*+ AWAIT */ FROM linode.linode.instances WHERE label = 'deployed-renamed'"]).ok();
    assert!(sandbox.rows(&format!("SELECT id FROM linode.linode.instances WHERE id = {id}")).is_empty());
    let recovery = sandbox.rows(
        "SELECT label FROM linode.images.images WHERE type = 'automatic' AND label = 'deployed-renamed-recovery'",
    );
    assert_eq!(recovery.len(), 1);
    let actions: Vec<String> = sandbox
        .rows(&format!("SELECT DISTINCT action FROM linode.account.events WHERE entity['id'] = {id} ORDER BY action"))
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["disk_imagize", "linode_create", "linode_delete", "linode_rebuild", "linode_update"]);
}

#[test]
fn deploys_are_checked_before_any_request() {
    let sandbox = SandboxProcess::start(&[]);
    let cases = [
        (
            "INSERT INTO linode.linode.instances (region, type, image, label) VALUES ('us-ord', 'g6-standard-2', 'private/1003', 'no-secret')",
            "root_pass: one of root_pass, authorized_keys, authorized_users is required with image",
        ),
        (
            "INSERT INTO linode.linode.instances (region, type, label) VALUES ('us-ord', 'g6-nano', 'bad-type')",
            "type: g6-nano is not in linode.linode.types (known: g6-nanode-1",
        ),
        (
            "INSERT INTO linode.linode.instances (region, type, label) VALUES ('mars-1', 'g6-nanode-1', 'bad-region')",
            "region: mars-1 is not in linode.regions.regions",
        ),
        (
            "INSERT INTO linode.linode.instances (region, type, image, label, authorized_users) VALUES ('us-east', 'g6-nanode-1', 'private/1010', 'not-ready', '[\"ops\"]')",
            "image: private/1010 is creating, not available",
        ),
        (
            "INSERT INTO linode.linode.instances (region, type, label) VALUES ('us-ord', 'g6-nanode-1', 'x')",
            "label: Length must be 3-64 characters",
        ),
        ("INSERT INTO linode.linode.instances (type, label) VALUES ('g6-nanode-1', 'no-region')", "region"),
        // Every problem at once: the label's own and those of the rows named elsewhere.
        ("INSERT INTO linode.linode.instances (region, type, label) VALUES ('mars-1', 'g6-nano', 'w')", "3 problems"),
        (
            "INSERT INTO linode.linode.disks (linodeId, size, image, root_pass) VALUES (12345, 1000, 'private/1001', 'Long-enough-pass')",
            "image: private/1001 needs a size of at least 2650; size is 1000",
        ),
        (
            "EXEC linode.linode.instances.rebuild @linodeId=12345, @image='linode/debian12'",
            "one of root_pass, authorized_keys, authorized_users is required with image",
        ),
        (
            "INSERT INTO linode.linode.instances (region, type, image, label, root_pass) VALUES ('us-east', 'g6-nanode-1', 'linode/debian12', 'short-pass', 'short')",
            "root_pass: Length must be 11-128 characters",
        ),
    ];
    // A secret is masked in every message, even one of a cast that quotes its value.
    let stderr = sandbox
        .imageql(&["-e", "INSERT INTO linode.linode.instances (region, type, image, label, root_pass) VALUES ('us-east', 'g6-nanode-1', 'linode/debian12', 'cast-1', CAST('Long-enough-pass' AS INT))"])
        .fails();
    assert!(stderr.contains("Cannot cast string '********'"), "{stderr}");
    // Unquoted column names are folded to lower case, as SQL does.
    let rows = sandbox.rows("EXPLAIN INSERT INTO linode.linode.instances (REGION, TYPE, LABEL) VALUES ('us-east', 'g6-nanode-1', 'upper-1')");
    assert!(rows[0]["request"].as_str().unwrap().contains(r#""region":"us-east""#), "{rows:?}");
    assert!(rows.last().unwrap()["id"].is_null(), "no sum of nothing: {rows:?}");
    let mark = sandbox.log().len();
    for (sql, words) in cases {
        let stderr = sandbox.imageql(&["-e", sql]).fails();
        assert!(stderr.contains(words), "{sql}: {stderr}");
        assert!(!stderr.contains("Long-enough-pass"));
    }
    assert!(changes(&sandbox.log_since(mark)).is_empty(), "{:?}", changes(&sandbox.log_since(mark)));

    // What only the API knows is refused by it, clearly: a plan not offered in a region now,
    // a disk that does not fit.
    let stderr = sandbox
        .imageql(&[
            "-e",
            "INSERT INTO linode.linode.instances (region, type, label) VALUES ('us-mia', 'g7-highmem-1', 'highmem-1')",
        ])
        .fails();
    assert!(stderr.contains("HTTP 400: Plan g7-highmem-1 is not available in region us-mia now"), "{stderr}");
    let stderr =
        sandbox.imageql(&["-e", "INSERT INTO linode.linode.disks (linodeId, size) VALUES (12345, 900000)"]).fails();
    assert!(stderr.contains("does not fit"), "{stderr}");
}

#[test]
fn several_images_deploy_in_one_statement_and_the_account_limit_holds() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0", "--max-instances", "5"]);
    let mark = sandbox.log().len();
    let out = sandbox
        .imageql(&[
            "-e",
            "INSERT INTO linode.linode.instances (region, type, image, label, authorized_keys) \
             SELECT 'us-east', 'g6-nanode-1', id, 'from-' || replace(vendor, ' ', ''), '[\"ssh-ed25519 AAAA key\"]' \
             FROM linode.images.images WHERE id IN ('linode/debian12', 'linode/ubuntu24.04') ORDER BY id",
        ])
        .ok();
    assert!(out.starts_with("inserted 2 into linode.linode.instances: "), "{out}");
    assert_eq!(changes(&sandbox.log_since(mark)), ["POST /v4/linode/instances", "POST /v4/linode/instances"]);
    let made = sandbox.rows("SELECT image FROM linode.linode.instances WHERE label LIKE 'from-%' ORDER BY image");
    assert_eq!(made, [json!({"image": "linode/debian12"}), json!({"image": "linode/ubuntu24.04"})]);

    // Three seeded and two made: the sixth is over the limit, and the API says so.
    let stderr = sandbox
        .imageql(&["-e", "INSERT INTO linode.linode.instances (region, type, label) VALUES ('us-east', 'g6-nanode-1', 'one-too-many')"])
        .fails();
    assert!(stderr.contains("Account limit reached: an account may have at most 5 Linodes"), "{stderr}");
}

#[test]
fn the_profile_gives_what_an_insert_leaves_out() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let home = tempfile::tempdir().unwrap();
    let host = sandbox.origin().trim_start_matches("http://").to_string();
    std::fs::write(
        home.path().join(".linode-cli"),
        format!(
            "[DEFAULT]\ndefault-user = ops\n\n[ops]\ntoken = {TOKEN}\napi_host = {host}\napi_scheme = http\n\
             region = us-ord\ntype = g6-standard-1\nimage = private/1003\nauthorized_users = ops\n"
        ),
    )
    .unwrap();
    let imageql = |sql: &str| {
        let out = common::imageql_command(home.path())
            .env_remove("LINODE_TOKEN")
            .args(["-o", "ndjson", "-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<Value>>()
    };
    // A column given overrides the profile.
    let explained =
        imageql("EXPLAIN INSERT INTO linode.linode.instances (label, type) VALUES ('from-profile', 'g6-nanode-1')");
    assert_eq!(
        explained[0]["request"],
        r#"POST /linode/instances {"label":"from-profile","type":"g6-nanode-1","region":"us-ord","image":"private/1003","authorized_users":["ops"]}"#
    );
    assert_eq!(explained[1]["step"], "defaults");
    assert!(
        explained[1]["request"].as_str().unwrap().starts_with("region = us-ord, image = private/1003"),
        "{explained:?}"
    );
    let made =
        imageql("INSERT INTO linode.linode.instances (label) VALUES ('from-profile') RETURNING region, type, image");
    assert_eq!(made, [json!({"region": "us-ord", "type": "g6-standard-1", "image": "private/1003"})]);
}
