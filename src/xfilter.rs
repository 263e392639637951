/*! The Linode `X-Filter` grammar, shared by both ends of the wire.

The client builds a [`XFilter`] from pushed-down SQL predicates and encodes it with serde_json
(never by pasting strings); the sandbox parses the header with [`XFilter::parse`], checks it
against the provider's field descriptions with [`XFilter::validate`], and evaluates it with
[`Filter::matches`] and [`Order::compare`]. One AST, so both sides agree by construction.

Grammar: a JSON object whose keys are ANDed. `{"field": value}` is equality (membership for
arrays); `{"field": {"+op": value}}` applies an operator (`+neq +gt +gte +lt +lte +contains`,
or `+or` with a list of values); `+and` / `+or` take lists of filter objects; `+order_by` and
`+order` may appear at any level of `+and` nesting (linode_api4 puts them inside). */

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value, json};

use crate::provider::{Field, FilterOp, Kind};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Cond { field: String, op: FilterOp, value: Value },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub field: String,
    pub direction: Direction,
}

/// The deepest `+and` / `+or` nesting a header may have, and the most conditions it may
/// hold; deeper or larger headers are refused (the client evaluates such predicates itself).
pub const MAX_DEPTH: usize = 16;
pub const MAX_CONDITIONS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct XFilter {
    pub filter: Option<Filter>,
    pub order: Option<Order>,
}

/// Why a header was refused; the text is the `reason` of the API's 400 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    InvalidJson,
    CannotFilterOn(String),
    CannotOrderBy(String),
    CouldNotApply(String),
    TooLarge,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::InvalidJson => write!(f, "Invalid JSON in X-Filter"),
            FilterError::CannotFilterOn(field) => write!(f, "Cannot filter on {field}"),
            FilterError::CannotOrderBy(field) => write!(f, "Cannot order by {field}"),
            FilterError::CouldNotApply(detail) => write!(f, "Could not apply filter: {detail}"),
            FilterError::TooLarge => write!(
                f,
                "X-Filter may nest +and/+or at most {MAX_DEPTH} levels deep and hold at most {MAX_CONDITIONS} conditions"
            ),
        }
    }
}

impl FilterOp {
    fn key(self) -> &'static str {
        match self {
            FilterOp::Eq => "+eq",
            FilterOp::Neq => "+neq",
            FilterOp::Gt => "+gt",
            FilterOp::Gte => "+gte",
            FilterOp::Lt => "+lt",
            FilterOp::Lte => "+lte",
            FilterOp::Contains => "+contains",
        }
    }

    fn from_key(key: &str) -> Option<FilterOp> {
        Some(match key {
            "+eq" => FilterOp::Eq,
            "+neq" => FilterOp::Neq,
            "+gt" => FilterOp::Gt,
            "+gte" => FilterOp::Gte,
            "+lt" => FilterOp::Lt,
            "+lte" => FilterOp::Lte,
            "+contains" => FilterOp::Contains,
            _ => return None,
        })
    }
}

impl Filter {
    pub fn cond(field: impl Into<String>, op: FilterOp, value: impl Into<Value>) -> Filter {
        Filter::Cond { field: field.into(), op, value: value.into() }
    }

    /// AND of `parts`, without a needless `+and` around a single part or inside another.
    pub fn all(parts: Vec<Filter>) -> Filter {
        Filter::join(parts, true)
    }

    /// OR of `parts`, without a needless `+or` around a single part or inside another.
    pub fn any(parts: Vec<Filter>) -> Filter {
        Filter::join(parts, false)
    }

    /// Flat lists keep chains (`a OR b OR …`) one level deep, within [`MAX_DEPTH`].
    fn join(parts: Vec<Filter>, and: bool) -> Filter {
        let mut flat = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                Filter::And(inner) if and && !inner.is_empty() => flat.extend(inner),
                Filter::Or(inner) if !and && !inner.is_empty() => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match (flat.len(), and) {
            (1, _) => flat.pop().unwrap(),
            (_, true) => Filter::And(flat),
            (_, false) => Filter::Or(flat),
        }
    }

