/*! Statement text → parsed statements, ready for the engine.

Scripts are split into statements with their line numbers (quote- and comment-aware), each
statement is parsed with DataFusion's parser, and names that SQL would lowercase are resolved
against the provider registry: a parameter that aliases a column (`imageId` → `id`) is
rewritten to that column. */

mod split;

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::common::DataFusionError;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Statement, visit_expressions_mut, visit_relations};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::ParserError;

use crate::provider::Registry;
pub use split::{Piece, split_statements};

/// Parses one statement's text (a piece from [`split_statements`]).
pub fn parse_one(sql: &str) -> Result<DFStatement, String> {
    let mut statements =
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| match e.find_root() {
            DataFusionError::SQL(parser_error, _) => match parser_error.as_ref() {
                ParserError::ParserError(message) | ParserError::TokenizerError(message) => {
                    format!("syntax error: {message}")
                }
                other => other.to_string(),
            },
            other => other.strip_backtrace(),
        })?;
    match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => Ok(statement),
        (None, _) => Err("empty statement".into()),
        (Some(_), false) => Err("expected one statement; separate statements with ';'".into()),
    }
}

/// The resource a three-part name refers to, as `provider.service.resource`.
fn resource_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase())).collect();
    (parts.len() == 3).then(|| parts.join("."))
}

/// Resolves names SQL would lowercase against the resources a statement reads: a parameter
/// that aliases a column becomes that column (`WHERE imageId = …` → `WHERE id = …`), and a
/// camelCase column keeps its case (`linodeId`). Columns take priority over aliases.
pub fn resolve_names(statement: &mut DFStatement, registry: &Registry) {
    let statement: &mut Statement = match statement {
        DFStatement::Statement(s) => s,
        DFStatement::Explain(explain) => match explain.statement.as_mut() {
            DFStatement::Statement(s) => s,
            _ => return,
        },
        _ => return,
    };
    let mut referenced = Vec::new();
    let _ = visit_relations(statement, |name| {
        if let Some(full) = resource_name(name) {
            referenced.push(full);
        }
        ControlFlow::<()>::Continue(())
    });
    let resources: Vec<_> = registry.resources().filter(|(_, _, r)| referenced.contains(&r.full_name)).collect();
    let mut names: HashMap<String, (String, bool)> = HashMap::new();
    for (_, _, resource) in &resources {
        for (alias, column) in resource.column_aliases() {
            names.insert(alias.to_lowercase(), (column.to_string(), false));
        }
    }
    for (_, _, resource) in &resources {
        let columns = resource.fields.iter().map(|f| f.name.as_str());
        for column in columns.chain(resource.param_columns().into_iter().map(|p| p.name.as_str())) {
            // Quoting keeps a camelCase name from being lowercased.
            names.insert(column.to_lowercase(), (column.to_string(), column != column.to_lowercase()));
        }
    }
    names.retain(|lower, (name, quote)| *quote || lower != name);
    if names.is_empty() {
        return;
    }
    let _ = visit_expressions_mut(statement, |expr| {
        let ident = match expr {
            Expr::Identifier(ident) => Some(ident),
            Expr::CompoundIdentifier(parts) => parts.last_mut(),
            _ => None,
        };
        if let Some(ident) = ident
            && ident.quote_style.is_none()
            && let Some((name, quote)) = names.get(&ident.value.to_lowercase())
        {
            ident.value = name.clone();
            if *quote {
                ident.quote_style = Some('"');
            }
        }
        ControlFlow::<()>::Continue(())
    });
}
