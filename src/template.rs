//! `{{ name }}` placeholders, as in StackQL's scripts: filled from `--var name=value` in
//! statements, and from a provider's constants in the views it declares.

use std::sync::LazyLock;

use regex::{Captures, Regex};

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}").expect("a valid pattern"));

/// `text` with every placeholder replaced; the first unknown name is the error.
pub fn fill(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_names_the_missing_one() {
        let lookup = |name: &str| (name == "label").then(|| "web".to_string());
        assert_eq!(
            fill("WHERE label = '{{ label }}' AND x = '{{label}}'", lookup).unwrap(),
            "WHERE label = 'web' AND x = 'web'"
        );
        assert_eq!(fill("{{ region }}", lookup).unwrap_err(), "region");
        assert_eq!(fill("no placeholders { here }", lookup).unwrap(), "no placeholders { here }");
    }
}
