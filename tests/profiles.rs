//! Tokens and defaults from configuration files: linode-cli's users and imageql's profiles,
//! after the command line and `LINODE_TOKEN`.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{Run, SandboxProcess, TOKEN, imageql_command};
use serde_json::{Value, json};

const OTHER_TOKEN: &str = "other-account-token";

/// Runs imageql with `home` as HOME, the given LINODE_TOKEN (or none) and `args`.
fn imageql(home: &Path, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = imageql_command(home);
    command.args(args).stdin(Stdio::null());
    match token {
        Some(t) => command.env("LINODE_TOKEN", t),
        None => command.env_remove("LINODE_TOKEN"),
    };
    Run(command.output().expect("imageql runs"))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The private image ids `token` sees, asked of the sandbox directly.
async fn private_ids(sandbox: &SandboxProcess, token: &str) -> Vec<Value> {
    let mut ids: Vec<Value> = sandbox
        .client()
        .all_images(Some(token))
        .await
        .into_iter()
        .filter(|i| i["is_public"] == false)
        .map(|i| json!({"id": i["id"]}))
        .collect();
    ids.sort_by_key(|v| v["id"].as_str().unwrap().to_string());
    ids
}

const PRIVATE: &str = "SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id";

#[tokio::test]
async fn linode_cli_users_and_imageql_profiles_give_the_token() {
    let sandbox = SandboxProcess::start(&["--account", &format!("other:{OTHER_TOKEN}")]);
    let own = private_ids(&sandbox, TOKEN).await;
    assert!(!own.is_empty());
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (scheme, host) = sandbox.url.trim_end_matches("/v4").split_once("://").unwrap();
    write(
        &home.join(".config/linode-cli"),
        &format!(
            "[DEFAULT]\ndefault-user = alice\n\n[alice]\ntoken = {TOKEN}\napi_host = {host}\napi_scheme = {scheme}\n\n\
             [bob]\ntoken = {OTHER_TOKEN}\napi_host = {host}\napi_scheme = {scheme}\n"
        ),
    );

    // No LINODE_TOKEN and no --api-url: linode-cli's default user gives both.
    let run = imageql(home, None, &["-o", "ndjson", "-e", PRIVATE]);
    assert_eq!(run.rows(), own);
    // Another user of linode-cli's file, by name.
    let run = imageql(home, None, &["--profile", "bob", "-o", "ndjson", "-e", PRIVATE]);
    assert_eq!(run.rows(), private_ids(&sandbox, OTHER_TOKEN).await);
    // LINODE_TOKEN comes before the default user: a wrong one is refused by the API.
    let err = imageql(home, Some("not-a-token"), &["--api-url", &sandbox.url, "-e", PRIVATE]).fails();
    assert!(err.contains("401") || err.to_lowercase().contains("token"), "{err}");
    assert!(!err.contains(TOKEN));

    // imageql's own profiles come first, and its default_profile applies without --profile.
    write(
        &home.join(".config/imageql/config.toml"),
        &format!(
            "default_profile = \"other\"\n\n[profiles.other]\ntoken = \"{OTHER_TOKEN}\"\napi_url = \"{}\"\noutput = \"ndjson\"\n",
            sandbox.url
        ),
    );
    let run = imageql(home, None, &["-e", PRIVATE]);
    assert_eq!(run.rows(), private_ids(&sandbox, OTHER_TOKEN).await, "the profile's token and output");
    // An explicit --profile comes before LINODE_TOKEN; a flag before the profile's output.
    let run = imageql(home, Some("not-a-token"), &["--profile", "alice", "-o", "ndjson", "-e", PRIVATE]);
    assert_eq!(run.rows(), own);

    let run = imageql(home, None, &["--profile", "carol", "-e", PRIVATE]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("no profile \"carol\"") && err.contains("other") && err.contains("alice"), "{err}");
    assert!(!err.contains(TOKEN) && !err.contains(OTHER_TOKEN), "the token is never printed: {err}");
}
