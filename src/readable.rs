/*! Values as people and their tools read them, the same in every output format and in `COPY`:
a timestamp as RFC 3339 in UTC with `Z` (`2024-03-11T09:14:22Z`, what jq's `fromdate` and
every JSON date parser take; the API's times are UTC), a duration or interval in days and
hours (`3 days 01:59:52.26`, as Postgres writes intervals) instead of ISO 8601's
`PT259192.26S`. Lists and structs are converted inside. Over `serve` values keep their types:
the wire protocol has its own. */

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, RecordBatch, StringArray, StructArray, make_array,
};
use datafusion::arrow::datatypes::{
    DataType, DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType, DurationSecondType, Field,
    Fields, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, Schema, TimeUnit,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

const RFC3339_UTC: &str = "%Y-%m-%dT%H:%M:%S%.fZ";
const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

/// The type `readable` gives a column of `data_type`.
pub fn readable_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(..) | DataType::Duration(_) | DataType::Interval(_) => DataType::Utf8,
        DataType::Struct(fields) => DataType::Struct(readable_fields(fields)),
        DataType::List(item) => DataType::List(Arc::new(readable_field(item))),
        DataType::Map(entries, sorted) => DataType::Map(Arc::new(readable_field(entries)), *sorted),
        other => other.clone(),
    }
}

fn readable_field(field: &Field) -> Field {
    field.clone().with_data_type(readable_type(field.data_type()))
}

fn readable_fields(fields: &Fields) -> Fields {
    fields.iter().map(|f| readable_field(f)).collect()
}

/// `batch` with its timestamps, durations and intervals as text.
pub fn readable(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if schema.fields().iter().all(|f| readable_type(f.data_type()) == *f.data_type()) {
        return Ok(batch.clone());
    }
    let columns = batch.columns().iter().map(readable_array).collect::<Result<Vec<_>, _>>()?;
    let fields: Vec<Field> = schema.fields().iter().map(|f| readable_field(f)).collect();
    RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), columns)
}

pub fn readable_array(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if readable_type(array.data_type()) == *array.data_type() {
        return Ok(array.clone());
    }
    Ok(match array.data_type() {
        DataType::Timestamp(unit, _) => timestamps_text(array, *unit)?,
        DataType::Duration(unit) => Arc::new(durations_text(array, *unit)),
        DataType::Map(entries, sorted) => {
            let map = array.as_map();
            let DataType::Struct(fields) = readable_type(entries.data_type()) else {
                unreachable!("a map's entries are a struct")
            };
            let children = map.entries().columns().iter().map(readable_array).collect::<Result<Vec<_>, _>>()?;
            let entries_array = StructArray::try_new(fields, children, map.entries().nulls().cloned())?;
            Arc::new(MapArray::try_new(
                Arc::new(readable_field(entries)),
                map.offsets().clone(),
                entries_array,
                map.nulls().cloned(),
                *sorted,
            )?)
        }
        DataType::Interval(unit) => Arc::new(intervals_text(array, *unit)),
        DataType::Struct(fields) => {
            let strukt = array.as_struct();
            let children = strukt.columns().iter().map(readable_array).collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(readable_fields(fields), children, strukt.nulls().cloned())?)
        }
        DataType::List(item) => {
            let list = array.as_list::<i32>();
            let values = readable_array(list.values())?;
            Arc::new(ListArray::try_new(
                Arc::new(readable_field(item)),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?)
        }
        _ => array.clone(),
    })
}

/// Whatever the column's zone, the instant in UTC: the values are UTC instants already.
fn timestamps_text(array: &ArrayRef, unit: TimeUnit) -> Result<ArrayRef, ArrowError> {
    let utc = make_array(array.to_data().into_builder().data_type(DataType::Timestamp(unit, None)).build()?);
    let options = FormatOptions::default().with_timestamp_format(Some(RFC3339_UTC));
    let formatter = ArrayFormatter::try_new(utc.as_ref(), &options)?;
    let cells: StringArray = (0..utc.len()).map(|i| utc.is_valid(i).then(|| formatter.value(i).to_string())).collect();
    Ok(Arc::new(cells))
}

fn durations_text(array: &ArrayRef, unit: TimeUnit) -> StringArray {
    let (scale, values): (i128, Vec<Option<i64>>) = match unit {
        TimeUnit::Second => (NANOS_PER_SECOND, array.as_primitive::<DurationSecondType>().iter().collect()),
        TimeUnit::Millisecond => (1_000_000, array.as_primitive::<DurationMillisecondType>().iter().collect()),
        TimeUnit::Microsecond => (1_000, array.as_primitive::<DurationMicrosecondType>().iter().collect()),
        TimeUnit::Nanosecond => (1, array.as_primitive::<DurationNanosecondType>().iter().collect()),
    };
    // A difference of timestamps reads in days, as Postgres justifies `timestamp - timestamp`.
    let nanos = |v: i64| v as i128 * scale;
    values
        .into_iter()
        .map(|v| v.map(|v| interval_text(0, (nanos(v) / NANOS_PER_DAY) as i64, nanos(v) % NANOS_PER_DAY)))
        .collect()
}

