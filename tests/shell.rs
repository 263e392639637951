//! The interactive shell, driven through a real pseudo-terminal.

mod common;

use std::process::Command;

use common::{SandboxProcess, TOKEN};
use rexpect::session::{PtySession, spawn_command};

fn shell(sandbox: &SandboxProcess, home: &std::path::Path) -> PtySession {
    let mut command = Command::new(common::binary());
    command
        .args(["--api-url", &sandbox.url])
        .env("LINODE_TOKEN", TOKEN)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env("TERM", "xterm");
    let mut session = spawn_command(command, Some(20_000)).expect("the shell starts on a pty");
    session.exp_string("imageql> ").expect("a prompt");
    session
}

#[test]
fn the_shell_takes_multi_line_statements_completes_columns_and_keeps_history() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = shell(&sandbox, home.path());

    // Enter before the ; continues the statement on the next line.
    p.send_line("SELECT count(*) AS private_images").unwrap();
    p.exp_string("imageql-> ").unwrap();
    p.send_line("FROM linode.images.images WHERE NOT is_public;").unwrap();
    p.exp_string("| 14").unwrap();
    p.exp_string("(1 row in").unwrap();
    p.exp_string("imageql> ").unwrap();

    // Tab completes a column of the resource the statement names.
    p.send("SELECT id FROM linode.images.images WHERE lab").unwrap();
    p.flush().unwrap();
    p.exp_string("WHERE lab").unwrap();
    p.send("\t").unwrap();
    p.flush().unwrap();
    p.exp_string("WHERE label").unwrap();
    p.send(" = 'ci-runner';\r").unwrap();
    p.flush().unwrap();
    p.exp_string("private/1003").unwrap();
    p.exp_string("imageql> ").unwrap();

    // Backslash commands.
    p.send_line("\\o csv").unwrap();
    p.exp_string("output format: csv").unwrap();
    p.send_line("SELECT label FROM linode.images.images WHERE id = 'private/1002';").unwrap();
    p.exp_string("label\r\ngolden-db-2024").unwrap();
    p.send_line("\\d linode.linode.disks").unwrap();
    p.exp_string("linodeId,integer,NO").unwrap();
    // A view is described by DataFusion; a name that is not one is an error, and nothing runs.
    p.send_line("\\d linode.images.storage_costs").unwrap();
    p.exp_string("column_name,data_type,is_nullable\r\nid,Utf8,NO").unwrap();
    p.send_line("\\d linode.images.images;DROP").unwrap();
    p.exp_string("is not a table name").unwrap();
    // Short names: completed by Tab, their columns too, and described by \d.
    p.send("SELECT sum(monthly_usd) AS usd FROM storage_c").unwrap();
    p.flush().unwrap();
    p.exp_string("FROM storage_c").unwrap();
    p.send("\t").unwrap();
    p.flush().unwrap();
    p.exp_string("FROM storage_costs").unwrap();
    p.send(";\r").unwrap();
    p.flush().unwrap();
    p.exp_string("usd\r\n").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send("SELECT id FROM images WHERE lab").unwrap();
    p.flush().unwrap();
    p.exp_string("WHERE lab").unwrap();
    p.send("\t").unwrap();
    p.flush().unwrap();
    p.exp_string("WHERE label").unwrap();
    p.send(" = 'golden-db-2024';\r").unwrap();
    p.flush().unwrap();
    p.exp_string("private/1002").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_line("\\d images").unwrap();
    p.exp_string("label,string,NO").unwrap();
    p.send_line("\\d storage_costs").unwrap();
    p.exp_string("column_name,data_type,is_nullable\r\nid,Utf8,NO").unwrap();
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();

    let history = std::fs::read_to_string(home.path().join(".local/share/imageql/history")).unwrap();
    assert!(history.contains("WHERE NOT is_public;"), "{history}");
    assert!(history.contains("WHERE label = 'ci-runner';"), "the completed statement is kept: {history}");
    assert!(!history.contains(TOKEN), "the token is never stored");
}

