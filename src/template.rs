//! `{{ name }}` placeholders, as in StackQL's scripts: filled from `--var name=value` in
//! statements, and from a provider's constants in the views it declares.
//!
//! A user's value can never change a statement's shape: where the placeholder stands in SQL
//! it becomes one literal (a number, `true`/`false`, else a quoted string), inside a quoted
//! string or identifier it is escaped for it, and in a comment nothing is filled. Only
//! `{{ name | raw }}` pastes the value as written. `{{ name | default(90) }}` gives a value
//! when none is given.

use std::sync::LazyLock;

use regex::{Captures, Regex};

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}").expect("a valid pattern"));

/// A provider's `text` with its constants pasted in as written (the provider files are the
/// operator's, not a user's); the first unknown name is the error.
pub fn fill_constants(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut missing = None;
    let filled = PLACEHOLDER.replace_all(text, |c: &Captures| match lookup(&c[1]) {
        Some(value) => value,
        None => {
            missing.get_or_insert_with(|| c[1].to_string());
            String::new()
        }
    });
    match missing {
        Some(name) => Err(name),
        None => Ok(filled.into_owned()),
    }
}

/// Why a statement's placeholders cannot be filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// No value and no default.
    Undefined(String),
    /// `{{ name | … }}` with something else than `raw` or `default(value)` after the name.
    Malformed(String),
    /// A value that cannot stand inside a dollar-quoted string (it holds a `$`).
    Unquotable { name: String },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Undefined(name) => {
                write!(f, "undefined variable {{{{ {name} }}}}: give it with --var {name}=VALUE")
            }
            TemplateError::Malformed(text) => write!(
                f,
                "{{{{{text}}}}} is not a placeholder: write {{{{ name }}}}, {{{{ name | default(value) }}}} or \
                 {{{{ name | raw }}}}"
            ),
            TemplateError::Unquotable { name } => {
                write!(f, "{{{{ {name} }}}} is inside a $-quoted string and its value holds a $")
            }
        }
    }
}

/// Where in a statement a placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Sql,
    /// `'…'`; `escapes` for `E'…'`, where a backslash escapes.
    String {
        escapes: bool,
    },
    /// `"…"`.
    Identifier,
    LineComment,
    BlockComment,
    /// `$tag$…$tag$`, the tag's length with its dollars.
    Dollar,
}

struct Placeholder {
    name: String,
    default: Option<String>,
    raw: bool,
}

