//! The official clients against the sandbox: linode-cli (with its image-upload plugin) and
//! the linode_api4 Python SDK, installed from PyPI into a virtualenv. Nothing is mocked:
//! their exit codes are checked and their output parsed.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{SandboxProcess, TOKEN, ext4_image, python_clients};
use serde_json::{Value, json};

struct Cli {
    program: PathBuf,
    home: tempfile::TempDir,
    host: String,
}

impl Cli {
    fn new(sandbox: &SandboxProcess) -> Cli {
        Cli {
            program: python_clients().join("bin/linode-cli"),
            home: tempfile::tempdir().unwrap(),
            host: sandbox.origin().trim_start_matches("http://").to_string(),
        }
    }

    /// Runs linode-cli; returns its exit code, stdout and stderr.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.program)
            .args(args)
            .env("HOME", self.home.path())
            .env("LINODE_CLI_TOKEN", TOKEN)
            .env("LINODE_CLI_API_HOST", &self.host)
            .env("LINODE_CLI_API_SCHEME", "http")
            .env("LINODE_CLI_SUPPRESS_VERSION_WARNING", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command with `--json` and returns the printed array.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, stdout, stderr) = self.run(&all);
        assert_eq!(code, 0, "linode-cli {args:?} failed:\n{stdout}\n{stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("linode-cli {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Repeats `images view id` until `done` holds, for at most 20 s.
    fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let image = self.json(&["images", "view", id]).remove(0);
            if done(&image) {
                return image;
            }
            assert!(std::time::Instant::now() < deadline, "{id} never reached the expected state: {image}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn linode_cli_manages_images_end_to_end() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0.05"]);
    let cli = Cli::new(&sandbox);

    let listed = cli.json(&[
        "images",
        "list",
        "--is_public",
        "false",
        "--tags",
        "prod",
        "--order-by",
        "size",
        "--order",
        "desc",
    ]);
    let ids: Vec<&str> = listed.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["private/1002", "private/1014", "private/1004", "private/1001", "private/1009"]);
    let all = cli.json(&["images", "list", "--all-rows"]);
    assert_eq!(all.len(), 54);

    let viewed = cli.json(&["images", "view", "private/1001"]);
    assert_eq!(viewed[0]["label"], "golden-web-2024");

    let created = cli.json(&[
        "images",
        "create",
        "--disk_id",
        "67890",
        "--label",
        "cli-golden",
        "--tags",
        "cli-made",
        "--cloud_init",
        "true",
    ]);
    let id = created[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (created[0]["status"].clone(), created[0]["capabilities"].clone()),
        (json!("creating"), json!(["cloud-init"]))
    );
    let available = cli.wait_for(&id, |i| i["status"] == "available");
    assert_eq!(available["regions"], json!([{"region": "us-east", "status": "available"}]));

    let updated =
        cli.json(&["images", "update", &id, "--label", "cli-golden-v2", "--description", "built by linode-cli"]);
    assert_eq!(
        (updated[0]["label"].clone(), updated[0]["description"].clone()),
        (json!("cli-golden-v2"), json!("built by linode-cli"))
    );

    let replicated = cli.json(&["images", "replicate", &id, "--regions", "us-east", "--regions", "us-mia"]);
    assert_eq!(replicated[0]["regions"][1], json!({"region": "us-mia", "status": "pending replication"}));
    cli.wait_for(&id, |i| i["regions"].as_array().unwrap().iter().all(|r| r["status"] == "available"));

    let upload = cli.json(&["images", "upload", "--label", "cli-upload", "--region", "us-east"]);
    let upload_id = upload[0]["image"]["id"].as_str().unwrap().to_string();
    assert_eq!(upload[0]["image"]["status"], "pending_upload");
    assert!(upload[0]["upload_to"].as_str().unwrap().starts_with(&sandbox.origin()));

    let (code, _, stderr) = cli.run(&["images", "delete", &id]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, _) = cli.run(&["images", "delete", &upload_id]);
    assert_eq!(code, 0);
    let (code, _, stderr) = cli.run(&["images", "view", &id]);
    assert_eq!(code, 2, "a deleted image is gone");
    assert!(stderr.contains("404"), "{stderr}");

