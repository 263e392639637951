//! Meta commands, script variables, the provider-declared cost view, exports and the
//! example reports, through the real binary against a real sandbox.

mod common;

use std::path::Path;

use common::{SandboxProcess, TOKEN};
use serde_json::{Value, json};

/// Compares `actual` with `tests/snapshots/<name>`; `IMAGEQL_BLESS=1` rewrites the file.
fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("IMAGEQL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (IMAGEQL_BLESS=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} changed; if that is intended, rerun with IMAGEQL_BLESS=1");
}

#[test]
fn show_and_describe_answer_from_the_provider_files() {
    let sandbox = SandboxProcess::start(&[]);
    let cases = [
        ("show_providers.csv", "SHOW PROVIDERS"),
        ("show_services.csv", "SHOW SERVICES IN linode"),
        ("show_resources.csv", "SHOW RESOURCES IN linode.images"),
        ("show_methods.csv", "SHOW METHODS IN linode.images.images"),
        ("show_methods_like.csv", "SHOW METHODS IN linode.images.images LIKE 'post%'"),
        ("describe_images.csv", "DESCRIBE linode.images.images"),
        ("describe_disks_extended.csv", "DESCRIBE EXTENDED linode.linode.disks"),
        ("describe_method_post_image.csv", "DESCRIBE METHOD linode.images.images.post_image"),
    ];
    let mark = sandbox.log().len();
    for (name, sql) in cases {
        snapshot(name, &sandbox.imageql(&["-o", "csv", "-e", sql]).ok());
    }
    assert!(sandbox.log_since(mark).is_empty(), "meta commands make no request");

    for (sql, words) in [
        ("SHOW METHODS IN linode.images.nothing", "unknown resource"),
        ("SHOW SERVICES IN aws", "unknown provider aws"),
        ("DESCRIBE METHOD linode.images.images.get_imag", "has no method get_imag"),
        ("SHOW METHODS", "SHOW METHODS needs IN"),
    ] {
        let stderr = sandbox.imageql(&["-e", sql]).fails();
        assert!(stderr.contains(words), "{sql}: {stderr}");
    }
    // DESCRIBE of something that is not a resource is DataFusion's.
    let out = sandbox.imageql(&["-o", "csv", "-e", "DESCRIBE information_schema.tables"]).ok();
    assert!(out.starts_with("column_name,data_type,is_nullable"), "{out}");
}

#[test]
fn variables_fill_placeholders_and_a_missing_one_is_named() {
    let sandbox = SandboxProcess::start(&[]);
    let out = sandbox
        .imageql(&[
            "--var",
            "label=ci-runner",
            "--var",
            "min_size=1000",
            "-o",
            "csv",
            "-e",
            "SELECT id FROM linode.images.images WHERE label = '{{ label }}' AND size > {{min_size}}",
        ])
        .ok();
    assert_eq!(out, "id\nprivate/1003\n");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("report.sql");
    std::fs::write(&script, "-- uses a variable\nSELECT '{{ region }}' AS region;\n\nSELECT '{{ missing }}';\n")
        .unwrap();
    let run = sandbox.imageql(&["--var", "region=us-east", "-o", "csv", "-f", script.to_str().unwrap()]);
    let stderr = run.fails();
    assert_eq!(run.stdout(), "", "every placeholder is checked before the first statement runs");
    assert!(stderr.contains(&format!("{}:4:", script.display())), "{stderr}");
    assert!(stderr.contains("{{ missing }}") && stderr.contains("--var missing="), "{stderr}");
}

