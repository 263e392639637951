//! Account sets: one sandbox hosting several accounts (`--accounts-file`), profiles in both
//! configuration files, and queries over all of them with the `account` column.

mod common;

use std::collections::BTreeMap;

use common::{Run, SandboxProcess};
use serde_json::{Value, json};

struct Accounts {
    sandbox: SandboxProcess,
    home: tempfile::TempDir,
}

impl Accounts {
    /// Three customers of four images each; linode-cli knows acme, globex and a revoked
    /// profile, imageql's file knows initech and a group of the `cust`-omers.
    fn start() -> Accounts {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accounts");
        std::fs::write(&file, "acme:tok-acme\nglobex:tok-globex\ninitech:tok-initech\n").unwrap();
        let sandbox = SandboxProcess::start(&["--accounts-file", file.to_str().unwrap(), "--seed-images", "4"]);
        let home = tempfile::tempdir().unwrap();
        let host = sandbox.origin().trim_start_matches("http://").to_string();
        std::fs::write(
            home.path().join(".linode-cli"),
            format!(
                "[DEFAULT]\ndefault-user = acme\napi_host = {host}\napi_scheme = http\n\n\
                 [acme]\ntoken = tok-acme\n\n[globex]\ntoken = tok-globex\n\n[revoked]\ntoken = tok-revoked\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(home.path().join(".config/imageql")).unwrap();
        std::fs::write(
            home.path().join(".config/imageql/config.toml"),
            format!(
                "[profiles.initech]\ntoken = \"tok-initech\"\napi_url = \"{}\"\n\n\
                 [groups.customers]\nprofiles = [\"acme\", \"glob*\", \"initech\"]\n",
                sandbox.url
            ),
        )
        .unwrap();
        Accounts { sandbox, home }
    }

    fn run(&self, args: &[&str]) -> Run {
        let output = common::imageql_command(self.home.path()).env_remove("LINODE_TOKEN").args(args).output().unwrap();
        Run(output)
    }

    fn rows(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["-o", "ndjson"];
        all.extend(args);
        self.run(&all).rows()
    }
}

fn counts(rows: &[Value]) -> BTreeMap<String, i64> {
    rows.iter().map(|r| (r["account"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap())).collect()
}

#[test]
fn one_query_reads_every_account_of_a_set_with_its_own_token() {
    let accounts = Accounts::start();
    let sql = "SELECT account, count(*) AS n FROM linode.images.images WHERE NOT is_public GROUP BY account";
    let expected: BTreeMap<String, i64> =
        [("acme", 4), ("globex", 4), ("initech", 4)].map(|(a, n)| (a.to_string(), n)).into();
    assert_eq!(counts(&accounts.rows(&["--profile", "acme,globex,initech", "-e", sql])), expected);
    // A group of imageql's file, with a wildcard over linode-cli's users.
    assert_eq!(counts(&accounts.rows(&["--profile", "customers", "-e", sql])), expected);

    // Each account's rows are its own: no row answered from another's cache.
    let rows = accounts.rows(&[
        "--profile",
        "customers",
        "-e",
        "SELECT account, id, created_by FROM linode.images.images WHERE NOT is_public",
    ]);
    assert!(rows.iter().all(|r| r["account"] == r["created_by"]), "{rows:?}");
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 12);

    // A single-account query still works unchanged, and a single profile has no account column.
    let single = accounts.rows(&[
        "--profile",
        "globex",
        "-e",
        "SELECT count(*) AS n FROM linode.images.images WHERE NOT is_public",
    ]);
    assert_eq!(single, [serde_json::json!({"n": 4})]);
}

#[test]
fn a_predicate_on_account_decides_which_accounts_are_called() {
    let accounts = Accounts::start();
    let mark = accounts.sandbox.log().len();
    let rows = accounts.rows(&[
        "--profile",
        "customers",
        "-e",
        "SELECT account, count(*) AS n FROM linode.images.images WHERE account = 'globex' AND NOT is_public GROUP BY account",
    ]);
    assert_eq!(counts(&rows), [("globex".to_string(), 4)].into());
    assert_eq!(accounts.sandbox.log_since(mark).len(), 1, "one account was called");
    let mark = accounts.sandbox.log().len();
    accounts.rows(&[
        "--profile",
        "customers",
        "-e",
        "SELECT id FROM linode.images.images WHERE account IN ('acme', 'initech') AND NOT is_public",
    ]);
    assert_eq!(accounts.sandbox.log_since(mark).len(), 2);
    let mark = accounts.sandbox.log().len();
    accounts.rows(&[
        "--profile",
        "customers",
        "-e",
        "SELECT id FROM linode.images.images WHERE account <> 'acme' AND NOT is_public",
    ]);
    assert_eq!(accounts.sandbox.log_since(mark).len(), 2);
    let explained = accounts
        .run(&[
            "--profile",
            "customers",
            "-o",
            "text",
            "-e",
            "EXPLAIN SELECT id FROM linode.images.images WHERE account = 'initech'",
        ])
        .ok();
    assert!(explained.contains("AccountsExec: 1 accounts (initech)"), "{explained}");
}

#[test]
fn a_failing_account_fails_the_statement_or_is_left_out_when_asked() {
    let accounts = Accounts::start();
    let sql = "SELECT account, count(*) AS n FROM linode.images.images WHERE NOT is_public GROUP BY account";
    let run = accounts.run(&["--all-profiles", "-o", "ndjson", "-e", sql]);
    let stderr = run.fails();
    assert!(stderr.contains("1 account failed") && stderr.contains("revoked: GET"), "{stderr}");
    assert!(stderr.contains("HTTP 401") && !stderr.contains("tok-revoked"), "{stderr}");
    assert!(run.stdout().is_empty(), "never silently fewer rows: {}", run.stdout());

    // No row is answered, whatever the format, and a LIMIT does not hide the failure.
    for sql in ["SELECT account, id FROM linode.images.images", "SELECT account, id FROM linode.images.images LIMIT 1"]
    {
        let run = accounts.run(&["--all-profiles", "-o", "ndjson", "-e", sql]);
        assert!(run.fails().contains("1 account failed"), "{sql}");
        assert!(run.stdout().is_empty(), "{sql}: {}", run.stdout());
    }

    let run = accounts.run(&["--all-profiles", "--accounts-on-error", "skip", "-o", "ndjson", "-e", sql]);
    assert_eq!(
        counts(&run.rows()),
        [("acme", 4), ("globex", 4), ("initech", 4)].map(|(a, n)| (a.to_string(), n)).into()
    );
    assert!(run.stderr().contains("warning: account revoked was left out"), "{}", run.stderr());
    let run = accounts.run(&["--all-profiles", "-o", "ndjson", "-e", "SET accounts_on_error = 'skip'", "-e", sql]);
    assert_eq!(run.rows().len(), 3);

    // A change acts only when every account it reads answers, whatever the session says.
    let mark = accounts.sandbox.log().len();
    for change in [
        "REPLACE linode.images.images SET description = 'x' WHERE NOT is_public",
        "EXPLAIN DELETE FROM linode.images.images WHERE label = 'nothing'",
    ] {
        let run = accounts.run(&["--all-profiles", "--accounts-on-error", "skip", "-e", change]);
        let stderr = run.fails();
        assert!(
            stderr.contains("revoked: GET") && stderr.contains("a change acts only when every account"),
            "{stderr}"
        );
    }
    assert!(changes_since(&accounts, mark).is_empty(), "nothing was sent");

    // SHOW ACCOUNTS: each account with how its requests went, and its budget.
    let run = accounts.run(&[
        "--all-profiles",
        "--accounts-on-error",
        "skip",
        "-o",
        "ndjson",
        "-e",
        sql,
        "-e",
        "SHOW ACCOUNTS",
    ]);
    let shown: Vec<Value> = run.rows().into_iter().filter(|r| r.get("status").is_some()).collect();
    let names: Vec<&str> = shown.iter().map(|r| r["account"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme", "globex", "initech", "revoked"]);
    assert_eq!((&shown[0]["status"], &shown[0]["requests"], &shown[0]["failed"]), (&json!("ok"), &json!(1), &json!(0)));
    assert!(shown[3]["status"].as_str().unwrap().starts_with("failing: GET"), "{shown:?}");
    assert!(shown.iter().all(|r| r["budget_left"].as_i64().is_some_and(|n| n > 0)), "{shown:?}");
    assert!(!run.stdout().contains("tok-"), "no token is shown");

    // A row only one account holds is simply not found in the others.
    let run = accounts.run(&[
        "--profile",
        "customers",
        "-o",
        "ndjson",
        "-e",
        "SELECT account, linodeId FROM linode.linode.disks WHERE linodeId = 12445",
    ]);
    let rows = run.rows();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["account"] == "acme"), "{rows:?}");
    assert!(run.stderr().is_empty(), "{}", run.stderr());
    // A join that matches the account too gives each account's scan that account's values.
    let joined = "SELECT i.account, i.id AS linode, d.id AS disk FROM linode.linode.instances i \
                  JOIN linode.linode.disks d ON d.linodeId = i.id AND d.account = i.account ORDER BY disk";
    let mark = accounts.sandbox.log().len();
    let rows = accounts.rows(&["--profile", "customers", "-e", joined]);
    let owners: BTreeMap<i64, String> =
        rows.iter().map(|r| (r["linode"].as_i64().unwrap(), r["account"].as_str().unwrap().to_string())).collect();
    let disk_reads: Vec<Value> = accounts
        .sandbox
        .log_since(mark)
        .into_iter()
        .filter(|l| l["path"].as_str().unwrap().ends_with("/disks"))
        .collect();
    assert!(!disk_reads.is_empty() && disk_reads.iter().all(|l| l["status"] == 200), "{disk_reads:?}");
    for read in &disk_reads {
        let linode: i64 = read["path"].as_str().unwrap().split('/').nth(4).unwrap().parse().unwrap();
        assert_eq!(read["account"].as_str(), Some(owners[&linode].as_str()), "{read}");
    }
    let mut alone = Vec::new();
    for account in ["acme", "globex", "initech"] {
        let single = joined
            .replace("SELECT i.account,", &format!("SELECT '{account}' AS account,"))
            .replace(" AND d.account = i.account", "");
        alone.extend(accounts.rows(&["--profile", account, "-e", &single]));
    }
    alone.sort_by_key(|r| r["disk"].as_i64());
    assert_eq!(rows, alone);
    // Without the account in the join, the message says what to do.
    let stderr = accounts
        .run(&[
            "--profile",
            "customers",
            "-e",
            "SELECT d.id FROM linode.linode.instances i JOIN linode.linode.disks d ON d.linodeId = i.id",
        ])
        .fails();
    assert!(stderr.contains("gets its linodeId from a join that matches the account too"), "{stderr}");
    // DESCRIBE shows the account column first.
    let described = accounts.rows(&["--profile", "customers", "-e", "DESCRIBE linode.images.images"]);
    assert_eq!((&described[0]["name"], &described[1]["name"]), (&json!("account"), &json!("id")));
}

#[test]
fn an_account_set_names_what_it_cannot_find() {
    let accounts = Accounts::start();
    let run = accounts.run(&["--profile", "acme,nobody", "-e", "SELECT 1"]);
    assert_eq!(run.code(), 2, "a mistake on the command line");
    let stderr = run.stderr();
    assert!(
        stderr.contains("no profile matches \"nobody\"") && stderr.contains("profiles: initech, acme, globex, revoked"),
        "{stderr}"
    );
}

#[test]
fn serve_gives_every_connection_the_account_set() {
    let accounts = Accounts::start();
    let password = accounts.home.path().join("password");
    std::fs::write(&password, "operator-secret\n").unwrap();
    let home = accounts.home.path();
    let config = home.join(".config");
    let cli_config = home.join(".linode-cli");
    let env = [
        ("HOME", home.to_str().unwrap()),
        ("XDG_CONFIG_HOME", config.to_str().unwrap()),
        ("LINODE_CLI_CONFIG", cli_config.to_str().unwrap()),
    ];
    let server = common::ServeProcess::start(
        &accounts.sandbox,
        &["--profile", "customers", "--password-file", password.to_str().unwrap()],
        &env,
    );
    let out = server.psql(
        "operator-secret",
        &["SELECT account, count(*) AS n FROM linode.images.images WHERE NOT is_public GROUP BY account ORDER BY account"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["account|n", "acme|4", "globex|4", "initech|4", "(3 rows)"]);
    // With skip, the client is told of an account left out.
    let broken = common::ServeProcess::start(
        &accounts.sandbox,
        &["--all-profiles", "--password-file", password.to_str().unwrap()],
        &env,
    );
    let out = broken.psql(
        "operator-secret",
        &[
            "SET accounts_on_error = 'skip'",
            "SELECT account, count(*) AS n FROM linode.images.images WHERE NOT is_public GROUP BY account",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARNING:  account revoked was left out of linode.images.images"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.ends_with("|4")).count(), 3);
    // A change over the set through the extended protocol: described with its account
    // column, bound with parameters, each call sent with its row's token.
    let mark = accounts.sandbox.log().len();
    let script = r#"
import os, psycopg
conn = psycopg.connect(os.environ["IMAGEQL_URL"], password="operator-secret", autocommit=True)
cur = conn.cursor()
cur.execute("SELECT account, id FROM linode.images.images WHERE NOT is_public AND account = ANY(%s) ORDER BY id", (["acme", "initech"],))
first = {}
for account, id in cur.fetchall():
    first.setdefault(account, id)
cur.execute("REPLACE linode.images.images SET label = %s || account WHERE id IN (%s, %s) RETURNING account, id, label", ("moved-", first["acme"], first["initech"]))
print([d.name for d in cur.description])
for row in sorted(cur.fetchall()):
    print("|".join(row))
"#;
    let out = std::process::Command::new(common::postgres_clients().join("bin/python"))
        .args(["-c", script])
        .env("IMAGEQL_URL", &server.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "['account', 'id', 'label']");
    assert!(lines[1].starts_with("acme|") && lines[1].ends_with("|moved-acme"), "{stdout}");
    assert!(lines[2].starts_with("initech|") && lines[2].ends_with("|moved-initech"), "{stdout}");
    let puts: Vec<Value> = accounts
        .sandbox
        .log_since(mark)
        .into_iter()
        .filter(|l| l["method"] == "PUT")
        .map(|l| l["account"].clone())
        .collect();
    assert_eq!(puts, [json!("acme"), json!("initech")]);

    // accounts_on_error follows the connection's settings: a rolled-back SET, DISCARD ALL.
    let out = broken.psql(
        "operator-secret",
        &[
            "BEGIN",
            "SET accounts_on_error = 'skip'",
            "ROLLBACK",
            "SHOW accounts_on_error",
            "SET accounts_on_error = 'skip'",
            "SHOW imageql.accounts_on_error",
            "DISCARD ALL",
            "SHOW imageql.accounts_on_error",
        ],
    );
    let shown: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| ["fail", "skip"].contains(l))
        .map(str::to_string)
        .collect();
    assert_eq!(shown, ["fail", "skip", "fail"], "{}", String::from_utf8_lossy(&out.stderr));

    // A token is not the password here.
    let out = server.psql("tok-acme", &["SELECT 1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
}

/// The changes the sandbox was sent since `mark`: (method, path, the account whose token it carried).
fn changes_since(accounts: &Accounts, mark: usize) -> Vec<(String, String, String)> {
    let log = accounts.sandbox.log_since(mark);
    log.iter()
        .filter(|l| l["method"] != "GET")
        .map(|l| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&l["method"]), text(&l["path"]), text(&l["account"]))
        })
        .collect()
}

#[test]
fn changes_over_an_account_set_send_each_call_with_its_accounts_token() {
    let accounts = Accounts::start();
    let set = ["--profile", "customers", "-o", "ndjson"];
    let run = |sql: &str| {
        let mut args = set.to_vec();
        args.extend(["-e", sql]);
        accounts.run(&args)
    };
    let owners: BTreeMap<String, String> = run("SELECT id, account FROM linode.images.images WHERE NOT is_public")
        .rows()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["account"].as_str().unwrap().to_string()))
        .collect();
    let in_account = |account: &str| -> Vec<String> {
        owners.iter().filter(|(_, a)| *a == account).map(|(id, _)| id.clone()).collect()
    };
    let (acme, globex) = (in_account("acme"), in_account("globex"));
    // One image of acme's, two of globex's, picked by a predicate that is not about accounts.
    let chosen = [&acme[0], &globex[0], &globex[1]];
    let wanted = format!("id IN ('{}', '{}', '{}')", chosen[0], chosen[1], chosen[2]);

    // The dry run: each account's requests and total, then the total of all; nothing sent.
    let mark = accounts.sandbox.log().len();
    let preview = run(&format!("EXPLAIN DELETE FROM linode.images.images WHERE {wanted}")).rows();
    let steps: Vec<(Value, Value)> = preview.iter().map(|r| (r["account"].clone(), r["step"].clone())).collect();
    assert_eq!(
        steps,
        [
            (json!("acme"), json!("1")),
            (json!("acme"), json!("total")),
            (json!("globex"), json!("1")),
            (json!("globex"), json!("2")),
            (json!("globex"), json!("total")),
            (Value::Null, json!("total")),
        ]
    );
    let last = preview.last().unwrap();
    assert!(last["request"].as_str().unwrap().starts_with("3 requests (3 DELETE) in 2 accounts"), "{last}");
    let freed: f64 = preview[..preview.len() - 1]
        .iter()
        .filter(|r| r["step"] != "total")
        .map(|r| r["frees_monthly_usd"].as_f64().unwrap())
        .sum();
    assert!((last["frees_monthly_usd"].as_f64().unwrap() - freed).abs() < 1e-6, "{last}");
    let dry = accounts.run(&[
        "--profile",
        "customers",
        "--dry-run",
        "-e",
        &format!("DELETE FROM linode.images.images WHERE {wanted}"),
    ]);
    assert!(dry.ok().contains("in 2 accounts, none sent"));
    assert!(changes_since(&accounts, mark).is_empty(), "a dry run sends nothing");

    // The rows a DELETE removes are those the same WHERE selects, each with its own token.
    let selected = run(&format!("SELECT account, id FROM linode.images.images WHERE {wanted} ORDER BY id")).rows();
    let mark = accounts.sandbox.log().len();
    let mut deleted = run(&format!("DELETE FROM linode.images.images WHERE {wanted} RETURNING account, id")).rows();
    deleted.sort_by_key(|r| r["id"].as_str().unwrap().to_string());
    assert_eq!(deleted, selected);
    let sent = changes_since(&accounts, mark);
    assert_eq!(sent.len(), 3, "{sent:?}");
    for (method, path, account) in &sent {
        let id = path.trim_start_matches("/v4/images/").replace("%2F", "/");
        assert_eq!((method.as_str(), account), ("DELETE", &owners[&id]), "{path}");
    }

    // REPLACE computes each row's value over the set, and sends it with that row's token.
    let mark = accounts.sandbox.log().len();
    let replaced = run(&format!(
        "REPLACE linode.images.images SET description = 'kept by ' || account WHERE id IN ('{}', '{}') RETURNING account, description",
        acme[1], globex[2]
    ))
    .rows();
    assert_eq!(
        replaced,
        [
            json!({"account": "acme", "description": "kept by acme"}),
            json!({"account": "globex", "description": "kept by globex"})
        ]
    );
    let accounts_sent: Vec<String> = changes_since(&accounts, mark).into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(accounts_sent, ["acme", "globex"]);

    // An INSERT or EXEC names its account; nothing is sent when one does not, or names another.
    let mark = accounts.sandbox.log().len();
    let refusals = [
        (
            "INSERT INTO linode.images.images (disk_id, label) VALUES (1, 'x')",
            "an INSERT names the account of each row",
        ),
        (
            "INSERT INTO linode.images.images (account, disk_id, label) VALUES ('acme', 67990, 'a'), ('umbrella', 1, 'u')",
            "the account \"umbrella\" is not one of this session's",
        ),
        (
            &*format!("EXEC linode.images.images.post_replicate_image @imageId = '{}', @add = 'us-east'", acme[1]),
            "EXEC names the one it acts in",
        ),
    ];
    for (sql, message) in refusals {
        let stderr = run(sql).fails();
        assert!(stderr.contains(message), "{sql}: {stderr}");
    }
    assert!(changes_since(&accounts, mark).is_empty());

    // INSERT … SELECT over the set: each row made in the account it was read from.
    let disks: Vec<Value> = ["acme", "initech"]
        .iter()
        .flat_map(|account| {
            let first = run(&format!("SELECT id FROM linode.linode.instances WHERE account = '{account}' ORDER BY id LIMIT 1")).rows();
            let linode = first[0]["id"].as_i64().unwrap();
            run(&format!(
                "SELECT account, id FROM linode.linode.disks WHERE account = '{account}' AND linodeId = {linode} AND size > 1000"
            ))
            .rows()
        })
        .collect();
    let values: Vec<String> = disks
        .iter()
        .map(|d| {
            format!("('{}', {}, 'golden-{}')", d["account"].as_str().unwrap(), d["id"], d["account"].as_str().unwrap())
        })
        .collect();
    let mark = accounts.sandbox.log().len();
    let made = run(&format!(
        "INSERT INTO linode.images.images (account, disk_id, label) VALUES {} RETURNING account, label, created_by",
        values.join(", ")
    ))
    .rows();
    assert_eq!(made.len(), 2);
    assert!(made.iter().all(|r| r["label"].as_str().unwrap() == format!("golden-{}", r["account"].as_str().unwrap())));
    assert!(made.iter().all(|r| r["created_by"] == r["account"]), "{made:?}");
    let posted: Vec<String> = changes_since(&accounts, mark).into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(posted, ["acme", "initech"]);

    // EXEC with @account acts there.
    let mark = accounts.sandbox.log().len();
    let replicated = run(&format!(
        "EXEC linode.images.images.post_replicate_image @account = 'globex', @imageId = '{}', @add = 'us-east'",
        globex[2]
    ))
    .rows();
    assert_eq!((&replicated[0]["account"], &replicated[0]["added"]), (&json!("globex"), &json!("us-east")));
    let sent = changes_since(&accounts, mark);
    assert_eq!(sent.iter().map(|(m, _, a)| (m.as_str(), a.as_str())).collect::<Vec<_>>(), [("POST", "globex")]);
}

#[test]
fn a_view_over_an_account_set_is_each_accounts_own() {
    let accounts = Accounts::start();
    let set = accounts.rows(&[
        "--profile",
        "customers",
        "-e",
        "SELECT account, sum(monthly_usd) AS usd FROM linode.images.storage_costs GROUP BY account ORDER BY account",
    ]);
    let alone: Vec<Value> = ["acme", "globex", "initech"]
        .iter()
        .map(|account| {
            let rows = accounts.rows(&[
                "--profile",
                account,
                "-e",
                "SELECT sum(monthly_usd) AS usd FROM linode.images.storage_costs",
            ]);
            json!({"account": account, "usd": rows[0]["usd"]})
        })
        .collect();
    assert_eq!(set, alone);
    // A view with parameters, pruned by account like a table.
    let mark = accounts.sandbox.log().len();
    let usage = accounts.rows(&[
        "--profile",
        "customers",
        "-e",
        "SELECT account, count(*) AS n FROM linode.images.usage(now() - interval '30 days', now()) WHERE account = 'initech' GROUP BY account",
    ]);
    assert_eq!(usage, [json!({"account": "initech", "n": 4})]);
    let called: Vec<Value> = accounts.sandbox.log_since(mark).iter().map(|l| l["account"].clone()).collect();
    assert!(!called.is_empty() && called.iter().all(|a| a == "initech"), "{called:?}");
}

#[test]
fn every_problem_of_a_change_over_a_set_is_told_at_once_with_its_account_and_row() {
    let accounts = Accounts::start();
    let mark = accounts.sandbox.log().len();
    let disks: Vec<String> = ["acme", "globex", "initech"]
        .iter()
        .map(|account| {
            let instance = accounts.rows(&[
                "--profile",
                account,
                "-e",
                "SELECT id FROM linode.linode.instances ORDER BY id LIMIT 1",
            ]);
            let linode = instance[0]["id"].as_i64().unwrap();
            let disk = accounts.rows(&[
                "--profile",
                account,
                "-e",
                &format!("SELECT id FROM linode.linode.disks WHERE linodeId = {linode} ORDER BY id LIMIT 1"),
            ]);
            format!("('{account}', {}, 'bad/label')", disk[0]["id"])
        })
        .collect();
    let stderr = accounts
        .run(&[
            "--profile",
            "customers",
            "-e",
            &format!(
                "INSERT INTO linode.images.images (ACCOUNT, disk_id, label) VALUES ('acme', 1, 'fine'), {}",
                disks.join(", ")
            ),
        ])
        .fails();
    assert!(stderr.contains("3 problems"), "{stderr}");
    for (account, row) in [("acme", 2), ("globex", 3), ("initech", 4)] {
        assert!(stderr.contains(&format!("{account}: row {row}: label")), "{account}, row {row}: {stderr}");
    }
    assert!(changes_since(&accounts, mark).is_empty(), "nothing was sent");
    let stderr = accounts
        .run(&["--profile", "customers", "-e", "EXEC linode.images.images.put_image @account = 'acme', @ACCOUNT = 'globex', @imageId = 'private/1', @label = 'x'"])
        .fails();
    assert!(stderr.contains("@account is given twice"), "{stderr}");
}

#[test]
fn two_profiles_of_one_account_read_it_once() {
    let accounts = Accounts::start();
    let config = accounts.home.path().join(".config/imageql/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[profiles.\"acme.again\"]\ntoken = \"tok-acme\"\napi_url = \"{0}\"\n\n[profiles.\"initech.eu\"]\ntoken = \"tok-initech\"\napi_url = \"{0}\"\n",
        accounts.sandbox.url
    ));
    std::fs::write(&config, text).unwrap();
    // A quoted TOML key names a profile with a dot; one with the token of acme is acme.
    let run = accounts.run(&[
        "--profile",
        "acme,acme.again,initech.eu",
        "-o",
        "ndjson",
        "-e",
        "SELECT account, count(*) AS n FROM linode.images.images WHERE NOT is_public GROUP BY account ORDER BY account",
    ]);
    assert_eq!(counts(&run.rows()), [("acme", 4), ("initech.eu", 4)].map(|(a, n)| (a.to_string(), n)).into());
    assert!(run.stderr().contains("profile acme.again is the same account as acme"), "{}", run.stderr());
}