    let (code, _, stderr) = cli.run(&["images", "create", "--label", "no-disk"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("disk_id is required"), "{stderr}");
}

#[test]
fn linode_cli_image_upload_plugin_uploads_a_real_ext4_image() {
    let sandbox = SandboxProcess::start(&[]);
    let cli = Cli::new(&sandbox);
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), 16);
    let (code, stdout, stderr) = cli.run(&[
        "image-upload",
        "--region",
        "us-ord",
        "--label",
        "plugin-ext4",
        "--description",
        "uploaded by the plugin",
        "--cloud-init",
        image.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("100.0%"), "the plugin reports its progress: {stdout}");
    let listed = cli.json(&["images", "list", "--label", "plugin-ext4"]);
    assert_eq!(listed.len(), 1);
    let uploaded = &listed[0];
    assert_eq!(uploaded["status"], "available");
    assert_eq!(uploaded["size"], 16, "16 MiB uncompressed");
    assert_eq!(uploaded["regions"], json!([{"region": "us-ord", "status": "available"}]));
    assert_eq!(uploaded["capabilities"], json!(["cloud-init"]));
}

#[test]
fn linode_api4_filters_orders_and_uploads() {
    let sandbox = SandboxProcess::start(&[]);
    let python = python_clients().join("bin/python");
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), 8);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_images.py");
    let out = Command::new(python).arg(script).arg(&sandbox.url).arg(TOKEN).arg(&image).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(&stdout).unwrap();

    let sizes: Vec<u64> = seen["private_large"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).collect();
    assert_eq!(sizes, [5950, 4380, 4100, 3300, 3010, 2890, 2650, 2410, 2200]);
    assert_eq!(seen["either"], json!(["linode/slackware15.0", "private/1003"]));
    assert_eq!(seen["tagged"], json!(["private/1001", "private/1002", "private/1004", "private/1010"]));
    assert_eq!(seen["loaded"], json!(["golden-db-2024", "available", ["us-east"]]));
    assert_eq!(seen["missing"], json!([404, ["Not found"]]));
    let uploaded = &seen["uploaded"];
    assert_eq!(uploaded["status"], "available");
    assert_eq!(uploaded["size"], 8);
    assert_eq!(uploaded["tags"], json!(["sdk-tag"]));
    assert_eq!(uploaded["regions"], json!([["us-east", "available"]]));
    assert_eq!(seen["renamed"], "sdk-upload-renamed");
    assert_eq!(seen["deleted"], true);

    // The SDK's requests reached the sandbox as the reference describes them.
    let log = sandbox.log();
    let sorted = log
        .iter()
        .find(|r| r["x_filter"].as_str().is_some_and(|f| f.contains("+order_by")))
        .expect("an ordered list request");
    let filter: Value = serde_json::from_str(sorted["x_filter"].as_str().unwrap()).unwrap();
    assert!(filter["+and"].as_array().unwrap().iter().any(|f| f["+order_by"] == "size"), "{filter}");
}

#[test]
fn official_clients_read_the_account_events() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = sandbox.client();
    let image = runtime.block_on(async {
        let (status, image) =
            http.send("POST", "/images", Some(json!({"disk_id": 67890, "label": "events-web"}))).await;
        assert_eq!(status, 200, "{image}");
        let id = image["id"].as_str().unwrap().to_string();
        http.poll(&format!("/images/{id}"), 20, |i| i["status"] == "available").await;
        assert_eq!(http.send("DELETE", &format!("/images/{id}"), None).await.0, 200);
        id
    });
    let number = image.trim_start_matches("private/").parse::<u64>().unwrap();

    let cli = Cli::new(&sandbox);
    let events = cli.json(&["events", "list"]);
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["image_delete", "disk_imagize"], "newest first: {events:?}");
    assert_eq!(events[1]["status"], "finished");
    assert_eq!(events[1]["secondary_entity"]["id"], image.as_str());
    assert_eq!(
        events[0]["entity"],
        json!({"id": number, "label": "events-web", "type": "image", "url": format!("/v4/images/{image}")})
    );
    let mark = sandbox.log().len();
    let deleted = cli.json(&["events", "list", "--action", "image_delete"]);
    assert_eq!(deleted.len(), 1);
    let sent: Value = serde_json::from_str(sandbox.log_since(mark)[0]["x_filter"].as_str().unwrap()).unwrap();
    assert_eq!(sent["action"], "image_delete", "{sent}");
    let id = deleted[0]["id"].to_string();
    assert_eq!(cli.json(&["events", "view", &id])[0]["action"], "image_delete");

    let script = r#"
