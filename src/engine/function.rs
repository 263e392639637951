/*! Views with parameters as DataFusion table functions: `linode.images.usage(from, to)`.

The view's query is planned once, when the session starts, with its parameters as named
placeholders (`$from`); a call evaluates its arguments to constants (so `now()` and
`date_trunc('month', now())` work), converts them to the declared types, and puts them in
place of the placeholders: values never become SQL text. The result is a view over the same
resource scans as any query, so its requests show in EXPLAIN and on the wire. */

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ParamValues, Result, ScalarValue, plan_err};
use datafusion::datasource::ViewTable;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

use crate::provider::{Kind, ViewParam};

#[derive(Debug)]
pub struct ViewFunction {
    name: String,
    params: Vec<ViewParam>,
    /// The view's query with a placeholder per parameter.
    plan: LogicalPlan,
}

impl ViewFunction {
    pub fn new(name: String, params: Vec<ViewParam>, plan: LogicalPlan) -> ViewFunction {
        ViewFunction { name, params, plan }
    }

    fn usage(&self) -> String {
        let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        format!("{}({})", self.name, names.join(", "))
    }
}

/// How an argument of a parameter of `kind` is passed to the query.
fn param_type(kind: Kind) -> DataType {
    match kind {
        Kind::Integer => DataType::Int64,
        Kind::Number => DataType::Float64,
        Kind::Boolean => DataType::Boolean,
        Kind::Datetime => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Utf8,
    }
}

impl TableFunctionImpl for ViewFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != self.params.len() {
            return plan_err!(
                "{} takes {} arguments, not {}: {}",
                self.name,
                self.params.len(),
                exprs.len(),
                self.usage()
            );
        }
        let started = args.session().execution_props().query_execution_start_time;
        let simplifier =
            ExprSimplifier::new(SimplifyContext::builder().with_query_execution_start_time(started).build());
        let mut values = HashMap::new();
        for (param, expr) in self.params.iter().zip(exprs) {
            let Expr::Literal(value, _) = simplifier.simplify(expr.clone())? else {
                return plan_err!("{}: the argument for {} must be a constant, not {expr}", self.usage(), param.name);
            };
            let wanted = param_type(param.kind);
            let value = value.cast_to(&wanted).ok().filter(|v| !v.is_null() || value.is_null());
            let Some(value) = value else {
                return plan_err!(
                    "{}: {} must be a {} (such as {}), not {expr}",
                    self.usage(),
                    param.name,
                    param.kind,
                    match param.kind {
                        Kind::Datetime => "'2025-11-01' or now()",
                        Kind::Integer | Kind::Number => "42",
                        Kind::Boolean => "true",
                        _ => "'text'",
                    }
                );
            };
            values.insert(param.name.clone(), ScalarValue::into(value));
        }
        let plan = self.plan.clone().with_param_values(ParamValues::Map(values))?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}
