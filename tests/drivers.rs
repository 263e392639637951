//! `imageql serve` driven by the drivers and tools its users bring, at their current
//! releases: node-postgres with pg-cursor and pg-query-stream, pgJDBC's DatabaseMetaData
//! (what DBeaver, DataGrip, Metabase and Tableau call), pgcli, SQLAlchemy's reflection with
//! pandas, psycopg's cursors and COPY, asyncpg, and psql's meta commands. Answers are compared with
//! the sandbox's own; where imageql has nothing to show (keys, indexes, comments), the
//! answer is an empty one of the shape PostgreSQL gives.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::pgwire::{self, RawClient};
use common::{SandboxProcess, ServeProcess, TOKEN, node_clients, pgjdbc_jar, postgres_clients};
use serde_json::{Value, json};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(name)
}

/// Runs a client program that prints one JSON object, with the server's URL and password.
fn report(program: &mut Command, server: &ServeProcess) -> Value {
    let out = program
        .env("IMAGEQL_URL", server.url_for("reporter"))
        .env("IMAGEQL_PASSWORD", TOKEN)
        .output()
        .expect("the client runs");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let printed = text(&out.stdout);
    common::assert_no_token("a client's output", &printed);
    serde_json::from_str(printed.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {printed}"))
}

fn python_tool(server: &ServeProcess, part: &str) -> Value {
    report(Command::new(postgres_clients().join("bin/python")).arg(script("postgres_tools.py")).arg(part), server)
}

/// The sandbox's answer to a query, through the command line.
fn column(sandbox: &SandboxProcess, sql: &str) -> Vec<Value> {
    sandbox.rows(sql).into_iter().map(|row| row.as_object().unwrap().values().next().cloned().unwrap()).collect()
}

fn private_ids(sandbox: &SandboxProcess) -> Vec<Value> {
    column(sandbox, "SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id")
}

fn count(sandbox: &SandboxProcess, sql: &str) -> u64 {
    column(sandbox, sql)[0].as_u64().unwrap()
}

fn columns_of_images(sandbox: &SandboxProcess) -> Vec<Value> {
    column(
        sandbox,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'images' AND table_name = 'images' ORDER BY ordinal_position",
    )
}

#[test]
fn node_postgres_binds_arrays_and_changes_reads_cursors_and_streams() {
    let sandbox = SandboxProcess::start(&["--time-scale", "0"]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let mut node = Command::new("node");
    node.arg(script("node_postgres.js")).env("NODE_PATH", node_clients());
    let report = report(&mut node, &server);
    let ids = private_ids(&sandbox);

    assert_eq!(report["one"], json!(1), "SELECT 1 is an int4, a number in JavaScript");
    assert_eq!(report["big"], json!("3000000000"), "an int8 stays exact, as a string");
    assert_eq!(report["ids"], json!(ids));
    assert_eq!(report["any"], json!(ids[..2]), "an untyped array parameter is read as a Postgres array literal");
    let above = count(&sandbox, "SELECT count(*) AS n FROM linode.images.images WHERE size > 2000");
    assert_eq!(report["count_above"], json!(above));
    assert_eq!(report["typed"], json!({"tags": true, "created": true, "size": "string", "is_public": false}));
    assert_eq!(report["cursor"], json!(ids[..6]), "pg-cursor reads its rows in portions, in order");
    assert_eq!(report["stream"], json!(ids), "pg-query-stream reads every row once");

    let usage = count(&sandbox, "SELECT count(*) AS n FROM linode.images.usage('2026-11-01', '2026-12-01')");
    assert_eq!(report["usage_literals"], json!(usage));
    assert_eq!(report["usage_parameters"], json!(usage), "a table function takes $n");
    let instance = column(&sandbox, "SELECT id FROM linode.linode.instances ORDER BY id LIMIT 1")[0].clone();
    let disks: Vec<Value> = column(
        &sandbox,
        &format!(
            "SELECT CAST(id AS VARCHAR) AS id FROM linode.linode.disks WHERE \"linodeId\" = {instance} ORDER BY id"
        ),
    );
    assert_eq!(report["disks_unquoted"], json!(disks), "linodeId needs no quotes");
    assert_eq!(report["search_path"], json!(ids.len()), "SET search_path finds unqualified tables");
    assert_eq!(report["prepared_by_name"], json!({"prepare": "PREPARE", "n": above, "deallocate": "DEALLOCATE"}));
    assert_eq!(report["execute_deallocated"]["error"], json!("26000"), "{}", report["execute_deallocated"]);

    let change = &report["change"];
    assert_eq!(change["inserted"], json!(1), "{change}");
    assert_eq!(change["replaced"], json!(1), "{change}");
    assert_eq!(change["label"], json!("renamed-by-node"), "{change}");
    assert_eq!(change["deleted"], json!(1), "{change}");
    assert!(!private_ids(&sandbox).contains(&change["id"]), "the image made and deleted over $n is gone: {change}");

    for (name, code) in [
        ("syntax", "42601"),
        ("no_function", "42883"),
        ("no_table", "42P01"),
        ("no_column", "42703"),
        ("bad_cast", "22P02"),
    ] {
        assert_eq!(report[name]["error"], json!(code), "{name}: {}", report[name]);
    }
    assert_eq!(report["after_errors"], json!(2), "the connection works after its errors");
}

/// pgJDBC's output: `call NAME ok ROWS COLUMNS` / `call NAME failed …`, `value NAME TEXT`.
fn jdbc(server: &ServeProcess, ids: &[Value]) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
    let out = Command::new("java")
        .arg("-cp")
        .arg(pgjdbc_jar())
        .arg(script("JdbcMetadata.java"))
        .args([&server.url_for("reporter"), TOKEN, ids[0].as_str().unwrap(), ids[1].as_str().unwrap()])
        .output()
        .expect("java runs (.ci/run installs a JDK)");
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{printed}{}", text(&out.stderr));
    let (mut calls, mut values) = (BTreeMap::new(), BTreeMap::new());
    for line in printed.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["call", name, rest @ ..] => calls.insert(name.to_string(), rest.iter().map(|s| s.to_string()).collect()),
            ["value", name, value] => values.insert(name.to_string(), value.to_string()).map(|_| vec![]),
            _ => panic!("unexpected line {line:?}"),
        };
    }
    (calls, values)
}