import json, sys
from linode_api4 import LinodeClient
from linode_api4.objects import Event
client = LinodeClient(sys.argv[2], base_url=sys.argv[1])
every = [(e.id, e.action, e.status, e.entity.type, e.username) for e in client.account.events()]
deletes = [e.entity.id for e in client.account.events(Event.action == "image_delete")]
print(json.dumps({"every": every, "deletes": deletes, "created": str(client.account.events()[0].created)}))
"#;
    let python = python_clients().join("bin/python");
    let out = Command::new(python).args(["-c", script, &sandbox.url, TOKEN]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(&stdout).unwrap();
    let every = seen["every"].as_array().unwrap();
    assert_eq!(every.len(), 2);
    let tail = |i: usize| Value::from(every[i].as_array().unwrap()[1..].to_vec());
    assert_eq!(tail(0), json!(["image_delete", "notification", "image", "sandbox-user"]));
    assert_eq!(tail(1), json!(["disk_imagize", "finished", "linode", "sandbox-user"]));
    assert_eq!(seen["deletes"], json!([number]));
    assert!(seen["created"].as_str().unwrap().starts_with("20"), "a datetime: {seen}");
}

#[test]
fn linode_api4_deploys_rebuilds_and_deletes_an_instance() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0.1"]);
    let python = python_clients().join("bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_deploy.py");
    let out = Command::new(python).arg(script).arg(&sandbox.url).arg(TOKEN).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(seen["elsewhere"][0], 400, "{seen}");
    assert!(seen["elsewhere"][1][0].as_str().unwrap().contains("not available in region ap-west"), "{seen}");
    assert_eq!(seen["created"], json!(["sdk-web", "provisioning", "private/1003", "us-ord", ["sdk"]]));
    assert_eq!(seen["running"], "running");
    // The plan's 51200 MB: the image's disk and a 512 MB swap disk, as the API makes them.
    assert_eq!(seen["disks"], json!([["ext4", 50688], ["swap", 512]]));
    assert_eq!(seen["rebuilding"], "rebuilding");
    assert_eq!(seen["rebuilt"], json!(["running", "linode/debian12"]));
    assert_eq!(seen["disk"], json!(["sdk-data", 4000, "ext4"]));
    assert_eq!(seen["too_big"], 400);
    assert_eq!(seen["renamed"], "sdk-web-renamed");
    assert_eq!(seen["events"], json!(["disk_create", "linode_create", "linode_rebuild", "linode_update"]));
    assert_eq!(seen["seen"], true);
    assert_eq!(seen["deleted"], true);
    // The password went to the API and nowhere else the sandbox writes.
    let log = std::fs::read_to_string(&sandbox.access_log).unwrap();
    assert!(!log.contains("Sdk-secret-pass-1"));
}

#[test]
fn linode_cli_deploys_rebuilds_and_deletes_an_instance() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let cli = Cli::new(&sandbox);
    let made = cli.json(&[
        "linodes",
        "create",
        "--type",
        "g6-nanode-1",
        "--region",
        "us-east",
        "--image",
        "linode/debian12",
        "--root_pass",
        "Cli-secret-pass-1",
        "--label",
        "cli-made",
    ]);
    let id = made[0]["id"].as_u64().unwrap().to_string();
    assert_eq!((&made[0]["label"], &made[0]["image"]), (&json!("cli-made"), &json!("linode/debian12")));
    let rebuilt =
        cli.json(&["linodes", "rebuild", &id, "--image", "linode/ubuntu24.04", "--root_pass", "Cli-secret-pass-2"]);
    assert_eq!(rebuilt[0]["image"], "linode/ubuntu24.04");
    let disks = cli.json(&["linodes", "disks-list", &id]);
    assert_eq!(disks.len(), 2, "{disks:?}");
    assert!(disks[0]["label"].as_str().unwrap().starts_with("Ubuntu"), "{disks:?}");
    let plans = cli.json(&["linodes", "types"]);
    assert!(plans.iter().any(|p| p["id"] == "g6-nanode-1"));
    let available = cli.json(&["regions", "list-avail"]);
    assert!(available.iter().any(|a| a["available"] == false));
    let (code, stdout, stderr) = cli.run(&["linodes", "delete", &id]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, _) = cli.run(&["linodes", "view", &id, "--json"]);
    assert_ne!(code, 0, "the instance is gone");
    let log = std::fs::read_to_string(&sandbox.access_log).unwrap();
    assert!(!log.contains("Cli-secret-pass"), "passwords are not logged");
}
