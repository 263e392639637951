/*! Parameter columns filled from the other side of a join.

`disks JOIN instances ON disks.linodeId = instances.id` and
`WHERE linodeId IN (SELECT id FROM instances)` (which DataFusion plans as a semi join) give a
scan of disks no literal `linodeId`. Its scan is then planned as [`Calls::Awaiting`], and
[`ParamsFromJoins`], a physical optimizer rule that runs after DataFusion's own, looks for a
hash join whose key on one side is the awaited column of such a scan. The other side, the
supplier, is evaluated once: [`ReplayExec`] takes its place in the join and replays its
batches, and the scan makes one call per distinct key value the supplier produced.

Restricting the scan to the supplier's values is only sound where the join drops the scan's
rows that have no match (inner and semi joins, the outer side of an outer join, the filter
side of an anti join); elsewhere the scan keeps waiting, and the rule reports the missing
parameter as a scan without a join would.

Over an account set the scan is one per account under an [`AccountsExec`]. The join must
then match `account` too (`ON d.linodeId = i.id AND d.account = i.account`): each account's
scan is fed only the supplier's rows of that account, so that no account is asked for what
another one holds. */

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, JoinType, Result, ScalarValue, SharedResult};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, collect_partitioned, replace_children_if_necessary,
};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::accounts::{ACCOUNT, AccountsExec};
use super::exec::{Awaiting, Calls, ResourceScanExec};
use super::plan::missing_params;
use super::pushdown::{distinct, scalar};

/// Feeds scans that await parameter values from the joins above them; a scan still waiting
/// afterwards is an error naming the parameter.
#[derive(Debug, Default)]
pub struct ParamsFromJoins;

