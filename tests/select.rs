//! SELECT end to end: the real binary against a real sandbox process.

mod common;

use common::{SandboxProcess, TOKEN, normalize};
use serde_json::{Value, json};

/// The list requests (GET /v4/images) among `log`.
fn list_requests(log: &[Value]) -> Vec<&Value> {
    log.iter().filter(|r| r["method"] == "GET" && r["path"] == "/v4/images").collect()
}

fn query(where_clause: &str) -> String {
    format!(
        "SELECT id, label, size, status, type, tags, is_public, vendor FROM linode.images.images WHERE {where_clause} ORDER BY id"
    )
}

/// Runs `sql` with and without pushdown; returns the rows and the requests of the pushed run.
fn both_ways(sandbox: &SandboxProcess, sql: &str) -> (Vec<Value>, Vec<Value>) {
    let mark = sandbox.log().len();
    let pushed = sandbox.imageql(&["-o", "ndjson", "-e", sql]).rows();
    let requests = sandbox.log_since(mark);
    let local = sandbox.imageql(&["--no-pushdown", "-o", "ndjson", "-e", sql]).rows();
    assert_eq!(pushed, local, "pushdown changed the result of {sql}");
    (pushed, requests)
}

#[test]
fn predicates_become_the_x_filter_and_change_no_result() {
    let sandbox = SandboxProcess::start(&[]);
    let cases: Vec<(&str, Value)> = vec![
        ("label = 'golden-web-2024'", json!({"label": "golden-web-2024"})),
        ("status != 'available'", json!({"status": {"+neq": "available"}})),
        ("size > 4000", json!({"size": {"+gt": 4000}})),
        ("size >= 4100", json!({"size": {"+gte": 4100}})),
        ("size < 1000", json!({"size": {"+lt": 1000}})),
        ("size <= 980", json!({"size": {"+lte": 980}})),
        ("2000 < size", json!({"size": {"+gt": 2000}})),
        (
            "status IN ('creating', 'pending_upload')",
            json!({"+or": [{"status": "creating"}, {"status": "pending_upload"}]}),
        ),
        ("size BETWEEN 1000 AND 3000", json!({"+and": [{"size": {"+gte": 1000}}, {"size": {"+lte": 3000}}]})),
        (
            "(size > 4000 OR label = 'ci-runner') AND NOT is_public",
            json!({"+and": [{"+or": [{"size": {"+gt": 4000}}, {"label": "ci-runner"}]}, {"is_public": false}]}),
        ),
        ("is_public", json!({"is_public": true})),
        ("deprecated", json!({"deprecated": true})),
        ("NOT deprecated AND is_public", json!({"+and": [{"deprecated": false}, {"is_public": true}]})),
        ("array_has(tags, 'prod')", json!({"tags": "prod"})),
        ("label LIKE '%web%'", json!({"label": {"+contains": "web"}})),
        ("label ILIKE '%WEB%'", json!({"label": {"+contains": "WEB"}})),
        ("vendor != 'Debian'", json!({"vendor": {"+neq": "Debian"}})),
        ("type = 'automatic' OR array_has(tags, 'ci')", json!({"+or": [{"type": "automatic"}, {"tags": "ci"}]})),
        ("array_has_all(tags, ['golden', 'web'])", json!({"+and": [{"tags": "golden"}, {"tags": "web"}]})),
        ("array_has_any(tags, make_array('db', 'ci'))", json!({"+or": [{"tags": "db"}, {"tags": "ci"}]})),
    ];
    for (clause, expected) in cases {
        let (rows, requests) = both_ways(&sandbox, &query(clause));
        assert!(!rows.is_empty(), "{clause}: the seed should match some images");
        let lists = list_requests(&requests);
        assert_eq!(lists.len(), 1, "{clause}: one page expected, got {requests:?}");
        let sent: Value = serde_json::from_str(lists[0]["x_filter"].as_str().expect("an X-Filter was sent")).unwrap();
        assert_eq!(normalize(&sent), normalize(&expected), "{clause}");
    }
}

#[test]
fn predicates_the_api_cannot_evaluate_are_not_sent() {
    let sandbox = SandboxProcess::start(&[]);
    for clause in [
        "description = ''",
        "length(label) > 12",
        "created > TIMESTAMP '2025-01-01 00:00:00'",
        "label NOT LIKE '%web%'",
    ] {
        let (rows, requests) = both_ways(&sandbox, &query(clause));
        assert!(!rows.is_empty(), "{clause}");
        let lists = list_requests(&requests);
        assert_eq!(lists.len(), 1);
        assert_eq!(lists[0]["x_filter"], Value::Null, "{clause}");
    }
}

