/*! Statement text → parsed statements, ready for the engine.

Scripts are split into statements with their line numbers (quote- and comment-aware). Each
statement is lexed once and parsed once with DataFusion's parser, in the [`Dialect`] of its
front end: the command line's generic SQL, or PostgreSQL's as drivers and BI tools send it
(rewritten where DataFusion plans Postgres' forms differently). imageql's own statements (EXEC
with `@parameters`, `REPLACE … SET`) read the same in both. `REPLACE … SET` is handed to
sqlparser's own UPDATE grammar (the AST keeps the REPLACE keyword as its verb token), and
`/*+ HINT */` comments after the verb are read from the same tokens. A statement nested deeper
than the engine can walk is refused here, before anything walks it ([`depth`]). Names that SQL would
lowercase are resolved against the provider registry: a parameter that aliases a column
(`imageId` → `id`) is rewritten to that column, and a table named without its provider and
service (`FROM images`) gets its full name when only one resource or view has it. */

mod depth;
pub mod postgres;
mod split;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::LazyLock;

use datafusion::common::DataFusionError;
use datafusion::sql::parser::{
    CopyToSource, CopyToStatement, DFParserBuilder, ExplainStatement, Statement as DFStatement,
};
use datafusion::sql::sqlparser::ast::{
    CopyTarget, Expr, Ident, ObjectName, Query, SelectItem, Statement, TableFactor, Update, Visit, VisitMut, Visitor,
    VisitorMut, visit_expressions_mut, visit_relations, visit_relations_mut,
};
use datafusion::sql::sqlparser::dialect::{GenericDialect, PostgreSqlDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Whitespace};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::datafusion_pg_catalog::sql::rules::{self, SqlStatementRewriteRule};

use crate::error::Error;
use crate::provider::Registry;
pub use depth::{MAX_EXPRESSION_DEPTH, MAX_JOINS, MAX_SET_OPERATIONS};
pub use split::{Piece, is_complete, split_statements};

/// The SQL a front end reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// The command line's: DataFusion's generic SQL.
    #[default]
    Generic,
    /// PostgreSQL's, as `imageql serve`'s clients send it.
    Postgres,
}

/// datafusion-postgres' reading of Postgres SQL: its rewrites of Postgres forms (`x =
/// ANY(array)`, unqualified `pg_catalog` tables, `::regclass` casts, …) and its replacements
/// of whole introspection queries of known clients (psql, Grafana, pgcli).
static POSTGRES_FORMS: LazyLock<PostgresCompatibilityParser> = LazyLock::new(PostgresCompatibilityParser::new);

/// The rewrites of [`POSTGRES_FORMS`] but one: its `RemoveSubqueryFromProjection` turns a
/// correlated subquery in a select list into NULL, a silent wrong answer; DataFusion plans
/// the ones that aggregate, and `postgres` rewrites the rest.
static POSTGRES_RULES: LazyLock<Vec<Box<dyn SqlStatementRewriteRule>>> = LazyLock::new(|| {
    vec![
        Box::new(rules::AliasDuplicatedProjectionRewrite),
        Box::new(rules::ResolveUnqualifiedIdentifier),
        Box::new(rules::RewriteArrayAnyAllOperation),
        Box::new(rules::PrependUnqualifiedPgTableName),
        Box::new(rules::StripCallableQualifier),
        Box::new(rules::FixArrayLiteral),
        Box::new(rules::CurrentUserVariableToSessionUserFunctionCall),
        Box::new(rules::StripCollate),
        Box::new(rules::RewritePgCatalogOperator),
        Box::new(rules::RewriteRegCastToSubquery::new()),
        Box::new(rules::FixVersionColumnName),
    ]
});

/// One parsed statement and the hints written after its verb (`INSERT /*+ AWAIT */ …`).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub statement: DFStatement,
    pub hints: Vec<String>,
    /// `EXEC … RETURNING items`, which sqlparser's EXECUTE has no place for.
    pub returning: Option<Vec<SelectItem>>,
    /// The names of a query's columns where they repeat (PostgreSQL's `SELECT 1, 1`), which
    /// the plan's columns cannot.
    pub column_names: Option<Vec<String>>,
}

