/*! Seed rows: the data the sandbox serves for a service's read-only resources.

A service file `services/<name>.yaml` may have a data file beside it, `services/<name>.seed.json`,
holding `{"<resource>": [{row}, …]}`: each resource's rows as the API sends them, in the API's
order. A resource read through a path parameter that no field carries (`linodeId` of
`/linode/instances/{linodeId}/disks`) has rows that carry that parameter under its name, so the
sandbox can tell which rows belong to which path; it leaves the parameter out of its answers.

Rows are checked against the resource's fields when the files are loaded (unknown keys, missing
non-nullable fields, JSON types, enums, duplicate keys), so a mistake in a seed file is a load
error naming the file rather than a wrong answer later. The loader lives here, beside the YAML
loader, so the embedded set and `--providers DIR` get seeds the same way. */

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Field, HttpVerb, Kind, LoadError, Param, ParamLocation, Resource, Service};

/// One row, as the API sends it (plus the path parameters it is read with).
pub type Row = Map<String, Value>;

/// Reads a file of the provider set by its path; `None` when there is no such file.
pub(super) type Reader<'a> = &'a dyn Fn(&str) -> Result<Option<String>, LoadError>;

/// A service's seed rows, by resource name.
#[derive(Debug, Clone, Default)]
pub struct Seed {
    rows: BTreeMap<String, Vec<Row>>,
}

impl Seed {
    /// The rows of `resource`; none when the seed file does not mention it.
    pub fn rows(&self, resource: &str) -> &[Row] {
        self.rows.get(resource).map(Vec::as_slice).unwrap_or_default()
    }

    /// The resources the seed file gives rows for.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.rows.keys().map(String::as_str)
    }
}

/// The path parameters a resource's seed rows carry: those of its GET methods that no field
/// carries (`linodeId` of disks).
pub fn seed_params(resource: &Resource) -> Vec<&Param> {
    let mut params: Vec<&Param> = Vec::new();
    let gets = resource.methods.values().filter(|m| m.verb == HttpVerb::Get);
    for p in gets.flat_map(|m| &m.params) {
        if p.location == ParamLocation::Path && p.column.is_none() && !params.iter().any(|q| q.name == p.name) {
            params.push(p);
        }
    }
    params
}

/// The seed file of a service file: `services/images.yaml` → `services/images.seed.json`.
fn seed_file(service_file: &str) -> String {
    let stem = service_file.strip_suffix(".yaml").or_else(|| service_file.strip_suffix(".yml"));
    format!("{}.seed.json", stem.unwrap_or(service_file))
}

/// Reads a file compiled into the binary.
pub(super) fn read_embedded(path: &str) -> Result<Option<String>, LoadError> {
    match super::EMBEDDED.get_file(path) {
        None => Ok(None),
        Some(file) => {
            file.contents_utf8().map(|t| Some(t.to_string())).ok_or_else(|| LoadError::new(path, "not UTF-8"))
        }
    }
}

/// Reads a file from disk (`--providers DIR`).
pub(super) fn read_disk(path: &str) -> Result<Option<String>, LoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError::new(path, e)),
    }
}

/// The seed beside `service_file`, checked against `service`; empty when there is none.
pub(super) fn load(service_file: &str, service: &Service, read: Reader) -> Result<Seed, LoadError> {
    let file = seed_file(service_file);
    let Some(text) = read(&file)? else {
        return Ok(Seed::default());
    };
    let error = |message: String| LoadError::new(&file, message);
    let rows: BTreeMap<String, Vec<Row>> = serde_json::from_str(&text).map_err(|e| {
        error(format!("{e} (expected {{\"<resource>\": [{{row}}, …]}} with the service's resource names)"))
    })?;
    for (name, rows) in &rows {
        let resource = service.resources.get(name).ok_or_else(|| {
            let known: Vec<&str> = service.resources.keys().map(String::as_str).collect();
            error(format!("service `{}` has no resource `{name}`; its resources are {}", service.id, known.join(", ")))
        })?;
        check_rows(resource, rows).map_err(|m| error(format!("{name}: {m}")))?;
    }
    Ok(Seed { rows })
}

