/*! How much memory a statement may take. DataFusion's operators that hold data (sorts,
joins, aggregates) reserve it from the session's memory pool, which here is bounded per
statement ([`Memory::statement`]) and, in a server, by one pool all sessions share; a
reservation past either bound fails the statement with [`Error::OutOfMemory`] instead of
taking the process down. Functions that make large values from small ones (`repeat('x',
2147483647)`, `lpad`, `array_repeat`, `range`, …) allocate outside any pool, so they are
wrapped: each call checks the size of what it would make against the statement's bound
before making it. */

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::{DataFusionError, Result as DFResult};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation, UnboundedMemoryPool};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// What a session's statements may use.
#[derive(Debug, Clone)]
pub struct Memory {
    /// The most one statement may hold, in bytes.
    pub statement: usize,
    /// What every session given the same pool shares (a server's limit); `None`: no bound
    /// beyond the statement's.
    pub shared: Option<Arc<dyn MemoryPool>>,
    /// Whether sorts and joins past the bound may spill to temporary files.
    pub spill: bool,
}

impl Default for Memory {
    /// The command line's: 4 GiB per statement, spilling allowed.
    fn default() -> Self {
        Memory { statement: 4 << 30, shared: None, spill: true }
    }
}

fn mib(bytes: usize) -> usize {
    bytes.div_ceil(1 << 20)
}

/// A session's pool: its own bound, within the shared pool's.
#[derive(Debug)]
pub struct Bounded {
    limit: usize,
    used: AtomicUsize,
    shared: Arc<dyn MemoryPool>,
}

impl Bounded {
    pub fn new(memory: &Memory) -> Bounded {
        let shared = memory.shared.clone().unwrap_or_else(|| Arc::new(UnboundedMemoryPool::default()));
        Bounded { limit: memory.statement, used: AtomicUsize::new(0), shared }
    }
}

impl fmt::Display for Bounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a statement's {} MiB", mib(self.limit))
    }
}

impl MemoryPool for Bounded {
    fn name(&self) -> &str {
        "statement"
    }