#[test]
fn like_patterns_with_escapes_stay_local() {
    let sandbox = SandboxProcess::start(&[]);
    let mark = sandbox.log().len();
    let sql = r"SELECT id FROM linode.images.images WHERE label LIKE 'ops'' tool%' OR label LIKE 'golden\_%'";
    let rows = sandbox.imageql(&["-o", "ndjson", "-e", sql]).rows();
    assert_eq!(rows, vec![json!({"id": "private/1008"})], "the escaped quote matches \"ops' toolbox\"");
    let requests = sandbox.log_since(mark);
    assert_eq!(list_requests(&requests)[0]["x_filter"], Value::Null, "a backslash in LIKE is not pushed down");
    let (rows, _) = both_ways(&sandbox, &query(r"label LIKE 'ci\-runner'"));
    assert_eq!(rows.len(), 1);
}

#[test]
fn id_predicates_fetch_single_images() {
    let sandbox = SandboxProcess::start(&[]);
    let (rows, requests) = both_ways(&sandbox, &query("id = 'private/1001'"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["label"], "golden-web-2024");
    let paths: Vec<&str> = requests.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/v4/images/private%2F1001"]);

    let (rows, requests) = both_ways(&sandbox, &query("imageId = 'linode/debian12'"));
    assert_eq!(rows.len(), 1);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["path"], "/v4/images/linode%2Fdebian12");

    let (rows, requests) = both_ways(&sandbox, &query("id IN ('private/1001', 'linode/debian12', 'private/999999')"));
    assert_eq!(rows.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["linode/debian12", "private/1001"]);
    let mut paths: Vec<&str> = requests.iter().map(|r| r["path"].as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(paths, ["/v4/images/linode%2Fdebian12", "/v4/images/private%2F1001", "/v4/images/private%2F999999"]);
    assert!(requests.iter().any(|r| r["status"] == 404));

    // A missing id is no row, not an error; other predicates still apply.
    let mark = sandbox.log().len();
    let out = sandbox.imageql(&["-o", "ndjson", "-e", &query("id = 'private/424242'")]).ok();
    assert_eq!(out, "");
    assert_eq!(sandbox.log_since(mark).len(), 1);
    let (rows, _) = both_ways(&sandbox, &query("id = 'private/1001' AND size > 100000"));
    assert!(rows.is_empty());
    let (rows, requests) =
        both_ways(&sandbox, &query("id IN ('private/1001', 'private/1002') AND imageId = 'private/1002'"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "private/1002");
    assert_eq!(requests.len(), 1, "only the ids every predicate allows are fetched");
}

/// `id IN (…)` over `count` ids of the account, the last one missing.
fn ids_in(sandbox: &SandboxProcess, count: usize) -> String {
    let mut ids: Vec<String> = sandbox
        .rows(&format!("SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id LIMIT {}", count - 1))
        .iter()
        .map(|row| format!("'{}'", row["id"].as_str().unwrap()))
        .collect();
    ids.push("'private/999999'".into());
    format!("id IN ({})", ids.join(", "))
}

#[test]
fn many_ids_are_listed_when_the_listing_is_fewer_requests() {
    // 1 254 images: 3 pages of 500, 13 of 100.
    let sandbox = SandboxProcess::start(&["--seed-images", "1200"]);
    let (twelve, six, four) = (ids_in(&sandbox, 12), ids_in(&sandbox, 6), ids_in(&sandbox, 4));

    let (rows, requests) = both_ways(&sandbox, &query(&format!("{twelve} AND is_public = false")));
    assert_eq!(rows.len(), 11, "every id but the missing one");
    assert_eq!(list_requests(&requests).len(), 3, "{requests:?}");
    assert_eq!(requests.len(), 3, "no lookups: {requests:?}");

    // Narrower predicates on the same ids keep only what every one allows.
    let first_two = twelve.split(", ").take(2).collect::<Vec<_>>().join(", ").replace("id IN (", "");
    let (rows, _) = both_ways(&sandbox, &query(&format!("{twelve} AND id IN ({first_two})")));
    assert_eq!(rows.len(), 2);

    // Six ids against 13 pages of 100: the first page decides, then six lookups.
    let mark = sandbox.log().len();
    let rows = sandbox.imageql(&["--page-size", "100", "-o", "ndjson", "-e", &query(&six)]).rows();
    assert_eq!(rows.len(), 5);
    let requests = sandbox.log_since(mark);
    assert_eq!(list_requests(&requests).len(), 1, "{requests:?}");
    assert_eq!(requests.len(), 7, "{requests:?}");

    // Four ids go out at once, as fast as one page: no listing is asked.
    let mark = sandbox.log().len();
    assert_eq!(sandbox.rows(&query(&four)).len(), 3);
    let requests = sandbox.log_since(mark);
    assert!(list_requests(&requests).is_empty(), "{requests:?}");
    assert_eq!(requests.len(), 4);

    // EXPLAIN names both ways until the listing's first page is known, then the one taken.
    let explain = format!("EXPLAIN {}", query(&twelve));
    let mark = sandbox.log().len();
    let out = sandbox.imageql(&["-o", "text", "-e", &explain]).ok();
    assert!(out.contains("… (12 requests); or instead, if it has fewer than 12 pages"), "{out}");
    assert!(sandbox.log_since(mark).is_empty(), "EXPLAIN made requests");
    let out = sandbox.imageql(&["-o", "text", "-e", &query(&twelve), "-e", &explain]).ok();
    assert!(
        out.contains(
            "GET /images?page=1..&page_size=500, served from the cache: 3 pages are fewer requests than 12 lookups"
        ),
        "{out}"
    );
    let out = sandbox
        .imageql(&["--page-size", "100", "-o", "text", "-e", &query(&six), "-e", &format!("EXPLAIN {}", query(&six))])
        .ok();
    assert!(out.contains("6 lookups are fewer requests than the 13 pages of a listing"), "{out}");
}

#[test]
fn limit_shrinks_the_pages_only_when_every_filter_is_exact() {
    let sandbox = SandboxProcess::start(&["--seed-images", "100"]);
    let mark = sandbox.log().len();
    let rows = sandbox.rows("SELECT id FROM linode.images.images WHERE is_public = false LIMIT 3");
    assert_eq!(rows.len(), 3);
    let requests = sandbox.log_since(mark);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["query"], "page=1&page_size=25");

    let mark = sandbox.log().len();
    let rows = sandbox.rows("SELECT id FROM linode.images.images WHERE label LIKE '%gen%' LIMIT 3");
    assert_eq!(rows.len(), 3);
    let requests = sandbox.log_since(mark);
    assert_eq!(requests[0]["query"], "page=1&page_size=500");

    let mark = sandbox.log().len();
    let rows =
        sandbox.imageql(&["--no-pushdown", "-o", "ndjson", "-e", "SELECT id FROM linode.images.images LIMIT 3"]).rows();
    assert_eq!(rows.len(), 3);
    let requests = sandbox.log_since(mark);
    assert!(requests.iter().all(|r| r["x_filter"].is_null()), "{requests:?}");
    assert_eq!(requests[0]["query"], "page=1&page_size=500", "without pushdown the API sees no limit");
}

#[tokio::test]
async fn a_thousand_images_page_through_exactly_once_in_api_order() {
    let sandbox = SandboxProcess::start(&["--seed-images", "1000"]);
    let expected: Vec<String> =
        sandbox.client().all_images(Some(TOKEN)).await.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(expected.len(), 14 + 1000 + 40);
    let mark = sandbox.log().len();
    let out = sandbox.imageql(&["--page-size", "25", "-o", "csv", "-e", "SELECT id FROM linode.images.images"]).ok();
    let ids: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(ids, expected);
    let mut pages: Vec<String> = sandbox
        .log_since(mark)
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 200);
            r["query"].as_str().unwrap().to_string()
        })
        .collect();
    pages.sort();
    let mut wanted: Vec<String> = (1..=43).map(|p| format!("page={p}&page_size=25")).collect();
    wanted.sort();
    assert_eq!(pages, wanted, "each of the 43 pages exactly once");
}

