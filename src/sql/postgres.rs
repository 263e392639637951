//! PostgreSQL's forms that DataFusion plans differently or not at all, rewritten into ones it
//! plans with the same meaning, after datafusion-postgres' own rewrites. Clients' catalog
//! queries are the main users: `ARRAY(SELECT …)`, `LIKE … ESCAPE '/'`, `(row).field`,
//! `'array_in'::regproc`, `oids::regtype[]`, set-returning `regexp_split_to_table` and
//! `generate_subscripts`, correlated scalar subqueries that return one row. The functions the
//! rewrites call are registered by `engine::postgres`.
//!
//! A query's columns are named as PostgreSQL names them (`?column?` for an expression, the
//! function's name for a call), which may repeat (`SELECT 1, 1`); a lone integer literal
//! selected is an `integer`, not a `bigint`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, ObjectName, OrderByKind,
    Query, SelectItem, SetExpr, Statement, Subscript, TableAliasColumnDef, TableFactor, TableWithJoins, UnaryOperator,
    Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut, visit_expressions, visit_expressions_mut,
};

/// Functions the rewrites call (see `engine::postgres`).
pub const LIKE_ESCAPE: &str = "pg_like_escape";
pub const REGEXP_SPLIT: &str = "regexp_split_to_array";
pub const REGTYPE_NAMES: &str = "pg_regtype_names";

/// Rewrites the Postgres forms of a statement; returns the names of a query's columns as
/// PostgreSQL gives them, where they differ from what DataFusion would give.
pub fn rewrite(statement: &mut Statement) -> Option<Vec<String>> {
    let _ = statement.visit(&mut Forms);
    match statement {
        Statement::Query(query) => name_columns(query),
        _ => None,
    }
}

struct Forms;

impl VisitorMut for Forms {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // `FROM pg_catalog.unnest(array) AS x`: the UNNEST DataFusion knows.
        if let TableFactor::Table { name, args: Some(args), alias, .. } = factor
            && name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"))
        {
            let array_exprs = args
                .args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            // A function of one column names it after the table (`unnest(a) x` has column x).
            let alias = alias.clone().map(|mut alias| {
                if alias.columns.is_empty() {
                    alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
                }
                alias
            });
            *factor = TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_offset_alias: None,
                with_ordinality: false,
            };
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(rewritten) = rewritten(expr) {
            *expr = rewritten;
        }
        ControlFlow::Continue(())
    }
}

/// Replaces the correlated subqueries that read nothing but the catalog with NULL: for a
/// statement DataFusion cannot decorrelate as written, which is how clients look up what
/// this catalog holds none of (a column's default or collation, a table's storage options).
pub fn null_catalog_lookups(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Subquery(query) = expr
            && correlated(query)
            && reads_only_the_catalog(query)
        {
            *expr = Expr::value(Value::Null);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The names a query's FROM gives its tables (aliases, else the table's last name part).
fn own_tables(select: &datafusion::sql::sqlparser::ast::Select) -> HashSet<String> {
    let mut names = HashSet::new();
    for table in &select.from {
        for factor in std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation)) {
            match factor {
                TableFactor::Table { alias: Some(alias), .. } | TableFactor::Derived { alias: Some(alias), .. } => {
                    names.insert(alias.name.value.to_lowercase());
                }
                TableFactor::Table { name, .. } => {
                    names.extend(name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase()));
                }
                _ => {}
            }
        }
    }
    names
}

/// Whether a subquery names a table it does not read itself (`outer.column`).
fn correlated(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else { return false };
    let own = own_tables(select);
    let mut outer = false;
    let _ = visit_expressions(query, |e| {
        if let Expr::CompoundIdentifier(parts) = e
            && parts.len() >= 2
            && !own.contains(&parts[parts.len() - 2].value.to_lowercase())
        {
            outer = true;
        }
        ControlFlow::<()>::Continue(())
    });
    outer
}