impl Parsed {
    pub fn has_hint(&self, hint: &str) -> bool {
        self.hints.iter().any(|h| h.eq_ignore_ascii_case(hint))
    }
}

impl From<DFStatement> for Parsed {
    fn from(statement: DFStatement) -> Parsed {
        Parsed { statement, hints: vec![], returning: None, column_names: None }
    }
}

/// A table's name as written (`images.storage_costs`, `"Mixed Case"`), and nothing after it.
pub fn object_name(name: &str) -> Result<ObjectName, Error> {
    let mut parser = Parser::new(&GenericDialect {}).try_with_sql(name).map_err(parse_error)?;
    let parsed = parser.parse_object_name(false).map_err(parse_error)?;
    match parser.peek_token_ref().token {
        Token::EOF => Ok(parsed),
        _ => Err(Error::Syntax(format!("{name:?} is not a table name"))),
    }
}

/// Parses the text of one statement (a piece from [`split_statements`]) as `dialect` reads it.
pub fn parse(sql: &str, dialect: Dialect) -> Result<Parsed, Error> {
    let postgres = dialect == Dialect::Postgres && !imageql_form(sql);
    let mut parsed = match (copy_to_client(sql), postgres) {
        (Some(copy), _) => copy?,
        (None, true) => parse_with(sql, &PostgreSqlDialect {})?,
        (None, false) => parse_with(sql, &GenericDialect {})?,
    };
    depth::check(&parsed.statement)?;
    if postgres {
        rewrite_postgres_forms(sql, &mut parsed.statement);
        if let DFStatement::Statement(statement) = &mut parsed.statement {
            parsed.column_names = postgres::rewrite(statement);
        }
    }
    Ok(parsed)
}

/// `COPY … TO STDOUT` (PostgreSQL's, which DataFusion's COPY does not read), or `None` for any
/// other statement; `COPY … FROM STDIN` is refused.
fn copy_to_client(sql: &str) -> Option<Result<Parsed, Error>> {
    if leading_words(sql).next().as_deref() != Some("COPY") {
        return None;
    }
    let parsed = Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).and_then(|mut p| {
        let statement = p.parse_statement()?;
        while p.consume_token(&Token::SemiColon) {}
        p.expect_token(&Token::EOF).map(|_| statement)
    });
    match parsed {
        Ok(copy @ Statement::Copy { to: true, target: CopyTarget::Stdout, .. }) => Some(Ok(Parsed {
            statement: DFStatement::Statement(Box::new(copy)),
            hints: vec![],
            returning: None,
            column_names: None,
        })),
        Ok(Statement::Copy { to: false, .. }) => Some(Err(Error::Unsupported {
            what: "COPY … FROM".into(),
            instead: Some("images are created with INSERT (capture) and EXEC … post_upload_image".into()),
        })),
        _ => None,
    }
}

/// Whether a statement is one of imageql's own forms, which only the generic grammar reads:
/// `EXEC …`, `EXECUTE provider.service.resource.method …` (not Postgres' `EXECUTE name`) and
/// `REPLACE table SET …` (not `REPLACE INTO`), each possibly after `EXPLAIN`.
fn imageql_form(sql: &str) -> bool {
    let mut words = leading_words(sql);
    let mut first = words.next();
    if first.as_deref() == Some("EXPLAIN") {
        first = words.next();
    }
    match first.as_deref() {
        Some("EXEC") => true,
        Some("REPLACE") => words.next().as_deref() != Some("INTO"),
        Some("EXECUTE") => words.next().is_some_and(|name| name.contains('.')),
        _ => false,
    }
}

/// The first words of a statement, upper-cased, with the dots of a dotted name kept, after
/// whitespace and comments (hints included).
fn leading_words(sql: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = sql;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_start();
            if let Some(comment) = rest.strip_prefix("--") {
                rest = comment.split_once('\n').map_or("", |(_, after)| after);
            } else if let Some(comment) = rest.strip_prefix("/*") {
                rest = comment.split_once("*/").map_or("", |(_, after)| after);
            } else {
                break;
            }
        }
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        rest = after;
        (!word.is_empty()).then(|| word.to_uppercase())
    })
}

