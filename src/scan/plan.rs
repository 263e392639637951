//! The pure planning of a scan: which requests answer it, from the predicates DataFusion
//! pushed down. Which method (a lookup by id, a listing, one call per parameter value),
//! which pages and X-Filter, whether a listing is fewer requests than many lookups, and,
//! over an account set, which accounts are called at all. Nothing here sends or reads
//! anything; [`super::exec`] runs what is planned.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use serde_json::Value;

use super::CALL_CONCURRENCY;
use super::accounts::ACCOUNT;
use crate::error::ScanError;
use crate::provider::{FilterOp, Kind, Method, NotFound, Param, PathTemplate, Resource, SqlVerb};
use crate::xfilter::{Filter, XFilter};

/// The rows a select method needs values for before it can be called: parameter values
/// from literals, and the X-Filter conditions of the other predicates.
#[derive(Debug, Clone, Default)]
pub(super) struct Binding {
    pub(super) bound: BTreeMap<String, Vec<Value>>,
    /// Parameters bound by a predicate DataFusion does not evaluate again.
    pub(super) exact: BTreeSet<String>,
    pub(super) remote: Vec<Filter>,
}

impl Binding {
    /// Several predicates on one parameter: only values all of them allow.
    pub(super) fn restrict(&mut self, param: String, values: Vec<Value>) {
        match self.bound.get_mut(&param) {
            Some(previous) => {
                let allowed: HashSet<String> = values.iter().map(Value::to_string).collect();
                previous.retain(|v| allowed.contains(&v.to_string()));
            }
            None => {
                self.bound.insert(param, values);
            }
        }
    }
}

/// The select methods' required parameters.
pub(super) fn required(method: &Method) -> impl Iterator<Item = &Param> {
    method.params.iter().filter(|p| p.required)
}

/// The first select method whose required parameters are all among `given`.
pub(super) fn method_for(resource: &Resource, given: impl Fn(&str) -> bool) -> Option<&Method> {
    resource.methods_for(SqlVerb::Select).map(|(_, m)| m).find(|m| required(m).all(|p| given(&p.name)))
}

/// The requests of a scan once every parameter it needs has values.
pub(super) fn plan_calls(resource: &Resource, binding: &Binding, limit: Option<usize>) -> Result<ScanPlan> {
    let Some(method) = method_for(resource, |name| binding.bound.contains_key(name)) else {
        return Err(missing_params(resource, &binding.bound));
    };
    let plan = plan_method(resource, method, binding, limit);
    Ok(match (&plan, listing_instead(resource, binding)) {
        (ScanPlan::Lookup { calls, .. }, Some(listing)) if calls.len() > CALL_CONCURRENCY => {
            ScanPlan::Either { lookups: Box::new(plan), listing }
        }
        _ => plan,
    })
}

/// The requests of `method` for the values in `binding`.
pub(super) fn plan_method(resource: &Resource, method: &Method, binding: &Binding, limit: Option<usize>) -> ScanPlan {
    let Binding { bound, remote, .. } = binding;
    let mut remote = remote.clone();
    // A bound column the chosen method does not take is checked on the rows instead.
    for (param, values) in bound {
        if !method.params.iter().any(|p| &p.name == param)
            && let Some(column) = row_column(resource, param)
        {
            remote.push(Filter::any(values.iter().map(|v| Filter::cond(column, FilterOp::Eq, v.clone())).collect()));
        }
    }
    let mut calls = vec![ScanCall { path: method.path.clone(), params: vec![] }];
    for param in required(method) {
        let values = &bound[&param.name];
        calls = calls
            .into_iter()
            .flat_map(|call| {
                values.iter().map(move |value| {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let mut call = call.clone();
                    call.path = call.path.fill(&param.name, &text);
                    if param.column.is_none() {
                        call.params.push((param.name.clone(), value.clone()));
                    }
                    call
                })
            })
            .collect();
    }
    let remote = (!remote.is_empty()).then(|| Filter::all(remote));
    if method.paginated {
        let xfilter = remote.filter(|_| method.filtered).map(|filter| XFilter { filter: Some(filter), order: None });
        ScanPlan::List { calls, object_key: method.object_key.clone().unwrap_or_else(|| "data".into()), xfilter, limit }
    } else {
        ScanPlan::Lookup { calls, missing_is_empty: method.not_found == NotFound::Empty, check: remote }
    }
}

