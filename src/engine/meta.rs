/*! Meta commands about the provider registry, answered without any request:

```text
SHOW PROVIDERS [LIKE '…']
SHOW SERVICES [IN provider] [LIKE '…']
SHOW RESOURCES [IN provider.service] [LIKE '…']
SHOW METHODS IN provider.service.resource [LIKE '…']
DESCRIBE [EXTENDED] provider.service.resource
DESCRIBE [EXTENDED] METHOD provider.service.resource.method
```

Each answer is a table, printed like any query result. `DESCRIBE` of anything that is not a
resource is left to DataFusion. */

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::Error;
use crate::provider::{Field, Kind, Method, ParamLocation, Registry, Resource, SqlVerb};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    Providers { like: Option<String> },
    Services { provider: Option<String>, like: Option<String> },
    Resources { service: Option<String>, like: Option<String> },
    Methods { resource: String, like: Option<String> },
    Describe { resource: String, extended: bool },
    DescribeMethod { method: String, extended: bool },
}

/// Words, dotted names and string literals of a statement, upper-casing keywords.
fn words(text: &str) -> Option<Vec<String>> {
    let tokens = Tokenizer::new(&GenericDialect {}, text).tokenize().ok()?;
    let mut words: Vec<String> = Vec::new();
    let mut joining = false;
    for token in tokens {
        match token {
            Token::Whitespace(_) | Token::SemiColon => {}
            Token::Period => {
                words.last_mut()?.push('.');
                joining = true;
            }
            Token::Word(w) if joining => {
                words.last_mut()?.push_str(&w.value);
                joining = false;
            }
            Token::Word(w) => words.push(w.value),
            Token::SingleQuotedString(s) => words.push(format!("'{s}")),
            _ => return None,
        }
    }
    Some(words)
}

/// The meta command `text` is, `None` when it is not one, or an error for a malformed one.
pub fn parse(text: &str, registry: &Registry) -> Option<Result<Meta, Error>> {
    let words = words(text)?;
    let upper: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    let keyword = |i: usize| upper.get(i).map(String::as_str);
    let (head, rest) = match (keyword(0), keyword(1)) {
        (Some("SHOW"), Some(what @ ("PROVIDERS" | "SERVICES" | "RESOURCES" | "METHODS"))) => (what.to_string(), 2),
        (Some("DESCRIBE" | "DESC"), _) => ("DESCRIBE".to_string(), 1),
        _ => return None,
    };
    let mut i = rest;
    let mut extended = false;
    let mut method = false;
    let mut target: Option<String> = None;
    let mut like: Option<String> = None;
    while i < words.len() {
        match keyword(i) {
            Some("EXTENDED") if head == "DESCRIBE" => extended = true,
            Some("METHOD") if head == "DESCRIBE" => method = true,
            Some("IN" | "FROM") if head != "DESCRIBE" => {
                target = Some(words.get(i + 1)?.clone());
                i += 1;
            }
            Some("LIKE") if head != "DESCRIBE" => match words.get(i + 1).and_then(|w| w.strip_prefix('\'')) {
                Some(pattern) => {
                    like = Some(pattern.to_string());
                    i += 1;
                }
                None => return Some(Err(Error::Refused("LIKE needs a quoted pattern, e.g. LIKE '%image%'".into()))),
            },
            _ if head == "DESCRIBE" && target.is_none() => target = Some(words[i].clone()),
            _ => return Some(Err(Error::Syntax(format!("unexpected {} in {head}", words[i])))),
        }
        i += 1;
    }
    // Shortened names (`DESCRIBE images`) stand for the one resource, view or method they end.
    let target = match head.as_str() {
        "METHODS" | "DESCRIBE" => target.map(|name| registry.completed(&name).unwrap_or(name)),
        _ => target,
    };
    let need = |what: &str, example: &str| Err(Error::Refused(format!("SHOW {what} needs IN {example}")));
    Some(match head.as_str() {
        "PROVIDERS" => Ok(Meta::Providers { like }),
        "SERVICES" => Ok(Meta::Services { provider: target, like }),
        "RESOURCES" => Ok(Meta::Resources { service: target, like }),
        "METHODS" => match target {
            Some(resource) => Ok(Meta::Methods { resource, like }),
            None => need("METHODS", "provider.service.resource, e.g. SHOW METHODS IN linode.images.images"),
        },
        _ => {
            let target = target?;
            if method {
                Ok(Meta::DescribeMethod { method: target, extended })
            } else if registry.resolve(&target).is_ok_and(|r| r.method.is_none()) {
                Ok(Meta::Describe { resource: target, extended })
            } else {
                // Not a resource: DataFusion describes tables and views.
                return None;
            }
        }
    })
}