fn check_rows(resource: &Resource, rows: &[Row]) -> Result<(), String> {
    let params = seed_params(resource);
    for (i, row) in rows.iter().enumerate() {
        let at = |m: String| format!("row {i}: {m}");
        for (key, value) in row {
            if resource.field(key).is_some() {
                continue;
            }
            match params.iter().find(|p| &p.name == key) {
                Some(p) if value.is_null() || !scalar_fits(p.kind, value) => {
                    return Err(at(format!("`{key}`: {value} is not of type {}", p.kind)));
                }
                Some(_) => {}
                None => return Err(at(format!("unknown field `{key}`"))),
            }
        }
        check_object(&resource.fields, row).map_err(at)?;
        if let Some(p) = params.iter().find(|p| !row.contains_key(&p.name)) {
            return Err(at(format!("`{}` is missing: rows carry the path parameter they are read with", p.name)));
        }
    }
    // Rows read one at a time must be told apart by what their path gives.
    for method in resource.methods.values().filter(|m| m.verb == HttpVerb::Get && m.object_key.is_none()) {
        let keys: Vec<&str> = method
            .params
            .iter()
            .filter(|p| p.location == ParamLocation::Path)
            .map(|p| p.column.as_deref().unwrap_or(&p.name))
            .collect();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, row) in rows.iter().enumerate() {
            let key: Vec<&Value> = keys.iter().map(|k| row.get(*k).unwrap_or(&Value::Null)).collect();
            let key = serde_json::to_string(&key).unwrap_or_default();
            if let Some(first) = seen.insert(key.clone(), i) {
                return Err(format!("rows {first} and {i} have the same {} ({key})", keys.join(", ")));
            }
        }
    }
    Ok(())
}

/// An object's keys against its fields: nothing unknown, nothing non-nullable missing.
fn check_object(fields: &[Field], object: &Row) -> Result<(), String> {
    for field in fields {
        match object.get(&field.name) {
            Some(value) => check_value(field, value).map_err(|m| format!("`{}`: {m}", field.name))?,
            None if !field.nullable => return Err(format!("`{}` is missing and not nullable", field.name)),
            None => {}
        }
    }
    Ok(())
}

fn check_value(field: &Field, value: &Value) -> Result<(), String> {
    match (field.kind, value) {
        (_, Value::Null) if field.nullable => Ok(()),
        (_, Value::Null) => Err("null, but not nullable".into()),
        (Kind::String, Value::String(s)) if !field.allowed.is_empty() && !field.allowed.contains(s) => {
            Err(format!("{value} is not one of {}", field.allowed.join(", ")))
        }
        (Kind::Array, Value::Array(items)) => {
            let item = field.items.as_deref().expect("arrays have items, checked on load");
            items.iter().enumerate().try_for_each(|(i, v)| check_value(item, v).map_err(|m| format!("item {i}: {m}")))
        }
        (Kind::Object, Value::Object(object)) => {
            if let Some(key) = object.keys().find(|k| !field.fields.iter().any(|f| &f.name == *k)) {
                return Err(format!("unknown field `{key}`"));
            }
            check_object(&field.fields, object)
        }
        (kind, value) if scalar_fits(kind, value) => Ok(()),
        (Kind::Datetime, _) => Err(format!("{value} is not a datetime like 2024-05-01T12:00:00")),
        (kind, _) => Err(format!("{value} is not of type {kind}")),
    }
}

/// Whether a non-null value has the JSON type of `kind` (arrays and objects never do here).
fn scalar_fits(kind: Kind, value: &Value) -> bool {
    match (kind, value) {
        (Kind::Json, _) | (Kind::String, Value::String(_)) => true,
        (Kind::Datetime, Value::String(s)) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok(),
        (Kind::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Kind::Number, Value::Number(_)) | (Kind::Boolean, Value::Bool(_)) => true,
        _ => false,
    }
}
