/*! Request bodies checked against a method's body fields from the provider file.

Both ends use it: imageql refuses a statement before any request is made, and the sandbox
answers the same violations with the API's 400 errors. The reasons follow the wording of the
real API where it is known (`Tag 0 (x) length must be 3-50 characters`,
`Length must be 65000 characters or less`). */

use serde_json::{Map, Value};

use crate::provider::{Field, Kind, Method};

/// One problem with one field, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every violation of `body` against a method's body fields and required list. Keys that are
/// not fields are left alone (the caller decides whether they are an error).
pub fn check_body(method: &Method, body: &Map<String, Value>) -> Vec<Violation> {
    let mut violations = Vec::new();
    for field in &method.body {
        let required = method.required.contains(&field.name);
        match body.get(&field.name) {
            None if required => {
                violations.push(Violation { field: field.name.clone(), reason: format!("{} is required", field.name) })
            }
            None => {}
            Some(Value::Null) if required || !field.nullable => violations
                .push(Violation { field: field.name.clone(), reason: format!("{} must not be null", field.name) }),
            Some(Value::Null) => {}
            Some(value) => check_value(field, value, &field.name, &mut violations),
        }
    }
    let given = |name: &str| body.get(name).is_some_and(|v| !v.is_null());
    for rule in method.one_of_with.iter().filter(|rule| given(&rule.when)) {
        if !rule.one_of.iter().any(|name| given(name)) {
            let names = rule.one_of.join(", ");
            violations.push(Violation {
                field: rule.one_of[0].clone(),
                reason: format!("one of {names} is required with {}", rule.when),
            });
        }
    }
    violations
}

fn check_value(field: &Field, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let violation = |reason: String| Violation { field: path.to_string(), reason };
    match (field.kind, value) {
        (Kind::String | Kind::Datetime, Value::String(text)) => {
            if let Some(reason) = string_problem(field, text) {
                out.push(violation(reason));
            }
        }
        (Kind::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        (Kind::Number, Value::Number(_)) | (Kind::Boolean, Value::Bool(_)) | (Kind::Json, _) => {}
        (Kind::Array, Value::Array(items)) => {
            if let Some(max) = field.max_items
                && items.len() > max
            {
                out.push(violation(format!("At most {max} {} are allowed", field.name)));
            }
            if let Some(min) = field.min_items
                && items.len() < min
            {
                let noun = if min == 1 { singular(&field.name).to_lowercase() } else { field.name.clone() };
                let count = if min == 1 { "one".to_string() } else { min.to_string() };
                out.push(violation(format!("Must specify at least {count} {noun}.")));
            }
            if let Some(item) = field.items.as_deref() {
                for (i, element) in items.iter().enumerate() {
                    check_item(field, item, i, element, out);
                }
            }
        }
        (Kind::Object, Value::Object(object)) => {
            for sub in &field.fields {
                if let Some(v) = object.get(&sub.name).filter(|v| !v.is_null()) {
                    check_value(sub, v, &format!("{path}.{}", sub.name), out);
                }
            }
        }
        (kind, _) => out.push(violation(format!("Must be {}", a_kind(kind)))),
    }
    if !field.allowed.is_empty() && value.as_str().is_some_and(|v| !field.allowed.iter().any(|a| a == v)) {
        out.push(violation(format!("Must be one of: {}", field.allowed.join(", "))));
    }
}

/// Array items are reported in the API's style: `Tag 0 (ab) length must be 3-50 characters`.
fn check_item(array: &Field, item: &Field, index: usize, value: &Value, out: &mut Vec<Violation>) {
    let path = format!("{}[{index}]", array.name);
    match value {
        Value::String(text) if matches!(item.kind, Kind::String) => {
            if let Some(reason) = string_problem(item, text) {
                let reason = reason.strip_prefix("Length").map(|rest| format!("length{rest}")).unwrap_or(reason);
                out.push(Violation {
                    field: array.name.clone(),
                    reason: format!("{} {index} ({text}) {reason}", singular(&array.name)),
                });
            }
        }
        _ => check_value(item, value, &path, out),
    }
}

fn string_problem(field: &Field, text: &str) -> Option<String> {
    let length = text.chars().count();
    let too_short = field.min_length.is_some_and(|min| length < min);
    let too_long = field.max_length.is_some_and(|max| length > max);
    if too_short || too_long {
        return Some(match (field.min_length, field.max_length) {
            (Some(min), Some(max)) => format!("Length must be {min}-{max} characters"),
            (None, Some(max)) => format!("Length must be {max} characters or less"),
            (Some(min), None) => format!("Length must be at least {min} characters"),
            (None, None) => unreachable!("a bound was violated"),
        });
    }
    let pattern = field.pattern.as_ref()?;
    (!pattern.is_match(text)).then(|| match &field.pattern_hint {
        Some(hint) => format!("Must only contain {hint}"),
        None => format!("Must match {}", pattern.as_str()),
    })
}

fn a_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "a string",
        Kind::Integer => "an integer",
        Kind::Number => "a number",
        Kind::Boolean => "a boolean",
        Kind::Datetime => "a date-time string",
        Kind::Array => "a list",
        Kind::Object => "an object",
        Kind::Json => "JSON",
    }
}

/// `tags` → `Tag`, `regions` → `Region`.
fn singular(name: &str) -> String {
    let stem = name.strip_suffix('s').unwrap_or(name);
    let mut chars = stem.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Registry;
    use serde_json::json;

    fn post_image_violations(body: Value) -> Vec<String> {
        let registry = Registry::embedded().unwrap();
        let (_, images) = registry.resource("linode", "images", "images").unwrap();
        check_body(&images.methods["post_image"], body.as_object().unwrap()).iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn reports_in_the_api_wording() {
        assert_eq!(post_image_violations(json!({"label": "x"})), ["disk_id: disk_id is required"]);
        assert_eq!(
            post_image_violations(json!({"disk_id": 1, "tags": ["", "okay", "ab"]})),
            ["tags: Tag 0 () length must be 3-50 characters", "tags: Tag 2 (ab) length must be 3-50 characters"]
        );
        assert_eq!(
            post_image_violations(json!({"disk_id": 1, "label": "a".repeat(51)})),
            ["label: Length must be 1-50 characters"]
        );
        assert_eq!(
            post_image_violations(json!({"disk_id": 1, "label": "no/slashes"})),
            ["label: Must only contain letters, digits, spaces and , . ? - _ '"]
        );
        assert_eq!(
            post_image_violations(json!({"disk_id": 1, "description": "d".repeat(65001)})),
            ["description: Length must be 65000 characters or less"]
        );
        assert_eq!(
            post_image_violations(json!({"disk_id": "7", "cloud_init": "yes"})),
            ["disk_id: Must be an integer", "cloud_init: Must be a boolean"]
        );
        assert!(post_image_violations(json!({"disk_id": 7, "label": "ops' image, v1.2", "tags": ["abc"]})).is_empty());
    }
}