/// Whether every table a query reads is in `pg_catalog` or `information_schema`.
fn reads_only_the_catalog(query: &Query) -> bool {
    let mut named = CommonTables::default();
    let _ = query.visit(&mut named);
    let mut only = true;
    let _ = datafusion::sql::sqlparser::ast::visit_relations(query, |name| {
        let first = name.0.first().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase()).unwrap_or_default();
        let catalog = matches!(first.as_str(), "pg_catalog" | "information_schema") && name.0.len() > 1;
        only &= catalog || (name.0.len() == 1 && named.0.contains(&first));
        ControlFlow::<()>::Continue(())
    });
    only
}

/// The names `WITH` gives its tables anywhere in a query (asyncpg's `WITH RECURSIVE` over
/// `pg_type`).
#[derive(Default)]
struct CommonTables(HashSet<String>);

impl Visitor for CommonTables {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        for table in query.with.iter().flat_map(|with| &with.cte_tables) {
            self.0.insert(table.alias.name.value.to_lowercase());
        }
        ControlFlow::Continue(())
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a))).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn string(text: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(text.to_string()))
}

fn number(n: i64) -> Expr {
    Expr::value(Value::Number(n.to_string(), false))
}

fn function_name(function: &Function) -> String {
    function.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase()).unwrap_or_default()
}

fn plain_args(function: &Function) -> Option<Vec<Expr>> {
    let FunctionArguments::List(list) = &function.args else { return None };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The type name of a cast, lower-cased and without its schema (`pg_catalog.regtype[]`).
fn type_name(data_type: &DataType) -> String {
    let text = data_type.to_string().to_lowercase();
    text.rsplit('.').next().unwrap_or(&text).to_string()
}

/// The pattern of `LIKE pattern ESCAPE 'c'` rewritten for the backslash DataFusion knows.
fn escaped(pattern: &Expr, escape: &Option<ValueWithSpan>) -> Option<Expr> {
    match escape.as_ref().map(|e| &e.value) {
        Some(Value::SingleQuotedString(c)) if c != "\\" => Some(call(LIKE_ESCAPE, vec![pattern.clone(), string(c)])),
        _ => None,
    }
}

/// The form `expr` takes for DataFusion, if it needs another.
fn rewritten(expr: &Expr) -> Option<Expr> {
    match expr {
        Expr::Like { negated, any, expr, pattern, escape_char } => Some(Expr::Like {
            negated: *negated,
            any: *any,
            expr: expr.clone(),
            pattern: Box::new(escaped(pattern, escape_char)?),
            escape_char: None,
        }),
        Expr::ILike { negated, any, expr, pattern, escape_char } => Some(Expr::ILike {
            negated: *negated,
            any: *any,
            expr: expr.clone(),
            pattern: Box::new(escaped(pattern, escape_char)?),
            escape_char: None,
        }),
        // An array compared with an array literal written as text (`polroles = '{0}'`).
        Expr::BinaryOp { left, op: op @ (BinaryOperator::Eq | BinaryOperator::NotEq), right } => {
            let array = |e: &Expr| match e {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(text) if text.starts_with('{') && text.ends_with('}') => {
                        Some(array_literal(text))
                    }
                    _ => None,
                },
                _ => None,
            };
            match (array(left), array(right)) {
                (None, Some(items)) => {
                    Some(Expr::BinaryOp { left: left.clone(), op: op.clone(), right: Box::new(items) })
                }
                (Some(items), None) => {
                    Some(Expr::BinaryOp { left: Box::new(items), op: op.clone(), right: right.clone() })
                }
                _ => None,
            }
        }
        // `(row).field`: a struct's field (not `alias.column[i]`, whose root is a table).
        Expr::CompoundFieldAccess { root, access_chain } if matches!(root.as_ref(), Expr::Nested(_)) => {
            let mut changed = false;
            let chain = access_chain
                .iter()
                .map(|access| match access {
                    AccessExpr::Dot(Expr::Identifier(field)) => {
                        changed = true;
                        AccessExpr::Subscript(Subscript::Index { index: string(&field.value) })
                    }
                    other => other.clone(),
                })
                .collect();
            changed.then(|| Expr::CompoundFieldAccess { root: root.clone(), access_chain: chain })
        }
        Expr::Cast { kind: CastKind::DoubleColon | CastKind::Cast, expr, data_type, .. } => {
            match type_name(data_type).as_str() {
                // A type oid shown as text: its name (`prorettype::regtype::text`).
                "text" | "varchar" | "name" | "character varying" => match expr.as_ref() {
                    Expr::Cast { expr: oid, data_type: inner, .. } if type_name(inner) == "regtype" => {
                        Some(call("format_type", vec![oid.as_ref().clone(), Expr::value(Value::Null)]))
                    }
                    _ => None,
                },
                // The catalog keeps function names where Postgres keeps their oids.
                "regproc" | "regprocedure" => Some(expr.as_ref().clone()),
                // A list of type oids (an oidvector, kept as text) as the types' names.
                "regtype[]" | "_regtype" => Some(call(REGTYPE_NAMES, vec![expr.as_ref().clone()])),
                _ => None,
            }
        }
        Expr::Function(function) => {
            let args = plain_args(function);
            match (function_name(function).as_str(), &function.args) {
                // ARRAY(SELECT x …): the subquery's values in an array.
                ("array", FunctionArguments::Subquery(query)) => Some(array_of(query)),
                ("regexp_split_to_table", _) => Some(call("unnest", vec![call(REGEXP_SPLIT, args?)])),
                ("generate_subscripts", _) => {
                    let args = args?;
                    let length = call("array_length", args.clone());
                    let last = Expr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(Expr::BinaryOp {
                            left: Box::new(call("coalesce", vec![length, number(0)])),
                            op: BinaryOperator::Plus,
                            right: Box::new(number(1)),
                        }),
                        data_type: DataType::BigInt(None),
                        array: false,
                        format: None,
                    };
                    Some(call("unnest", vec![call("range", vec![number(1), last])]))
                }
                _ => None,
            }
        }
        // A scalar subquery of one column, neither aggregated nor limited: Postgres checks at
        // run time that it returns at most one row, DataFusion refuses to plan it when it is
        // correlated; its first value is what Postgres returns when there is one.
        Expr::Subquery(query) => match proc_name(query) {
            Some(name) => Some(name),
            None => one_row(query).map(|q| Expr::Subquery(Box::new(q))),
        },
        _ => None,
    }
}