#[test]
fn tokens_decide_what_is_visible() {
    let sandbox = SandboxProcess::start(&[]);
    let sql = "SELECT count(*) AS n, sum(CASE WHEN is_public THEN 0 ELSE 1 END) AS private FROM linode.images.images";
    let anonymous = sandbox.imageql_with_token(None, &["-o", "ndjson", "-e", sql]).rows();
    assert_eq!(anonymous, vec![json!({"n": 40, "private": 0})]);
    let owner = sandbox.imageql(&["-o", "ndjson", "-e", sql]).rows();
    assert_eq!(owner, vec![json!({"n": 54, "private": 14})]);

    let wrong = sandbox.imageql_with_token(Some("not-the-token-s3cret"), &["-e", sql]);
    let stderr = wrong.fails();
    assert!(stderr.contains("401") && stderr.contains("Invalid Token"), "{stderr}");
    assert!(stderr.contains("LINODE_TOKEN"), "{stderr}");
    assert!(!stderr.contains("s3cret") && !wrong.stdout().contains("s3cret"), "the token must never be printed");
    assert_eq!(wrong.stdout(), "");
}

#[test]
fn quotes_and_braces_in_values_cannot_change_the_filter() {
    let sandbox = SandboxProcess::start(&[]);
    for evil in [r#"x","is_public":true,"label":"y"#, r#"x"}, {"+or": [{"size": {"+gt": 0}}]}"#, r"\", "line\nbreak"] {
        let sql = format!("SELECT id FROM linode.images.images WHERE label = '{}'", evil.replace('\'', "''"));
        let (rows, requests) = both_ways(&sandbox, &sql);
        assert!(rows.is_empty(), "{evil}");
        let sent: Value = serde_json::from_str(list_requests(&requests)[0]["x_filter"].as_str().unwrap()).unwrap();
        assert_eq!(sent, json!({ "label": evil }));
    }
    let (rows, _) = both_ways(&sandbox, "SELECT id FROM linode.images.images WHERE label = 'ops'' toolbox'");
    assert_eq!(rows, vec![json!({"id": "private/1008"})]);
}