impl PhysicalOptimizerRule for ParamsFromJoins {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        // Bottom up, so that a supplier may itself contain a scan fed by a join below.
        let plan = plan
            .transform_up(|node| {
                let fed = match node.downcast_ref::<HashJoinExec>() {
                    Some(join) => feed(&node, join)?,
                    None => None,
                };
                Ok(match fed {
                    Some(join) => Transformed::yes(join),
                    None => Transformed::no(node),
                })
            })?
            .data;
        plan.apply(|node| {
            // A join gives an account's scan only the values of that account.
            if node.downcast_ref::<AccountsExec>().is_some() {
                for child in node.children() {
                    if let Some(scan) = child.downcast_ref::<ResourceScanExec>()
                        && let Calls::Awaiting(Awaiting { awaited, supplier: None, .. }) = &scan.calls
                    {
                        return Err(DataFusionError::External(Box::new(crate::error::ScanError(format!(
                            "{} in an account set gets its {} from a join that matches the account too \
                             (… ON t.{} = … AND t.account = ….account), or by value (WHERE account = '…' AND {} = …)",
                            scan.resource.full_name,
                            awaited.join(", "),
                            awaited[0],
                            awaited.join(" = … AND ")
                        )))));
                    }
                }
            }
            if let Some(scan) = node.downcast_ref::<ResourceScanExec>()
                && let Calls::Awaiting(Awaiting { binding, supplier: None, .. }) = &scan.calls
            {
                return Err(missing_params(&scan.resource, &binding.bound));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "params_from_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The join with one side's awaiting scan fed by the other side, if its keys allow.
fn feed(node: &Arc<dyn ExecutionPlan>, join: &HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    for target_is_left in [false, true] {
        if !may_restrict(*join.join_type(), target_is_left) {
            continue;
        }
        let (target, source) = match target_is_left {
            true => (join.left(), join.right()),
            false => (join.right(), join.left()),
        };
        let mut scan: Option<Arc<dyn ExecutionPlan>> = None;
        let mut keys = Vec::new();
        let mut account_key = None;
        for (left, right) in join.on() {
            let (target_key, source_key) = if target_is_left { (left, right) } else { (right, left) };
            let Some(column) = target_key.downcast_ref::<Column>() else { continue };
            let Some((node, name)) = trace(target, column.index()) else { continue };
            let Some(awaited) = awaited_of(&node) else { continue };
            if !scan.as_ref().is_none_or(|s| Arc::ptr_eq(s, &node)) {
                continue;
            }
            if awaited.contains(&name) {
                keys.push((name, source_key.clone()));
                scan = Some(node);
            } else if name == ACCOUNT && node.downcast_ref::<AccountsExec>().is_some() {
                account_key = Some(source_key.clone());
                scan = Some(node);
            }
        }
        let Some(scan) = scan else { continue };
        let awaited = awaited_of(&scan).unwrap_or_default();
        if !awaited.iter().all(|a| keys.iter().any(|(name, _)| name == a)) {
            continue;
        }
        let input = Arc::new(SharedInput { plan: source.clone(), batches: OnceCell::new() });
        let supplier = Supplier { input: input.clone(), keys, from: describe_source(source), account: None };
        let fed = match scan.downcast_ref::<AccountsExec>() {
            None => fed_scan(&scan, supplier),
            // Each account's scan gets the supplier's rows of its account.
            Some(accounts) => {
                let Some(account_key) = account_key else { continue };
                let children = accounts
                    .names()
                    .iter()
                    .zip(scan.children())
                    .map(|(name, child)| {
                        let only = Some((account_key.clone(), name.clone()));
                        fed_scan(child, Supplier { account: only, ..supplier.clone() })
                    })
                    .collect();
                replace_children_if_necessary(scan.clone(), children)?
            }
        };
        let table = match (scan.downcast_ref::<ResourceScanExec>(), scan.downcast_ref::<AccountsExec>()) {
            (Some(exec), _) => exec.table.clone(),
            (None, Some(accounts)) => accounts.table().to_string(),
            (None, None) => unreachable!("traced to a scan"),
        };
        let target = target
            .clone()
            .transform_up(|node| {
                Ok(if Arc::ptr_eq(&node, &scan) { Transformed::yes(fed.clone()) } else { Transformed::no(node) })
            })?
            .data;
        let replay: Arc<dyn ExecutionPlan> = Arc::new(ReplayExec { input, to: table });
        let children = if target_is_left { vec![target, replay] } else { vec![replay, target] };
        return Ok(Some(replace_children_if_necessary(node.clone(), children)?));
    }
    Ok(None)
}

/// The parameters a scan still awaits, with no supplier yet: a scan's, or those every
/// account's scan of a set awaits.
fn awaited_of(node: &Arc<dyn ExecutionPlan>) -> Option<Vec<String>> {
    let of_scan = |node: &Arc<dyn ExecutionPlan>| match node.downcast_ref::<ResourceScanExec>().map(|s| &s.calls) {
        Some(Calls::Awaiting(Awaiting { awaited, supplier: None, .. })) => Some(awaited.clone()),
        _ => None,
    };
    if node.downcast_ref::<AccountsExec>().is_none() {
        return of_scan(node);
    }
    let awaited: Vec<Vec<String>> = node.children().into_iter().map(of_scan).collect::<Option<_>>()?;
    awaited.first().filter(|first| awaited.iter().all(|a| a == *first)).cloned()
}

/// An awaiting scan with the supplier of its parameters.
fn fed_scan(scan: &Arc<dyn ExecutionPlan>, supplier: Supplier) -> Arc<dyn ExecutionPlan> {
    let exec = scan.downcast_ref::<ResourceScanExec>().expect("an awaiting scan");
    let Calls::Awaiting(awaiting) = &exec.calls else { unreachable!("an awaiting scan") };
    Arc::new(ResourceScanExec {
        calls: Calls::Awaiting(Awaiting { supplier: Some(supplier), ..awaiting.clone() }),
        caller: exec.caller.clone(),
        table: exec.table.clone(),
        resource: exec.resource.clone(),
        schema: exec.schema.clone(),
        projection: exec.projection.clone(),
        projected: exec.projected.clone(),
        properties: exec.properties.clone(),
    })
}

/// Whether the join drops the target side's rows that match nothing on the other side, so
/// that reading only matching rows changes nothing.
fn may_restrict(join_type: JoinType, target_is_left: bool) -> bool {
    match join_type {
        JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi => true,
        JoinType::Left | JoinType::LeftAnti | JoinType::LeftMark => !target_is_left,
        JoinType::Right | JoinType::RightAnti | JoinType::RightMark => target_is_left,
        JoinType::Full => false,
    }
}

/// The scan (or scans of an account set) and column name behind output column `index` of
/// `plan`, through projections, filters and the operators that pass their input's columns on
/// unchanged.
fn trace(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<(Arc<dyn ExecutionPlan>, String)> {
    if plan.downcast_ref::<ResourceScanExec>().is_some() || plan.downcast_ref::<AccountsExec>().is_some() {
        return Some((plan.clone(), plan.schema().fields().get(index)?.name().clone()));
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.projection_expr().iter().nth(index)?.expr;
        return trace(projection.input(), expr.downcast_ref::<Column>()?.index());
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = match filter.projection() {
            Some(projection) => *projection.get(index)?,
            None => index,
        };
        return trace(filter.input(), index);
    }
    match plan.children()[..] {
        [child] if child.schema().fields() == plan.schema().fields() => trace(child, index),
        _ => None,
    }
}

/// `the first table the supplier reads`, for EXPLAIN.
fn describe_source(source: &Arc<dyn ExecutionPlan>) -> String {
    let mut table = None;
    let _ = source.apply(|node| {
        table = node.downcast_ref::<ResourceScanExec>().map(|scan| scan.table.clone());
        Ok(if table.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    table.unwrap_or_else(|| "the other side of the join".into())
}

/// Batches per output partition.
type Partitions = Arc<Vec<Vec<RecordBatch>>>;

/// The supplier's batches, computed once by whichever of the join and the scan asks first.
#[derive(Debug)]
struct SharedInput {
    plan: Arc<dyn ExecutionPlan>,
    batches: OnceCell<SharedResult<Partitions>>,
}

impl SharedInput {
    async fn batches(&self, context: Arc<TaskContext>) -> Result<Partitions> {
        let computed = self.batches.get_or_init(|| async {
            collect_partitioned(self.plan.clone(), context).await.map(Arc::new).map_err(Arc::new)
        });
        computed.await.clone().map_err(DataFusionError::Shared)
    }
}

/// Where an awaiting scan's parameter values come from: the supplier's key expressions,
/// one per awaited parameter.
#[derive(Debug, Clone)]
pub(super) struct Supplier {
    input: Arc<SharedInput>,
    keys: Vec<(String, PhysicalExprRef)>,
    from: String,
    /// Over an account set: the supplier's account column, and the account whose rows count.
    account: Option<(PhysicalExprRef, String)>,
}

impl Supplier {
    /// The distinct non-null values of each key, as the scan binds literals.
    pub(super) async fn values(&self, context: Arc<TaskContext>) -> Result<Vec<(String, Vec<Value>)>> {
        let batches = self.input.batches(context).await?;
        let mut values = Vec::new();
        for (param, key) in &self.keys {
            let mut all = Vec::new();
            for batch in batches.iter().flatten() {
                let array = key.evaluate(batch)?.into_array(batch.num_rows())?;
                let accounts = match &self.account {
                    Some((column, _)) => Some(column.evaluate(batch)?.into_array(batch.num_rows())?),
                    None => None,
                };
                for row in 0..array.len() {
                    if let (Some(accounts), Some((_, name))) = (&accounts, &self.account)
                        && scalar(&ScalarValue::try_from_array(accounts, row)?).as_ref().and_then(Value::as_str)
                            != Some(name.as_str())
                    {
                        continue;
                    }
                    all.extend(scalar(&ScalarValue::try_from_array(&array, row)?));
                }
            }
            values.push((param.clone(), distinct(all)));
        }
        Ok(values)
    }
}

impl fmt::Display for Supplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(param, key)| match key.downcast_ref::<Column>() {
                Some(column) => format!("{param} from {}", column.name()),
                None => format!("{param} from {key}"),
            })
            .collect();
        write!(f, "{} of {}", keys.join(", "), self.from)?;
        match &self.account {
            Some((_, name)) => write!(f, " of account {name}"),
            None => Ok(()),
        }
    }
}

/// Stands for the supplier in the join: its batches, computed once and shared with the scan
/// they feed.
#[derive(Debug)]
struct ReplayExec {
    input: Arc<SharedInput>,
    /// The table the supplier feeds, for EXPLAIN.
    to: String,
}

impl DisplayAs for ReplayExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ReplayExec: evaluated once, also feeds {}", self.to)
    }
}

impl ExecutionPlan for ReplayExec {
    fn name(&self) -> &str {
        "ReplayExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.plan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input.plan]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// The input is shared with a scan, so it cannot be replaced here alone.
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match &children[..] {
            [child] if Arc::ptr_eq(child, &self.input.plan) => Ok(self),
            _ => Err(DataFusionError::Internal("ReplayExec's input is shared with a scan and cannot change".into())),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.clone();
        let batches = stream::once(async move {
            let all = input.batches(context).await?;
            let part = all.get(partition).cloned().unwrap_or_default();
            Ok::<_, DataFusionError>(stream::iter(part.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), batches.boxed())))
    }
}
