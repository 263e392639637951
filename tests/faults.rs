//! The fault suite: the real binary against a sandbox that fails 30% of API requests with the
//! whole mix of `--fail-rate` (429 with and without Retry-After, 5xx, stalls past the client's
//! timeout, resets mid-body, truncated JSON, lists that change between pages). Reads must
//! return exactly the right rows or fail with a clear error; changes must leave exactly what
//! the statement reported. The truth is read from the same sandbox with faults turned off for
//! the reading request (`X-Sandbox-Faults: off`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{SandboxProcess, ServeProcess, TOKEN};
use serde_json::Value;

const FAIL_RATE: &str = "0.3";
const SCANS: usize = 200;
const CAPTURES: usize = 50;
const WORKERS: usize = 8;

/// A sandbox of `images` generated images that fails 30% of requests.
fn faulty_sandbox(images: &str) -> SandboxProcess {
    SandboxProcess::start(&[
        "--seed-images",
        images,
        "--fail-rate",
        FAIL_RATE,
        "--latency-ms",
        "0",
        "--time-scale",
        "0",
        "--stall-ms",
        "1500",
        "--max-images",
        "6000",
        "--max-total-gb",
        "1000000",
    ])
}

/// Every image the seeded account sees, read without faults.
async fn truth(sandbox: &SandboxProcess) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut images = Vec::new();
    for page in 1.. {
        let response = client
            .get(format!("{}/images?page={page}&page_size=500", sandbox.url))
            .bearer_auth(TOKEN)
            .header("X-Sandbox-Faults", "off")
            .send()
            .await
            .unwrap();
        let (status, body) = common::json_of(response).await;
        assert_eq!(status, 200, "{body}");
        images.extend(body["data"].as_array().unwrap().iter().cloned());
        if page >= body["pages"].as_u64().unwrap() {
            return images;
        }
    }
    unreachable!()
}

/// What imageql says when it gives up: a message naming the request or the change.
fn is_clear_failure(stderr: &str) -> bool {
    // Lines before the error may say the scan waited for the rate limit.
    let first = stderr.lines().find(|l| l.starts_with("imageql: error:")).unwrap_or("");
    first.starts_with("imageql: error: -e:1: ")
        && ["failed with HTTP", "failed:", "unexpected response", "the list changed while it was read"]
            .iter()
            .any(|words| first.contains(words))
}