/// The name in datafusion-postgres' lookup of `'name'::regproc`
/// (`SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'name'`): the catalog keeps function
/// names where Postgres keeps their oids (`pg_type.typinput`), so the name is what compares.
fn proc_name(query: &Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_ref() else { return None };
    let [TableWithJoins { relation: TableFactor::Table { name, .. }, joins }] = select.from.as_slice() else {
        return None;
    };
    let looks_up = name.to_string().eq_ignore_ascii_case("pg_catalog.pg_proc")
        && joins.is_empty()
        && matches!(select.projection.as_slice(), [SelectItem::UnnamedExpr(Expr::Identifier(i))] if i.value == "oid");
    match (&select.selection, looks_up) {
        (Some(Expr::BinaryOp { left, op: BinaryOperator::Eq, right }), true) if matches!(left.as_ref(), Expr::Identifier(i) if i.value == "proname") => {
            Some(right.as_ref().clone())
        }
        _ => None,
    }
}

/// `'{a,b}'` as `ARRAY[…]`: of numbers when every item is one, else of strings.
fn array_literal(text: &str) -> Expr {
    let items: Vec<&str> =
        text[1..text.len() - 1].split(',').map(|i| i.trim().trim_matches('"')).filter(|i| !i.is_empty()).collect();
    let numbers = items.iter().all(|i| i.parse::<i64>().is_ok());
    let elem = items
        .iter()
        .map(|i| match numbers {
            true => Expr::value(Value::Number(i.to_string(), false)),
            false => string(i),
        })
        .collect();
    Expr::Array(datafusion::sql::sqlparser::ast::Array { elem, named: true })
}