#[test]
fn explain_shows_the_requests_and_sends_none() {
    let sandbox = SandboxProcess::start(&[]);
    let mark = sandbox.log().len();
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN SELECT label FROM linode.images.images WHERE size > 2000 AND NOT is_public",
        ])
        .ok();
    assert!(out.contains("GET /images?page=1..&page_size=500"), "{out}");
    assert!(out.contains(r#"X-Filter: {"+and":[{"size":{"+gt":2000}},{"is_public":false}]}"#), "{out}");
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN SELECT label FROM linode.images.images WHERE id IN ('private/1', 'linode/x')",
        ])
        .ok();
    assert!(out.contains("GET /images/private%2F1, GET /images/linode%2Fx"), "{out}");
    assert!(sandbox.log_since(mark).is_empty(), "EXPLAIN made requests");
}

#[test]
fn sql_runs_in_full_over_the_api_rows() {
    let sandbox = SandboxProcess::start(&[]);
    let sql = "WITH r AS (SELECT id, unnest(regions) AS region FROM linode.images.images WHERE NOT is_public)
               SELECT region['region'] AS region, count(*) AS images,
                      rank() OVER (ORDER BY count(*) DESC, region['region']) AS rnk
               FROM r GROUP BY region['region'] ORDER BY rnk";
    let rows = sandbox.imageql(&["-o", "ndjson", "-e", sql]).rows();
    assert_eq!(rows[0], json!({"region": "us-east", "images": 5, "rnk": 1}));
    assert_eq!(rows.len(), 6);

    let join = "SELECT p.vendor, count(*) AS n FROM linode.images.images p
                JOIN linode.images.images q ON p.vendor = q.vendor AND p.id <> q.id
                WHERE p.is_public AND q.is_public AND p.vendor = 'Alpine' GROUP BY p.vendor";
    // Five Alpine images: each pairs with the four others.
    assert_eq!(sandbox.imageql(&["-o", "ndjson", "-e", join]).rows(), vec![json!({"vendor": "Alpine", "n": 20})]);

    // The seeded recovery images were made 96 and 44 hours before the sandbox started.
    let times = "SELECT id, expiry - created AS lifetime FROM linode.images.images
                 WHERE type = 'automatic' AND expiry > now() + INTERVAL '4 days'";
    let rows = sandbox.imageql(&["-o", "ndjson", "-e", times]).rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], "private/1012");
    assert_eq!(rows[0]["lifetime"], "7 days", "in days and hours, not ISO 8601's PT604800S");
}

