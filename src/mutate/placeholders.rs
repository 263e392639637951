//! The types of the `$n` a change takes as values, from the fields they fill: a driver that
//! sends its parameters as untyped text (node-postgres, pgJDBC's setString) gets them read
//! as PostgreSQL would, `'67890'` for an integer field as the number.

use std::collections::HashMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, SetExpr, Statement, TableFactor, Value, ValueWithSpan,
};

use super::bind::{choose, insert_target, object_name};
use crate::provider::{Method, Registry, Resource, SqlVerb, Verb, data_type, scalar_type};

/// The type of each `$n` (by its number) that stands for a value of a field: in INSERT's
/// VALUES, REPLACE's SET and EXEC's `@name = $n`. Conditions are typed by their query.
pub fn value_types(registry: &Registry, statement: &Statement) -> HashMap<usize, DataType> {
    let mut types = HashMap::new();
    match statement {
        Statement::Insert(insert) => {
            let Some(target) = insert_target(registry, insert) else { return types };
            let columns: Vec<String> = insert
                .columns
                .iter()
                .filter_map(|c| c.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone()))
                .collect();
            let Ok((_, method)) = choose(&target.resource, Verb::Insert, &columns) else { return types };
            let Some(SetExpr::Values(values)) = insert.source.as_ref().map(|s| s.body.as_ref()) else { return types };
            for row in &values.rows {
                for (column, expr) in columns.iter().zip(&row.content) {
                    if let (Some(n), Some(t)) = (placeholder(expr), field_type(&target.resource, method, column)) {
                        types.insert(n, t);
                    }
                }
            }
        }
        Statement::Update(update) => {
            let Ok(target) = registry.resolve(&table_name(&update.table.relation)) else { return types };
            let resource = &target.resource;
            for assignment in &update.assignments {
                let AssignmentTarget::ColumnName(column) = &assignment.target else { continue };
                let Some(column) = column.0.last().and_then(|p| p.as_ident()) else { continue };
                let method = resource
                    .methods_for(SqlVerb::Replace)
                    .map(|(_, m)| m)
                    .find(|m| m.body.iter().any(|f| f.name == column.value));
                if let (Some(n), Some(method)) = (placeholder(&assignment.value), method)
                    && let Some(t) = field_type(resource, method, &column.value)
                {
                    types.insert(n, t);
                }
            }
        }
        Statement::Execute { name: Some(name), parameters, .. } => {
            let Ok(target) = registry.resolve(&object_name(name)) else { return types };
            let Some(method) = target.method.as_ref().and_then(|m| target.resource.methods.get(m)) else {
                return types;
            };
            for parameter in parameters {
                if let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = parameter
                    && let Expr::Identifier(ident) = left.as_ref()
                    && let Some(param) = ident.value.strip_prefix('@')
                    && let (Some(n), Some(t)) = (placeholder(right), field_type(&target.resource, method, param))
                {
                    types.insert(n, t);
                }
            }
        }
        _ => {}
    }
    types
}

/// The type a method takes `name` as: a body field's, else a parameter's.
fn field_type(resource: &Resource, method: &Method, name: &str) -> Option<DataType> {
    let field = method.body.iter().find(|f| f.name == name);
    let param = method.params.iter().find(|p| p.name == name);
    field.map(data_type).or_else(|| param.map(|p| scalar_type(p.kind))).or_else(|| resource.field(name).map(data_type))
}

fn placeholder(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(ValueWithSpan { value: Value::Placeholder(name), .. }) => name.strip_prefix('$')?.parse().ok(),
        Expr::Nested(inner) => placeholder(inner),
        _ => None,
    }
}

fn table_name(relation: &TableFactor) -> String {
    match relation {
        TableFactor::Table { name, .. } => object_name(name),
        _ => String::new(),
    }
}