    /// How many conditions the filter holds.
    pub fn conditions(&self) -> usize {
        match self {
            Filter::Cond { .. } => 1,
            Filter::And(parts) | Filter::Or(parts) => parts.iter().map(Filter::conditions).sum(),
        }
    }

    /// How many `+and` / `+or` levels the filter nests.
    pub fn depth(&self) -> usize {
        match self {
            Filter::Cond { .. } => 0,
            Filter::And(parts) | Filter::Or(parts) => 1 + parts.iter().map(Filter::depth).max().unwrap_or(0),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Filter::Cond { field, op: FilterOp::Eq, value } => json!({ field: value }),
            Filter::Cond { field, op, value } => json!({ field: { op.key(): value } }),
            Filter::And(parts) => {
                json!({ "+and": parts.iter().map(Filter::to_json).collect::<Vec<_>>() })
            }
            Filter::Or(parts) => {
                json!({ "+or": parts.iter().map(Filter::to_json).collect::<Vec<_>>() })
            }
        }
    }

    /// Whether an API object passes this filter, with the API's semantics: equality is exact
    /// and means membership on arrays, `+contains` is a case-insensitive substring test.
    pub fn matches(&self, object: &Map<String, Value>) -> bool {
        match self {
            Filter::And(parts) => parts.iter().all(|p| p.matches(object)),
            Filter::Or(parts) => parts.iter().any(|p| p.matches(object)),
            Filter::Cond { field, op, value } => {
                let actual = value_at(object, field);
                match op {
                    FilterOp::Eq => value_eq(actual, value),
                    FilterOp::Neq => !value_eq(actual, value),
                    FilterOp::Contains => contains(actual, value),
                    FilterOp::Gt => compare(actual, value).is_some_and(Ordering::is_gt),
                    FilterOp::Gte => compare(actual, value).is_some_and(Ordering::is_ge),
                    FilterOp::Lt => compare(actual, value).is_some_and(Ordering::is_lt),
                    FilterOp::Lte => compare(actual, value).is_some_and(Ordering::is_le),
                }
            }
        }
    }

    fn validate<'a>(&self, lookup: &impl Fn(&str) -> Option<&'a Field>) -> Result<(), FilterError> {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().try_for_each(|p| p.validate(lookup)),
            Filter::Cond { field, op, value } => {
                let f = lookup(field)
                    .filter(|f| f.is_filterable())
                    .ok_or_else(|| FilterError::CannotFilterOn(field.clone()))?;
                if !f.supports(*op) {
                    return Err(FilterError::CouldNotApply(format!("{field} does not support {}", op.key())));
                }
                if !operand_fits(f, *op, value) {
                    return Err(FilterError::CouldNotApply(format!("{value} is not a valid value for {field}")));
                }
                Ok(())
            }
        }
    }
}

impl Order {
    pub fn compare(&self, a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
        let ord = total_order(value_at(a, &self.field), value_at(b, &self.field));
        match self.direction {
            Direction::Asc => ord,
            Direction::Desc => ord.reverse(),
        }
    }
}

impl XFilter {
    pub fn is_empty(&self) -> bool {
        self.filter.is_none() && self.order.is_none()
    }