#[test]
fn pgjdbc_database_metadata_answers_every_call_and_types_match_the_wire() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let ids = private_ids(&sandbox);
    let (calls, values) = jdbc(&server, &ids);

    let failed: Vec<_> = calls.iter().filter(|(_, c)| c[0] != "ok").collect();
    assert!(failed.is_empty(), "DatabaseMetaData calls failed: {failed:?}");
    let rows = |name: &str| calls[name][1].parse::<usize>().unwrap();
    assert_eq!(calls.len(), 21, "{calls:?}");
    for listed in ["getCatalogs", "getSchemas", "getTableTypes", "getTypeInfo", "getClientInfoProperties"] {
        assert!(rows(listed) > 0, "{listed} lists nothing");
    }
    let tables = sandbox.rows("SHOW RESOURCES IN linode.images");
    let tables = tables.iter().filter(|t| t["type"] != "function").count();
    assert_eq!(rows("getTables"), tables, "images.images and the images schema's views");
    assert_eq!(rows("getColumns"), columns_of_images(&sandbox).len());
    // No keys, indexes, functions or grants: empty, with the columns JDBC defines.
    for empty in
        ["getPrimaryKeys", "getIndexInfo", "getImportedKeys", "getExportedKeys", "getCrossReference", "getFunctions"]
    {
        assert_eq!(rows(empty), 0, "{empty}");
    }
    assert_eq!(
        calls["getPrimaryKeys"][2].to_lowercase(),
        "table_cat,table_schem,table_name,column_name,key_seq,pk_name"
    );
    assert!(
        calls["getIndexInfo"][2].starts_with("TABLE_CAT,TABLE_SCHEM,TABLE_NAME,NON_UNIQUE"),
        "{:?}",
        calls["getIndexInfo"]
    );

    // What a tool shows of a column's type is what its rows arrive as, arrays and records too.
    assert_eq!(values["catalog_types"], values["wire_types"]);
    assert!(values["catalog_types"].contains("tags:_text:2003"), "{}", values["catalog_types"]);
    assert!(values["catalog_types"].contains("regions:_record:"), "{}", values["catalog_types"]);
    let objects = &values["objects"];
    for typed in ["created:Timestamp", "size:Long", "tags:PgArray", "is_public:Boolean", "regions:PGobject"] {
        assert!(objects.contains(typed), "{typed} in {objects}");
    }
    let first = sandbox
        .rows(&format!("SELECT tags, label FROM linode.images.images WHERE id = '{}'", ids[0].as_str().unwrap()));
    let tags: Vec<&str> = first[0]["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(values["tags"], tags.join(","));
    assert_eq!(values["label"], first[0]["label"].as_str().unwrap(), "setString binds a text parameter");
    let above = count(&sandbox, "SELECT count(*) AS n FROM linode.images.images WHERE size > 2000");
    assert_eq!(values["count_above"], above.to_string(), "setLong binds an int8 parameter");
    assert_eq!(values["any_ids"], format!("{},{}", ids[0].as_str().unwrap(), ids[1].as_str().unwrap()), "setArray");
    assert_eq!(values["syntax_error"], "42601");
    assert_eq!(values["after_error"], "Integer 1");
}

