//! The secret values a change statement gives (a `root_pass` in a VALUES row, an EXEC's
//! `@root_pass=…` or a key of its `@@json`), so that no error message repeats them: the
//! engine's own messages never name a secret's value, but DataFusion's casts and parsers
//! quote what they could not read.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, SetExpr, Statement, Value as SqlValue, visit_expressions};

/// The string literals of `statement` given to a field named in `secret_fields`.
pub fn secret_values(statement: &Statement, secret_fields: &[String]) -> Vec<String> {
    let is_secret = |name: &str| secret_fields.iter().any(|s| s.eq_ignore_ascii_case(name.trim_start_matches('@')));
    let mut found = Vec::new();
    match statement {
        Statement::Insert(insert) => {
            let secret_at: Vec<usize> = insert
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.0.last().and_then(|p| p.as_ident()).is_some_and(|i| is_secret(&i.value)))
                .map(|(i, _)| i)
                .collect();
            if let Some(source) = &insert.source
                && let SetExpr::Values(values) = source.body.as_ref()
            {
                for row in &values.rows {
                    for at in &secret_at {
                        if let Some(expr) = row.get(*at) {
                            strings_in(expr, &mut found);
                        }
                    }
                }
            }
        }
        Statement::Execute { parameters, .. } => {
            for parameter in parameters {
                let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = parameter else { continue };
                let Expr::Identifier(name) = left.as_ref() else { continue };
                if is_secret(&name.value) {
                    strings_in(right, &mut found);
                } else if name.value == "@@json" {
                    let mut texts = Vec::new();
                    strings_in(right, &mut texts);
                    for text in texts {
                        found.extend(json_secrets(&text, &is_secret));
                    }
                }
            }
        }
        Statement::Update(update) => {
            for assignment in &update.assignments {
                if is_secret(&assignment.target.to_string()) {
                    strings_in(&assignment.value, &mut found);
                }
            }
        }
        _ => {}
    }
    found.retain(|s| !s.is_empty());
    found
}

fn strings_in(expr: &Expr, found: &mut Vec<String>) {
    let _ = visit_expressions(expr, |e| {
        if let Expr::Value(v) = e
            && let SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) | SqlValue::EscapedStringLiteral(s) =
                &v.value
        {
            found.push(s.clone());
        }
        // A parameter's value is only known when it runs: its place is kept as `$n`.
        if let Expr::Value(v) = e
            && let SqlValue::Placeholder(p) = &v.value
        {
            found.push(p.clone());
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The values of secret keys in JSON text, even when the text is not well formed.
fn json_secrets(text: &str, is_secret: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let key = &after[..end];
        rest = &after[end + 1..];
        if is_secret(key) {
            let value = rest.trim_start().trim_start_matches(':').trim_start();
            if let Some(inner) = value.strip_prefix('"') {
                let stop = inner.find('"').unwrap_or(inner.len());
                found.push(inner[..stop].to_string());
            }
        }
    }
    found
}

/// `message` with every secret replaced.
pub fn masked(message: &str, secrets: &[String]) -> String {
    secrets.iter().fold(message.to_string(), |text, secret| text.replace(secret.as_str(), "********"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Dialect, parse};
    use datafusion::sql::parser::Statement as DFStatement;

    fn secrets(sql: &str) -> Vec<String> {
        let DFStatement::Statement(statement) = parse(sql, Dialect::Generic).unwrap().statement else { panic!() };
        secret_values(&statement, &["root_pass".to_string()])
    }

    #[test]
    fn secrets_are_found_where_a_statement_gives_them() {
        assert_eq!(
            secrets("INSERT INTO t (label, root_pass) VALUES ('a', CAST('Pw-one-1234' AS INT)), ('b', 'Pw-two-1234')"),
            ["Pw-one-1234", "Pw-two-1234"]
        );
        assert_eq!(secrets("EXEC a.b.c.rebuild @linodeId=1, @root_pass='Pw-three-12'"), ["Pw-three-12"]);
        assert_eq!(secrets(r#"EXEC a.b.c.m @@json='{"root_pass":"Pw-four-123"'"#), ["Pw-four-123"]);
        assert!(secrets("SELECT 'root_pass'").is_empty());
        assert_eq!(masked("cannot cast 'Pw-one-1234'", &["Pw-one-1234".into()]), "cannot cast '********'");
    }
}