    /// The fields the filter and the order look at.
    pub fn fields(&self) -> Vec<&str> {
        fn add<'a>(filter: &'a Filter, fields: &mut Vec<&'a str>) {
            match filter {
                Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| add(p, fields)),
                Filter::Cond { field, .. } => fields.push(field),
            }
        }
        let mut fields = Vec::new();
        if let Some(filter) = &self.filter {
            add(filter, &mut fields);
        }
        fields.extend(self.order.as_ref().map(|o| o.field.as_str()));
        fields.sort_unstable();
        fields.dedup();
        fields
    }

    pub fn to_json(&self) -> Value {
        let mut object = match self.filter.as_ref().map(Filter::to_json) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        if let Some(order) = &self.order {
            object.insert("+order_by".into(), Value::String(order.field.clone()));
            let dir = match order.direction {
                Direction::Asc => "asc",
                Direction::Desc => "desc",
            };
            object.insert("+order".into(), Value::String(dir.into()));
        }
        Value::Object(object)
    }

    /// The header's text: JSON with every non-ASCII character escaped (`\u00e9`), since a
    /// header carries ASCII only.
    pub fn encode(&self) -> String {
        let text = self.to_json().to_string();
        let mut ascii = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_ascii() {
                ascii.push(c);
                continue;
            }
            // Outside ASCII, a character can only be inside a JSON string, where escapes work.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
        ascii
    }

    /// Whether the client may send this filter: within [`MAX_DEPTH`] and [`MAX_CONDITIONS`].
    pub fn fits(&self) -> bool {
        self.filter.as_ref().is_none_or(|f| f.depth() <= MAX_DEPTH && f.conditions() <= MAX_CONDITIONS)
    }

    pub fn parse(text: &str) -> Result<XFilter, FilterError> {
        // serde_json stops at 128 levels of nesting; the grammar's own limit is checked below.
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            return Err(FilterError::InvalidJson);
        };
        // Each +and/+or level is an object and a list; a field's operators add two more.
        if 1 + map.values().map(json_depth).max().unwrap_or(0) > 2 * MAX_DEPTH + 3 {
            return Err(FilterError::TooLarge);
        }
        let mut order = (None, None);
        let filter = parse_object(&map, &mut order)?;
        let order = order.0.map(|field| Order { field, direction: order.1.unwrap_or(Direction::Asc) });
        let parsed = XFilter { filter, order };
        if !parsed.fits() {
            return Err(FilterError::TooLarge);
        }
        Ok(parsed)
    }

    /// Checks every field and operator against the resource's field descriptions.
    pub fn validate<'a>(&self, lookup: impl Fn(&str) -> Option<&'a Field>) -> Result<(), FilterError> {
        if let Some(f) = &self.filter {
            f.validate(&lookup)?;
        }
        if let Some(order) = &self.order
            && !lookup(&order.field).is_some_and(|f| f.orderable)
        {
            return Err(FilterError::CannotOrderBy(order.field.clone()));
        }
        Ok(())
    }
}

/// Levels of arrays and objects in `value`; serde_json has bounded it already.
fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

type OrderParts = (Option<String>, Option<Direction>);

fn parse_object(map: &Map<String, Value>, order: &mut OrderParts) -> Result<Option<Filter>, FilterError> {
    let mut parts = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "+and" | "+or" => {
                let Value::Array(items) = value else {
                    return Err(FilterError::CouldNotApply(format!("{key} needs a list of filters")));
                };
                let mut children = Vec::new();
                for item in items {
                    let Value::Object(obj) = item else {
                        return Err(FilterError::CouldNotApply(format!("{key} needs a list of filters")));
                    };
                    // `{}` or a sort-only element constrains nothing.
                    children.push(parse_object(obj, order)?.unwrap_or(Filter::And(vec![])));
                }
                parts.push(if key == "+and" { Filter::And(children) } else { Filter::Or(children) });
            }
            "+order_by" => match value {
                Value::String(field) => order.0 = Some(field.clone()),
                _ => {
                    return Err(FilterError::CouldNotApply("+order_by needs a field name".into()));
                }
            },
            "+order" => match value.as_str() {
                Some("asc") => order.1 = Some(Direction::Asc),
                Some("desc") => order.1 = Some(Direction::Desc),
                _ => {
                    return Err(FilterError::CouldNotApply("+order must be \"asc\" or \"desc\"".into()));
                }
            },
            op if op.starts_with('+') => {
                return Err(FilterError::CouldNotApply(format!("unknown operator {op}")));
            }
            field => parts.push(parse_field(field, value)?),
        }
    }
    Ok(match parts.len() {
        0 => None,
        _ => Some(Filter::all(parts)),
    })
}