#[test]
fn pgcli_completion_and_special_commands_are_answered() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let report = python_tool(&server, "pgcli");
    let failed: Vec<_> = report.as_object().unwrap().iter().filter(|(_, v)| v.get("error").is_some()).collect();
    assert!(failed.is_empty(), "pgcli calls failed: {failed:?}");

    let schemata = report["pgcli_schemata"].as_array().unwrap();
    for schema in ["images", "linode", "pg_catalog"] {
        assert!(schemata.contains(&json!(schema)), "{schema} in {schemata:?}");
    }
    assert!(report["pgcli_tables"].as_array().unwrap().contains(&json!(["images", "images"])));
    assert!(report["pgcli_views"].as_array().unwrap().contains(&json!(["images", "storage_costs"])));
    assert!(report["pgcli_table_columns"].as_u64().unwrap() >= columns_of_images(&sandbox).len() as u64);
    assert!(report["pgcli_functions"].as_u64().unwrap() > 0, "completion knows the functions");
    assert_eq!(report["pgcli_databases"], json!(["linode"]), "only the database a client can connect to");
    let first_row = |command: &str| report[format!("pgcli_run {command}")][0][0].as_array().unwrap()[..3].to_vec();
    assert_eq!(first_row("\\dt images.*"), ["images", "images", "table"]);
    let described: Vec<Value> =
        report["pgcli_run \\d images.images"][0].as_array().unwrap().iter().map(|c| c[0].clone()).collect();
    assert_eq!(described, columns_of_images(&sandbox));
    let views: Vec<Vec<Value>> = report["pgcli_run \\dv"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap()[..3].to_vec())
        .collect();
    for view in [["images", "storage_costs", "view"], ["history", "images_versions", "view"]] {
        assert!(views.contains(&view.map(|v| json!(v)).to_vec()), "{view:?} in {views:?}");
    }
    for empty in ["\\df", "\\dT"] {
        assert_eq!(report[format!("pgcli_run {empty}")], json!([[]]), "{empty}: no user functions or types");
    }
}

#[test]
fn sqlalchemy_reflects_tables_and_pandas_reads_them() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let report = python_tool(&server, "sqlalchemy");
    let expected_failures = ["pandas_to_sql"];
    let failed: Vec<_> = report
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, v)| v.get("error").is_some() && !expected_failures.contains(&name.as_str()))
        .collect();
    assert!(failed.is_empty(), "SQLAlchemy and pandas calls failed: {failed:?}");
    assert_eq!(report["sa_version"], json!(common::POSTGRES_CLIENTS[1].trim_start_matches("SQLAlchemy==")));

    let schemas = report["sa_schema_names"].as_array().unwrap();
    assert!(schemas.contains(&json!("images")) && !schemas.contains(&json!("pg_catalog")), "{schemas:?}");
    assert_eq!(report["sa_table_names"], json!(["images"]));
    let views: Vec<Value> = sandbox
        .rows("SHOW RESOURCES IN linode.images")
        .iter()
        .filter(|r| r["type"] == "view")
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(report["sa_view_names"], json!(views));
    let columns = columns_of_images(&sandbox);
    let reflected: Vec<Value> = report["sa_columns"].as_array().unwrap().iter().map(|c| c[0].clone()).collect();
    assert_eq!(reflected, columns);
    assert!(report["sa_columns"].as_array().unwrap().contains(&json!(["size", "BIGINT", false])));
    assert_eq!(report["sa_autoload"], json!(columns), "Table(autoload_with=…)");
    for empty in ["sa_pk_constraint", "sa_foreign_keys", "sa_indexes", "sa_unique_constraints", "sa_check_constraints"]
    {
        assert_eq!(report[empty], json!([]), "{empty}");
    }
    assert_eq!(report["sa_table_comment"], Value::Null);

    let above = column(&sandbox, "SELECT id FROM linode.images.images WHERE size > 2000 ORDER BY id");
    assert_eq!(report["sa_reflected_select"], json!(above), "a query built on the reflected table");
    assert_eq!(report["pandas_read_sql_params"], json!(above));
    assert_eq!(report["sa_stream_results"], json!(private_ids(&sandbox)), "stream_results reads through a cursor");
    let all = count(&sandbox, "SELECT count(*) AS n FROM linode.images.images");
    assert_eq!(report["pandas_read_sql_table"], json!({"rows": all, "columns": columns}));
    // A client makes no tables here, and is told so in the words of the SQLSTATE.
    assert_eq!(report["pandas_to_sql"]["error"], json!("25006"), "{}", report["pandas_to_sql"]);
}