/// `ARRAY(query)` as a scalar subquery aggregating the query's one column: in place (its
/// ORDER BY ordering the aggregate) where the query is a plain SELECT, so that a correlated
/// one stays decorrelatable, else over it as a derived table.
fn array_of(query: &Query) -> Expr {
    if let SetExpr::Select(select) = query.body.as_ref()
        && let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] =
            select.projection.as_slice()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
        && select.distinct.is_none()
        && query.limit_clause.is_none()
    {
        let mut aggregate = call("array_agg", vec![value.clone()]);
        if let (Expr::Function(f), Some(order_by)) = (&mut aggregate, &query.order_by)
            && let OrderByKind::Expressions(order) = &order_by.kind
            && let FunctionArguments::List(list) = &mut f.args
        {
            list.clauses.push(FunctionArgumentClause::OrderBy(order.clone()));
        }
        let mut aggregated = query.clone();
        aggregated.order_by = None;
        if let SetExpr::Select(select) = aggregated.body.as_mut() {
            select.projection = vec![SelectItem::UnnamedExpr(aggregate)];
        }
        return Expr::Subquery(Box::new(aggregated));
    }
    let mut aggregated = template("SELECT array_agg(elem) FROM (SELECT 1) AS array_rows");
    if let SetExpr::Select(select) = aggregated.body.as_mut()
        && let Some(TableWithJoins { relation: TableFactor::Derived { subquery, .. }, .. }) = select.from.first_mut()
    {
        *subquery = Box::new(aliased_column(query.clone(), "elem"));
    }
    Expr::Subquery(Box::new(aggregated))
}

/// A query of imageql's own text, whose parts are then replaced.
fn template(sql: &str) -> Query {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let parsed =
        datafusion::sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(sql).and_then(|mut p| p.parse_query());
    *parsed.expect("the template parses")
}

/// `query` with its one select item named `name`.
fn aliased_column(mut query: Query, name: &str) -> Query {
    if let SetExpr::Select(select) = query.body.as_mut()
        && let [item] = select.projection.as_mut_slice()
    {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
            _ => return query,
        };
        *item = SelectItem::ExprWithAlias { expr, alias: Ident::new(name) };
    }
    query
}

/// A one-column scalar subquery that is neither aggregated nor limited, as one taking its
/// first value.
fn one_row(query: &Query) -> Option<Query> {
    let SetExpr::Select(select) = query.body.as_ref() else { return None };
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if query.limit_clause.is_some() || grouped {
        return None;
    }
    let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] = select.projection.as_slice()
    else {
        return None;
    };
    if aggregated(value) {
        return None;
    }
    let mut rewritten = query.clone();
    if let SetExpr::Select(select) = rewritten.body.as_mut() {
        select.projection = vec![SelectItem::UnnamedExpr(call("first_value", vec![value.clone()]))];
    }
    Some(rewritten)
}