/// SQL LIKE: `%` any run, `_` one character.
fn sql_like(pattern: &str, text: &str) -> bool {
    let mut regex = String::from("^");
    for c in pattern.chars() {
        match c {
            '%' => regex.push_str(".*"),
            '_' => regex.push('.'),
            c => regex.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex.push('$');
    regex::Regex::new(&regex).is_ok_and(|re| re.is_match(text))
}

fn batch(columns: &[&str], rows: Vec<Vec<String>>) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(columns.iter().map(|c| ArrowField::new(*c, DataType::Utf8, false)).collect::<Vec<_>>()));
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|i| Arc::new(StringArray::from(rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>())) as ArrayRef)
        .collect();
    RecordBatch::try_new(schema, arrays).expect("columns of equal length")
}

/// A type as the provider file spells it, with what lists and objects hold.
pub fn type_name(field: &Field) -> String {
    match field.kind {
        Kind::Array => format!("array<{}>", field.items.as_deref().map(type_name).unwrap_or_default()),
        Kind::Object => {
            let names: Vec<&str> = field.fields.iter().map(|f| f.name.as_str()).collect();
            format!("object{{{}}}", names.join(", "))
        }
        kind => kind.to_string(),
    }
}

fn verb_of(resource: &Resource, method: &str) -> &'static str {
    for (verb, name) in [
        (SqlVerb::Select, "select"),
        (SqlVerb::Insert, "insert"),
        (SqlVerb::Replace, "replace"),
        (SqlVerb::Delete, "delete"),
    ] {
        if resource.sql_verbs.get(&verb).is_some_and(|list| list.iter().any(|m| m == method)) {
            return name;
        }
    }
    "exec"
}

fn required_inputs(method: &Method) -> Vec<String> {
    let params = method.params.iter().filter(|p| p.required).map(|p| p.name.clone());
    params.chain(method.required.iter().cloned()).collect()
}