#[test]
fn psycopg_cursors_and_copy_to_stdout_read_every_row_once() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &["--page-size", "5"], &[]);
    let report = python_tool(&server, "psycopg");
    let ids = private_ids(&sandbox);
    let strings: Vec<&str> = ids.iter().map(|i| i.as_str().unwrap()).collect();

    assert_eq!(report["named_cursor"], json!({"first": ids[..4], "rest": ids[4..]}), "a server-side cursor");
    assert_eq!(report["declared_cursor"], json!({"two": ids[..2], "next": ids[2..3], "rest": ids[3..]}));

    let rows = sandbox.rows("SELECT id, size, tags, label FROM linode.images.images WHERE NOT is_public ORDER BY id");
    let copied_text: Vec<String> = rows
        .iter()
        .map(|r| {
            let tags: Vec<&str> = r["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            format!("{}\t{}\t{{{}}}\n", r["id"].as_str().unwrap(), r["size"], tags.join(","))
        })
        .collect();
    assert_eq!(report["copy_text"], json!(copied_text.concat()), "COPY … TO STDOUT in text format");
    let csv = report["copy_csv"].as_str().unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,label"));
    let read: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(read, strings, "COPY … TO STDOUT WITH (FORMAT csv, HEADER)");
    assert_eq!(report["copy_from"]["error"], json!("0A000"), "{}", report["copy_from"]);
}

#[test]
fn asyncpg_reads_every_type_in_binary() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let report = python_tool(&server, "asyncpg");
    let ids = private_ids(&sandbox);
    assert_eq!(report["asyncpg_version"], json!(common::POSTGRES_CLIENTS[4].trim_start_matches("asyncpg==")));
    assert_eq!(report["one"], json!(1));
    let above = column(&sandbox, "SELECT id FROM linode.images.images WHERE size > 2000 ORDER BY id");
    assert_eq!(report["above"], json!(above));
    assert_eq!(report["any"], json!(["private/1001", "private/1002"]));
    assert_eq!(report["cursor"], json!(ids), "a cursor read three rows at a time");
    // Records and their arrays, decoded in binary after asyncpg looked their types up.
    let rows =
        sandbox.rows("SELECT id, tags, created, regions FROM linode.images.images WHERE NOT is_public ORDER BY id");
    let expected: Vec<Value> = rows
        .iter()
        .map(|r| {
            let regions: Vec<Value> = r["regions"]
                .as_array()
                .map(|list| list.iter().map(|x| json!([x["region"], x["status"]])).collect())
                .unwrap_or_default();
            let created = r["created"].as_str().unwrap().trim_end_matches('Z').to_string();
            json!([r["id"], r["tags"], created, regions])
        })
        .collect();
    assert_eq!(report["rows"], json!(expected));
    assert_eq!(report["syntax"]["error"], json!("42601"), "an error answers at once: {}", report["syntax"]);
}

#[test]
fn records_read_alike_in_text_and_binary() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let report = python_tool(&server, "records");
    let (text, binary) = (report["text"].as_array().unwrap(), report["binary"].as_array().unwrap());
    assert_eq!(text.len(), private_ids(&sandbox).len());
    for (t, b) in text.iter().zip(binary) {
        assert_eq!(t[0], b[0]);
        assert_eq!(t[2], b[2], "regions of {}", t[0]);
        // A NULL field of a record is NULL in both formats, never an empty text.
        let nulls = |row: &Value| row[1].as_array().map(|f| f.iter().map(Value::is_null).collect::<Vec<_>>());
        assert_eq!(nulls(t), nulls(b), "image_sharing of {}: {t} / {b}", t[0]);
    }
}