/// Applies the Postgres rewrites to the SQL statement a parsed statement holds. A plain SQL
/// statement that datafusion-postgres replaces whole (a known client's introspection query)
/// is taken as it replaces it.
fn rewrite_postgres_forms(sql: &str, statement: &mut DFStatement) {
    let rewrite = |statement: &mut Statement| {
        let mut taken = std::mem::replace(statement, Statement::Commit { chain: false, end: false, modifier: None });
        for rule in POSTGRES_RULES.iter() {
            taken = rule.rewrite(taken);
        }
        *statement = taken;
    };
    match statement {
        DFStatement::Statement(s) => {
            let replaced = match POSTGRES_FORMS.parse(sql).map(|mut all| (all.len(), all.pop())) {
                // What its rewrites alone make of the same statement tells a replacement apart.
                Ok((1, Some(read))) if read != POSTGRES_FORMS.rewrite(s.as_ref().clone()) => Some(read),
                _ => None,
            };
            match replaced {
                Some(read) => **s = read,
                None => rewrite(s),
            }
        }
        DFStatement::Explain(explain) => {
            if let DFStatement::Statement(s) = explain.statement.as_mut() {
                rewrite(s)
            }
        }
        DFStatement::CopyTo(CopyToStatement { source: CopyToSource::Query(query), .. }) => as_statement(query, rewrite),
        _ => {}
    }
}

fn parse_with(sql: &str, dialect: &dyn datafusion::sql::sqlparser::dialect::Dialect) -> Result<Parsed, Error> {
    let mut parser = DFParserBuilder::new(sql).with_dialect(dialect).build().map_err(syntax)?;
    let (hints, taken) = hints(&parser.parser);
    if hint_comments(&parser.parser) > taken {
        return Err(Error::Refused(
            "a hint goes right after the statement's first word (SELECT /*+ AWAIT */ …, INSERT /*+ AWAIT */ INTO …); \
             one anywhere else would be ignored"
                .into(),
        ));
    }
    if let Some(unknown) = hints.iter().find(|h| !HINTS.contains(&h.as_str())) {
        let nearest = crate::provider::nearest(unknown, HINTS.iter().copied());
        let guess = nearest.map(|n| format!("did you mean {n}? ")).unwrap_or_default();
        return Err(Error::Refused(format!(
            "unknown hint /*+ {unknown} */: {guess}the hints are {}",
            HINTS.join(", ")
        )));
    }
    let statement = match replace_form(&parser.parser) {
        Some(explained) => {
            if explained {
                parser.parser.next_token();
            }
            let verb = parser.parser.next_token();
            let update = DFStatement::Statement(Box::new(parser.parser.parse_update(verb).map_err(parse_error)?));
            match explained {
                true => {
                    DFStatement::Explain(ExplainStatement { options: Default::default(), statement: Box::new(update) })
                }
                false => update,
            }
        }
        None if parser.parser.peek_token_ref().token == Token::EOF => {
            return Err(Error::Syntax("empty statement".into()));
        }
        None => parser.parse_statement().map_err(syntax)?,
    };
    let returning = match is_exec(&statement) && parser.parser.parse_keyword(Keyword::RETURNING) {
        true => Some(parser.parser.parse_comma_separated(Parser::parse_select_item).map_err(parse_error)?),
        false => None,
    };
    if let DFStatement::Statement(s) = &statement
        && let Statement::ShowVariable { variable } = s.as_ref()
        && variable.is_empty()
    {
        return Err(Error::Syntax("SHOW needs the name of a setting, e.g. SHOW search_path, or SHOW ALL".into()));
    }
    while parser.parser.consume_token(&Token::SemiColon) {}
    if parser.parser.peek_token_ref().token != Token::EOF {
        let found = parser.parser.peek_token();
        return Err(parse_error(parser.parser.expected::<()>("end of statement", found).unwrap_err()));
    }
    Ok(Parsed { statement, hints, returning, column_names: None })
}

/// Whether a statement is an EXEC (explained or not).
fn is_exec(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Statement(s) => matches!(s.as_ref(), Statement::Execute { .. }),
        DFStatement::Explain(explain) => is_exec(&explain.statement),
        _ => false,
    }
}