pub fn run(meta: &Meta, registry: &Registry) -> Result<RecordBatch, Error> {
    let keep = |like: &Option<String>, name: &str| like.as_deref().is_none_or(|p| sql_like(p, name));
    match meta {
        Meta::Providers { like } => Ok(batch(
            &["name", "title", "base_url", "description"],
            registry
                .providers
                .values()
                .filter(|p| keep(like, &p.id))
                .map(|p| vec![p.id.clone(), p.title.clone(), p.base_url.clone(), p.description.clone()])
                .collect(),
        )),
        Meta::Services { provider, like } => {
            if let Some(p) = provider
                && !registry.providers.contains_key(p)
            {
                return Err(Error::Refused(format!(
                    "unknown provider {p}; providers are {}",
                    provider_names(registry)
                )));
            }
            let rows = registry
                .providers
                .values()
                .filter(|p| provider.as_ref().is_none_or(|wanted| &p.id == wanted))
                .flat_map(|p| p.services.values().map(move |s| (p, s)))
                .filter(|(_, s)| keep(like, &s.id))
                .map(|(p, s)| vec![format!("{}.{}", p.id, s.id), s.id.clone(), s.title.clone(), s.description.clone()])
                .collect();
            Ok(batch(&["id", "name", "title", "description"], rows))
        }
        Meta::Resources { service, like } => {
            // `IN images` is the one provider's service of that name.
            let service = service.as_ref().map(|name| {
                let mut owners =
                    registry.providers.values().filter(|p| !name.contains('.') && p.services.contains_key(name));
                match (owners.next(), owners.next()) {
                    (Some(provider), None) => format!("{}.{name}", provider.id),
                    _ => name.clone(),
                }
            });
            if let Some(service) = &service {
                let found = service
                    .split_once('.')
                    .and_then(|(p, s)| registry.providers.get(p).and_then(|provider| provider.services.get(s)));
                if found.is_none() {
                    return Err(Error::Refused(format!("unknown service {service}; see SHOW SERVICES")));
                }
            }
            let mut rows: Vec<Vec<String>> = Vec::new();
            for provider in registry.providers.values() {
                for s in provider.services.values() {
                    let id = format!("{}.{}", provider.id, s.id);
                    if service.as_ref().is_some_and(|wanted| wanted != &id) {
                        continue;
                    }
                    rows.extend(s.resources.values().map(|r| {
                        vec![
                            r.full_name.clone(),
                            r.name.clone(),
                            "table".into(),
                            r.title.clone(),
                            r.description.clone(),
                        ]
                    }));
                    rows.extend(s.views.iter().map(|(name, v)| {
                        let params: Vec<&str> = v.params.iter().map(|p| p.name.as_str()).collect();
                        let (call, kind) = match params.is_empty() {
                            true => (String::new(), "view"),
                            false => (format!("({})", params.join(", ")), "function"),
                        };
                        vec![
                            format!("{id}.{name}{call}"),
                            name.clone(),
                            kind.into(),
                            v.title.clone(),
                            v.description.clone(),
                        ]
                    }));
                }
            }
            rows.retain(|r| keep(like, &r[1]));
            Ok(batch(&["id", "name", "type", "title", "description"], rows))
        }
        Meta::Methods { resource, like } => {
            let found = table(registry, resource)?;
            let rows = found
                .methods
                .iter()
                .filter(|(name, _)| keep(like, name))
                .map(|(name, m)| {
                    vec![
                        name.clone(),
                        required_inputs(m).join(", "),
                        verb_of(&found, name).into(),
                        format!("{} {}", m.verb, m.path),
                    ]
                })
                .collect();
            Ok(batch(&["method", "required_params", "sql_verb", "request"], rows))
        }
        Meta::Describe { resource, extended } => {
            let found = table(registry, resource)?;
            let bound: Vec<(String, String)> = found
                .methods_for(SqlVerb::Select)
                .flat_map(|(name, m)| m.params.iter().filter(|p| p.required).map(move |p| (name, p)))
                .map(|(name, p)| {
                    (p.column.clone().unwrap_or_else(|| p.name.clone()), format!("= or IN ({} of {name})", p.name))
                })
                .collect();
            let filterable = |name: &str, ops: Vec<String>| -> String {
                let mut parts = ops;
                parts.extend(bound.iter().filter(|(c, _)| c == name).map(|(_, how)| how.clone()).take(1));
                parts.join(", ")
            };
            let mut rows: Vec<Vec<String>> = found
                .fields
                .iter()
                .map(|f| {
                    let ops = f.filter.iter().map(|op| format!("{op:?}").to_lowercase()).collect();
                    vec![
                        f.name.clone(),
                        type_name(f),
                        yes_no(f.nullable),
                        filterable(&f.name, ops),
                        f.description.clone(),
                    ]
                })
                .collect();
            rows.extend(found.param_columns().into_iter().map(|p| {
                let required = format!("required: = or IN ({})", p.description.trim_end_matches('.'));
                vec![p.name.clone(), p.kind.to_string(), "NO".into(), required, p.description.clone()]
            }));
            Ok(describe_table(&["name", "type", "nullable", "filterable"], rows, *extended))
        }
        Meta::DescribeMethod { method, extended } => {
            let (resource_name, method_name) = method
                .rsplit_once('.')
                .ok_or_else(|| Error::Refused(format!("{method} is not provider.service.resource.method")))?;
            let found = table(registry, resource_name)?;
            let m = found.methods.get(method_name).ok_or_else(|| {
                let names: Vec<&str> = found.methods.keys().map(String::as_str).collect();
                Error::Refused(format!("{resource_name} has no method {method_name}; methods are {}", names.join(", ")))
            })?;
            let input = |required: bool| if required { "input_required" } else { "input_optional" };
            let mut rows: Vec<Vec<String>> = m
                .params
                .iter()
                .map(|p| {
                    let place = match p.location {
                        ParamLocation::Path => "path",
                        ParamLocation::Query => "query",
                    };
                    vec![
                        p.name.clone(),
                        p.kind.to_string(),
                        input(p.required).into(),
                        format!("({place}) {}", p.description),
                    ]
                })
                .collect();
            rows.extend(m.body.iter().map(|f| {
                vec![f.name.clone(), type_name(f), input(m.required.contains(&f.name)).into(), f.description.clone()]
            }));
            let upload = m.upload.as_ref();
            rows.extend(
                upload.map(|u| strings([&u.param, "file", "input_optional", "A local file to upload (EXEC only)"])),
            );
            if m.verb != crate::provider::HttpVerb::Delete {
                rows.extend(
                    found
                        .fields
                        .iter()
                        .map(|f| vec![f.name.clone(), type_name(f), "output".into(), f.description.clone()]),
                );
                rows.extend(upload.map(|u| strings([&u.url_field, "string", "output", "Where to send the file"])));
            }
            Ok(describe_table(&["name", "type", "param_type"], rows, *extended))
        }
    }
}