#[test]
fn every_output_format_is_parseable() {
    let sandbox = SandboxProcess::start(&[]);
    let sql = "SELECT id, tags, regions, size FROM linode.images.images WHERE id IN ('private/1001', 'private/1010') ORDER BY id";
    let json: Value = serde_json::from_str(&sandbox.imageql(&["-o", "json", "-e", sql]).ok()).unwrap();
    assert_eq!(json[0]["regions"][1], json!({"region": "eu-west", "status": "available"}));
    assert_eq!(json[1]["tags"], json!(["golden", "web"]));

    let csv = sandbox.imageql(&["-o", "csv", "-e", sql]).ok();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,tags,regions,size"));
    assert_eq!(
        lines.next().unwrap(),
        r#"private/1001,"[""golden"",""prod"",""web""]","[{""region"":""us-east"",""status"":""available""},{""region"":""eu-west"",""status"":""available""}]",2650"#
    );

    let text = sandbox.imageql(&["-o", "text", "-e", sql]).ok();
    assert_eq!(text.lines().nth(1), Some(r#"private/1010	["golden","web"]	[]	3010"#));

    let table = sandbox.imageql(&["-e", "SELECT id FROM linode.images.images WHERE id = 'private/1'"]).ok();
    assert!(table.contains("| id |"), "an empty result still shows its columns: {table}");

    let empty =
        sandbox.imageql(&["-o", "json", "-e", "SELECT id FROM linode.images.images WHERE id = 'private/1'"]).ok();
    assert_eq!(empty.trim(), "[]");
}

#[test]
fn user_errors_are_reported_clearly() {
    let sandbox = SandboxProcess::start(&[]);
    let stderr = sandbox.imageql(&["-e", "SELECT nope FROM linode.images.images"]).fails();
    assert!(stderr.contains("No field named nope"), "{stderr}");

    let stderr = sandbox.imageql(&["-e", "SELECT id FROM linode.images.images WHER size > 1"]).fails();
    assert!(stderr.contains("syntax error") && stderr.contains("Line: 1"), "{stderr}");

    let stderr = sandbox.imageql(&["-e", "SELECT * FROM linode.images.nothing"]).fails();
    assert!(stderr.contains("linode.images.nothing"), "{stderr}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = std::process::Command::new(common::binary())
        .args(["--api-url", &format!("http://127.0.0.1:{port}/v4"), "-e", "SELECT id FROM linode.images.images"])
        .output()
        .unwrap();
    let run = common::Run(run);
    let stderr = run.fails();
    assert!(stderr.contains(&format!("http://127.0.0.1:{port}/v4/images")), "{stderr}");
    assert!(stderr.contains("--sandbox"), "{stderr}");

    let usage = sandbox.imageql(&["--output", "yaml", "-e", "SELECT 1"]);
    assert_eq!(usage.code(), 2);

    // The token never travels over plain http off this machine.
    let run = common::Run(
        std::process::Command::new(common::binary())
            .args(["--api-url", "http://api.example.com/v4", "-e", "SELECT id FROM linode.images.images"])
            .env("LINODE_TOKEN", "real-s3cret")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code(), 2);
    assert!(run.stderr().contains("plain http") && !run.stderr().contains("s3cret"), "{}", run.stderr());
}

#[test]
fn scripts_stop_at_the_first_failing_statement_with_its_line() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("report.sql");
    std::fs::write(
        &script,
        "-- two good statements, then a bad one\nSELECT 1 AS one;\nSELECT 'a;b' AS two;\n\nSELECT nope\n  FROM linode.images.images;\nSELECT 3 AS never;\n",
    )
    .unwrap();
    let run = sandbox.imageql(&["-o", "csv", "-f", script.to_str().unwrap()]);
    let stderr = run.fails();
    assert!(stderr.contains(&format!("{}:5:", script.display())), "{stderr}");
    assert_eq!(run.stdout(), "one\n1\n\ntwo\na;b\n");
}

#[test]
fn the_readme_example_runs_on_the_in_process_sandbox() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/inventory.sql");
    let run = common::Run(
        std::process::Command::new(common::binary())
            .args(["--sandbox", "-f", examples])
            .env_remove("LINODE_TOKEN")
            .output()
            .unwrap(),
    );
    let out = run.ok();
    assert!(out.contains("golden-db-2024"), "{out}");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn provider_files_decide_what_is_pushed_down() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    copy_tree(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/providers")), dir.path());
    let service = dir.path().join("linode/services/images.yaml");
    let text = std::fs::read_to_string(&service).unwrap();
    // The first filter list is label's: without it, label predicates stay local.
    std::fs::write(&service, text.replacen("filter: [eq, neq, contains]", "", 1)).unwrap();
    let providers = dir.path().to_str().unwrap();

    let sql = "SELECT id FROM linode.images.images WHERE label = 'ci-runner'";
    let mark = sandbox.log().len();
    let rows = sandbox.imageql(&["--providers", providers, "-o", "ndjson", "-e", sql]).rows();
    assert_eq!(rows, vec![json!({"id": "private/1003"})]);
    let requests = sandbox.log_since(mark);
    assert_eq!(requests[0]["x_filter"], Value::Null);

    std::fs::write(
        &service,
        "id: images\nresources:\n  images:\n    fields: [{name: id, type: text}]\n    methods: {}\n",
    )
    .unwrap();
    // A broken provider file is a mistake on the command line: exit code 2.
    let run = sandbox.imageql(&["--providers", providers, "-e", sql]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.contains("images.yaml") && stderr.contains("text"), "{stderr}");

    std::fs::write(
        &service,
        "id: images\nresources:\n  images:\n    fields: [{name: id, type: string}, {name: label, type: string, pattern: '[a-'}]\n    methods: {}\n",
    )
    .unwrap();
    let run = sandbox.imageql(&["--providers", providers, "-e", sql]);
    assert_eq!(run.code(), 2, "provider files that do not load are a usage error");
    let stderr = run.stderr();
    assert!(stderr.contains("images.yaml") && stderr.contains("field `label`: invalid pattern `[a-`"), "{stderr}");
}

#[test]
fn the_sandbox_token_is_configurable() {
    let sandbox = SandboxProcess::start(&["--token", "custom-token"]);
    let sql = "SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public";
    let rows = sandbox.imageql_with_token(Some("custom-token"), &["-o", "ndjson", "-e", sql]).rows();
    assert_eq!(rows, vec![json!({"n": 14})]);
    let stderr = sandbox.imageql_with_token(Some(TOKEN), &["-e", sql]).fails();
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn a_slow_scan_draws_no_progress_when_stderr_is_not_a_terminal() {
    let sandbox = SandboxProcess::start(&["--latency-ms", "1500"]);
    let run = sandbox.imageql(&["-o", "csv", "-e", "SELECT count(*) AS n FROM linode.images.images"]);
    assert_eq!(run.ok(), "n\n54\n");
    assert_eq!(run.stderr(), "", "progress is for terminals only");
}

/// The `GET …/disks` requests among `log`, by path.
fn disk_lists(log: &[Value]) -> Vec<String> {
    let mut paths: Vec<String> = log
        .iter()
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.starts_with("/v4/linode/instances/") && p.ends_with("/disks"))
        .map(str::to_string)
        .collect();
    paths.sort();
    paths
}

#[tokio::test]
async fn joins_and_in_subqueries_pass_parameter_values() {
    let sandbox = SandboxProcess::start(&[]);
    let (status, body) = sandbox.client().get("/linode/instances", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<u64> = body["data"].as_array().unwrap().iter().map(|i| i["id"].as_u64().unwrap()).collect();
    assert!(ids.len() > 1, "the seed has several instances");
    let listed = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let mut expected_paths: Vec<String> = ids.iter().map(|i| format!("/v4/linode/instances/{i}/disks")).collect();
    expected_paths.sort();

    let literal =
        format!("SELECT linodeId, id, label FROM linode.linode.disks WHERE linodeId IN ({listed}) ORDER BY id");
    let expected = sandbox.rows(&literal);
    assert!(expected.len() > ids.len(), "instances have disks: {expected:?}");
    for sql in [
        "SELECT d.linodeId, d.id, d.label FROM linode.linode.instances i \
         JOIN linode.linode.disks d ON d.linodeId = i.id ORDER BY d.id",
        "SELECT linodeId, id, label FROM linode.linode.disks \
         WHERE linodeId IN (SELECT id FROM linode.linode.instances) ORDER BY id",
        // The scan on the left, the values on the right.
        "SELECT d.linodeId, d.id, d.label FROM linode.linode.disks d \
         JOIN linode.linode.instances i ON i.id = d.linodeId ORDER BY d.id",
    ] {
        let mark = sandbox.log().len();
        assert_eq!(sandbox.rows(sql), expected, "{sql}");
        let log = sandbox.log_since(mark);
        assert_eq!(disk_lists(&log), expected_paths, "one disks request per instance for {sql}");
        let instance_lists = log.iter().filter(|r| r["path"] == "/v4/linode/instances").count();
        assert_eq!(instance_lists, 1, "the instances are listed once for {sql}");
    }

    // Values that come from a filtered side: only those instances are asked.
    let first = ids[0];
    let rows = sandbox.rows(&format!(
        "SELECT d.id FROM linode.linode.instances i JOIN linode.linode.disks d ON d.linodeId = i.id \
         WHERE i.label = (SELECT label FROM linode.linode.instances WHERE id = {first}) ORDER BY d.id"
    ));
    let of_first: Vec<Value> =
        expected.iter().filter(|r| r["linodeId"] == first).map(|r| json!({"id": r["id"]})).collect();
    assert_eq!(rows, of_first);

    let mark = sandbox.log().len();
    let out = sandbox
        .imageql(&[
            "-o",
            "text",
            "-e",
            "EXPLAIN SELECT d.id FROM linode.linode.instances i JOIN linode.linode.disks d ON d.linodeId = i.id",
        ])
        .ok();
    assert!(
        out.contains("GET /linode/instances/{linodeId}/disks?page=1..&page_size=500 for each linodeId from id of linode.linode.instances"),
        "{out}"
    );
    assert!(sandbox.log_since(mark).is_empty(), "EXPLAIN made requests");

    // Disks preserved by an outer join would need every instance's disks: still refused.
    let err = sandbox
        .imageql(&[
            "-e",
            "SELECT d.id FROM linode.linode.disks d LEFT JOIN linode.linode.instances i ON i.id = d.linodeId",
        ])
        .fails();
    assert!(err.contains("cannot be read without linodeId") && err.contains("join it on that column"), "{err}");
}

/// The rows of a CSV file, every cell as text.
fn csv_rows(path: &std::path::Path, columns: &[&str]) -> Vec<Vec<String>> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Schema::new(columns.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect::<Vec<_>>());
    let file = std::fs::File::open(path).unwrap();
    let reader =
        datafusion::arrow::csv::ReaderBuilder::new(std::sync::Arc::new(schema)).with_header(true).build(file).unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for row in 0..batch.num_rows() {
            rows.push(
                (0..batch.num_columns())
                    .map(|c| {
                        let column = batch.column(c).as_string::<i32>();
                        if column.is_null(row) { String::new() } else { column.value(row).to_string() }
                    })
                    .collect(),
            );
        }
    }
    rows
}

#[tokio::test]
async fn copy_writes_nested_columns_as_json_and_never_half_a_file() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("x.csv");
    let sql =
        format!("COPY (SELECT id, tags, regions FROM linode.images.images ORDER BY id) TO '{}'", target.display());
    sandbox.imageql(&["-e", &sql]).ok();
    let mut images = sandbox.client().all_images(Some(TOKEN)).await;
    images.sort_by_key(|i| i["id"].as_str().unwrap().to_string());
    let rows = csv_rows(&target, &["id", "tags", "regions"]);
    assert_eq!(rows.len(), images.len(), "every row");
    for (row, image) in rows.iter().zip(&images) {
        assert_eq!(row[0], image["id"].as_str().unwrap());
        let tags: Value = serde_json::from_str(&row[1]).unwrap_or_else(|e| panic!("{}: {e}", row[1]));
        assert_eq!(tags, image["tags"], "{}", row[0]);
        let Some(regions) = image["regions"].as_array() else {
            assert_eq!(row[2], "", "no regions, an empty cell: {}", row[0]);
            continue;
        };
        let written: Value = serde_json::from_str(&row[2]).unwrap_or_else(|e| panic!("{}: {e}", row[2]));
        let expected: Vec<Value> =
            regions.iter().map(|r| json!({"region": r["region"], "status": r["status"]})).collect();
        assert_eq!(written, json!(expected), "{}", row[0]);
    }

    // A directory that does not exist: refused before anything is read, nothing created.
    let missing = dir.path().join("no/such/dir/y.csv");
    let err = sandbox
        .imageql(&["-e", &format!("COPY (SELECT id FROM linode.images.images) TO '{}'", missing.display())])
        .fails();
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dir.path().join("no").exists());
    // A query that fails half-way leaves no file, not even an empty one.
    let failing = dir.path().join("z.csv");
    let err = sandbox
        .imageql(&[
            "-e",
            &format!("COPY (SELECT * FROM linode.linode.disks WHERE linodeId = 999999) TO '{}'", failing.display()),
        ])
        .fails();
    assert!(err.contains("404"), "{err}");
    let left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["x.csv"], "only the finished file is left");
}

