//! Generic reads: resources described only by provider files (a YAML service and a seed file,
//! no Rust) served by `imageql sandbox --providers DIR`, queried over HTTP and with imageql;
//! regions served from their seed file; and mistakes in provider files refused at start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SandboxProcess, TOKEN, binary, normalize};
use serde_json::{Value, json};

const VOLUMES_YAML: &str = r#"
id: volumes
title: Block Storage
description: Volumes, described only by this test.
resources:
  volumes:
    title: Volumes
    fields:
      - {name: id, type: integer, nullable: false}
      - {name: label, type: string, nullable: false, filter: [eq, neq, contains], orderable: true}
      - {name: size, type: integer, nullable: false, filter: [eq, neq, gt, gte, lt, lte], orderable: true}
      - {name: region, type: string, nullable: false, filter: [eq, neq]}
      - {name: status, type: string, nullable: false, enum: [active, creating, resizing]}
      - {name: tags, type: array, items: {type: string}}
    methods:
      get_volume:
        verb: GET
        path: /volumes/{volumeId}
        params:
          - {name: volumeId, in: path, type: integer, required: true, column: id}
        notFound: empty
      get_volumes:
        verb: GET
        path: /volumes
        objectKey: data
        paginated: true
        filtered: true
    sqlVerbs:
      select: [get_volume, get_volumes]
  snapshots:
    title: Volume snapshots
    fields:
      - {name: id, type: integer, nullable: false}
      - {name: label, type: string, nullable: false, filter: [eq]}
      - {name: created, type: datetime, nullable: false}
    methods:
      get_snapshot:
        verb: GET
        path: /volumes/{volumeId}/snapshots/{snapshotId}
        params:
          - &volumeId {name: volumeId, in: path, type: integer, required: true}
          - {name: snapshotId, in: path, type: integer, required: true, column: id}
        notFound: empty
      get_snapshots:
        verb: GET
        path: /volumes/{volumeId}/snapshots
        params: [*volumeId]
        objectKey: data
        paginated: true
        filtered: true
    sqlVerbs:
      select: [get_snapshot, get_snapshots]
"#;

/// 60 volumes of varied size, region and status.
fn volumes() -> Vec<Value> {
    const REGIONS: [&str; 4] = ["us-east", "eu-west", "ap-south", "us-ord"];
    const STATUSES: [&str; 3] = ["active", "creating", "resizing"];
    (1..=60u64)
        .map(|i| {
            json!({
                "id": i,
                "label": format!("vol-{i:02}"),
                "size": 10 + (i * 37) % 250,
                "region": REGIONS[(i % 4) as usize],
                "status": STATUSES[(i % 3) as usize],
                "tags": if i % 5 == 0 { json!(["backup"]) } else { json!([]) },
            })
        })
        .collect()
}

