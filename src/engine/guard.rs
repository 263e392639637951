/*! What a statement may do, checked once for every front end. A [`Policy`] says what the
front end allows its users: the command line is its user's own (files anywhere, tables and
views of the session, the engine's settings), while `imageql serve` answers remote clients and
allows none of that unless its operator opens one directory for files. Every statement passes
[`check_statement`] before it is planned and [`check_plan`] once it is; changes resolve their
files through [`FileAccess`].

Some refusals hold for every front end: statements that make no sense against an API (dropping
or creating tables in a provider's catalog, `TRUNCATE` of a resource), `COPY … STORED AS` an
unknown format (DataFusion would write CSV), and `COPY` into places that take no files (`/proc`,
a dangling symbolic link). */

use std::path::Path;

use datafusion::common::TableReference;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    DdlStatement, LogicalPlan, ResetVariable as ResetPlanVariable, SetVariable, Statement as PlanStatement,
};
use datafusion::sql::parser::{CopyToStatement, ResetStatement as ResetVariable, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Reset, ResetStatement, Set, Statement};

use super::statement::is_engine_setting;
use crate::error::{Error, FileRefusal, Forbidden};
use crate::files::FileAccess;
use crate::provider::Registry;

/// What a front end lets its users do besides reading and changing resources.
#[derive(Debug, Clone)]
pub struct Policy {
    pub files: FileAccess,
    /// Creating and dropping the session's own tables, views and schemas, and writing into them.
    pub definitions: bool,
    /// `SET datafusion.…`.
    pub engine_settings: bool,
    /// Whether errors may name how this machine is set up: the API's URL, the environment
    /// variable the token comes from.
    pub reveals_setup: bool,
}

impl Policy {
    /// The command line's: everything its user could do with the files and the engine anyway.
    pub fn local() -> Policy {
        Policy { files: FileAccess::Anywhere, definitions: true, engine_settings: true, reveals_setup: true }
    }

    /// A server's for its remote clients: files only as `files` allows, no definitions, no
    /// engine settings, nothing about the server's setup in errors.
    pub fn remote(files: FileAccess) -> Policy {
        Policy { files, definitions: false, engine_settings: false, reveals_setup: false }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::local()
    }
}

fn definition(statement: impl Into<String>) -> Error {
    Error::Forbidden(Forbidden::Definition { statement: statement.into() })
}