/// The column of the rows a select parameter stands for (`imageId` → `id`), if any.
pub(super) fn row_column<'a>(resource: &'a Resource, param: &str) -> Option<&'a str> {
    resource
        .methods_for(SqlVerb::Select)
        .flat_map(|(_, m)| m.params.iter())
        .find(|p| p.name == param)?
        .column
        .as_deref()
}

/// Whether DataFusion evaluates a binding predicate again: when there are more values than
/// lookups go out at once, and the values are a column of rows that a listing without the
/// parameter returns, a scan may list the rows instead ([`listing_instead`]).
pub(super) fn rechecked(resource: &Resource, param: &str, values: &[Value]) -> bool {
    values.len() > CALL_CONCURRENCY
        && row_column(resource, param).is_some()
        && resource.methods_for(SqlVerb::Select).any(|(_, m)| m.paginated && !m.params.iter().any(|p| p.name == param))
}

/// One listing that holds every row the lookups of `binding` would read, when DataFusion
/// keeps the rows asked for: the parameters it leaves out were bound only by predicates
/// that DataFusion evaluates again.
pub(super) fn listing_instead(resource: &Resource, binding: &Binding) -> Option<OneListing> {
    let method = resource.methods_for(SqlVerb::Select).map(|(_, m)| m).find(|m| {
        let takes = |param: &str| m.params.iter().any(|p| p.name == param);
        m.paginated
            && required(m).all(|p| binding.bound.get(&p.name).is_some_and(|values| values.len() == 1))
            && binding
                .bound
                .keys()
                .all(|param| takes(param) || (!binding.exact.contains(param) && row_column(resource, param).is_some()))
    })?;
    let mut narrowed = binding.clone();
    narrowed.bound.retain(|param, _| method.params.iter().any(|p| &p.name == param));
    match plan_method(resource, method, &narrowed, None) {
        ScanPlan::List { mut calls, object_key, xfilter, .. } if calls.len() == 1 => {
            Some(OneListing { call: calls.remove(0), object_key, xfilter })
        }
        _ => None,
    }
}

/// Parameter columns no literal gave, when values from another table (a join, an `IN`
/// subquery) would let the scan run: see [`dependent`].
pub(super) fn awaited_params(resource: &Resource, bound: &BTreeMap<String, Vec<Value>>) -> Option<Vec<String>> {
    if method_for(resource, |name| bound.contains_key(name)).is_some() {
        return None;
    }
    let columns = resource.param_columns();
    let is_column = |name: &str| columns.iter().any(|p| p.name == name);
    let method = method_for(resource, |name| bound.contains_key(name) || is_column(name))?;
    Some(required(method).filter(|p| !bound.contains_key(&p.name)).map(|p| p.name.clone()).collect())
}

/// No select method has all its parameters: name what is missing and how to give it.
pub(super) fn missing_params(resource: &Resource, bound: &BTreeMap<String, Vec<Value>>) -> DataFusionError {
    let least_selective = resource.methods_for(SqlVerb::Select).min_by_key(|(_, m)| required(m).count());
    let Some((name, method)) = least_selective else {
        return DataFusionError::External(Box::new(ScanError(format!(
            "{} has no method to read it with",
            resource.full_name
        ))));
    };
    let missing: Vec<&Param> = required(method).filter(|p| !bound.contains_key(&p.name)).collect();
    let how: Vec<String> = missing
        .iter()
        .map(|p| {
            let column = p.column.as_deref().unwrap_or(&p.name);
            let example = if p.kind == Kind::String { "'…'" } else { "…" };
            format!("`WHERE {column} = {example}` ({})", p.description.trim_end_matches('.'))
        })
        .collect();
    DataFusionError::External(Box::new(ScanError(format!(
        "{} cannot be read without {}: its list method {name} is {} {}. Add {}, or join it on that column",
        resource.full_name,
        missing.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        method.verb,
        method.path,
        how.join(" and ")
    ))))
}

