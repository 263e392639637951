/*! What the engine refuses before DataFusion runs a statement. DataFusion would plan some
statements that make no sense against an API (dropping or creating tables in a provider's
catalog, `TRUNCATE` of a resource), would write `COPY … STORED AS` an unknown format as CSV,
and would write into places that are no directory (`/proc`, a dangling symbolic link).
Statements nested deeper than DataFusion can plan ([`MAX_EXPRESSION_DEPTH`],
[`MAX_SET_OPERATIONS`], [`MAX_JOINS`]) are refused before anything walks them, so that no
statement can exhaust the stack. */

use std::ops::ControlFlow;
use std::path::Path;

use datafusion::common::TableReference;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::{CopyToSource, CopyToStatement, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Visit, Visitor};

use crate::error::Error;
use crate::provider::Registry;

/// How deeply expressions may nest: operands of a chain such as `1+1+…` or `a OR b OR …`
/// count one level each.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;
/// The most set operations (`UNION`, `EXCEPT`, `INTERSECT`) one query may chain.
pub const MAX_SET_OPERATIONS: usize = 1000;
/// The most tables one `FROM` may join.
pub const MAX_JOINS: usize = 256;

/// The nesting checks on a parsed statement: deeper statements are refused with
/// [`Error::Refused`]. The walk stops at the first limit passed, so it stays shallow itself.
pub fn check_depth(statement: &DFStatement) -> Result<(), Error> {
    let mut depth = Depth { now: 0 };
    let walked = match statement {
        DFStatement::Statement(statement) => statement.visit(&mut depth),
        DFStatement::Explain(explain) => return check_depth(&explain.statement),
        DFStatement::CopyTo(CopyToStatement { source: CopyToSource::Query(query), .. }) => query.visit(&mut depth),
        _ => ControlFlow::Continue(()),
    };
    match walked {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(what) => Err(Error::Refused(what)),
    }
}

struct Depth {
    now: usize,
}

impl Visitor for Depth {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        // Set operations nest to the left; walk that spine without recursion.
        let mut operations = 0;
        let mut body = query.body.as_ref();
        loop {
            if let SetExpr::Select(select) = body
                && select.from.iter().map(|t| t.joins.len() + 1).sum::<usize>() > MAX_JOINS
            {
                return ControlFlow::Break(format!(
                    "the query joins more than {MAX_JOINS} tables in one FROM: join fewer, through views or CTEs"
                ));
            }
            match body {
                SetExpr::SetOperation { left, .. } => {
                    operations += 1;
                    body = left;
                }
                _ => break,
            }
        }
        match operations > MAX_SET_OPERATIONS {
            true => ControlFlow::Break(format!(
                "the query chains more than {MAX_SET_OPERATIONS} UNION, EXCEPT or INTERSECT operations: split it"
            )),
            false => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.now += 1;
        match self.now > MAX_EXPRESSION_DEPTH {
            true => ControlFlow::Break(format!(
                "the statement nests expressions more than {MAX_EXPRESSION_DEPTH} levels deep: split long chains of \
                 AND, OR or operators (e.g. use IN (…) for many alternatives)"
            )),
            false => ControlFlow::Continue(()),
        }
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

/// `COPY … TO` with a format the session knows and a destination it can create files in.
pub fn check_copy(copy: &CopyToStatement, state: &SessionState) -> Result<(), Error> {
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
    let target = copy.target.strip_prefix("file://").unwrap_or(&copy.target);
    if target.contains("://") {
        // Object stores are DataFusion's to refuse: none is registered.
        return Ok(());
    }
    check_destination(target)
}

/// Whether files can be created where `target` points, tried with a real file.
fn check_destination(target: &str) -> Result<(), Error> {
    let refused = |why: String| Error::Refused(format!("COPY cannot write to {target}: {why}"));
    let path = Path::new(target);
    let directory_output = target.ends_with('/');
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
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(refused(format!("{} is not a directory", dir.display()))),
        Err(_) if dir.symlink_metadata().is_ok() => {
            return Err(refused(format!("{} is a symbolic link to nothing", dir.display())));
        }
        Err(_) => return Err(refused(format!("the directory {} does not exist: create it first", dir.display()))),
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
        Err(e) => Err(refused(format!("cannot create files in {}: {e}", dir.display()))),
    }
}

/// Statements DataFusion accepts but that cannot mean anything for a provider's resources.
pub fn check_plan(plan: &LogicalPlan, registry: &Registry) -> Result<(), Error> {
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
            let (verb, name): (&str, String) = match ddl {
                DdlStatement::DropTable(d) if in_provider(&d.name) => ("DROP TABLE", d.name.to_string()),
                DdlStatement::DropView(d) if in_provider(&d.name) => ("DROP VIEW", d.name.to_string()),
                DdlStatement::CreateMemoryTable(c) if in_provider(&c.name) => ("CREATE TABLE", c.name.to_string()),
                DdlStatement::CreateView(c) if in_provider(&c.name) => ("CREATE VIEW", c.name.to_string()),
                DdlStatement::CreateExternalTable(c) if in_provider(&c.name) => {
                    ("CREATE EXTERNAL TABLE", c.name.to_string())
                }
                DdlStatement::CreateIndex(c) if in_provider(&c.table) => ("CREATE INDEX", c.table.to_string()),
                DdlStatement::DropCatalogSchema(d) if d.name.to_string().split('.').next().is_some_and(is_provider) => {
                    ("DROP SCHEMA", d.name.to_string())
                }
                DdlStatement::CreateCatalogSchema(c) if c.schema_name.split('.').next().is_some_and(is_provider) => {
                    ("CREATE SCHEMA", c.schema_name.clone())
                }
                DdlStatement::CreateCatalog(c) if is_provider(&c.catalog_name) => {
                    ("CREATE DATABASE", c.catalog_name.clone())
                }
                _ => return Ok(()),
            };
            Err(refuse(verb, &name))
        }
        LogicalPlan::Dml(dml) if in_provider(&dml.table_name) => Err(Error::Unsupported {
            what: format!("{} on {}", dml.op.name().to_uppercase(), dml.table_name),
            instead: Some("DELETE FROM … WHERE … deletes rows; REPLACE … SET … WHERE … changes them".into()),
        }),
        _ => Ok(()),
    }
}