fn psql(server: &ServeProcess, variables: &[&str], commands: &[&str]) -> Output {
    let mut command = Command::new("psql");
    command.arg(server.url_for("reporter")).args(["-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1"]);
    for variable in variables {
        command.args(["-v", variable]);
    }
    for c in commands {
        command.args(["-c", c]);
    }
    command.env("PGPASSWORD", TOKEN).env("PGCONNECT_TIMEOUT", "10").output().expect("psql runs")
}

/// psql's output for `commands`, which must all succeed.
fn psql_ok(server: &ServeProcess, variables: &[&str], commands: &[&str]) -> String {
    let out = psql(server, variables, commands);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && stderr.is_empty(), "{commands:?}:\n{stdout}{stderr}");
    stdout
}

#[test]
fn psql_meta_commands_settings_cursors_and_copy_work() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let columns = columns_of_images(&sandbox);

    let described = psql_ok(&server, &[], &["\\d+ images.images"]);
    for name in &columns {
        assert!(
            described.lines().any(|l| l.starts_with(&format!("{}|", name.as_str().unwrap()))),
            "{name}: {described}"
        );
    }
    assert!(described.contains("regions|record[]"), "{described}");
    let schemas = psql_ok(&server, &[], &["\\dn+"]);
    assert!(schemas.lines().any(|l| l.starts_with("images|")), "{schemas}");
    let tables = psql_ok(&server, &[], &["\\dt+ images.*"]);
    assert!(tables.lines().any(|l| l.starts_with("images|images|table|") && l.contains("|0 bytes|")), "{tables}");
    let views = psql_ok(&server, &[], &["\\dv+ images.*"]);
    assert!(views.lines().any(|l| l.starts_with("images|storage_costs|view|")), "{views}");
    let databases = psql_ok(&server, &[], &["\\l+"]);
    assert!(databases.lines().any(|l| l.starts_with("linode|")), "{databases}");
    // No functions, types, extensions or domains of the user: the headers, and no rows.
    for (command, header) in [
        ("\\df", "Schema|Name|Result data type"),
        ("\\dT", "Schema|Name|Description"),
        ("\\dx+", ""),
        ("\\dD", "Schema|Name|Type"),
    ] {
        let listed = psql_ok(&server, &[], &[command]);
        assert!(listed.contains(header) && listed.contains("(0 rows)") || header.is_empty(), "{command}: {listed}");
    }
    psql_ok(&server, &[], &["\\du", "\\dt", "\\dv"]);

    let settings = psql_ok(
        &server,
        &[],
        &[
            "SET statement_timeout = 5000",
            "SELECT current_setting('statement_timeout') AS t",
            "RESET statement_timeout",
            "SHOW statement_timeout",
            "SET search_path TO images, public",
            "SELECT count(*) AS n FROM images WHERE NOT is_public",
        ],
    );
    let private = private_ids(&sandbox).len();
    assert!(settings.contains("t\n5000\n") && settings.contains("statement_timeout\n0\n"), "{settings}");
    assert!(settings.contains(&format!("n\n{private}\n")), "{settings}");

    // FETCH_COUNT makes psql read through a cursor, a few rows at a time.
    let query = "SELECT id, size FROM linode.images.images WHERE NOT is_public ORDER BY id";
    let whole = psql_ok(&server, &[], &[query]);
    let fetched = psql_ok(&server, &["FETCH_COUNT=4"], &[query]);
    assert_eq!(fetched, whole);
    let prepared = psql_ok(
        &server,
        &[],
        &["PREPARE big(bigint) AS SELECT count(*) AS n FROM linode.images.images WHERE size > $1", "EXECUTE big(2000)"],
    );
    let above = count(&sandbox, "SELECT count(*) AS n FROM linode.images.images WHERE size > 2000");
    assert!(prepared.starts_with("PREPARE\n") && prepared.contains(&format!("n\n{above}\n")), "{prepared}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("images.csv");
    let copied = psql_ok(
        &server,
        &[],
        &[&format!(
            "\\copy (SELECT id, label FROM linode.images.images WHERE NOT is_public ORDER BY id) TO '{}' WITH (FORMAT csv, HEADER)",
            file.display()
        )],
    );
    assert_eq!(copied.trim(), format!("COPY {private}"));
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), private + 1, "{written}");
}