#[test]
fn a_value_never_changes_the_shape_of_a_statement() {
    let sandbox = SandboxProcess::start(&[]);
    let private = |sandbox: &SandboxProcess| {
        sandbox.rows("SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public")[0]["n"].as_u64().unwrap()
    };
    let before = private(&sandbox);
    let attack = "tag=zzz') OR NOT is_public OR array_has(tags, 'x";
    let count = "SELECT count(*) AS n FROM linode.images.images WHERE array_has(tags, '{{ tag }}')";
    assert_eq!(sandbox.imageql(&["--var", attack, "-o", "csv", "-e", count]).ok(), "n\n0\n");
    let mark = sandbox.log().len();
    let delete = "DELETE FROM linode.images.images WHERE NOT is_public AND array_has(tags, '{{ tag }}')";
    sandbox.imageql(&["--var", attack, "-e", delete]).ok();
    let sent: Vec<Value> = sandbox.log_since(mark).into_iter().filter(|r| r["method"] != "GET").collect();
    assert!(sent.is_empty(), "the DELETE matched nothing: {sent:?}");
    assert_eq!(private(&sandbox), before);

    // Outside quotes a value is one literal: a number, else a string; raw only when asked.
    let bare = "SELECT id FROM linode.images.images WHERE label = {{ label }} OR size > {{ size }} ORDER BY id";
    let out = sandbox.imageql(&["--var", "label=ci-runner' OR 'a'='a", "--var", "size=1e9", "-o", "csv", "-e", bare]);
    assert_eq!(out.ok(), "id\n");
    let out = sandbox.imageql(&["--var", "label=ci-runner", "--var", "size=1e9", "-o", "csv", "-e", bare]).ok();
    assert_eq!(out, "id\nprivate/1003\n");
    let ordered = "SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY {{ order | raw }} LIMIT 1";
    assert_eq!(sandbox.imageql(&["--var", "order=id DESC", "-o", "csv", "-e", ordered]).ok(), "id\nprivate/1014\n");
    let defaulted =
        "SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public AND size > {{ min | default(2000) }}";
    let expected = sandbox.rows("SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public AND size > 2000");
    assert_eq!(sandbox.imageql(&["-o", "csv", "-e", defaulted]).ok(), format!("n\n{}\n", expected[0]["n"]));
    let wrong = sandbox.imageql(&["-e", "SELECT {{ x | upper }}"]).fails();
    assert!(wrong.contains("is not a placeholder"), "{wrong}");
}

#[test]
fn scripts_report_the_file_and_line_of_the_failing_statement() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.sql");
    let second = dir.path().join("second.sql");
    std::fs::write(&first, "SELECT 1 AS a;\n").unwrap();
    std::fs::write(
        &second,
        "/* a comment\n   over lines */\nSELECT 2 AS b;\nSELECT *\nFROM linode.images.nowhere;\nSELECT 3;\n",
    )
    .unwrap();
    let run = sandbox.imageql(&["-o", "csv", "-f", first.to_str().unwrap(), "-f", second.to_str().unwrap()]);
    let stderr = run.fails();
    assert_eq!(run.stdout(), "a\n1\n\nb\n2\n", "csv result sets are separated by a blank line");
    assert!(stderr.contains(&format!("{}:4:", second.display())), "{stderr}");
}

#[tokio::test]
async fn several_results_are_told_apart_in_every_format() {
    let sandbox = SandboxProcess::start(&[]);
    let (_, regions) = sandbox.client().get("/regions?page_size=500", Some(TOKEN), None).await;
    let regions = regions["data"].as_array().unwrap().len();
    let script = [
        "-e",
        "SELECT id FROM linode.regions.regions",
        "-e",
        "CREATE TABLE t AS SELECT 1 AS x",
        "-e",
        "SELECT 1 AS one",
    ];
    let run = |format: &str| sandbox.imageql(&[&["-o", format][..], &script[..]].concat()).ok();

    // table: each result ends with its row count and a blank line, as in psql.
    let table = run("table");
    let counts: Vec<&str> = table.lines().filter(|l| l.starts_with('(')).collect();
    assert_eq!(counts, [format!("({regions} rows)"), "(1 row)".to_string()], "{table}");
    assert!(table.ends_with("+\n(1 row)\n\n") && table.contains(&format!("({regions} rows)\n\n+")), "{table}");
    // A single statement prints its table alone.
    assert!(!sandbox.imageql(&["-e", "SELECT 1 AS one"]).ok().contains("row"));

    // csv: a blank line between result sets, each with its header.
    let csv = run("csv");
    let sets: Vec<Vec<&str>> = csv.trim_end().split("\n\n").map(|set| set.lines().collect()).collect();
    assert_eq!(sets.len(), 2, "{csv}");
    assert_eq!((sets[0][0], sets[0].len()), ("id", regions + 1));
    assert_eq!(sets[1], ["one", "1"]);

    // json: one array per result set and line.
    let json_sets: Vec<Value> = run("json").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(json_sets.iter().map(|s| s.as_array().unwrap().len()).collect::<Vec<_>>(), [regions, 1]);
}