    fn register(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink.min(self.used.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DFResult<()> {
        let grown = self.used.fetch_add(additional, Ordering::Relaxed) + additional;
        if grown > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{} would hold more than the {} MiB a statement may use",
                reservation.consumer().name(),
                mib(self.limit)
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            let limit = match self.shared.memory_limit() {
                MemoryLimit::Finite(limit) => format!("the {} MiB", mib(limit)),
                _ => "the memory".into(),
            };
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{limit} all statements of this server share is in use ({e}); try again later"
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// How big the value a function makes may get, per row, from its arguments (`None` when
/// the arguments are not the ones it needs: the function refuses them itself).
type Estimate = fn(&[ArrayRef]) -> Option<Vec<u128>>;

/// The functions that make large values from small arguments, with their estimates.
const AMPLIFIERS: &[(&str, Estimate)] = &[
    ("repeat", |a| Some(product(&weights(a.first()?), &counts(a.get(1)?)))),
    ("lpad", |a| Some(scale(&counts(a.get(1)?), 4))),
    ("rpad", |a| Some(scale(&counts(a.get(1)?), 4))),
    ("array_repeat", |a| Some(product(&weights(a.first()?), &counts(a.get(1)?)))),
    ("array_resize", |a| Some(scale(&counts(a.get(1)?), 16))),
    ("range", series),
    ("generate_series", series),
    ("replace", |a| {
        let (text, from, to) = (weights(a.first()?), weights(a.get(1)?), weights(a.get(2)?));
        Some((0..text.len()).map(|i| text[i] + (text[i] / from[i].max(1) + 1).saturating_mul(to[i])).collect())
    }),
    ("regexp_replace", |a| {
        let (text, with) = (weights(a.first()?), weights(a.get(2)?));
        Some((0..text.len()).map(|i| text[i] + (text[i] + 1).saturating_mul(with[i] + text[i])).collect())
    }),
    ("array_to_string", |a| {
        let (items, separator) = (weights(a.first()?), weights(a.get(1)?));
        Some((0..items.len()).map(|i| items[i].saturating_mul(1 + separator[i])).collect())
    }),
];

/// Wraps the session's functions that could make a value larger than a statement may hold.
pub fn bound_functions(context: &SessionContext, limit: usize) {
    for (name, estimate) in AMPLIFIERS {
        if let Some(inner) = context.state().scalar_functions().get(*name).cloned() {
            context.register_udf(ScalarUDF::new_from_impl(Limited { inner, limit, estimate: *estimate }));
        }
    }
}

#[derive(Debug)]
struct Limited {
    inner: Arc<ScalarUDF>,
    limit: usize,
    estimate: Estimate,
}

// A function is told apart by what it wraps and its bound; the estimate follows the name.
impl PartialEq for Limited {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.limit == other.limit
    }
}

impl Eq for Limited {}

impl std::hash::Hash for Limited {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.limit.hash(state);
    }
}

impl ScalarUDFImpl for Limited {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DFResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DFResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DFResult<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(rows)).collect::<DFResult<Vec<_>>>()?;
        let total: u128 = (self.estimate)(&arrays).unwrap_or_default().iter().fold(0, |sum, n| sum.saturating_add(*n));
        if total > self.limit as u128 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would make {} MiB, more than the {} MiB a statement may use",
                self.inner.name(),
                total.div_ceil(1 << 20),
                mib(self.limit)
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

/// Per row: the byte length of a string or binary value, 16 per item of a list, else 16.
fn weights(array: &ArrayRef) -> Vec<u128> {
    let rows = array.len();
    let lengths = match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Binary | DataType::LargeBinary => {
            length(array).ok().and_then(|l| cast(&l, &DataType::Int64).ok())
        }
        DataType::List(_) | DataType::LargeList(_) => {
            length(array).ok().and_then(|l| cast(&l, &DataType::Int64).ok()).map(|l| {
                let scaled: Vec<i64> =
                    l.as_primitive::<Int64Type>().iter().map(|n| n.unwrap_or(0).saturating_mul(16)).collect();
                Arc::new(datafusion::arrow::array::Int64Array::from(scaled)) as ArrayRef
            })
        }
        _ => None,
    };
    match lengths {
        Some(l) => l.as_primitive::<Int64Type>().iter().map(|n| n.unwrap_or(0).max(0) as u128).collect(),
        None => vec![16; rows],
    }
}

/// Per row: an integer argument's value (a count), 0 where it is null or negative.
fn counts(array: &ArrayRef) -> Vec<u128> {
    match cast(array, &DataType::Int64) {
        Ok(ints) => ints.as_primitive::<Int64Type>().iter().map(|n| n.unwrap_or(0).max(0) as u128).collect(),
        Err(_) => vec![0; array.len()],
    }
}

fn product(a: &[u128], b: &[u128]) -> Vec<u128> {
    a.iter().zip(b).map(|(a, b)| a.saturating_mul(*b)).collect()
}

fn scale(a: &[u128], by: u128) -> Vec<u128> {
    a.iter().map(|a| a.saturating_mul(by)).collect()
}

/// The items `range`/`generate_series` make per row, 8 bytes each: integers, or dates and
/// timestamps with an interval step.
fn series(args: &[ArrayRef]) -> Option<Vec<u128>> {
    let rows = args.first().map_or(0, |a| a.len());
    let instant = |a: &ArrayRef| -> Option<Vec<Option<i64>>> {
        let ints = match a.data_type() {
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => {
                cast(&cast(a, &DataType::Timestamp(TimeUnit::Nanosecond, None)).ok()?, &DataType::Int64).ok()?
            }
            _ => cast(a, &DataType::Int64).ok()?,
        };
        Some(ints.as_primitive::<Int64Type>().iter().collect())
    };
    let (start, stop) = match args {
        [stop] => (vec![Some(0); rows], instant(stop)),
        [start, stop, ..] => (instant(start).unwrap_or_default(), instant(stop)),
        [] => return None,
    };
    let stop = stop?;
    let step: Vec<Option<i64>> = match args.get(2) {
        Some(step) if matches!(step.data_type(), DataType::Interval(_)) => {
            match cast(step, &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano)) {
                Ok(step) => step
                    .as_primitive::<IntervalMonthDayNanoType>()
                    .iter()
                    .map(|s| {
                        s.map(|s| {
                            let days = s.months as i64 * 28 + s.days as i64;
                            days.saturating_mul(86_400_000_000_000).saturating_add(s.nanoseconds)
                        })
                    })
                    .collect(),
                Err(_) => vec![None; rows],
            }
        }
        Some(step) => instant(step).unwrap_or_else(|| vec![None; rows]),
        None => {
            let unit = match args.first().map(|a| a.data_type()) {
                Some(DataType::Date32 | DataType::Date64) => 86_400_000_000_000,
                _ => 1,
            };
            vec![Some(unit); rows]
        }
    };
    let items = (0..rows).map(|i| {
        let (Some(a), Some(b)) = (start.get(i).copied().flatten(), stop.get(i).copied().flatten()) else { return 0 };
        let step = step.get(i).copied().flatten().unwrap_or(1).unsigned_abs().max(1) as u128;
        ((b as i128 - a as i128).unsigned_abs() / step + 1).saturating_mul(8)
    });
    Some(items.collect())
}