/// Two snapshots of each of the first three volumes; rows carry the `volumeId` of their path.
fn snapshots() -> Vec<Value> {
    (1..=3u64)
        .flat_map(|v| {
            (0..2u64).map(move |k| {
                json!({"id": 100 * v + k, "label": format!("snap-{v}-{k}"), "created": "2026-01-02T03:04:05", "volumeId": v})
            })
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A provider directory with the volumes service: a copy of the repository's providers, or
/// (`whole = false`) the Linode provider file and the volumes service alone.
fn provider_dir(whole: bool) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("providers");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
    if whole {
        copy_dir(&repo, &dir);
    } else {
        std::fs::create_dir_all(dir.join("linode/services")).unwrap();
        std::fs::copy(repo.join("linode/provider.yaml"), dir.join("linode/provider.yaml")).unwrap();
    }
    let services = dir.join("linode/services");
    std::fs::write(services.join("volumes.yaml"), VOLUMES_YAML).unwrap();
    let seed = json!({"volumes": volumes(), "snapshots": snapshots()});
    std::fs::write(services.join("volumes.seed.json"), serde_json::to_string_pretty(&seed).unwrap()).unwrap();
    (temp, dir)
}

fn data(body: &Value) -> Vec<Value> {
    body["data"].as_array().unwrap_or_else(|| panic!("a list: {body}")).clone()
}

#[tokio::test]
async fn serves_a_resource_described_only_by_provider_files() {
    let (_temp, dir) = provider_dir(true);
    let dir = dir.to_str().unwrap();
    let sandbox = SandboxProcess::start(&["--providers", dir]);
    let http = sandbox.client();
    let all = volumes();

    // Paged: 60 rows in pages of 25.
    for page in 1..=3usize {
        let (status, body) = http.get(&format!("/volumes?page={page}&page_size=25"), Some(TOKEN), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["page"].clone(), body["pages"].clone(), body["results"].clone()),
            (json!(page), json!(3), json!(60))
        );
        let expected: Vec<Value> = all.iter().skip((page - 1) * 25).take(25).cloned().collect();
        assert_eq!(data(&body), expected, "page {page}");
    }
    let (status, body) = http.get("/volumes?page_size=501", Some(TOKEN), None).await;
    assert_eq!((status, body["errors"][0]["field"].clone()), (400, json!("page_size")));

    // Filtered and sorted as X-Filter says, and only on the fields the YAML lets filter.
    let skip = sandbox.log().len();
    let filter = r#"{"region": "eu-west", "size": {"+gt": 100}, "+order_by": "size", "+order": "desc"}"#;
    let (status, body) = http.get("/volumes?page_size=500", Some(TOKEN), Some(filter)).await;
    assert_eq!(status, 200, "{body}");
    let mut expected: Vec<Value> =
        all.iter().filter(|v| v["region"] == "eu-west" && v["size"].as_u64().unwrap() > 100).cloned().collect();
    expected.sort_by_key(|v| std::cmp::Reverse(v["size"].as_u64().unwrap()));
    assert!(!expected.is_empty());
    assert_eq!(data(&body), expected);
    let logged = sandbox.log_since(skip);
    assert_eq!((logged.len(), logged[0]["x_filter"].as_str()), (1, Some(filter)));
    let (status, body) = http.get("/volumes", Some(TOKEN), Some(r#"{"status": "active"}"#)).await;
    assert_eq!((status, body), (400, json!({"errors": [{"reason": "Cannot filter on status", "field": "X-Filter"}]})));

    // One row by id; a missing one is 404 in the API's envelope.
    let (status, body) = http.get("/volumes/7", Some(TOKEN), None).await;
    assert_eq!((status, body), (200, all[6].clone()));
    for missing in ["/volumes/999", "/volumes/seven"] {
        let (status, body) = http.get(missing, Some(TOKEN), None).await;
        assert_eq!((status, body), (404, json!({"errors": [{"reason": "Not found"}]})), "{missing}");
    }
    let (status, _) = http.send("POST", "/volumes", Some(json!({"label": "x"}))).await;
    assert_eq!(status, 405, "reads only");
    let (status, _) = http.get("/volumes", Some("not-a-token"), None).await;
    assert_eq!(status, 401);

    // A path parameter no field carries picks the rows that carry it, and is left out.
    let of_two: Vec<Value> = snapshots()
        .into_iter()
        .filter(|s| s["volumeId"] == 2)
        .map(|mut s| {
            s.as_object_mut().unwrap().remove("volumeId");
            s
        })
        .collect();
    let (status, body) = http.get("/volumes/2/snapshots", Some(TOKEN), None).await;
    assert_eq!((status, data(&body)), (200, of_two.clone()));
    let (status, body) = http.get("/volumes/2/snapshots/201", Some(TOKEN), None).await;
    assert_eq!((status, body), (200, of_two[1].clone()));
    let (status, _) = http.get("/volumes/3/snapshots/201", Some(TOKEN), None).await;
    assert_eq!(status, 404, "a snapshot of another volume");
    let (status, _) = http.get("/volumes/50/snapshots", Some(TOKEN), None).await;
    assert_eq!(status, 404, "no seed row has that volume");

    // imageql pushes the predicate into X-Filter and gets exactly the rows it selects.
    let skip = sandbox.log().len();
    let rows = sandbox.imageql(&[
        "--providers",
        dir,
        "-o",
        "ndjson",
        "-e",
        "SELECT id, label, size FROM linode.volumes.volumes WHERE size > 100 ORDER BY id",
    ]);
    let expected: Vec<Value> = all
        .iter()
        .filter(|v| v["size"].as_u64().unwrap() > 100)
        .map(|v| json!({"id": v["id"], "label": v["label"], "size": v["size"]}))
        .collect();
    assert!(expected.len() > 10 && expected.len() < 60);
    assert_eq!(rows.rows(), expected);
    let lists: Vec<Value> = sandbox.log_since(skip).into_iter().filter(|l| l["path"] == "/v4/volumes").collect();
    assert!(!lists.is_empty());
    for list in &lists {
        let sent: Value = serde_json::from_str(list["x_filter"].as_str().expect("an X-Filter")).unwrap();
        assert_eq!(normalize(&sent), json!({"size": {"+gt": 100}}));
    }
    let rows = sandbox.imageql(&[
        "--providers",
        dir,
        "-o",
        "ndjson",
        "-e",
        "SELECT id, label, volumeId FROM linode.volumes.snapshots WHERE volumeId = 2 ORDER BY id",
    ]);
    let expected: Vec<Value> =
        of_two.iter().map(|s| json!({"id": s["id"], "label": s["label"], "volumeId": 2})).collect();
    assert_eq!(rows.rows(), expected);

    // The in-process sandbox serves the same provider files.
    let out = Command::new(binary())
        .args(["--sandbox", "--providers", dir, "-o", "csv", "-e", "SELECT count(*) AS n FROM linode.volumes.volumes"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n60\n");
}

#[test]
fn parameter_columns_of_any_resource_take_values_from_joins() {
    let (_temp, dir) = provider_dir(true);
    let dir = dir.to_str().unwrap();
    let sandbox = SandboxProcess::start(&["--providers", dir]);
    let with_snapshots: Vec<u64> = {
        let mut ids: Vec<u64> = snapshots().iter().map(|s| s["volumeId"].as_u64().unwrap()).collect();
        ids.dedup();
        ids
    };
    let highest = with_snapshots.iter().max().unwrap();
    let expected: Vec<Value> =
        snapshots().iter().map(|s| json!({"volumeId": s["volumeId"], "id": s["id"], "label": s["label"]})).collect();
    let listed = with_snapshots.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    for sql in [
        format!("SELECT volumeId, id, label FROM linode.volumes.snapshots WHERE volumeId IN ({listed}) ORDER BY id"),
        format!(
            "SELECT s.volumeId, s.id, s.label FROM linode.volumes.volumes v \
             JOIN linode.volumes.snapshots s ON s.volumeId = v.id WHERE v.id <= {highest} ORDER BY s.id"
        ),
        format!(
            "SELECT volumeId, id, label FROM linode.volumes.snapshots \
             WHERE volumeId IN (SELECT id FROM linode.volumes.volumes WHERE id <= {highest}) ORDER BY id"
        ),
    ] {
        let mark = sandbox.log().len();
        let rows = sandbox.imageql(&["--providers", dir, "-o", "ndjson", "-e", &sql]).rows();
        assert_eq!(rows, expected, "{sql}");
        let mut asked: Vec<String> = sandbox
            .log_since(mark)
            .iter()
            .filter_map(|r| r["path"].as_str().filter(|p| p.ends_with("/snapshots")).map(str::to_string))
            .collect();
        asked.sort();
        let per_volume: Vec<String> = with_snapshots.iter().map(|v| format!("/v4/volumes/{v}/snapshots")).collect();
        assert_eq!(asked, per_volume, "one request per volume for {sql}");
    }
}

#[tokio::test]
async fn without_images_the_sandbox_serves_what_the_files_describe() {
    let (_temp, dir) = provider_dir(false);
    // Given before the subcommand, --providers means the same.
    let sandbox = SandboxProcess::start_with(&["--providers", dir.to_str().unwrap()], &[]);
    let http = sandbox.client();
    let (status, body) = http.get("/volumes?page_size=25", Some(TOKEN), None).await;
    assert_eq!((status, body["results"].clone()), (200, json!(60)));
    for path in ["/images", "/images/private/1001", "/linode/instances", "/linode/instances/12345/disks", "/regions"] {
        let (status, body) = http.get(path, Some(TOKEN), None).await;
        assert_eq!((status, body), (404, json!({"errors": [{"reason": "Not found"}]})), "{path} is not described");
    }
}

/// Runs `imageql sandbox --providers DIR`, which must exit at once; returns its stderr.
fn refused(dir: &Path) -> String {
    let mut child = Command::new(binary())
        .args(["sandbox", "--listen", "127.0.0.1:0", "--rate-limit-list", "0", "--providers"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the sandbox started with bad provider files");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "provider files are part of the command line: {stderr}");
    stderr
}

#[test]
fn mistakes_in_seed_files_are_load_errors_naming_the_file() {
    let (_temp, dir) = provider_dir(true);
    let seed = dir.join("linode/services/volumes.seed.json");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut rows = json!({"volumes": volumes(), "snapshots": snapshots()});
        edit(&mut rows);
        std::fs::write(&seed, rows.to_string()).unwrap();
        refused(&dir)
    };
    for (edit, says) in [
        (
            &(|v: &mut Value| v["volumes"][3]["lable"] = json!("x")) as &dyn Fn(&mut Value),
            "row 3: unknown field `lable`",
        ),
        (&|v: &mut Value| v["volumes"][0]["size"] = json!("big"), "`size`: \"big\" is not of type integer"),
        (
            &|v: &mut Value| v["volumes"][1]["status"] = json!("lost"),
            "\"lost\" is not one of active, creating, resizing",
        ),
        (&|v: &mut Value| v["volumes"][2]["id"] = json!(1), "rows 0 and 2 have the same id"),
        (&|v: &mut Value| v["snapshots"][0].as_object_mut().unwrap().clear(), "`id` is missing"),
        (&|v: &mut Value| v["volume"] = json!([]), "has no resource `volume`"),
    ] {
        let stderr = with(edit);
        assert!(stderr.contains("volumes.seed.json") && stderr.contains(says), "expected {says:?}: {stderr}");
    }
    std::fs::write(&seed, "{\"volumes\": [").unwrap();
    assert!(refused(&dir).contains("volumes.seed.json"));

    // Images are per account: seed rows for them would never be served.
    std::fs::write(&seed, "{}").unwrap();
    std::fs::write(dir.join("linode/services/images.seed.json"), r#"{"images": []}"#).unwrap();
    let stderr = refused(&dir);
    assert!(stderr.contains("linode.images.images") && stderr.contains("own"), "{stderr}");
}

#[tokio::test]
async fn regions_are_served_from_their_seed_file() {
    let seed: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/linode/services/regions.seed.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let regions = seed["regions"].as_array().unwrap().clone();
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let http = sandbox.client();

    let (status, body) = http.get("/regions", None, None).await;
    assert_eq!(status, 200, "regions are public");
    assert_eq!(body, json!({"data": regions, "page": 1, "pages": 1, "results": regions.len()}));
    let (status, body) = http.get("/regions/us-east", Some(TOKEN), None).await;
    assert_eq!((status, body["id"].clone()), (200, json!("us-east")));
    assert_eq!(&body, regions.iter().find(|r| r["id"] == "us-east").unwrap());
    let (status, body) = http.get("/regions/xx-nowhere", Some(TOKEN), None).await;
    assert_eq!((status, body), (404, json!({"errors": [{"reason": "Not found"}]})));

    let skip = sandbox.log().len();
    let (status, body) = http.get("/regions", Some(TOKEN), Some(r#"{"country": "us"}"#)).await;
    assert_eq!(status, 200);
    let in_us: Vec<Value> = regions.iter().filter(|r| r["country"] == "us").cloned().collect();
    assert!(in_us.len() >= 2);
    assert_eq!(data(&body), in_us);
    assert_eq!(sandbox.log_since(skip)[0]["x_filter"], r#"{"country": "us"}"#);
    let (status, body) = http.get("/regions", Some(TOKEN), Some(r#"{"label": "Newark, NJ"}"#)).await;
    assert_eq!((status, body["errors"][0]["reason"].clone()), (400, json!("Cannot filter on label")));

    // Uploads and replicas need a region whose seed row has Object Storage.
    let stores = |r: &Value| r["capabilities"].as_array().unwrap().iter().any(|c| c == "Object Storage");
    let without = regions.iter().find(|r| !stores(r)).unwrap()["id"].as_str().unwrap();
    let with = regions.iter().find(|r| stores(r)).unwrap()["id"].as_str().unwrap();
    let (status, body) = http.send("POST", "/images/private/1001/regions", Some(json!({"regions": [without]}))).await;
    assert_eq!(status, 400, "{body}");
    let reason = body["errors"][0]["reason"].as_str().unwrap();
    assert!(reason.contains(without) && reason.contains("Object Storage"), "{reason}");
    let (status, body) = http.send("POST", "/images/upload", Some(json!({"label": "up", "region": without}))).await;
    assert_eq!((status, body["errors"][0]["field"].clone()), (400, json!("region")));
    let (status, body) = http.send("POST", "/images/private/1001/regions", Some(json!({"regions": [with]}))).await;
    assert_eq!(status, 200, "{body}");
    let regions_of =
        |b: &Value| b["regions"].as_array().unwrap().iter().map(|r| r["region"].clone()).collect::<Vec<_>>();
    assert!(regions_of(&body).contains(&json!(with)));

    // imageql reads them too, with the predicate in X-Filter.
    let skip = sandbox.log().len();
    let rows = sandbox.rows("SELECT id FROM linode.regions.regions WHERE country = 'us' ORDER BY id");
    let mut ids: Vec<Value> = in_us.iter().map(|r| json!({"id": r["id"]})).collect();
    ids.sort_by_key(|r| r["id"].as_str().unwrap().to_string());
    assert_eq!(rows, ids);
    let sent = sandbox.log_since(skip).into_iter().find(|l| l["path"] == "/v4/regions").unwrap();
    assert_eq!(serde_json::from_str::<Value>(sent["x_filter"].as_str().unwrap()).unwrap(), json!({"country": "us"}));
}