/// `Some(explained)` when the statement is `[EXPLAIN] REPLACE table SET …` (not MySQL's
/// `REPLACE INTO`, which is an INSERT).
fn replace_form(parser: &Parser) -> Option<bool> {
    let is = |n: usize, keyword: Keyword| matches!(&parser.peek_nth_token_ref(n).token, Token::Word(w) if w.keyword == keyword);
    let explained = is(0, Keyword::EXPLAIN);
    let verb = usize::from(explained);
    (is(verb, Keyword::REPLACE) && !is(verb + 1, Keyword::INTO)).then_some(explained)
}

/// `/*+ … */` comments right after the statement's verb (after EXPLAIN, the verb after it).
/// The hints a statement may carry after its verb (`INSERT /*+ AWAIT */ …`).
pub const HINTS: [&str; 1] = ["AWAIT"];

/// How many `/*+ … */` comments the statement has anywhere.
fn hint_comments(parser: &Parser) -> usize {
    let tokens = (0..).map(|n| parser.peek_nth_token_no_skip(n)).take_while(|t| t.token != Token::EOF);
    tokens
        .filter(|t| matches!(&t.token, Token::Whitespace(Whitespace::MultiLineComment(c)) if c.starts_with('+')))
        .count()
}

/// The hints after the verb, and how many `/*+ … */` comments gave them.
fn hints(parser: &Parser) -> (Vec<String>, usize) {
    let tokens = (0..).map(|n| parser.peek_nth_token_no_skip(n)).take_while(|t| t.token != Token::EOF);
    let mut words_seen = 0;
    let (mut hints, mut comments) = (Vec::new(), 0);
    for token in tokens {
        match &token.token {
            Token::Whitespace(Whitespace::MultiLineComment(comment)) if words_seen > 0 => {
                if let Some(hint) = comment.strip_prefix('+') {
                    hints.extend(hint.split_whitespace().map(str::to_uppercase));
                    comments += 1;
                }
            }
            Token::Whitespace(_) => {}
            Token::Word(w) if words_seen == 0 && w.keyword == Keyword::EXPLAIN => {}
            _ if words_seen == 0 => words_seen = 1,
            _ => break,
        }
    }
    (hints, comments)
}

/// The REPLACE … SET statement behind an UPDATE node, if it was one.
pub fn is_replace(update: &Update) -> bool {
    matches!(&update.update_token.0.token, Token::Word(w) if w.keyword == Keyword::REPLACE)
}

fn syntax(error: DataFusionError) -> Error {
    match error.find_root() {
        DataFusionError::SQL(parser_error, _) => parse_error(parser_error.as_ref().clone()),
        other => Error::Syntax(other.strip_backtrace()),
    }
}

fn parse_error(error: ParserError) -> Error {
    match error {
        ParserError::ParserError(message) | ParserError::TokenizerError(message) => Error::Syntax(message),
        other => Error::Syntax(other.to_string()),
    }
}

/// Resolves names SQL would lowercase against the resources a statement reads: a parameter
/// that aliases a column becomes that column (`WHERE imageId = …` → `WHERE id = …`), and a
/// camelCase column keeps its case (`linodeId`). Columns take priority over aliases. A table
/// name unique without its provider and service (`FROM images`) is completed; the session's
/// own tables keep their names.
pub fn resolve_names(statement: &mut DFStatement, registry: &Registry, tables: &SessionTables) {
    let statement: &mut Statement = match statement {
        DFStatement::Statement(s) => s,
        DFStatement::Explain(explain) => match explain.statement.as_mut() {
            DFStatement::Statement(s) => s,
            _ => return,
        },
        // `COPY (query) TO …`: the query's names, as for a SELECT.
        DFStatement::CopyTo(CopyToStatement { source: CopyToSource::Query(query), .. }) => {
            return as_statement(query, |select| resolve_statement_names(select, registry, tables));
        }
        _ => return,
    };
    resolve_statement_names(statement, registry, tables);
}