/// One request of a scan, and the parameter-column values its rows get.
#[derive(Debug, Clone)]
pub(super) struct ScanCall {
    pub(super) path: PathTemplate,
    pub(super) params: Vec<(String, Value)>,
}

/// The requests a scan makes.
#[derive(Debug, Clone)]
pub(super) enum ScanPlan {
    /// One GET per call; a 404 is no row when `missing_is_empty`. Rows must pass `check`,
    /// the predicates a list would have sent as X-Filter.
    Lookup { calls: Vec<ScanCall>, missing_is_empty: bool, check: Option<Filter> },
    /// Paginated lists, filtered by the API where possible.
    List { calls: Vec<ScanCall>, object_key: String, xfilter: Option<XFilter>, limit: Option<usize> },
    /// Many lookups, or one listing of a single call whose rows DataFusion narrows down to
    /// the ones asked for: whichever is fewer requests, as the listing's first page tells.
    Either { lookups: Box<ScanPlan>, listing: OneListing },
}

/// A listing by one call.
#[derive(Debug, Clone)]
pub(super) struct OneListing {
    pub(super) call: ScanCall,
    pub(super) object_key: String,
    pub(super) xfilter: Option<XFilter>,
}

impl OneListing {
    pub(super) fn plan(&self) -> ScanPlan {
        let OneListing { call, object_key, xfilter } = self.clone();
        ScanPlan::List { calls: vec![call], object_key, xfilter, limit: None }
    }
}

impl ScanPlan {
    pub(super) fn calls(&self) -> usize {
        match self {
            ScanPlan::Lookup { calls, .. } | ScanPlan::List { calls, .. } => calls.len(),
            ScanPlan::Either { lookups, .. } => lookups.calls(),
        }
    }
}

/// Whether an account's name passes a predicate on `account`.
pub(super) type Keeps = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Which accounts a predicate on `account` keeps; `None` when it is not one.
pub(super) fn account_filter(expr: &Expr) -> Option<Keeps> {
    let is_account = |e: &Expr| matches!(e, Expr::Column(c) if c.name == ACCOUNT);
    let text = |e: &Expr| match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    };
    match expr {
        // DataFusion writes a short IN list as ORs of equalities.
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Or | Operator::And), right }) => {
            let (left, right) = (account_filter(left)?, account_filter(right)?);
            match op {
                Operator::Or => Some(Box::new(move |name| left(name) || right(name))),
                _ => Some(Box::new(move |name| left(name) && right(name))),
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if matches!(op, Operator::Eq | Operator::NotEq) => {
            let value = match (is_account(left), is_account(right)) {
                (true, false) => text(right)?,
                (false, true) => text(left)?,
                _ => return None,
            };
            let equal = *op == Operator::Eq;
            Some(Box::new(move |name| (name == value) == equal))
        }
        Expr::InList(list) if is_account(&list.expr) => {
            let values: Vec<String> = list.list.iter().map(text).collect::<Option<_>>()?;
            let negated = list.negated;
            Some(Box::new(move |name| values.iter().any(|v| v == name) != negated))
        }
        _ => None,
    }
}

