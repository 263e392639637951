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
use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Query, Statement, visit_expressions_mut, visit_relations};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::provider::Registry;
pub use split::{Piece, is_complete, split_statements};

/// A statement's text with what the parser does not see: the `REPLACE … SET` form (parsed
/// as an UPDATE, so the caller must know it was a REPLACE) and `/*+ HINT */` comments after the
/// verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub text: String,
    pub replace: bool,
    pub hints: Vec<String>,
}

impl Prepared {
    pub fn has_hint(&self, hint: &str) -> bool {
        self.hints.iter().any(|h| h.eq_ignore_ascii_case(hint))
    }
}

pub fn prepare(sql: &str) -> Result<Prepared, String> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| format!("syntax error: {e}"))?;
    let mut words = tokens.iter().enumerate().filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)));
    let mut prepared = Prepared { text: sql.to_string(), replace: false, hints: vec![] };
    // EXPLAIN REPLACE … is a REPLACE too.
    let mut verb = words.next();
    if let Some((_, t)) = verb
        && matches!(&t.token, Token::Word(w) if w.keyword == Keyword::EXPLAIN)
    {
        verb = words.next();
    }
    let Some((index, verb)) = verb else { return Ok(prepared) };
    let Token::Word(word) = &verb.token else { return Ok(prepared) };
    for token in tokens[index + 1..].iter().take_while(|t| matches!(t.token, Token::Whitespace(_))) {
        if let Token::Whitespace(Whitespace::MultiLineComment(comment)) = &token.token
            && let Some(hint) = comment.strip_prefix('+')
        {
            prepared.hints.extend(hint.split_whitespace().map(|h| h.to_uppercase()));
        }
    }
    let next_word = words.next().map(|(_, t)| &t.token);
    if word.keyword == Keyword::REPLACE && !matches!(next_word, Some(Token::Word(w)) if w.keyword == Keyword::INTO) {
        let start = byte_offset(sql, verb.span.start.line, verb.span.start.column);
        prepared.text.replace_range(start..start + "REPLACE".len(), "UPDATE ");
        prepared.replace = true;
    }
    Ok(prepared)
}

/// Whether a statement changes resources (so it must not be abandoned half-way).
pub fn changes_resources(sql: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return false };
    let first = tokens.into_iter().find(|t| !matches!(t, Token::Whitespace(_)));
    matches!(first, Some(Token::Word(w)) if matches!(w.keyword, Keyword::INSERT | Keyword::REPLACE | Keyword::DELETE | Keyword::EXEC | Keyword::EXECUTE | Keyword::UPDATE))
}

/// The byte offset of a 1-based line and column (in characters).
fn byte_offset(text: &str, line: u64, column: u64) -> usize {
    let line_start: usize = text.split_inclusive('\n').take(line.saturating_sub(1) as usize).map(str::len).sum();
    let column_bytes: usize =
        text[line_start..].chars().take(column.saturating_sub(1) as usize).map(char::len_utf8).sum();
    line_start + column_bytes
}

/// Parses one statement's text (a piece from [`split_statements`], after [`prepare`]).
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

/// Parses a text that must be one query.
pub fn parse_query(sql: &str) -> Result<Box<Query>, String> {
    match parse_one(sql)? {
        DFStatement::Statement(statement) => match *statement {
            Statement::Query(query) => Ok(query),
            other => Err(format!("expected a query, not {other}")),
        },
        _ => Err(format!("expected a query: {sql}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_replace_and_hints() {
        let p = prepare("-- note\nREPLACE /*+ AWAIT */ linode.images.images SET label = 'x' WHERE id = 'p'").unwrap();
        assert!(p.replace && p.has_hint("await"));
        assert_eq!(p.text, "-- note\nUPDATE  /*+ AWAIT */ linode.images.images SET label = 'x' WHERE id = 'p'");
        assert!(matches!(parse_one(&p.text), Ok(DFStatement::Statement(s)) if matches!(*s, Statement::Update(_))));
        let p = prepare("REPLACE INTO t (a) VALUES (1)").unwrap();
        assert!(!p.replace);
        let p = prepare("EXEC /*+ AWAIT */ linode.images.images.post_replicate_image @imageId='x'").unwrap();
        assert_eq!(p.hints, ["AWAIT"]);
        assert!(prepare("SELECT /*+ AWAIT */ 1").unwrap().has_hint("AWAIT"));
        assert!(prepare("SELECT 1 /*+ AWAIT */").unwrap().hints.is_empty());
    }
}
