/*! Which WHERE predicates the API can evaluate, and how.

Each predicate DataFusion offers becomes one of:
- a parameter binding (`id = 'x'`, `id IN (…)`, `linodeId = 7`) that picks the method and
  fills its path, one request per value; with a get method, the X-Filter predicates below are
  then checked on each fetched row instead;
- an X-Filter condition, `Exact` when the API's semantics equal SQL's, `Inexact` when the API
  returns a superset that DataFusion filters again (`LIKE` → case-insensitive `+contains`,
  `!=` on a nullable field);
- nothing, for whatever the API cannot express, or for filters beyond the header's limits
  ([`MAX_DEPTH`], [`MAX_CONDITIONS`]). */

use std::collections::HashSet;

use datafusion::arrow::array::Array;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{InList, ScalarFunction};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Like, Operator, TableProviderFilterPushDown};
use serde_json::Value;

use crate::provider::{Field, FilterOp, Kind, Resource, SqlVerb};
use crate::xfilter::{Filter, MAX_CONDITIONS, MAX_DEPTH};

#[derive(Debug, Clone, PartialEq)]
pub enum FilterUse {
    /// Values for a method parameter: `id = 'x'` binds `imageId` (the parameter of that
    /// column), `linodeId = 7` binds the parameter column `linodeId`.
    Bind { param: String, values: Vec<Value> },
    /// Send as part of the X-Filter header; with a get method, checked on each fetched row.
    Remote { filter: Filter, exact: bool },
    /// Evaluated by DataFusion only.
    Local,
}

impl FilterUse {
    pub fn pushdown(&self) -> TableProviderFilterPushDown {
        match self {
            FilterUse::Bind { .. } | FilterUse::Remote { exact: true, .. } => TableProviderFilterPushDown::Exact,
            FilterUse::Remote { exact: false, .. } => TableProviderFilterPushDown::Inexact,
            FilterUse::Local => TableProviderFilterPushDown::Unsupported,
        }
    }
}

/// The parameter a column binds, if any: a parameter declared with `column: id`, or a
/// parameter column.
fn bound_param<'a>(resource: &'a Resource, column: &str) -> Option<&'a str> {
    let mut select = resource.methods_for(SqlVerb::Select).flat_map(|(_, m)| m.params.iter());
    select.find(|p| p.required && p.column.as_deref().unwrap_or(&p.name) == column).map(|p| p.name.as_str())
}

/// Decides the use of one predicate, on its own: DataFusion may offer predicates one call
/// at a time, and a scan receives every predicate any call accepted.
pub fn classify(resource: &Resource, filter: &Expr) -> FilterUse {
    if let Some((column, values)) = equalities(filter)
        && let Some(param) = bound_param(resource, column)
    {
        return FilterUse::Bind { param: param.to_string(), values };
    }
    match translate(resource, filter) {
        // One level stays for the AND of all predicates; beyond the header's limits the API
        // would refuse the filter, so DataFusion evaluates it.
        Some((filter, exact)) if filter.depth() < MAX_DEPTH && filter.conditions() <= MAX_CONDITIONS / 2 => {
            FilterUse::Remote { filter, exact }
        }
        _ => FilterUse::Local,
    }
}

/// The column and literal values of `column = v`, `column IN (v, …)` or an OR of those.
fn equalities(expr: &Expr) -> Option<(&str, Vec<Value>)> {
    let scalar_literal = |e: &Expr| literal(e).filter(|v| v.is_string() || v.is_number());
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
            let (column, value) = column_and_other(left, right)?;
            Some((column, vec![scalar_literal(value)?]))
        }
        Expr::InList(InList { expr, list, negated: false }) => {
            let column = column_name(expr)?;
            let values: Vec<Value> = list.iter().map(scalar_literal).collect::<Option<_>>()?;
            Some((column, distinct(values)))
        }
        // Short IN lists reach the table as OR chains.
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let (column, mut values) = equalities(left)?;
            let (other, more) = equalities(right)?;
            (column == other).then_some(())?;
            values.extend(more);
            Some((column, distinct(values)))
        }
        _ => None,
    }
}

