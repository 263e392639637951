//! The README's cookbook, run as it is written: every SQL block against a sandbox through the
//! real binary (each result set non-empty), the shell pipeline with the real jq, and what the
//! jobs promise beyond running: unused images despite a null `image`, one file per result.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::SandboxProcess;
use serde_json::Value;

/// The README's `## Cookbook` section.
fn cookbook() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("\n## Cookbook\n").expect("the README has a cookbook");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map(|i| i + 3).unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The fenced blocks of `language` in `text`.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    text.split(&fence).skip(1).map(|block| block.split("\n```").next().unwrap().to_string()).collect()
}

/// Deploys an instance from private/1001 and one from no image at all, whose null `image`
/// is the NOT IN trap.
fn deploy_one_from_an_image_and_one_without(sandbox: &SandboxProcess) {
    sandbox
        .imageql(&[
            "-e",
            "INSERT INTO linode.linode.instances (region, type, image, label, authorized_users) \
         VALUES ('us-east', 'g6-standard-2', 'private/1001', 'from-golden', '[\"ops\"]')",
            "-e",
            "INSERT INTO linode.linode.instances (region, type, label) VALUES ('us-east', 'g6-standard-2', 'blank')",
        ])
        .ok();
}

#[test]
fn every_sql_block_of_the_cookbook_runs_and_answers() {
    let sandbox = SandboxProcess::start(&[]);
    deploy_one_from_an_image_and_one_without(&sandbox);
    let sql = blocks(&cookbook(), "sql");
    assert!(sql.len() >= 9, "the cookbook's jobs: {}", sql.len());
    for (i, block) in sql.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("job.sql");
        std::fs::write(&script, block).unwrap();
        let out = dir.path().join("out");
        sandbox.imageql(&["-o", "json", "--output-dir", out.to_str().unwrap(), "-f", script.to_str().unwrap()]).ok();
        let statements = block.lines().filter(|l| l.trim_end().ends_with(';')).count();
        let mut files: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert_eq!(files.len(), statements, "block {i}: a file per statement: {files:?}\n{block}");
        for file in files {
            let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            assert!(!rows.is_empty(), "block {i}: {} has no row\n{block}", file.display());
        }
    }

    // Job 6: the image an instance was deployed from is used; the instance without an image
    // does not empty the answer, as it empties NOT IN's.
    let unused: Vec<String> = sandbox
        .rows("SELECT id FROM unused ORDER BY id")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let private: Vec<String> = sandbox
        .rows("SELECT id FROM images WHERE NOT is_public AND id <> 'private/1001' ORDER BY id")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(unused, private);
    let trap = sandbox
        .rows("SELECT id FROM images WHERE NOT is_public AND id NOT IN (SELECT image FROM linode.linode.instances)");
    assert!(trap.is_empty(), "NOT IN over a null answers nothing, which is why the view exists: {trap:?}");

    // Job 9: one CSV per named result, each with one header.
    let report = blocks(&cookbook(), "sql").into_iter().find(|b| b.contains("-- name: by_status")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("monthly.sql");
    std::fs::write(&script, report).unwrap();
    let out = dir.path().join("report");
    sandbox.imageql(&["-o", "csv", "--output-dir", out.to_str().unwrap(), "-f", script.to_str().unwrap()]).ok();
    for (name, header) in
        [("by_status", "status,images"), ("costs", "label,id,gb,monthly_usd"), ("by_region", "region,monthly_usd")]
    {
        let csv = std::fs::read_to_string(out.join(format!("{name}.csv"))).unwrap();
        assert_eq!(csv.lines().next(), Some(header), "{name}.csv");
        assert_eq!(csv.lines().filter(|l| *l == header).count(), 1, "{name}.csv has one header");
        assert!(csv.lines().count() > 1, "{name}.csv has rows");
    }
}

#[test]
fn the_cookbook_pipeline_runs_with_jq_and_cron_commands() {
    let sandbox = SandboxProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // `imageql` in the block is this binary against the sandbox, with a history of its own.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let wrapper = bin.join("imageql");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --api-url {} --history {} \"$@\"\n",
            common::binary(),
            sandbox.url,
            dir.path().join("history").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = blocks(&cookbook(), "sh").into_iter().find(|b| b.contains("fromdate")).expect("the jq job");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("LINODE_TOKEN", common::TOKEN)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    // Every image older than 90 days, by jq's reading of the timestamps imageql wrote.
    let old: Vec<String> = sandbox
        .rows("SELECT id, label FROM images WHERE NOT is_public AND created < now() - INTERVAL '90 days' ORDER BY id")
        .iter()
        .map(|r| format!("{} {}", r["id"].as_str().unwrap(), r["label"].as_str().unwrap()))
        .collect();
    assert!(!old.is_empty());
    let mut listed: Vec<String> = stdout.lines().filter(|l| l.starts_with("private/")).map(str::to_string).collect();
    listed.sort();
    assert_eq!(listed, old);
}