#[test]
fn an_account_set_records_each_accounts_history_and_reads_only_its_own() {
    let accounts = Accounts::start();
    let store = tempfile::tempdir().unwrap();
    let history = store.path().to_str().unwrap();
    let recorded = accounts.rows(&["--history", history, "--profile", "acme,globex", "record"]);
    let written: Vec<(String, i64)> = recorded
        .iter()
        .filter(|r| r["table"] == "linode.images.images")
        .map(|r| (r["account"].as_str().unwrap().to_string(), r["written"].as_i64().unwrap()))
        .collect();
    assert_eq!(written, [("acme".to_string(), 4), ("globex".to_string(), 4)]);
    let sql = "SELECT account, count(*) AS n FROM linode.history.images GROUP BY account ORDER BY account";
    let set = accounts.rows(&["--history", history, "--profile", "customers", "-e", sql]);
    assert_eq!(counts(&set), [("acme", 4), ("globex", 4)].map(|(a, n)| (a.to_string(), n)).into());
    // A session of one account reads only that account's history.
    let alone = accounts.rows(&["--history", history, "--profile", "globex", "-e", sql]);
    assert_eq!(counts(&alone), [("globex".to_string(), 4)].into());
}

#[test]
fn serve_records_its_accounts_and_a_token_connection_reads_no_history() {
    let accounts = Accounts::start();
    let home = accounts.home.path();
    let password = home.join("password");
    std::fs::write(&password, "operator-secret\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    let history = store.path().to_str().unwrap();
    let (config, cli_config) = (home.join(".config"), home.join(".linode-cli"));
    let env = [
        ("HOME", home.to_str().unwrap()),
        ("XDG_CONFIG_HOME", config.to_str().unwrap()),
        ("LINODE_CLI_CONFIG", cli_config.to_str().unwrap()),
    ];
    let server = common::ServeProcess::start(
        &accounts.sandbox,
        &[
            "--profile",
            "acme,globex",
            "--password-file",
            password.to_str().unwrap(),
            "--history",
            history,
            "--record-every",
            "1s",
        ],
        &env,
    );
    // The first recording starts at once; poll for it with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let sql = "SELECT account, count(*) AS n FROM linode.history.images GROUP BY account ORDER BY account";
    let seen = loop {
        let out = server.psql("operator-secret", &[sql]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if stdout.contains("acme|4") && stdout.contains("globex|4") {
            break stdout;
        }
        assert!(std::time::Instant::now() < deadline, "no recording within 30 s: {stdout}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(!seen.contains("initech"), "{seen}");
    // The history's table functions, through the Postgres dialect's rewrites.
    let out = server.psql(
        "operator-secret",
        &["SELECT account, count(*) AS n FROM linode.history.images_at(now() + interval '1 day') GROUP BY account ORDER BY account"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(),
        ["account|n", "acme|4", "globex|4", "(2 rows)"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A connection that brings its own token reads no history: the store holds other accounts'.
    let open = common::ServeProcess::start(&accounts.sandbox, &["--history", history], &env);
    let out = open.psql("tok-acme", &["SELECT count(*) AS n FROM linode.history.images"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().nth(1),
        Some("0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor can such a server record: it holds no token.
    let refused = common::imageql_command(home)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-url", &accounts.sandbox.url, "--record-every", "1h"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("--record-every records the accounts the server holds tokens for")
    );
}