#[test]
fn ctrl_c_stops_a_slow_scan_and_keeps_the_shell() {
    let sandbox = SandboxProcess::start(&["--latency-ms", "4000"]);
    let home = tempfile::tempdir().unwrap();
    let mut p = shell(&sandbox, home.path());
    p.send_line("SELECT count(*) FROM linode.images.images;").unwrap();
    // The scan's progress shows once it has run for a moment: it is running now.
    p.exp_string("/images").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("cancelled").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_line("\\timing").unwrap();
    p.exp_string("timing is off").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn errors_in_the_shell_are_reported_and_the_shell_goes_on() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = shell(&sandbox, home.path());
    p.send_line("SELECT nope FROM linode.images.images;").unwrap();
    p.exp_string("No field named nope").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_line("\\nonsense").unwrap();
    p.exp_string("is not a command").unwrap();
    p.send_line("\\?").unwrap();
    p.exp_string("\\timing").unwrap();
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn the_shell_keeps_psql_habits() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = shell(&sandbox, home.path());

    // A pending statement shows the continuation prompt; Ctrl-D discards it, and the next
    // statement runs alone.
    p.send_line("SELECT label").unwrap();
    p.exp_string("imageql-> ").unwrap();
    p.send_line("FROM linode.images.images").unwrap();
    p.exp_string("imageql-> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_string("discarded").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_line("SELECT 40 + 2 AS answer;").unwrap();
    p.exp_string("| 42").unwrap();
    p.exp_string("(1 row").unwrap();
    p.exp_string("imageql> ").unwrap();

    // \timing on twice stays on.
    p.send_line("\\timing on").unwrap();
    p.exp_string("timing is on").unwrap();
    p.send_line("\\timing on").unwrap();
    p.exp_string("timing is on").unwrap();
    p.send_line("SELECT 1 AS one;").unwrap();
    p.exp_regex(r"\(1 row in [0-9.]+ s\)").unwrap();

    // Expanded display: one block per row.
    p.send_line("\\x on").unwrap();
    p.exp_string("expanded display is on").unwrap();
    p.send_line("SELECT id, label FROM linode.images.images WHERE id = 'private/1002';").unwrap();
    p.exp_string("-[ RECORD 1 ]-").unwrap();
    p.exp_regex(r"id +\| private/1002").unwrap();
    p.exp_regex(r"label +\| golden-db-2024").unwrap();
    p.send_line("\\x off").unwrap();
    p.exp_string("expanded display is off").unwrap();

    // \i runs a file's statements.
    let script = home.path().join("two.sql");
    std::fs::write(&script, "SELECT 'from the file' AS origin;\nSELECT 6 * 7 AS product;\n").unwrap();
    p.send_line(&format!("\\i {}", script.display())).unwrap();
    p.exp_string("from the file").unwrap();
    p.exp_string("| 42").unwrap();
    p.exp_string("imageql> ").unwrap();

    // \h INSERT gives its syntax; \? lists the statement forms.
    p.send_line("\\h INSERT").unwrap();
    p.exp_string("INSERT [/*+ AWAIT */] INTO resource").unwrap();
    p.exp_string("example").unwrap();
    p.send_line("\\?").unwrap();
    p.exp_string("DESCRIBE METHOD").unwrap();
    p.exp_string("COPY (SELECT").unwrap();

    // Ctrl-D on an empty line leaves.
    p.exp_string("imageql> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();

    // A backslash command acts at the continuation prompt: \timing keeps the pending
    // statement, which then runs; \q leaves.
    let mut p = shell(&sandbox, home.path());
    p.send_line("SELECT 'kept' AS pending").unwrap();
    p.exp_string("imageql-> ").unwrap();
    p.send_line("\\timing off").unwrap();
    p.exp_string("timing is off").unwrap();
    p.send_line(";").unwrap();
    p.exp_string("kept").unwrap();
    p.send_line("SELECT 'never run'").unwrap();
    p.exp_string("imageql-> ").unwrap();
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn pasted_statements_all_run_and_an_invalid_byte_does_not_end_the_shell() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = shell(&sandbox, home.path());

    // Three statements pasted at once: terminals mark a paste (bracketed paste, which the
    // shell turns on), and the line ends with the Enter after it.
    p.send("\x1b[200~SELECT 101 AS first;\rSELECT 202 AS second;\rSELECT 303 AS third;\x1b[201~\r").unwrap();
    p.flush().unwrap();
    for value in ["| 101", "| 202", "| 303"] {
        p.exp_string(value).unwrap();
    }
    p.exp_string("imageql> ").unwrap();

    // A byte that is not UTF-8 is reported, and the shell goes on.
    use std::io::Write;
    p.writer.write_all(b"SELECT '\xff';\r").unwrap();
    p.flush().unwrap();
    p.exp_string("not UTF-8").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_line("SELECT 404 AS after;").unwrap();
    p.exp_string("| 404").unwrap();
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();

    let history = std::fs::read_to_string(home.path().join(".local/share/imageql/history")).unwrap();
    common::assert_no_token_in_dir(home.path());
    for statement in ["SELECT 101 AS first;", "SELECT 202 AS second;", "SELECT 303 AS third;"] {
        assert!(history.contains(statement), "{statement} is in the history: {history}");
    }
}

/// A shell on a terminal of 24 rows and 100 columns, as a user's would be, with `pager`.
fn sized_shell(sandbox: &SandboxProcess, home: &std::path::Path, pager: &str) -> PtySession {
    let mut command = Command::new("sh");
    command
        .args(["-c", "stty rows 24 cols 100 && exec \"$0\" \"$@\"", common::binary(), "--api-url", &sandbox.url])
        .env("LINODE_TOKEN", TOKEN)
        .env("HOME", home)
        .env("TERM", "xterm")
        .env_remove("IMAGEQL_PAGER")
        .env("PAGER", pager);
    let mut session = spawn_command(command, Some(20_000)).expect("the shell starts on a pty");
    session.exp_string("imageql> ").expect("a prompt");
    session
}

#[test]
fn results_taller_than_the_terminal_go_through_the_pager() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = sized_shell(&sandbox, home.path(), "sed -e s/^/paged:/");

    // A result taller than the terminal is paged; a short one is not.
    p.send_line("SELECT value FROM generate_series(1, 300);").unwrap();
    p.exp_string("paged:| 300").unwrap();
    p.exp_string("paged:(300 rows").unwrap();
    p.send_line("SELECT 'short' AS marker;").unwrap();
    let shown = p.exp_string("(1 row").unwrap();
    assert!(shown.contains("| short") && !shown.contains("paged:"), "{shown}");

    p.send_line("\\pset pager always").unwrap();
    p.exp_string("the pager is always used").unwrap();
    p.send_line("SELECT 'short' AS marker;").unwrap();
    p.exp_string("paged:| short").unwrap();

    p.send_line("\\pset pager off").unwrap();
    p.exp_string("the pager is not used").unwrap();
    p.send_line("SELECT value FROM generate_series(1, 300);").unwrap();
    let shown = p.exp_string("(300 rows").unwrap();
    assert!(shown.contains("| 300") && !shown.contains("paged:"), "{shown}");

    p.send_line("\\pset format wrapped").unwrap();
    p.exp_string("only \\pset pager").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn expanded_auto_follows_the_terminal_width() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = sized_shell(&sandbox, home.path(), "");
    p.send_line("\\x auto").unwrap();
    p.exp_string("expanded display is auto").unwrap();
    p.send_line("SELECT 'narrow' AS a, 'row' AS b;").unwrap();
    let shown = p.exp_string("(1 row").unwrap();
    assert!(shown.contains("| narrow | row |") && !shown.contains("RECORD"), "{shown}");
    p.send_line("SELECT repeat('w', 120) AS wide, 'row' AS b;").unwrap();
    p.exp_string("-[ RECORD 1 ]-").unwrap();
    p.exp_regex(r"b +\| row").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn a_change_of_several_resources_is_confirmed_first_and_dry_run_previews() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = shell(&sandbox, home.path());
    let deletes = |sandbox: &SandboxProcess| sandbox.log().iter().filter(|r| r["method"] == "DELETE").count();

    // More than one resource: the preview, the count and what it frees, then a question.
    p.send_line("DELETE FROM linode.images.images WHERE label LIKE 'golden%';").unwrap();
    p.exp_string("golden-web-2024").unwrap();
    p.exp_string("This changes 4 resources, freeing $2.05 a month. Send 4 requests? [y/N]").unwrap();
    p.send_line("n").unwrap();
    p.exp_string("nothing was sent").unwrap();
    p.exp_string("imageql> ").unwrap();
    assert_eq!(deletes(&sandbox), 0);

    // One resource goes at once.
    p.send_line("DELETE FROM linode.images.images WHERE id = 'private/1003';").unwrap();
    p.exp_string("deleted 1 from linode.images.images: private/1003").unwrap();
    p.exp_string("imageql> ").unwrap();
    assert_eq!(deletes(&sandbox), 1);

    // Yes sends them.
    p.send_line("DELETE FROM linode.images.images WHERE label LIKE 'golden%2024';").unwrap();
    p.exp_string("Send 2 requests? [y/N]").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("deleted 2 from linode.images.images").unwrap();
    p.exp_string("imageql> ").unwrap();
    assert_eq!(deletes(&sandbox), 3);

    // \set dry_run on: changes are previewed, and nothing asks.
    p.send_line("\\set dry_run on").unwrap();
    p.exp_string("dry_run is on").unwrap();
    p.send_line("DELETE FROM linode.images.images WHERE NOT is_public AND type = 'manual';").unwrap();
    p.exp_string("none sent").unwrap();
    p.exp_string("imageql> ").unwrap();
    assert_eq!(deletes(&sandbox), 3);

    // \set confirm off: no question.
    p.send_line("\\set dry_run off").unwrap();
    p.exp_string("dry_run is off").unwrap();
    p.send_line("\\set confirm off").unwrap();
    p.exp_string("confirm is off").unwrap();
    p.send_line("\\set").unwrap();
    p.exp_string("confirm = off").unwrap();
    p.send_line("DELETE FROM linode.images.images WHERE label IN ('golden-web-2025', 'ops'' toolbox');").unwrap();
    p.exp_string("deleted 2 from linode.images.images").unwrap();
    p.exp_string("imageql> ").unwrap();
    assert_eq!(deletes(&sandbox), 5);
    p.send_line("\\set confirm maybe").unwrap();
    p.exp_string("takes on or off").unwrap();
}

#[test]
fn a_statement_with_a_root_password_is_not_kept_in_the_history() {
    let sandbox = SandboxProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut p = shell(&sandbox, home.path());
    p.send_line("\\set dry_run on").unwrap();
    p.exp_string("dry_run is on").unwrap();
    p.send_line("INSERT INTO linode.linode.instances (region, type, image, label, root_pass) VALUES ('us-east', 'g6-nanode-1', 'linode/debian12', 'histo', 'History-secret-9');").unwrap();
    p.exp_string("none sent").unwrap();
    p.exp_string("imageql> ").unwrap();
    p.send_line("SELECT 1 AS kept;").unwrap();
    p.exp_string("(1 row").unwrap();
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();
    let history = std::fs::read_to_string(home.path().join(".local/share/imageql/history")).unwrap();
    assert!(history.contains("SELECT 1 AS kept"), "{history}");
    assert!(!history.contains("History-secret-9") && !history.contains("root_pass"), "{history}");
}