/// Whether an expression aggregates (a call of an aggregate the subqueries of catalog
/// queries use), so that a subquery of it returns one row already.
fn aggregated(expr: &Expr) -> bool {
    const AGGREGATES: [&str; 12] = [
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "every",
        "first_value",
        "last_value",
    ];
    let mut found = false;
    let mut check = expr.clone();
    let _ = visit_expressions_mut(&mut check, |e| {
        if let Expr::Function(f) = e
            && AGGREGATES.contains(&function_name(f).as_str())
        {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Names the columns of every query as PostgreSQL does (so that an outer query can refer to
/// `count` of an inner one), makes a lone integer literal of the outermost one an `integer`,
/// and returns that one's names when they repeat.
fn name_columns(query: &mut Query) -> Option<Vec<String>> {
    let _ = query.visit(&mut Naming);
    let mut body = query.body.as_mut();
    // A set operation's columns are named by its first query.
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_mut();
    }
    let SetExpr::Select(select) = body else { return None };
    let mut names = Vec::new();
    let mut renamed = false;
    for item in select.projection.iter_mut() {
        match item {
            SelectItem::ExprWithAlias { expr, alias } => {
                *expr = as_integer(expr.clone());
                let (shown, internal) = alias.value.split_once(REPEAT).unwrap_or((&alias.value, ""));
                renamed |= !internal.is_empty();
                names.push(shown.to_string());
            }
            _ => return None,
        }
    }
    renamed.then_some(names)
}

/// What tells a repeated name apart inside a plan; clients are told the name before it.
const REPEAT: &str = "\u{1}";

struct Naming;

impl VisitorMut for Naming {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut()
            && !select
                .projection
                .iter()
                .any(|i| matches!(i, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)))
        {
            let mut taken = HashSet::new();
            for item in select.projection.iter_mut() {
                let (expr, name, quote) = match item {
                    SelectItem::UnnamedExpr(expr) => (expr.clone(), column_name(expr), true),
                    // Unquoted, Postgres and DataFusion fold it to lower case.
                    SelectItem::ExprWithAlias { expr, alias } => match alias.quote_style {
                        Some(_) => (expr.clone(), alias.value.clone(), true),
                        None => (expr.clone(), alias.value.to_lowercase(), false),
                    },
                    _ => continue,
                };
                let mut unique = name.clone();
                let mut n = 1;
                while !taken.insert(unique.clone()) {
                    n += 1;
                    unique = format!("{name}{REPEAT}{n}");
                }
                let alias = match (quote, unique == name) {
                    (false, true) => Ident::new(name),
                    _ => Ident::with_quote('"', unique),
                };
                *item = SelectItem::ExprWithAlias { expr, alias };
            }
        }
        ControlFlow::Continue(())
    }
}

/// A lone integer literal that fits in four bytes, cast to an integer.
fn as_integer(expr: Expr) -> Expr {
    let fits = |text: &str| text.parse::<i32>().is_ok();
    let literal = match &expr {
        Expr::Value(v) => matches!(&v.value, Value::Number(n, false) if fits(n)),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr: inner } => {
            matches!(inner.as_ref(), Expr::Value(v) if matches!(&v.value, Value::Number(n, false) if fits(&format!("-{n}"))))
        }
        _ => false,
    };
    match literal {
        true => Expr::Cast {
            kind: CastKind::DoubleColon,
            expr: Box::new(expr),
            data_type: DataType::Integer(None),
            array: false,
            format: None,
        },
        false => expr,
    }
}

/// The name PostgreSQL gives an unnamed select item.
fn column_name(expr: &Expr) -> String {
    // An unquoted name is folded to lower case, as PostgreSQL folds it.
    let folded = |ident: &Ident| match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    };
    match expr {
        Expr::Identifier(ident) => folded(ident),
        Expr::CompoundIdentifier(parts) => parts.last().map(folded).unwrap_or_default(),
        Expr::Function(function) => function_name(function),
        Expr::Nested(inner) => column_name(inner),
        Expr::Cast { expr, data_type, .. } => match column_name(expr).as_str() {
            "?column?" => postgres_type_name(data_type),
            name => name.to_string(),
        },
        Expr::Case { .. } => "case".into(),
        Expr::Array(_) => "array".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::CompoundFieldAccess { access_chain, root } => match access_chain.last() {
            Some(AccessExpr::Subscript(Subscript::Index { index: Expr::Value(v) })) => match &v.value {
                Value::SingleQuotedString(field) => field.clone(),
                _ => column_name(root),
            },
            _ => column_name(root),
        },
        _ => "?column?".into(),
    }
}