pub(super) fn mentions_account(expr: &Expr) -> bool {
    expr.column_refs().iter().any(|c| c.name == ACCOUNT)
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};
    use serde_json::json;

    use super::*;
    use crate::provider::{Registry, Resource};

    fn resource(name: &str) -> std::sync::Arc<Resource> {
        Registry::embedded().unwrap().resolve(name).unwrap().resource
    }

    fn bound(param: &str, values: Vec<Value>) -> Binding {
        let mut binding = Binding::default();
        binding.restrict(param.into(), values);
        binding
    }

    #[test]
    fn an_id_is_one_lookup_and_no_predicate_one_listing() {
        let images = resource("linode.images.images");
        let ScanPlan::Lookup { calls, missing_is_empty, .. } =
            plan_calls(&images, &bound("imageId", vec![json!("private/7")]), None).unwrap()
        else {
            panic!("a lookup")
        };
        assert_eq!(calls.len(), 1);
        assert!(calls[0].path.to_string().ends_with("private%2F7"), "{}", calls[0].path);
        assert!(missing_is_empty, "an image that is not there is no row");

        let ScanPlan::List { calls, xfilter, limit, .. } = plan_calls(&images, &Binding::default(), Some(5)).unwrap()
        else {
            panic!("a listing")
        };
        assert_eq!((calls.len(), xfilter.is_none(), limit), (1, true, Some(5)));
    }

    #[test]
    fn other_predicates_become_the_listings_x_filter() {
        let images = resource("linode.images.images");
        let mut binding = Binding::default();
        binding.remote.push(Filter::cond("is_public", FilterOp::Eq, json!(false)));
        let ScanPlan::List { xfilter: Some(xfilter), .. } = plan_calls(&images, &binding, None).unwrap() else {
            panic!("a filtered listing")
        };
        assert_eq!(xfilter.to_json(), json!({"is_public": false}));
    }

    #[test]
    fn many_ids_may_be_listed_instead_of_looked_up() {
        let images = resource("linode.images.images");
        let ids: Vec<Value> = (0..CALL_CONCURRENCY * 3).map(|i| json!(format!("private/{i}"))).collect();
        assert!(rechecked(&images, "imageId", &ids), "DataFusion keeps the rows asked for");
        let ScanPlan::Either { lookups, listing } = plan_calls(&images, &bound("imageId", ids.clone()), None).unwrap()
        else {
            panic!("lookups or a listing")
        };
        assert_eq!(lookups.calls(), ids.len());
        assert_eq!(listing.plan().calls(), 1);
        assert!(!rechecked(&images, "imageId", &ids[..2]));
    }

    #[test]
    fn a_table_behind_a_path_parameter_waits_for_it_or_says_how_to_give_it() {
        let disks = resource("linode.linode.disks");
        assert_eq!(awaited_params(&disks, &BTreeMap::new()), Some(vec!["linodeId".to_string()]));
        let message = plan_calls(&disks, &Binding::default(), None).unwrap_err().to_string();
        assert!(message.contains("cannot be read without linodeId") && message.contains("WHERE linodeId"), "{message}");
        let ScanPlan::List { calls, .. } =
            plan_calls(&disks, &bound("linodeId", vec![json!(1), json!(2)]), None).unwrap()
        else {
            panic!("one listing per instance")
        };
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].params, [("linodeId".to_string(), json!(2))]);
    }

    #[test]
    fn predicates_on_one_parameter_keep_only_the_values_all_allow() {
        let mut binding = bound("imageId", vec![json!("a"), json!("b"), json!("c")]);
        binding.restrict("imageId".into(), vec![json!("b"), json!("c"), json!("d")]);
        assert_eq!(binding.bound["imageId"], [json!("b"), json!("c")]);
    }

    #[test]
    fn a_predicate_on_account_decides_the_accounts_called() {
        let names = ["acme", "globex", "initech"];
        let kept = |expr: Expr| -> Vec<&str> {
            let keeps = account_filter(&expr).expect("a predicate on account");
            names.iter().copied().filter(|n| keeps(n)).collect()
        };
        assert_eq!(kept(col(ACCOUNT).eq(lit("globex"))), ["globex"]);
        assert_eq!(kept(lit("globex").eq(col(ACCOUNT))), ["globex"]);
        assert_eq!(kept(col(ACCOUNT).not_eq(lit("acme"))), ["globex", "initech"]);
        assert_eq!(kept(col(ACCOUNT).in_list(vec![lit("acme"), lit("initech")], false)), ["acme", "initech"]);
        assert_eq!(kept(col(ACCOUNT).in_list(vec![lit("acme")], true)), ["globex", "initech"]);
        assert_eq!(kept(col(ACCOUNT).eq(lit("acme")).or(col(ACCOUNT).eq(lit("initech")))), ["acme", "initech"]);
        assert_eq!(kept(col(ACCOUNT).not_eq(lit("acme")).and(col(ACCOUNT).not_eq(lit("globex")))), ["initech"]);
        // Anything else is left to the accounts' scans, and every account is called.
        assert!(account_filter(&col("size").gt(lit(1))).is_none());
        assert!(account_filter(&col(ACCOUNT).like(lit("a%"))).is_none());
        assert!(mentions_account(&col(ACCOUNT).like(lit("a%"))) && !mentions_account(&col("id").eq(lit(1))));
    }
}
