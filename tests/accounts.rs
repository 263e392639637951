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
    // Joins do not share a parameter's values out among accounts; the message says what to do.
    let stderr = accounts
        .run(&["--profile", "customers", "-e", "SELECT d.id FROM linode.linode.instances i JOIN linode.linode.disks d ON d.linodeId = i.id AND d.account = i.account"])
        .fails();
    assert!(stderr.contains("in an account set is read with its linodeId given by value: WHERE account"), "{stderr}");
    // DESCRIBE shows the account column first.
    let described = accounts.rows(&["--profile", "customers", "-e", "DESCRIBE linode.images.images"]);
    assert_eq!((&described[0]["name"], &described[1]["name"]), (&json!("account"), &json!("id")));

    // Changes act on one account.
    let stderr = accounts
        .run(&["--profile", "customers", "-e", "DELETE FROM linode.images.images WHERE account = 'acme' AND size > 1"])
        .fails();
    assert!(stderr.contains("changes and waits act on one account"), "{stderr}");
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
    // A token is not the password here.
    let out = server.psql("tok-acme", &["SELECT 1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
}