fn intervals_text(array: &ArrayRef, unit: IntervalUnit) -> StringArray {
    match unit {
        IntervalUnit::YearMonth => array
            .as_primitive::<IntervalYearMonthType>()
            .iter()
            .map(|v| v.map(|months| interval_text(months.into(), 0, 0)))
            .collect(),
        IntervalUnit::DayTime => array
            .as_primitive::<IntervalDayTimeType>()
            .iter()
            .map(|v| v.map(|v| interval_text(0, v.days.into(), v.milliseconds as i128 * 1_000_000)))
            .collect(),
        IntervalUnit::MonthDayNano => array
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| v.map(|v| interval_text(v.months.into(), v.days.into(), v.nanoseconds.into())))
            .collect(),
    }
}

/// `1 year 2 mons 3 days 04:05:06.5`, as Postgres writes an interval: each part keeps its
/// sign, and the time says `+` when a part before it is negative (`-1 days +02:00:00`).
fn interval_text(months: i64, days: i64, nanos: i128) -> String {
    let mut parts = vec![];
    let plural = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        parts.push(plural(years, "year", "years"));
    }
    if months != 0 {
        parts.push(plural(months, "mon", "mons"));
    }
    if days != 0 {
        parts.push(plural(days, "day", "days"));
    }
    if nanos != 0 || parts.is_empty() {
        let negative_before = years < 0 || months < 0 || days < 0;
        let sign = match (nanos < 0, negative_before) {
            (true, _) => "-",
            (false, true) => "+",
            (false, false) => "",
        };
        let nanos = nanos.abs();
        let seconds = nanos / NANOS_PER_SECOND;
        // Microseconds, as Postgres keeps them: `now()`'s nanoseconds are noise to a reader.
        let micros = nanos % NANOS_PER_SECOND / 1_000;
        let mut clock = format!("{sign}{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
        if micros != 0 {
            clock.push_str(format!(".{micros:06}").trim_end_matches('0'));
        }
        parts.push(clock);
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{DurationMillisecondArray, DurationNanosecondArray, TimestampSecondArray};

    #[test]
    fn intervals_read_in_days_and_hours() {
        let nanos = |s: f64| (s * 1e9) as i128;
        assert_eq!(interval_text(0, 3, 0), "3 days");
        assert_eq!(interval_text(14, 1, nanos(3600.0)), "1 year 2 mons 1 day 01:00:00");
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        assert_eq!(interval_text(0, 0, -nanos(90.0)), "-00:01:30");
        // As Postgres: the hours of an interval stay hours, each part keeps its sign.
        assert_eq!(interval_text(0, 0, nanos(25.0 * 3600.0)), "25:00:00");
        assert_eq!(interval_text(0, -1, nanos(2.0 * 3600.0)), "-1 days +02:00:00");
        assert_eq!(interval_text(0, -1, 0), "-1 days");
        let differences: ArrayRef =
            Arc::new(DurationNanosecondArray::from(vec![nanos(259_192.26) as i64, -nanos(90_000.0) as i64]));
        let text = readable_array(&differences).unwrap();
        let text: Vec<_> = text.as_string::<i32>().iter().flatten().collect();
        assert_eq!(text, ["2 days 23:59:52.26", "-1 days -01:00:00"]);
    }

    #[test]
    fn timestamps_are_utc_with_z_whatever_their_zone() {
        let naive: ArrayRef = Arc::new(TimestampSecondArray::from(vec![Some(1_710_148_462), None]));
        let zoned: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1_710_148_462]).with_timezone("+02:00"));
        let text = |a: &ArrayRef| {
            let cells = readable_array(a).unwrap();
            cells.as_string::<i32>().iter().map(|c| c.map(str::to_string)).collect::<Vec<_>>()
        };
        assert_eq!(text(&naive), vec![Some("2024-03-11T09:14:22Z".to_string()), None]);
        assert_eq!(text(&zoned), vec![Some("2024-03-11T09:14:22Z".to_string())]);
        let durations: ArrayRef = Arc::new(DurationMillisecondArray::from(vec![90_061_500]));
        assert_eq!(text(&durations), vec![Some("1 day 01:01:01.5".to_string())]);
    }
}
