//! The engine as a library, against a real sandbox process: statements go in as text and
//! come out as outcome values or typed errors, with nothing printed.

mod common;

use common::{SandboxProcess, TOKEN};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use futures::TryStreamExt;
use imageql::engine::{Session, SessionOptions};
use imageql::error::Error;
use imageql::outcome::{Change, Outcome};
use imageql::provider::Verb;

async fn session(sandbox: &SandboxProcess) -> Session {
    Session::new(SessionOptions::new(&sandbox.url, Some(TOKEN))).await.expect("a session over the sandbox")
}

/// The rows of an outcome, and the change it reports.
async fn rows(outcome: Outcome) -> (Vec<RecordBatch>, Option<Change>) {
    match outcome {
        Outcome::Rows { stream, changed } => (stream.try_collect().await.expect("rows stream"), changed),
        other => panic!("expected rows, got {other:?}"),
    }
}

/// The values of a text column, over every batch.
fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(column).expect("the column").as_string::<i32>().clone();
            (0..array.len()).map(move |i| array.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_return_outcomes_and_typed_errors() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let session = session(&sandbox).await;
    let http = sandbox.client();

    let outcome = session.execute("SELECT id, label FROM linode.images.images WHERE NOT is_public ORDER BY id").await;
    let (batches, changed) = rows(outcome.unwrap()).await;
    assert_eq!(changed, None);
    let mut private: Vec<String> = http
        .all_images(Some(TOKEN))
        .await
        .into_iter()
        .filter(|i| i["is_public"] == false)
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    private.sort();
    assert!(!private.is_empty());
    assert_eq!(strings(&batches, "id"), private);

    let outcome = session
        .execute("INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'from-the-library') RETURNING id, label, status")
        .await;
    let (batches, changed) = rows(outcome.unwrap()).await;
    let ids = strings(&batches, "id");
    assert_eq!(strings(&batches, "label"), ["from-the-library"]);
    let change = changed.expect("an INSERT reports its change");
    assert_eq!((change.verb, change.count, &change.ids), (Verb::Insert, 1, &ids));
    let (status, image) = http.get(&format!("/images/{}", ids[0].replace('/', "%2F")), Some(TOKEN), None).await;
    assert_eq!((status, image["label"].as_str()), (200, Some("from-the-library")));

    let writes_before = sandbox.log().iter().filter(|r| r["method"] != "GET").count();
    let refused = session
        .execute(&format!(
            "REPLACE linode.images.images SET tags = '[\"x\"]', label = 'ok-label' WHERE id = '{}'",
            ids[0]
        ))
        .await
        .expect_err("a tag of one letter is invalid");
    let Error::Validation(validation) = &refused else { panic!("expected a validation error, got {refused:?}") };
    assert_eq!((validation.verb, validation.method.as_str()), (Verb::Replace, "put_image"));
    assert_eq!(validation.problems.len(), 1);
    assert_eq!(validation.problems[0].1.field, "tags");
    assert_eq!(refused.exit_code(), 1);
    assert_eq!(refused.sqlstate(), "22023");
    assert_eq!(sandbox.log().iter().filter(|r| r["method"] != "GET").count(), writes_before, "nothing was sent");

    let missing = session
        .execute("REPLACE linode.images.images SET label = 'gone-label' WHERE id = 'private/999999'")
        .await
        .expect_err("no such image");
    let Error::Api(api) = &missing else { panic!("expected the API's error, got {missing:?}") };
    assert_eq!(api.status(), Some(404));

    let outcome = session.execute(&format!("DELETE FROM linode.images.images WHERE id = '{}'", ids[0])).await;
    let Ok(Outcome::Changed(change)) = outcome else {
        panic!("a DELETE without RETURNING reports a change: {outcome:?}")
    };
    assert_eq!((change.verb, change.count, change.ids), (Verb::Delete, 1, ids.clone()));

    let unknown = session.execute("SELECT nope FROM linode.images.images").await.expect_err("no such column");
    assert!(matches!(&unknown, Error::UnknownColumn { name, .. } if name == "nope"), "{unknown:?}");
    assert_eq!(unknown.sqlstate(), "42703");
    let syntax = session.execute("SELEC 1").await.expect_err("not SQL");
    assert!(matches!(syntax, Error::Syntax(_)), "{syntax:?}");
    assert_eq!(syntax.sqlstate(), "42601");
}