/// Runs `work(i)` for `0..count` on a few threads.
fn in_parallel(count: usize, work: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    work(i);
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn scans_under_faults_return_the_right_ids_or_fail_clearly() {
    let sandbox = faulty_sandbox("1000");
    let images = truth(&sandbox).await;
    let ids = |private_only: bool| -> BTreeSet<String> {
        images
            .iter()
            .filter(|i| !private_only || i["is_public"] == false)
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (all, private) = (ids(false), ids(true));
    assert!(private.len() >= 1000, "a 1 000-image account");
    let (right, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mark = sandbox.log().len();
    in_parallel(SCANS, |i| {
        // Half list everything, half push a filter down.
        let (sql, expected) = match i % 2 {
            0 => ("SELECT id FROM linode.images.images", &all),
            _ => ("SELECT id FROM linode.images.images WHERE NOT is_public", &private),
        };
        let run = sandbox.imageql(&["--timeout", "0.5", "-o", "csv", "-e", sql]);
        match run.code() {
            0 => {
                let got: Vec<String> = run.stdout().lines().skip(1).map(str::to_string).collect();
                let unique: BTreeSet<String> = got.iter().cloned().collect();
                assert_eq!(got.len(), unique.len(), "scan {i} returned duplicates");
                assert_eq!(&unique, expected, "scan {i} returned the wrong ids");
                right.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                assert_eq!(run.code(), 1, "scan {i}: {}", run.stderr());
                assert!(is_clear_failure(&run.stderr()), "scan {i} failed unclearly: {}", run.stderr());
                failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let log = sandbox.log_since(mark);
    let faults = log.iter().filter(|r| r["status"] != 200).count();
    let (right, failed) = (right.into_inner(), failed.into_inner());
    println!(
        "{SCANS} scans at --fail-rate {FAIL_RATE}: {right} right, {failed} failed clearly, 0 wrong; {} requests, {faults} answered with an error status",
        log.len()
    );
    assert_eq!(right + failed, SCANS);
    assert!(right > SCANS / 2, "retries should carry most scans through: {right} of {SCANS}");
    assert!(faults > 0, "faults were injected");
}

/// A count that is right or a failure that says why; never a wrong count.
enum Counted {
    Right,
    Failed(String),
}

fn counted(n: Option<usize>, expected: usize, why: String) -> Counted {
    match n {
        Some(n) => {
            assert_eq!(n, expected, "a wrong count");
            Counted::Right
        }
        None => Counted::Failed(why),
    }
}

/// At 30 % faults, a `count(*)` of an 11-page listing is right at least 28 times in 30, in
/// the CLI and through serve: reads are retried with backoff, a page that disagrees with
/// page 1 is read again, and a query whose list changed starts over. A call may take 2 s: a
/// stall (1.5 s, then a 504) is a fault, a response slowed by the machine's load is not.
#[tokio::test(flavor = "multi_thread")]
async fn counts_of_a_long_listing_survive_faults_in_the_cli_and_through_serve() {
    const COUNTS: usize = 30;
    let sandbox = faulty_sandbox("5200");
    let expected = truth(&sandbox).await.len();
    assert_eq!(expected.div_ceil(500), 11, "an 11-page listing: {expected} images");
    let sql = "SELECT count(*) AS n FROM linode.images.images";
    let tally = |results: Vec<Counted>| -> (usize, Vec<String>) {
        let right = results.iter().filter(|r| matches!(r, Counted::Right)).count();
        let why = results
            .into_iter()
            .filter_map(|r| match r {
                Counted::Failed(why) => Some(why),
                _ => None,
            })
            .collect();
        (right, why)
    };

    let results = std::sync::Mutex::new(Vec::new());
    in_parallel(COUNTS, |_| {
        let run = sandbox.imageql(&["--timeout", "2", "-o", "csv", "-e", sql]);
        let n = (run.code() == 0).then(|| run.stdout().lines().nth(1).unwrap().parse().unwrap());
        if n.is_none() {
            assert!(is_clear_failure(&run.stderr()), "an unclear failure: {}", run.stderr());
        }
        results.lock().unwrap().push(counted(n, expected, run.stderr()));
    });
    let (right, why) = tally(results.into_inner().unwrap());
    println!("CLI: {right} of {COUNTS} counts right; failures: {why:?}");
    assert!(right >= 28, "CLI: {right} of {COUNTS} right: {why:?}");

    let server = ServeProcess::start(&sandbox, &["--no-cache", "--timeout", "2"], &[]);
    let results = std::sync::Mutex::new(Vec::new());
    in_parallel(COUNTS, |_| {
        let out = server.psql(TOKEN, &[sql]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let n = stdout.lines().nth(1).and_then(|l| l.parse().ok());
        if n.is_none() {
            // A statement's error, or the login's when even the token check met only faults.
            let clear = stderr.contains("ERROR:") || stderr.contains("FATAL:  the token cannot be checked");
            assert!(clear, "an unclear failure: {stdout}{stderr}");
        }
        results.lock().unwrap().push(counted(n, expected, stderr));
    });
    let (right, why) = tally(results.into_inner().unwrap());
    println!("serve: {right} of {COUNTS} counts right; failures: {why:?}");
    assert!(right >= 28, "serve: {right} of {COUNTS} right: {why:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn captures_under_faults_leave_exactly_what_they_reported() {
    let sandbox = faulty_sandbox("1000");
    let before: BTreeSet<String> =
        truth(&sandbox).await.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    let outcomes: Vec<std::sync::Mutex<Option<common::Run>>> =
        (0..CAPTURES).map(|_| std::sync::Mutex::new(None)).collect();
    in_parallel(CAPTURES, |i| {
        let sql = format!("INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'fault-capture-{i}')");
        *outcomes[i].lock().unwrap() = Some(sandbox.imageql(&["--timeout", "0.5", "-e", &sql]));
    });
    let after = truth(&sandbox).await;
    let (mut done, mut refused, mut unknown_made, mut unknown_not_made) = (0, 0, 0, 0);
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let run = outcome.into_inner().unwrap().unwrap();
        let label = format!("fault-capture-{i}");
        let made: Vec<&str> =
            after.iter().filter(|img| img["label"] == label.as_str()).map(|img| img["id"].as_str().unwrap()).collect();
        assert!(made.len() <= 1, "{label} was captured {} times: a change was repeated", made.len());
        assert!(made.iter().all(|id| !before.contains(*id)));
        match run.code() {
            0 => {
                assert_eq!(made.len(), 1, "{label} reported done but is missing: {}", run.stdout());
                assert!(run.stdout().contains(made[0]), "the summary names {}: {}", made[0], run.stdout());
                done += 1;
            }
            1 if run.stderr().contains("may have happened") => match made.len() {
                1 => unknown_made += 1,
                _ => unknown_not_made += 1,
            },
            1 => {
                assert!(made.is_empty(), "{label} failed ({}) yet was made", run.stderr());
                assert!(is_clear_failure(&run.stderr()), "{}", run.stderr());
                refused += 1;
            }
            _ => panic!("{label}: {}", run.stderr()),
        }
    }
    println!(
        "{CAPTURES} captures at --fail-rate {FAIL_RATE}: {done} done, {refused} refused by a fault (nothing made), \
         {} lost their answer ({unknown_made} had been made, {unknown_not_made} not); 0 repeated",
        unknown_made + unknown_not_made
    );
    assert_eq!(done + refused + unknown_made + unknown_not_made, CAPTURES);
    let made_in_all = after.iter().filter(|i| !before.contains(i["id"].as_str().unwrap())).count();
    assert_eq!(made_in_all, done + unknown_made, "images appeared that no statement made");
}