fn parse_field(field: &str, value: &Value) -> Result<Filter, FilterError> {
    let Value::Object(ops) = value else {
        return match value {
            Value::Array(_) => Err(FilterError::CouldNotApply(format!("a list is not a valid value for {field}"))),
            _ => Ok(Filter::cond(field, FilterOp::Eq, value.clone())),
        };
    };
    let mut parts = Vec::new();
    for (key, operand) in ops {
        if key == "+or" {
            let Value::Array(values) = operand else {
                return Err(FilterError::CouldNotApply(format!("+or on {field} needs a list of values")));
            };
            parts.push(Filter::Or(values.iter().map(|v| Filter::cond(field, FilterOp::Eq, v.clone())).collect()));
        } else {
            let op =
                FilterOp::from_key(key).ok_or_else(|| FilterError::CouldNotApply(format!("unknown operator {key}")))?;
            parts.push(Filter::cond(field, op, operand.clone()));
        }
    }
    if parts.is_empty() {
        return Err(FilterError::CouldNotApply(format!("no operator given for {field}")));
    }
    Ok(Filter::all(parts))
}

fn operand_fits(field: &Field, op: FilterOp, value: &Value) -> bool {
    let element = match field.kind {
        Kind::Array => field.items.as_deref().map_or(Kind::Json, |i| i.kind),
        k => k,
    };
    match (op, value) {
        (FilterOp::Contains, Value::String(_)) => true,
        (FilterOp::Contains, _) => false,
        (_, Value::Null) => matches!(op, FilterOp::Eq | FilterOp::Neq) && field.nullable,
        (_, Value::String(_)) => matches!(element, Kind::String | Kind::Datetime),
        (_, Value::Number(_)) => matches!(element, Kind::Integer | Kind::Number),
        (_, Value::Bool(_)) => element == Kind::Boolean,
        _ => false,
    }
}

/// The value of `field` in an object: a key, or a dotted path into nested objects
/// (`entity.type`); null when absent.
fn value_at<'a>(object: &'a Map<String, Value>, field: &str) -> &'a Value {
    if let Some(value) = object.get(field) {
        return value;
    }
    let mut parts = field.split('.');
    let first = parts.next().and_then(|key| object.get(key));
    parts.try_fold(first, |value, key| Some(value?.get(key))).flatten().unwrap_or(&Value::Null)
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn value_eq(actual: &Value, operand: &Value) -> bool {
    match actual {
        Value::Array(items) => items.iter().any(|i| scalar_eq(i, operand)),
        _ => scalar_eq(actual, operand),
    }
}