fn placeholder(inside: &str) -> Result<Placeholder, TemplateError> {
    let malformed = || TemplateError::Malformed(inside.to_string());
    let mut parts = inside.split('|').map(str::trim);
    let name = parts.next().filter(|n| is_name(n)).ok_or_else(malformed)?.to_string();
    let mut found = Placeholder { name, default: None, raw: false };
    for filter in parts {
        match filter.strip_prefix("default(").and_then(|rest| rest.strip_suffix(')')) {
            Some(value) => found.default = Some(unquoted(value.trim()).to_string()),
            None if filter == "raw" => found.raw = true,
            None => return Err(malformed()),
        }
    }
    Ok(found)
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A default as written: `'text'` or `"text"` without its quotes, anything else as is.
fn unquoted(value: &str) -> &str {
    for quote in ['\'', '"'] {
        if let Some(inner) = value.strip_prefix(quote).and_then(|v| v.strip_suffix(quote)) {
            return inner;
        }
    }
    value
}

/// `value` as one SQL literal: a number, a boolean, else a string.
fn literal(value: &str) -> String {
    static NUMBER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$").expect("a valid pattern"));
    match value {
        _ if NUMBER.is_match(value) && value.starts_with('-') => format!("({value})"),
        _ if NUMBER.is_match(value) => value.to_string(),
        "true" | "false" => value.to_string(),
        _ => format!("'{}'", value.replace('\'', "''")),
    }
}

/// `text` with every placeholder filled from `lookup` where it stands (see the module's
/// documentation). Placeholders in comments are left as they are.
pub fn bind_values(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut place = Place::Sql;
    let mut dollar_tag = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{")
            && place != Place::LineComment
            && place != Place::BlockComment
            && let Some(end) = rest.find("}}")
            && rest[2..end].split('|').next().is_some_and(|name| is_name(name.trim()))
        {
            let found = placeholder(&rest[2..end])?;
            let value = match lookup(&found.name).or(found.default) {
                Some(value) => value,
                None => return Err(TemplateError::Undefined(found.name)),
            };
            out.push_str(&match (place, found.raw) {
                (_, true) => value,
                (Place::Sql, false) => literal(&value),
                (Place::String { escapes: false }, false) => value.replace('\'', "''"),
                (Place::String { escapes: true }, false) => value.replace('\\', "\\\\").replace('\'', "''"),
                (Place::Identifier, false) => value.replace('"', "\"\""),
                (Place::Dollar, false) if value.contains('$') => {
                    return Err(TemplateError::Unquotable { name: found.name });
                }
                (_, false) => value,
            });
            rest = &rest[end + 2..];
            continue;
        }
        let width = c.len_utf8();
        place = match (place, c) {
            (Place::Sql, '\'') => Place::String { escapes: escape_prefix(&out) },
            (Place::Sql, '"') => Place::Identifier,
            (Place::Sql, '-') if rest.starts_with("--") => Place::LineComment,
            (Place::Sql, '/') if rest.starts_with("/*") => Place::BlockComment,
            (Place::Sql, '$') => match dollar_quote(rest) {
                Some(tag) => {
                    out.push_str(&tag);
                    rest = &rest[tag.len()..];
                    dollar_tag = tag;
                    place = Place::Dollar;
                    continue;
                }
                None => Place::Sql,
            },
            (Place::String { escapes: true }, '\\') => {
                // The escaped character is taken with the backslash.
                let escaped = rest[1..].chars().next().map_or(0, char::len_utf8);
                out.push_str(&rest[..1 + escaped]);
                rest = &rest[1 + escaped..];
                continue;
            }
            (Place::String { .. }, '\'') if rest[1..].starts_with('\'') => {
                out.push_str("''");
                rest = &rest[2..];
                continue;
            }
            (Place::String { .. }, '\'') => Place::Sql,
            (Place::Identifier, '"') if rest[1..].starts_with('"') => {
                out.push_str("\"\"");
                rest = &rest[2..];
                continue;
            }
            (Place::Identifier, '"') => Place::Sql,
            (Place::LineComment, '\n') => Place::Sql,
            (Place::BlockComment, '*') if rest.starts_with("*/") => {
                out.push_str("*/");
                rest = &rest[2..];
                place = Place::Sql;
                continue;
            }
            (Place::Dollar, '$') if rest.starts_with(&dollar_tag) => {
                out.push_str(&dollar_tag);
                rest = &rest[dollar_tag.len()..];
                place = Place::Sql;
                continue;
            }
            (place, _) => place,
        };
        out.push(c);
        rest = &rest[width..];
    }
    Ok(out)
}

/// Whether a string starting here is an `E'…'` string: an `E` that is a word of its own.
fn escape_prefix(before: &str) -> bool {
    let mut chars = before.chars().rev();
    matches!(chars.next(), Some('E' | 'e')) && !chars.next().is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The `$tag$` that opens a dollar-quoted string at the start of `text`, if one does.
fn dollar_quote(text: &str) -> Option<String> {
    let end = text[1..].find('$')? + 1;
    let tag = &text[1..end];
    (tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !tag.starts_with(|c: char| c.is_ascii_digit()))
        .then(|| text[..=end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(text: &str, vars: &[(&str, &str)]) -> Result<String, TemplateError> {
        bind_values(text, |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn constants_are_pasted_and_the_missing_one_named() {
        let lookup = |name: &str| (name == "price").then(|| "0.1".to_string());
        assert_eq!(fill_constants("size * {{ price }}", lookup).unwrap(), "size * 0.1");
        assert_eq!(fill_constants("{{ region }}", lookup).unwrap_err(), "region");
    }

    #[test]
    fn a_value_stays_one_literal_wherever_it_stands() {
        let attack = "zzz') OR NOT is_public OR array_has(tags, 'x";
        assert_eq!(
            bind("WHERE array_has(tags, '{{ tag }}')", &[("tag", attack)]).unwrap(),
            "WHERE array_has(tags, 'zzz'') OR NOT is_public OR array_has(tags, ''x')"
        );
        assert_eq!(bind("WHERE label = {{ l }}", &[("l", "a' OR 'b")]).unwrap(), "WHERE label = 'a'' OR ''b'");
        assert_eq!(bind("WHERE size > {{n}}", &[("n", "2000")]).unwrap(), "WHERE size > 2000");
        assert_eq!(bind("x-{{n}}", &[("n", "-5")]).unwrap(), "x-(-5)", "never a comment");
        assert_eq!(bind("WHERE size > {{n}}", &[("n", "1 OR 1=1")]).unwrap(), "WHERE size > '1 OR 1=1'");
        assert_eq!(bind("WHERE p = {{b}}", &[("b", "true")]).unwrap(), "WHERE p = true");
        assert_eq!(bind("SELECT \"{{c}}\"", &[("c", "a\" FROM x --")]).unwrap(), "SELECT \"a\"\" FROM x --\"");
        assert_eq!(bind("SELECT E'{{v}}'", &[("v", "\\' OR 1")]).unwrap(), "SELECT E'\\\\'' OR 1'");
        assert_eq!(bind("SELECT 'it''s {{v}}'", &[("v", "x'")]).unwrap(), "SELECT 'it''s x'''");
        assert_eq!(bind("WHERE type='{{v}}\\'", &[("v", "a")]).unwrap(), "WHERE type='a\\'", "not an E string");
        assert!(matches!(bind("SELECT $q${{v}}$q$", &[("v", "$q$; DROP")]), Err(TemplateError::Unquotable { .. })));
        assert_eq!(bind("SELECT $q${{v}}$q$", &[("v", "it's")]).unwrap(), "SELECT $q$it's$q$");
    }

    #[test]
    fn raw_defaults_comments_and_mistakes() {
        assert_eq!(bind("ORDER BY {{ col | raw }}", &[("col", "size DESC")]).unwrap(), "ORDER BY size DESC");
        assert_eq!(bind("INTERVAL {{ days | default(90) }}", &[]).unwrap(), "INTERVAL 90");
        assert_eq!(bind("{{ days | default(90) }}", &[("days", "7")]).unwrap(), "7");
        assert_eq!(bind("'{{ who | default('all') }}'", &[]).unwrap(), "'all'");
        assert_eq!(
            bind("-- uses {{ x }}\nSELECT 1 /* {{ y }} */", &[]).unwrap(),
            "-- uses {{ x }}\nSELECT 1 /* {{ y }} */"
        );
        assert_eq!(bind("SELECT {{ x }}", &[]).unwrap_err(), TemplateError::Undefined("x".into()));
        assert!(matches!(bind("SELECT {{ x | upper }}", &[("x", "a")]), Err(TemplateError::Malformed(_))));
        assert_eq!(bind("no placeholders { here }", &[]).unwrap(), "no placeholders { here }");
        assert_eq!(bind("SELECT '{{}}', '{{ 1 }}'", &[]).unwrap(), "SELECT '{{}}', '{{ 1 }}'", "not placeholders");
    }
}