/// The tables a session has besides the provider files' resources and views.
#[derive(Debug, Default)]
pub struct SessionTables {
    /// Made by the session (CREATE TABLE), lowercased: they keep their names and shadow others.
    pub local: Vec<String>,
    /// The engine's own (the history's, `meta.accounts`), full names: a shortened name stands
    /// for one of them when no resource or view has it (`images` is the live table).
    pub engine: Vec<String>,
}

impl SessionTables {
    /// The full names a shortened name (`images`, `history.images`) stands for.
    pub fn completions(&self, registry: &Registry, parts: &[&str]) -> Vec<String> {
        let found = registry.completions(parts);
        if !found.is_empty() {
            return found;
        }
        let suffix: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        let ends = |full: &&String| {
            let names: Vec<String> = full.split('.').map(str::to_lowercase).collect();
            suffix.len() < names.len() && names.ends_with(&suffix)
        };
        self.engine.iter().filter(ends).cloned().collect()
    }
}

/// Applies `change` to a query inside another statement, as to a statement of its own.
fn as_statement(query: &mut Box<Query>, change: impl FnOnce(&mut Statement)) {
    let mut select = Statement::Query(query.clone());
    change(&mut select);
    if let Statement::Query(changed) = select {
        *query = changed;
    }
}

/// The names a statement's WITH clauses define, which shadow any table.
fn common_table_names(statement: &Statement) -> Vec<String> {
    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            let tables = query.with.iter().flat_map(|with| with.cte_tables.iter());
            self.0.extend(tables.map(|cte| cte.alias.name.value.to_lowercase()));
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(Vec::new());
    let _ = statement.visit(&mut names);
    names.0
}

/// A shortened table name (`images`, `images.images`) becomes the full name it stands for
/// when exactly one table has it, unless a WITH clause or a table of the session has that
/// name. Ambiguous and unknown names are left for the error to explain.
fn complete_table_names(statement: &mut Statement, registry: &Registry, tables: &SessionTables) {
    // The name a CREATE gives is the user's own; only the query in it reads tables.
    let statement = match statement {
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => statement,
        Statement::CreateTable(create) => match create.query.as_mut() {
            Some(query) => return as_statement(query, |select| complete_table_names(select, registry, tables)),
            None => return,
        },
        Statement::ExplainTable { table_name, .. } => return complete_table_name(table_name, registry, tables, &[]),
        Statement::ShowColumns { show_options, .. } => {
            if let Some(name) = show_options.show_in.as_mut().and_then(|show_in| show_in.parent_name.as_mut()) {
                complete_table_name(name, registry, tables, &[]);
            }
            return;
        }
        _ => return,
    };
    let shadowed = common_table_names(statement);
    let _ = visit_relations_mut(statement, |name| {
        complete_table_name(name, registry, tables, &shadowed);
        ControlFlow::<()>::Continue(())
    });
}

fn complete_table_name(name: &mut ObjectName, registry: &Registry, tables: &SessionTables, shadowed: &[String]) {
    let parts: Vec<&str> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.as_str())).collect();
    let first = parts.first().map(|p| p.to_lowercase()).unwrap_or_default();
    let shadowed = parts.len() == 1 && (shadowed.contains(&first) || tables.local.contains(&first));
    if parts.len() < 3
        && parts.len() == name.0.len()
        && !shadowed
        && let [full] = tables.completions(registry, &parts).as_slice()
    {
        *name = ObjectName::from(full.split('.').map(Ident::new).collect::<Vec<_>>());
    }
}

/// Table functions named by their whole dotted name, as one identifier.
struct FunctionNames<'a>(&'a [String]);

impl VisitorMut for FunctionNames<'_> {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, args: Some(_), .. } = factor else { return ControlFlow::Continue(()) };
        let written = name.to_string().to_lowercase();
        // A shortened name (`history.images_at`, or `images_at` once the Postgres dialect's
        // rewrites drop the qualifiers) stands for the one function it ends.
        let ending = |f: &&String| *f == &written || f.ends_with(&format!(".{written}"));
        let mut found = self.0.iter().filter(ending);
        if let (Some(full), None) = (found.next(), found.next()) {
            *name = ObjectName::from(vec![Ident::new(full.clone())]);
        }
        ControlFlow::Continue(())
    }
}