#[test]
fn every_error_class_has_its_sqlstate_on_both_protocols() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &["--page-size", "2"], &[]);
    let address = server.address();
    let classes = [
        ("SELEC 1", "42601"),
        ("SELECT no_such_function(1)", "42883"),
        ("SELECT * FROM no_such_table", "42P01"),
        ("SELECT no_such_column FROM linode.images.images", "42703"),
        ("SELECT CAST(label AS INT) FROM linode.images.images", "22P02"),
        ("SELECT 1 / 0", "22012"),
        ("UPDATE linode.images.images SET label = 'x'", "0A000"),
        ("CREATE TABLE t (a INT)", "25006"),
        ("SET datafusion.execution.batch_size = 1", "42501"),
        ("COPY (SELECT 1 AS a) TO '/tmp/imageql-copied.csv'", "42501"),
        ("SELECT * FROM linode.linode.disks", "42601"),
        ("SELECT * FROM linode.linode.disks WHERE linodeId = 999999", "42704"),
        ("DELETE FROM linode.images.images WHERE id = 'linode/debian12'", "42501"),
    ];
    let (mut client, _, _) = RawClient::login(&address, TOKEN);
    for (sql, code) in classes {
        client.send(&pgwire::query(sql));
        let replies = client.until_ready();
        let error = pgwire::error(&replies).unwrap_or_else(|| panic!("{sql}: no error in {replies:?}"));
        assert_eq!(error.code().as_deref(), Some(code), "simple query {sql}: {:?}", error.message());

        let mut extended = pgwire::parse("", sql, &[]);
        extended.extend(pgwire::bind("", "", 0, &[]));
        extended.extend(pgwire::describe_portal(""));
        extended.extend(pgwire::execute("", 0));
        extended.extend(pgwire::sync());
        client.send(&extended);
        let replies = client.until_ready();
        let error = pgwire::error(&replies).unwrap_or_else(|| panic!("{sql}: no error in {replies:?}"));
        assert_eq!(error.code().as_deref(), Some(code), "extended query {sql}: {:?}", error.message());
    }

    // An error of the extended protocol is sent at once, before the client's Sync: asyncpg
    // waits for the answer to its Parse after a Flush.
    let mut parse_then_flush = pgwire::parse("", "SELEC 1", &[]);
    parse_then_flush.extend(pgwire::message(b'H', &[]));
    client.send(&parse_then_flush);
    let answer = client.read().expect("an answer before Sync");
    assert_eq!(answer.code().as_deref(), Some("42601"), "{answer:?}");
    client.send(&pgwire::sync());
    assert_eq!(client.until_ready().last().map(|r| r.kind), Some(b'Z'));

    // An error after rows were sent keeps its code: the client has the rows before it.
    let streaming = "SELECT id, CASE WHEN id = (SELECT max(id) FROM linode.images.images WHERE NOT is_public) \
                     THEN CAST(id AS INT) END AS n FROM linode.images.images WHERE NOT is_public";
    client.send(&pgwire::query(streaming));
    let replies = client.until_ready();
    let error = pgwire::error(&replies).expect("the cast fails on the last row");
    assert_eq!(error.code().as_deref(), Some("22P02"), "{:?}", error.message());

    // A refused token, and nothing of the server's setup in the answer.
    let refused = RawClient::try_login(&address, "not-the-token").err().expect("refused");
    assert_eq!(refused.code().as_deref(), Some("28P01"), "{refused:?}");
    let said = refused.message().unwrap_or_default();
    assert!(!said.contains("LINODE_TOKEN") && !said.contains(&sandbox.url) && !said.contains("127.0.0.1"), "{said}");
}

#[test]
fn a_fifty_thousand_id_in_list_is_answered() {
    let sandbox = SandboxProcess::start(&[]);
    let server = ServeProcess::start(&sandbox, &[], &[]);
    let ids = private_ids(&sandbox);
    let mut listed: Vec<String> = (0..50_000).map(|n| format!("'private/{}'", 900_000 + n)).collect();
    listed.extend(ids.iter().map(|id| format!("'{}'", id.as_str().unwrap())));
    let sql = format!("SELECT count(*) AS n FROM linode.images.images WHERE id IN ({})", listed.join(", "));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.sql");
    std::fs::write(&file, &sql).unwrap();
    let answered = psql_ok(&server, &[], &[&format!("\\i {}", file.display())]);
    assert!(answered.contains(&format!("n\n{}\n", ids.len())), "{answered}");
}