fn contains(actual: &Value, needle: &Value) -> bool {
    let Some(needle) = needle.as_str().map(str::to_lowercase) else {
        return false;
    };
    match actual {
        Value::String(s) => s.to_lowercase().contains(&needle),
        Value::Array(items) => items.iter().any(|i| i.as_str().is_some_and(|s| s.to_lowercase().contains(&needle))),
        _ => false,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Sort order for `+order_by`: nulls first, then by value.
fn total_order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => compare(a, b).unwrap_or_else(|| rank(a).cmp(&rank(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Registry;

    fn image(label: &str, size: i64, tags: &[&str], vendor: Option<&str>) -> Map<String, Value> {
        let v = json!({"label": label, "size": size, "tags": tags, "vendor": vendor, "status": "available"});
        v.as_object().unwrap().clone()
    }

    #[test]
    fn encodes_with_json_escaping() {
        let evil = r#"x","is_public":true,"label":"y"#;
        let f = XFilter { filter: Some(Filter::cond("label", FilterOp::Eq, evil)), order: None };
        let text = f.encode();
        assert_eq!(XFilter::parse(&text).unwrap(), f);
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.as_object().unwrap().len(), 1);
        assert_eq!(parsed["label"], evil);
    }

    #[test]
    fn parses_the_shapes_real_clients_send() {
        // linode-cli puts the sort at the top level.
        let cli = r#"{"is_public": false, "label": "my-image", "size": 10, "+and": [{"tags": "a"}, {"tags": "b"}], "+order_by": "label", "+order": "desc"}"#;
        let f = XFilter::parse(cli).unwrap();
        assert_eq!(f.order, Some(Order { field: "label".into(), direction: Direction::Desc }));
        let Some(Filter::And(parts)) = &f.filter else { panic!("{f:?}") };
        // The inner +and joins the outer one: three conditions and two tags.
        assert_eq!(parts.len(), 5);
        // linode_api4 puts it inside +and.
        let sdk = r#"{"+and": [{"label": "x"}, {"size": {"+gt": 10}}, {"+order_by": "size", "+order": "desc"}]}"#;
        let f = XFilter::parse(sdk).unwrap();
        assert_eq!(f.order.unwrap().field, "size");
        let obj = image("x", 11, &[], None);
        assert!(f.filter.as_ref().unwrap().matches(&obj));
        assert!(!f.filter.unwrap().matches(&image("x", 10, &[], None)));
    }

    #[test]
    fn evaluates_with_api_semantics() {
        let img = image("Golden Web", 3000, &["prod", "web"], None);
        let check = |text: &str| XFilter::parse(text).unwrap().filter.unwrap().matches(&img);
        assert!(check(r#"{"tags": "web"}"#));
        assert!(!check(r#"{"tags": "db"}"#));
        assert!(check(r#"{"label": {"+contains": "golden"}}"#));
        assert!(!check(r#"{"label": "golden web"}"#));
        assert!(check(r#"{"size": {"+gte": 3000, "+lt": 3001}}"#));
        assert!(check(r#"{"+or": [{"size": 1}, {"vendor": null}]}"#));
        assert!(check(r#"{"vendor": {"+neq": "Debian"}}"#));
        assert!(check(r#"{"status": {"+or": ["creating", "available"]}}"#));
    }

    #[test]
    fn validates_against_the_provider_fields() {
        let reg = Registry::embedded().unwrap();
        let (_, images) = reg.resource("linode", "images", "images").unwrap();
        let validate = |text: &str| XFilter::parse(text).and_then(|f| f.validate(|n| images.field(n)));
        assert_eq!(validate(r#"{"foo":"bar"}"#), Err(FilterError::CannotFilterOn("foo".into())));
        assert_eq!(validate(r#"{"id":"private/1"}"#), Err(FilterError::CannotFilterOn("id".into())));
        assert_eq!(validate(r#"{"+order_by":"status"}"#), Err(FilterError::CannotOrderBy("status".into())));
        assert_eq!(validate("{not json"), Err(FilterError::InvalidJson));
        assert!(matches!(validate(r#"{"label":{"+gt":1}}"#), Err(FilterError::CouldNotApply(_))));
        assert!(matches!(validate(r#"{"size":"big"}"#), Err(FilterError::CouldNotApply(_))));
        assert_eq!(validate(r#"{"+and":[{"tags":"x"},{"size":{"+lte":5}}],"+order_by":"size"}"#), Ok(()));
    }

    #[test]
    fn nested_fields_are_dotted_paths() {
        let reg = Registry::embedded().unwrap();
        let (_, events) = reg.resource("linode", "account", "events").unwrap();
        let event = json!({"id": 7, "entity": {"id": 42, "type": "image"}, "secondary_entity": null});
        let event = event.as_object().unwrap();
        let check = |text: &str| {
            let parsed = XFilter::parse(text).unwrap();
            parsed.validate(|n| events.field(n)).map(|_| parsed.filter.unwrap().matches(event))
        };
        assert_eq!(check(r#"{"entity.type": "image", "entity.id": 42}"#), Ok(true));
        assert_eq!(check(r#"{"entity.type": "linode"}"#), Ok(false));
        assert_eq!(check(r#"{"entity.label": "x"}"#), Err(FilterError::CannotFilterOn("entity.label".into())));
        assert_eq!(
            check(r#"{"secondary_entity.id": "x"}"#),
            Err(FilterError::CannotFilterOn("secondary_entity.id".into()))
        );
    }

    #[test]
    fn orders_nulls_first() {
        let order = Order { field: "vendor".into(), direction: Direction::Asc };
        let a = image("a", 1, &[], None);
        let b = image("b", 1, &[], Some("Debian"));
        assert_eq!(order.compare(&a, &b), Ordering::Less);
    }
}