/// `values` without repeats, in their order; linear, for IN lists of many thousand ids.
pub(super) fn distinct(values: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut seen = HashSet::new();
    values.into_iter().filter(|v| seen.insert(v.to_string())).collect()
}

/// The X-Filter form of `expr`, and whether it is exact.
fn translate(resource: &Resource, expr: &Expr) -> Option<(Filter, bool)> {
    // Named as X-Filter names it: `entity.type` for a field of an object.
    let named = |path: String| resource.field(&path).map(|f| Field { name: path, ..f.clone() });
    let field = |e: &Expr| field_path(e).and_then(named);
    match expr {
        // Booleans arrive canonicalised: `col` and `NOT col`.
        Expr::Column(_) => boolean(&field(expr)?, true),
        Expr::Not(inner) if matches!(inner.as_ref(), Expr::Column(_)) => boolean(&field(inner)?, false),
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            match (translate(resource, left), translate(resource, right)) {
                (Some((l, le)), Some((r, re))) => Some((Filter::all(vec![l, r]), le && re)),
                // Half of an AND still narrows the rows; the rest is checked locally.
                (Some((one, _)), None) | (None, Some((one, _))) => Some((one, false)),
                (None, None) => None,
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let (l, le) = translate(resource, left)?;
            let (r, re) = translate(resource, right)?;
            Some((Filter::any(vec![l, r]), le && re))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, other, op) = match (field_path(left), field_path(right)) {
                (Some(c), None) => (c, right.as_ref(), *op),
                (None, Some(c)) => (c, left.as_ref(), op.swap()?),
                _ => return None,
            };
            let f = &named(col)?;
            let value = literal(other)?;
            let filter_op = match op {
                Operator::Eq => FilterOp::Eq,
                Operator::NotEq => FilterOp::Neq,
                Operator::Gt => FilterOp::Gt,
                Operator::GtEq => FilterOp::Gte,
                Operator::Lt => FilterOp::Lt,
                Operator::LtEq => FilterOp::Lte,
                _ => return None,
            };
            condition(f, filter_op, value)
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            let f = &field(expr)?;
            let (lo, _) = condition(f, FilterOp::Gte, literal(low)?)?;
            let (hi, _) = condition(f, FilterOp::Lte, literal(high)?)?;
            Some((Filter::all(vec![lo, hi]), true))
        }
        Expr::InList(InList { expr, list, negated }) => {
            let f = &field(expr)?;
            let op = if *negated { FilterOp::Neq } else { FilterOp::Eq };
            let mut parts = Vec::new();
            let mut exact = true;
            for item in list {
                let (cond, e) = condition(f, op, literal(item)?)?;
                parts.push(cond);
                exact &= e;
            }
            if parts.is_empty() {
                return None;
            }
            Some((if *negated { Filter::all(parts) } else { Filter::any(parts) }, exact))
        }
        Expr::Like(Like { negated: false, expr, pattern, escape_char: None, .. }) => {
            let f = &field(expr)?;
            let Value::String(pattern) = literal(pattern)? else {
                return None;
            };
            // A backslash escapes % and _ in LIKE; splitting on them would get it wrong.
            if pattern.contains('\\') {
                return None;
            }
            let needle = pattern.split(['%', '_']).max_by_key(|s| s.chars().count())?;
            if needle.is_empty() || !f.supports(FilterOp::Contains) {
                return None;
            }
            Some((Filter::cond(&f.name, FilterOp::Contains, needle), false))
        }
        Expr::ScalarFunction(ScalarFunction { func, args }) => match (func.name(), args.as_slice()) {
            // Equality on an array field is membership, exactly what array_has means.
            ("array_has", [array, element]) => {
                let f = &field(array)?;
                let (cond, _) = condition_on_items(f, literal(element)?)?;
                Some((cond, true))
            }
            ("array_has_all" | "array_has_any", [array, items]) => {
                let f = &field(array)?;
                let parts: Vec<Filter> = literal_list(items)?
                    .into_iter()
                    .map(|v| condition_on_items(f, v).map(|(c, _)| c))
                    .collect::<Option<_>>()?;
                if parts.is_empty() {
                    return None;
                }
                let filter = if func.name() == "array_has_all" { Filter::all(parts) } else { Filter::any(parts) };
                Some((filter, true))
            }
            _ => None,
        },
        _ => None,
    }
}