/// The checks a parsed statement passes before it is planned. A `COPY … TO` file gets the
/// path the policy resolves it to.
pub fn check_statement(statement: &mut DFStatement, state: &SessionState, policy: &Policy) -> Result<(), Error> {
    match statement {
        DFStatement::CopyTo(copy) => check_copy(copy, state, policy),
        DFStatement::CreateExternalTable(_) if !policy.definitions => Err(definition("CREATE EXTERNAL TABLE")),
        DFStatement::CreateExternalTable(table) if policy.files != FileAccess::Anywhere => {
            Err(Error::Forbidden(Forbidden::File { path: table.locations.join(", "), why: FileRefusal::NoFiles }))
        }
        DFStatement::Explain(explain) => check_statement(&mut explain.statement, state, policy),
        DFStatement::Reset(ResetVariable::Variable(name))
            if !policy.engine_settings && is_engine_setting(&name.to_string()) =>
        {
            Err(Error::Forbidden(Forbidden::Setting { name: name.to_string() }))
        }
        DFStatement::Statement(statement) => match engine_setting(statement) {
            Some(name) if !policy.engine_settings => Err(Error::Forbidden(Forbidden::Setting { name })),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The name of the engine setting a `SET` or `RESET` changes, if it changes one.
fn engine_setting(statement: &Statement) -> Option<String> {
    let name = match statement {
        Statement::Set(Set::SingleAssignment { variable, .. }) => variable.to_string(),
        Statement::Reset(ResetStatement { reset: Reset::ConfigurationParameter(name) }) => name.to_string(),
        _ => return None,
    };
    is_engine_setting(&name).then_some(name)
}

/// `COPY … TO` with a format the session knows and a destination the policy allows and that
/// can take files.
fn check_copy(copy: &mut CopyToStatement, state: &SessionState, policy: &Policy) -> Result<(), Error> {
    if let Some(format) = &copy.stored_as
        && state.get_file_format_factory(format).is_none()
    {
        let mut known: Vec<String> = ["csv", "json", "parquet", "arrow"]
            .into_iter()
            .filter(|f| state.get_file_format_factory(f).is_some())
            .map(str::to_string)
            .collect();
        known.sort();
        return Err(Error::Unsupported {
            what: format!("COPY … STORED AS {format}"),
            instead: Some(format!("the formats are {}", known.join(", "))),
        });
    }
    let written = copy.target.strip_prefix("file://").unwrap_or(&copy.target).to_string();
    if written.contains("://") && policy.files == FileAccess::Anywhere {
        // Object stores are DataFusion's to refuse: none is registered.
        return Ok(());
    }
    let directory_output = written.ends_with('/');
    let mut target = policy.files.writable(&written)?.display().to_string();
    if directory_output && !target.ends_with('/') {
        target.push('/');
    }
    check_destination(&written, Path::new(&target), directory_output, &policy.files)?;
    copy.target = target;
    Ok(())
}

/// Whether files can be created where `path` points, tried with a real file. Errors name
/// paths as the statement wrote them (inside an allowed directory, relative to it).
fn check_destination(written: &str, path: &Path, directory_output: bool, files: &FileAccess) -> Result<(), Error> {
    let refused = |why: String| Error::Refused(format!("COPY cannot write to {written}: {why}"));
    let parent = match (directory_output, path.parent()) {
        (true, _) => path,
        (false, Some(parent)) if !parent.as_os_str().is_empty() => parent,
        (false, _) => Path::new("."),
    };
    // A directory output may not exist yet; its parent must.
    let dir = match directory_output && !parent.exists() {
        true => parent.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")),
        false => parent,
    };
    let shown = files.shown(dir);
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(refused(format!("{shown} is not a directory"))),
        Err(_) if dir.symlink_metadata().is_ok() => {
            return Err(refused(format!("{shown} is a symbolic link to nothing")));
        }
        Err(_) => return Err(refused(format!("the directory {shown} does not exist: create it first"))),
    }
    if !directory_output && path.symlink_metadata().is_ok() {
        match std::fs::metadata(path) {
            Err(_) => return Err(refused("it is a symbolic link to nothing".into())),
            Ok(meta) if !meta.is_file() => return Err(refused("it exists and is not a regular file".into())),
            Ok(_) => {}
        }
    }
    // Pseudo-filesystems (/proc, /sys) look like directories but refuse new files.
    let probe = dir.join(format!(".imageql-copy-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(refused(format!("cannot create files in {shown}: {}", e.kind()))),
    }
}

/// The checks a planned statement passes: what the policy does not allow, and what cannot
/// mean anything for a provider's resources.
pub fn check_plan(plan: &LogicalPlan, registry: &Registry, policy: &Policy) -> Result<(), Error> {
    let is_provider = |catalog: &str| registry.providers.contains_key(&catalog.to_lowercase());
    let in_provider = |table: &TableReference| table.catalog().is_some_and(is_provider);
    let refuse = |what: &str, name: &str| Error::Unsupported {
        what: format!("{what} on {name}"),
        instead: Some(format!(
            "a provider's tables come from its provider files; create your own tables and views outside \
             the {} catalog",
            name.split('.').next().unwrap_or_default()
        )),
    };
    match plan {
        LogicalPlan::Ddl(ddl) => {
            let schema_in_provider = |name: &str| name.split('.').next().is_some_and(is_provider);
            let (verb, name, provider_owned): (&str, String, bool) = match ddl {
                DdlStatement::CreateExternalTable(c) => {
                    ("CREATE EXTERNAL TABLE", c.name.to_string(), in_provider(&c.name))
                }
                DdlStatement::CreateMemoryTable(c) => ("CREATE TABLE", c.name.to_string(), in_provider(&c.name)),
                DdlStatement::CreateView(c) => ("CREATE VIEW", c.name.to_string(), in_provider(&c.name)),
                DdlStatement::CreateIndex(c) => ("CREATE INDEX", c.table.to_string(), in_provider(&c.table)),
                DdlStatement::DropTable(d) => ("DROP TABLE", d.name.to_string(), in_provider(&d.name)),
                DdlStatement::DropView(d) => ("DROP VIEW", d.name.to_string(), in_provider(&d.name)),
                DdlStatement::CreateCatalogSchema(c) => {
                    ("CREATE SCHEMA", c.schema_name.clone(), schema_in_provider(&c.schema_name))
                }
                DdlStatement::DropCatalogSchema(d) => {
                    ("DROP SCHEMA", d.name.to_string(), schema_in_provider(&d.name.to_string()))
                }
                DdlStatement::CreateCatalog(c) => {
                    ("CREATE DATABASE", c.catalog_name.clone(), is_provider(&c.catalog_name))
                }
                DdlStatement::CreateFunction(c) => ("CREATE FUNCTION", c.name.clone(), false),
                DdlStatement::DropFunction(d) => ("DROP FUNCTION", d.name.clone(), false),
            };
            match (policy.definitions, provider_owned) {
                (false, _) => Err(definition(verb)),
                (true, true) => Err(refuse(verb, &name)),
                (true, false) => Ok(()),
            }
        }
        LogicalPlan::Dml(dml) if in_provider(&dml.table_name) => Err(Error::Unsupported {
            what: format!("{} on {}", dml.op.name().to_uppercase(), dml.table_name),
            instead: Some("DELETE FROM … WHERE … deletes rows; REPLACE … SET … WHERE … changes them".into()),
        }),
        LogicalPlan::Dml(dml) if !policy.definitions => {
            Err(definition(format!("{} {}", dml.op.name().to_uppercase(), dml.table_name)))
        }
        LogicalPlan::Copy(_) if policy.files == FileAccess::Nowhere => {
            Err(Error::Forbidden(Forbidden::File { path: String::new(), why: FileRefusal::NoFiles }))
        }
        LogicalPlan::Statement(PlanStatement::SetVariable(SetVariable { variable, .. }))
        | LogicalPlan::Statement(PlanStatement::ResetVariable(ResetPlanVariable { variable, .. }))
            if !policy.engine_settings && is_engine_setting(variable) =>
        {
            Err(Error::Forbidden(Forbidden::Setting { name: variable.clone() }))
        }
        _ => Ok(()),
    }
}