/// The name of a type as PostgreSQL's catalog spells it.
fn postgres_type_name(data_type: &DataType) -> String {
    match type_name(data_type).as_str() {
        "int" | "integer" => "int4".into(),
        "bigint" => "int8".into(),
        "smallint" => "int2".into(),
        "real" => "float4".into(),
        "double precision" | "float" => "float8".into(),
        "boolean" => "bool".into(),
        "character varying" => "varchar".into(),
        other => other.split('(').next().unwrap_or(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Dialect, parse};

    fn rewritten(sql: &str) -> (String, Option<Vec<String>>) {
        let parsed = parse(sql, Dialect::Postgres).unwrap();
        (parsed.statement.to_string(), parsed.column_names)
    }

    #[test]
    fn postgres_forms_become_datafusion_forms() {
        let (sql, _) = rewritten("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg/_%' ESCAPE '/'");
        assert!(sql.contains("pg_like_escape('pg/_%', '/')") && !sql.contains("ESCAPE"), "{sql}");
        let (sql, _) = rewritten("SELECT ARRAY(SELECT relname FROM pg_class ORDER BY relname) AS names");
        assert!(sql.contains("array_agg(relname ORDER BY relname)"), "{sql}");
        let (sql, _) = rewritten("SELECT ARRAY(SELECT DISTINCT relname FROM pg_class) AS names");
        assert!(sql.contains("array_agg(elem)"), "{sql}");
        let (sql, _) = rewritten("SELECT (i.keys).x, i.options[1] FROM t AS i");
        assert!(sql.contains("(i.keys)['x']") && sql.contains("i.options[1]"), "{sql}");
        let (sql, _) = rewritten("SELECT typname FROM pg_type WHERE typinput = 'array_in'::regproc");
        assert!(sql.contains("typinput = 'array_in'") && !sql.contains("pg_proc"), "{sql}");
        let (sql, _) = rewritten("SELECT proargtypes::regtype[] FROM pg_proc");
        assert!(sql.contains("pg_regtype_names(proargtypes)"), "{sql}");
        let mut lookup = parse(
            "SELECT (SELECT t.typname FROM pg_type AS t WHERE t.oid = a.atttypid) FROM pg_attribute AS a",
            Dialect::Postgres,
        )
        .unwrap();
        let datafusion::sql::parser::Statement::Statement(statement) = &mut lookup.statement else { panic!() };
        null_catalog_lookups(statement);
        assert!(statement.to_string().starts_with("SELECT NULL"), "{statement}");
        let (sql, _) = rewritten("SELECT (SELECT t.label FROM images AS t WHERE t.id = a.id) FROM others AS a");
        assert!(sql.contains("first_value(t.label)"), "{sql}");
        let (sql, _) = rewritten("SELECT 1 FROM pg_policy AS p WHERE p.polroles = '{0}'");
        assert!(sql.contains("p.polroles = ARRAY[0]"), "{sql}");
        let (sql, _) = rewritten("SELECT (SELECT count(*) FROM pg_type) AS n");
        assert!(!sql.contains("first_value"), "{sql}");
    }

    #[test]
    fn columns_are_named_as_postgres_names_them() {
        let (sql, names) = rewritten("SELECT 1, 1, count(*), x::int FROM t");
        assert_eq!(names.unwrap(), ["?column?", "?column?", "count", "x"]);
        assert!(sql.contains("1::INTEGER AS \"?column?\""), "{sql}");
        let (sql, names) = rewritten("SELECT n.nspname AS TABLE_SCHEM FROM pg_namespace AS n ORDER BY TABLE_SCHEM");
        assert!(names.is_none() && sql.contains("AS table_schem"), "{sql}");
        let (sql, _) = rewritten("WITH w AS (SELECT count(1) FROM t) SELECT Count FROM w");
        assert!(sql.contains("count(1) AS \"count\""), "{sql}");
        let (_, names) = rewritten("SELECT 1 AS a, 2 AS b");
        assert_eq!(names, None, "unique names need no renaming");
        let (sql, _) = rewritten("SELECT 3000000000");
        assert!(!sql.contains("INTEGER"), "too big for an integer: {sql}");
    }
}