fn resolve_statement_names(statement: &mut Statement, registry: &Registry, tables: &SessionTables) {
    complete_table_names(statement, registry, tables);
    // DataFusion looks a table function up by the first part of its name only, so a view with
    // parameters is registered under its whole dotted name as one identifier.
    let functions: Vec<String> = registry.functions().collect();
    let _ = statement.visit(&mut FunctionNames(&functions));
    let mut resources = Vec::new();
    let _ = visit_relations(statement, |name| {
        let parts: Vec<&str> = name.0.iter().filter_map(|p| p.as_ident().map(|i| i.value.as_str())).collect();
        if let Ok(found) = registry.resolve(&parts.join("."))
            && found.method.is_none()
        {
            resources.push(found.resource);
        }
        ControlFlow::<()>::Continue(())
    });
    let mut names: HashMap<String, (String, bool)> = HashMap::new();
    for resource in &resources {
        for (alias, column) in resource.column_aliases() {
            names.insert(alias.to_lowercase(), (column.to_string(), false));
        }
    }
    for resource in &resources {
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
    use crate::error::Complexity;

    #[test]
    fn finds_replace_and_hints() {
        for dialect in [Dialect::Generic, Dialect::Postgres] {
            let parse = |sql: &str| parse(sql, dialect);
            let p = parse("-- note\nREPLACE /*+ AWAIT */ linode.images.images SET label = 'x' WHERE id = 'p'").unwrap();
            assert!(p.has_hint("await"));
            assert!(
                matches!(&p.statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Update(u) if is_replace(u)))
            );
            let p = parse("EXPLAIN REPLACE linode.images.images SET label = 'x' WHERE id = 'p'").unwrap();
            assert!(matches!(&p.statement, DFStatement::Explain(_)));
            let p = parse("EXEC /*+ AWAIT */ linode.images.images.post_replicate_image @imageId='x'").unwrap();
            assert_eq!(p.hints, ["AWAIT"]);
            let p = parse(
                "EXPLAIN EXEC linode.images.images.put_image @imageId='x', @label='y', @@json='{}' RETURNING id, label AS l;",
            )
            .unwrap();
            assert_eq!(p.returning.map(|items| items.len()), Some(2));
            assert!(matches!(parse("SELECT 1 RETURNING x"), Err(Error::Syntax(_))));
            assert!(matches!(parse("SELECT 1 /*+ AWAIT */"), Err(Error::Refused(m)) if m.contains("right after")));
            assert!(matches!(parse("WITH x AS (SELECT 1) SELECT /*+ AWAIT */ * FROM x"), Err(Error::Refused(_))));
            assert!(parse("SELECT /* not a hint */ 1").unwrap().hints.is_empty());
            assert!(matches!(parse("SELECT 1; SELECT 2"), Err(Error::Syntax(_))));
            assert!(matches!(parse("SELEC 1"), Err(Error::Syntax(m)) if m.contains("Line: 1")));
        }
        let p = parse("REPLACE INTO t (a) VALUES (1)", Dialect::Generic).unwrap();
        assert!(matches!(&p.statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Insert(_))));
    }

    #[test]
    fn reads_postgres_forms_in_the_postgres_dialect() {
        // Postgres' own EXECUTE of a prepared statement is not imageql's EXEC.
        let p = parse("EXECUTE big(1000)", Dialect::Postgres).unwrap();
        assert!(matches!(&p.statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Execute { .. })));
        // E'' strings and the ARRAY containment operator are Postgres'.
        assert!(parse("SELECT E'it\\'s' AS a, ARRAY['x'] @> ARRAY['x'] AS b", Dialect::Postgres).is_ok());
        // An unqualified pg_catalog table is qualified for DataFusion.
        let p = parse("SELECT relname FROM pg_class", Dialect::Postgres).unwrap();
        assert!(p.statement.to_string().contains("pg_catalog.pg_class"), "{}", p.statement);
        let deep = format!("SELECT {}1", "1+".repeat(2000));
        assert!(matches!(parse(&deep, Dialect::Postgres), Err(Error::TooComplex(Complexity::Expressions))));
    }
}