#[test]
fn region_names_are_the_regions_by_name_in_listings_and_single_reads() {
    let sandbox = SandboxProcess::start(&[]);
    let rows = sandbox.rows("SELECT id, regions, region_names FROM linode.images.images ORDER BY id");
    assert!(rows.iter().any(|r| r["regions"].is_null()), "public images have no regions");
    for row in &rows {
        let expected = match row["regions"].as_array() {
            Some(regions) => json!(regions.iter().map(|r| r["region"].clone()).collect::<Vec<_>>()),
            None => Value::Null,
        };
        assert_eq!(row["region_names"], expected, "{row}");
    }
    let one = sandbox.rows("SELECT region_names FROM linode.images.images WHERE id = 'private/1004'");
    assert_eq!(one, vec![json!({"region_names": ["us-east", "us-iad", "eu-west", "ap-south"]})]);
    let in_region = sandbox.rows("SELECT id FROM images WHERE array_has(region_names, 'eu-west') ORDER BY id");
    let expected: Vec<Value> = rows
        .iter()
        .filter(|r| r["region_names"].as_array().is_some_and(|n| n.contains(&json!("eu-west"))))
        .map(|r| json!({"id": r["id"]}))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(in_region, expected);
}

#[test]
fn short_and_mistyped_table_names_are_resolved_or_explained() {
    let sandbox = SandboxProcess::start(&[]);
    let full = sandbox.rows("SELECT id, size FROM linode.images.images WHERE NOT is_public ORDER BY id");
    assert!(!full.is_empty());
    assert_eq!(sandbox.rows("SELECT id, size FROM images WHERE NOT is_public ORDER BY id"), full);
    assert_eq!(sandbox.rows("SELECT id, size FROM IMAGES.images WHERE NOT is_public ORDER BY id"), full);
    assert!(!sandbox.rows("SELECT * FROM storage_costs").is_empty(), "views too");
    // Short names resolve wherever a full one does: DESCRIBE, SHOW, methods, the history.
    let described = |name: &str| sandbox.imageql(&["-o", "csv", "-e", &format!("DESCRIBE {name}")]).ok();
    assert_eq!(described("images"), described("linode.images.images"));
    assert_eq!(described("storage_costs"), described("linode.images.storage_costs"));
    assert_eq!(described("history.images"), described("linode.history.images"));
    assert_eq!(described("METHOD images.post_image"), described("METHOD linode.images.images.post_image"));
    let methods = |name: &str| sandbox.imageql(&["-o", "csv", "-e", &format!("SHOW METHODS IN {name}")]).ok();
    assert_eq!(methods("images"), methods("linode.images.images"));
    let columns = |name: &str| sandbox.imageql(&["-o", "csv", "-e", &format!("SHOW COLUMNS FROM {name}")]).ok();
    assert_eq!(columns("images"), columns("linode.images.images"));
    assert_eq!(sandbox.rows("SELECT count(*) AS n FROM accounts"), vec![json!({"n": 1})]);
    // …and in changes and EXEC, where a typo gets the nearest name too.
    let exec = |name: &str| {
        let sql = format!("EXPLAIN EXEC {name} @imageId='private/1001', @label='renamed'");
        sandbox.imageql(&["-o", "csv", "-e", &sql]).ok()
    };
    assert_eq!(exec("images.put_image"), exec("linode.images.images.put_image"));
    assert_eq!(exec("images.images.put_image"), exec("linode.images.images.put_image"));
    for typo in ["SHOW METHODS IN imagse", "DELETE FROM imagse WHERE id = 'private/1001'", "EXEC imagse.put_image"] {
        let stderr = sandbox.imageql(&["-e", typo]).fails();
        assert!(stderr.contains("did you mean linode.images.images?"), "{typo}: {stderr}");
    }

    for typo in ["linode.images.imagse", "imagse", "images.imagse"] {
        let mark = sandbox.log().len();
        let stderr = sandbox.imageql(&["-e", &format!("SELECT id FROM {typo}")]).fails();
        assert!(stderr.contains(&format!("unknown table {typo}: did you mean linode.images.images?")), "{stderr}");
        assert!(!stderr.contains("datafusion"), "{stderr}");
        assert!(sandbox.log_since(mark).is_empty());
    }

    // A name of the statement's own, from WITH or CREATE TABLE, is not completed.
    let rows = sandbox.rows("WITH images AS (SELECT 7 AS n) SELECT n FROM images");
    assert_eq!(rows, vec![json!({"n": 7})]);
    let out = sandbox
        .imageql(&["-o", "ndjson", "-e", "CREATE TABLE images AS SELECT 8 AS n", "-e", "SELECT n FROM images"])
        .ok();
    assert_eq!(out.trim(), r#"{"n":8}"#);

    // Two resources with one name: the error lists both full names.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/providers")), dir.path());
    std::fs::write(
        dir.path().join("linode/services/backups.yaml"),
        "id: backups\nresources:\n  images:\n    fields: [{name: id, type: string}]\n    methods: {}\n",
    )
    .unwrap();
    let providers = dir.path().to_str().unwrap();
    let mark = sandbox.log().len();
    let stderr = sandbox.imageql(&["--providers", providers, "-e", "SELECT id FROM images"]).fails();
    assert!(stderr.contains("linode.backups.images, linode.images.images"), "{stderr}");
    assert!(sandbox.log_since(mark).is_empty());
    // …wherever a table is named.
    for statement in ["DESCRIBE images", "SHOW COLUMNS FROM images", "COPY (SELECT id FROM images) TO 'x.csv'"] {
        let stderr = sandbox.imageql(&["--providers", providers, "-e", statement]).fails();
        assert!(
            stderr.contains("several tables have that name: linode.backups.images, linode.images.images"),
            "{stderr}"
        );
    }
    let rows = sandbox
        .imageql(&[
            "--providers",
            providers,
            "-o",
            "ndjson",
            "-e",
            "SELECT id, size FROM images.images WHERE NOT is_public ORDER BY id",
        ])
        .rows();
    assert_eq!(rows, full);
}