#[tokio::test]
async fn the_cost_view_matches_a_hand_computation() {
    let sandbox = SandboxProcess::start(&[]);
    let rows = sandbox
        .rows("SELECT id, type, billed_mb, gb, monthly_usd, hourly_usd FROM linode.images.storage_costs ORDER BY id");

    // By hand: private/1004 is 2890 MB in 4 regions = 11560 MB = 11.2890625 GB;
    // at $0.10 per GB-month that is $1.12890625 a month, billed in cents, and $0.00154645 an
    // hour (730 h).
    let golden = rows.iter().find(|r| r["id"] == "private/1004").unwrap();
    assert_eq!(
        golden,
        &json!({"id": "private/1004", "type": "manual", "billed_mb": 11560, "gb": 11.2891, "monthly_usd": 1.13, "hourly_usd": 0.001546})
    );
    // Recovery images are free.
    let recovery = rows.iter().find(|r| r["id"] == "private/1012").unwrap();
    assert_eq!((recovery["monthly_usd"].clone(), recovery["hourly_usd"].clone()), (json!(0.0), json!(0.0)));

    // Every row, against the API's own numbers: size times the regions whose copy is
    // available, so an image with no copy yet, or a copy still replicating, bills nothing
    // there (though its total_size counts it).
    let (_, list) = sandbox.client().get("/images?page_size=500", Some(TOKEN), Some(r#"{"is_public": false}"#)).await;
    let images = list["data"].as_array().unwrap();
    assert_eq!(rows.len(), images.len());
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let uncopied = images.iter().find(|i| i["regions"] == json!([])).expect("the seed has an image being captured");
    assert!(uncopied["total_size"].as_f64().unwrap() > 0.0);
    for image in images {
        let row = rows.iter().find(|r| r["id"] == image["id"]).unwrap();
        let copies = image["regions"].as_array().unwrap().iter().filter(|r| r["status"] == "available").count();
        let total = image["size"].as_f64().unwrap() * copies as f64;
        let monthly = if image["type"] == "automatic" { 0.0 } else { total / 1024.0 * 0.10 };
        assert_eq!(row["billed_mb"].as_f64().unwrap(), total);
        assert_eq!(row["gb"].as_f64().unwrap(), round(total / 1024.0, 4), "{row}");
        assert_eq!(row["monthly_usd"].as_f64().unwrap(), round(monthly, 2), "{row}");
        assert_eq!(row["hourly_usd"].as_f64().unwrap(), round(monthly / 730.0, 6), "{row}");
    }
}

#[test]
fn copy_exports_csv_json_and_parquet() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();
    // Lists spelled out as text for CSV.
    let query = "SELECT id, label, size, tags, created FROM linode.images.images WHERE NOT is_public ORDER BY id";
    let flat = "SELECT id, label, size, array_to_string(tags, ' ') AS tags FROM linode.images.images WHERE NOT is_public ORDER BY id";
    for (name, query) in [("images.csv", flat), ("images.json", query), ("images.parquet", query)] {
        // The file is the result: nothing on stdout to mix with other results.
        let out = sandbox.imageql(&["-o", "csv", "-e", &format!("COPY ({query}) TO '{}'", file(name))]).ok();
        assert_eq!(out, "", "{name}");
    }
    let told = sandbox.imageql(&["-e", &format!("COPY ({flat}) TO '{}'", file("told.csv"))]).ok();
    assert_eq!(told, "COPY 14\n");
    let csv = std::fs::read_to_string(file("images.csv")).unwrap();
    assert!(csv.starts_with("id,label,size,tags\nprivate/1001,golden-web-2024,2650,golden prod web\n"), "{csv}");
    // Lists written as they are go into CSV as JSON text.
    sandbox.imageql(&["-e", &format!("COPY ({query}) TO '{}'", file("nested.csv"))]).ok();
    let nested = std::fs::read_to_string(file("nested.csv")).unwrap();
    assert!(nested.contains(r#"private/1001,golden-web-2024,2650,"[""golden"",""prod"",""web""]","#), "{nested}");
    let json: Vec<Value> = std::fs::read_to_string(file("images.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[0]["tags"], json!(["golden", "prod", "web"]));
    // Timestamps as every output format writes them, in JSON and CSV files alike.
    assert_eq!(json[0]["created"], json!("2024-03-11T09:14:22Z"));
    assert!(nested.contains(",2024-03-11T09:14:22Z\n"), "{nested}");
    let parquet = std::fs::read(file("images.parquet")).unwrap();
    assert_eq!(&parquet[..4], b"PAR1");
    let back = sandbox
        .imageql(&[
            "-o",
            "csv",
            "-e",
            &format!("CREATE EXTERNAL TABLE back STORED AS PARQUET LOCATION '{}'", file("images.parquet")),
            "-e",
            "SELECT count(*) AS n, sum(size) AS mb FROM back",
        ])
        .ok();
    // The sizes of the 14 seeded private images add up to 35820 MB.
    assert_eq!(back, "n,mb\n14,35820\n");
}

#[test]
fn timestamps_intervals_and_money_read_the_same_in_every_format() {
    let sandbox = SandboxProcess::start(&[]);
    let sql = "SELECT i.id, i.created, i.expiry - i.created AS lifetime, c.monthly_usd
               FROM images i JOIN storage_costs c ON c.id = i.id
               WHERE i.id IN ('private/1004', 'private/1012') ORDER BY i.id";
    for format in ["table", "json", "ndjson", "csv", "text"] {
        let out = sandbox.imageql(&["-o", format, "-e", sql]).ok();
        for shown in ["2025-02-03T11:30:00Z", "7 days", "1.13", "0.00"] {
            assert!(out.contains(shown), "-o {format} shows {shown}: {out}");
        }
        assert!(!out.contains("PT604800S") && !out.contains("1.1289"), "{out}");
    }
    // Sums of money stay exact cents, and round() keeps them money.
    let total = sandbox.imageql(&["-o", "csv", "-e", "SELECT sum(monthly_usd) AS usd FROM storage_costs"]).ok();
    let usd = total.lines().nth(1).unwrap();
    assert!(usd.split_once('.').is_some_and(|(_, cents)| cents.len() == 2), "{total}");
}

#[test]
fn output_dir_writes_each_result_set_to_a_file_of_its_own() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let runs = std::cell::Cell::new(0);
    let script_run = |script: &str, format: &str| {
        let path = dir.path().join("script.sql");
        std::fs::write(&path, script).unwrap();
        runs.set(runs.get() + 1);
        let out = dir.path().join(format!("out-{}", runs.get()));
        let run = sandbox.imageql(&["-o", format, "--output-dir", out.to_str().unwrap(), "-f", path.to_str().unwrap()]);
        (run, out)
    };
    let files = |out: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let script = "SELECT status, count(*) AS n FROM images WHERE NOT is_public GROUP BY status ORDER BY status;
                  SET imageql.dry_run = on;
                  -- name: private
                  SELECT id FROM images WHERE NOT is_public ORDER BY id;
                  DELETE FROM images WHERE id = 'private/1003';";
    let (run, out) = script_run(script, "csv");
    assert_eq!(run.ok(), "", "nothing on stdout");
    assert_eq!(files(&out), ["1.csv", "4.csv", "private.csv"], "SET writes no file");
    let private = std::fs::read_to_string(out.join("private.csv")).unwrap();
    assert_eq!(private.lines().next(), Some("id"));
    assert_eq!(private.lines().count(), 15, "a header and the 14 private images");
    let preview = std::fs::read_to_string(out.join("4.csv")).unwrap();
    assert!(preview.starts_with("step,request,"), "the dry run's rows: {preview}");
    let (run, out) = script_run(script, "json");
    run.ok();
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(out.join("private.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 14);

    // -e takes a named statement too.
    let out = dir.path().join("from-e");
    sandbox.imageql(&["--output-dir", out.to_str().unwrap(), "-o", "json", "-e", "-- name: n\nSELECT 1 AS n"]).ok();
    assert_eq!(files(&out), ["n.json"]);

    // A failing statement stops the script and leaves no partial file.
    let (run, out) = script_run("SELECT 1 AS one;\nSELECT nope FROM images;\nSELECT 3 AS three;", "csv");
    assert!(run.fails().contains("script.sql:2"), "{}", run.stderr());
    assert_eq!(files(&out), ["1.csv"]);

    // Names that are no plain file name, or that two statements share, run nothing.
    for (script, complaint) in [
        ("-- name: ../escape\nSELECT 1;", "cannot name a file"),
        ("-- name: .hidden\nSELECT 1;", "cannot start with a dot"),
        ("-- name: twice\nSELECT 1;\n-- name: twice\nSELECT 2;", "both write twice.csv"),
    ] {
        let mark = sandbox.log().len();
        let (run, out) = script_run(&format!("SELECT count(*) FROM images;\n{script}"), "csv");
        assert_eq!(run.code(), 2, "{script}: {}", run.stderr());
        assert!(run.stderr().contains(complaint), "{}", run.stderr());
        assert!(!out.exists(), "no directory made");
        assert!(sandbox.log_since(mark).is_empty(), "nothing ran");
    }
}

#[test]
fn the_example_reports_run() {
    for example in ["inventory.sql", "costs.sql", "usage.sql"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(example);
        let run = common::Run(
            std::process::Command::new(common::binary())
                .args(["--sandbox", "-o", "csv", "-f", path.to_str().unwrap()])
                .env_remove("LINODE_TOKEN")
                .output()
                .unwrap(),
        );
        let out = run.ok();
        assert!(out.contains("private/10"), "{example}: {out}");
    }
}