fn strings<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn yes_no(b: bool) -> String {
    if b { "YES" } else { "NO" }.into()
}

/// `columns` and, with EXTENDED, the description in the last position of each row.
fn describe_table(columns: &[&str], mut rows: Vec<Vec<String>>, extended: bool) -> RecordBatch {
    let mut names = columns.to_vec();
    if extended {
        names.push("description");
    } else {
        for row in rows.iter_mut() {
            row.truncate(columns.len());
        }
    }
    batch(&names, rows)
}

fn provider_names(registry: &Registry) -> String {
    registry.providers.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The resource a three-part name refers to.
fn table(registry: &Registry, name: &str) -> Result<Arc<Resource>, Error> {
    let resolved = registry.resolve(name)?;
    match resolved.method {
        None => Ok(resolved.resource),
        Some(_) => Err(Error::Refused(format!("{name} is a method; name a resource: provider.service.resource"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_meta_commands() {
        let registry = Registry::embedded().unwrap();
        let p = |t: &str| parse(t, &registry).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(p("SHOW PROVIDERS;"), Some(Ok(Meta::Providers { like: None })));
        assert_eq!(
            p("show services in linode"),
            Some(Ok(Meta::Services { provider: Some("linode".into()), like: None }))
        );
        assert_eq!(
            p("SHOW METHODS IN linode.images.images LIKE 'post%'"),
            Some(Ok(Meta::Methods { resource: "linode.images.images".into(), like: Some("post%".into()) }))
        );
        assert_eq!(
            p("DESCRIBE EXTENDED linode.images.images"),
            Some(Ok(Meta::Describe { resource: "linode.images.images".into(), extended: true }))
        );
        assert_eq!(
            p("DESC METHOD linode.images.images.post_image"),
            Some(Ok(Meta::DescribeMethod { method: "linode.images.images.post_image".into(), extended: false }))
        );
        assert_eq!(p("DESCRIBE information_schema.tables"), None);
        assert_eq!(p("SHOW TABLES"), None);
        assert!(matches!(p("SHOW METHODS"), Some(Err(_))));
        assert!(
            sql_like("post%", "post_image") && !sql_like("post%", "get_image") && sql_like("_et_image", "get_image")
        );
    }
}