fn boolean(field: &Field, value: bool) -> Option<(Filter, bool)> {
    (field.kind == Kind::Boolean).then_some(())?;
    condition(field, FilterOp::Eq, Value::Bool(value))
}

/// A single-field condition, if the API accepts it; exact unless SQL and the API disagree.
fn condition(field: &Field, op: FilterOp, value: Value) -> Option<(Filter, bool)> {
    if field.kind == Kind::Array || !field.supports(op) || !operand_matches(field.kind, &value) {
        return None;
    }
    // SQL's `a != x` drops rows where `a` is null; the API keeps them.
    let exact = op != FilterOp::Neq || !field.nullable;
    Some((Filter::cond(&field.name, op, value), exact))
}

fn condition_on_items(field: &Field, value: Value) -> Option<(Filter, bool)> {
    let items = field.items.as_deref()?;
    if field.kind != Kind::Array || !field.supports(FilterOp::Eq) || !operand_matches(items.kind, &value) {
        return None;
    }
    Some((Filter::cond(&field.name, FilterOp::Eq, value), true))
}

fn operand_matches(kind: Kind, value: &Value) -> bool {
    match value {
        Value::String(_) => kind == Kind::String,
        Value::Number(n) => kind == Kind::Number || (kind == Kind::Integer && (n.is_i64() || n.is_u64())),
        Value::Bool(_) => kind == Kind::Boolean,
        _ => false,
    }
}

fn column_and_other<'a>(left: &'a Expr, right: &'a Expr) -> Option<(&'a str, &'a Expr)> {
    match (column_name(left), column_name(right)) {
        (Some(c), None) => Some((c, right)),
        (None, Some(c)) => Some((c, left)),
        _ => None,
    }
}

/// The field an expression reads as X-Filter names it: a column, or a field of a struct
/// column (`entity['type']` is `entity.type`), looking through casts between string types.
fn field_path(expr: &Expr) -> Option<String> {
    match expr {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == "get_field" => match args.as_slice() {
            [outer, Expr::Literal(ScalarValue::Utf8(Some(name)), _)] => Some(format!("{}.{name}", field_path(outer)?)),
            _ => None,
        },
        Expr::Cast(cast) if cast.field.data_type().is_string() => field_path(&cast.expr),
        _ => column_name(expr).map(str::to_string),
    }
}

/// The column an expression reads, looking through casts between string types.
fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(&c.name),
        Expr::Cast(cast) if cast.field.data_type().is_string() => column_name(&cast.expr),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<Value> {
    match expr {
        Expr::Literal(value, _) => scalar(value),
        Expr::Cast(cast) => literal(&cast.expr),
        _ => None,
    }
}

/// The elements of an array literal, folded (`List([a, b])`) or not (`make_array('a', 'b')`).
fn literal_list(expr: &Expr) -> Option<Vec<Value>> {
    match expr {
        Expr::Literal(ScalarValue::List(list), _) if list.len() == 1 && !list.is_null(0) => {
            let values = list.value(0);
            (0..values.len()).map(|i| ScalarValue::try_from_array(&values, i).ok().as_ref().and_then(scalar)).collect()
        }
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == "make_array" => {
            args.iter().map(literal).collect()
        }
        _ => None,
    }
}

pub(super) fn scalar(value: &ScalarValue) -> Option<Value> {
    Some(match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Value::String(s.clone())
        }
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(n)) => Value::from(*n),
        ScalarValue::Int16(Some(n)) => Value::from(*n),
        ScalarValue::Int32(Some(n)) => Value::from(*n),
        ScalarValue::Int64(Some(n)) => Value::from(*n),
        ScalarValue::UInt8(Some(n)) => Value::from(*n),
        ScalarValue::UInt16(Some(n)) => Value::from(*n),
        ScalarValue::UInt32(Some(n)) => Value::from(*n),
        ScalarValue::UInt64(Some(n)) => Value::from(*n),
        ScalarValue::Float64(Some(n)) => serde_json::Number::from_f64(*n).map(Value::Number)?,
        _ => return None,
    })
}
