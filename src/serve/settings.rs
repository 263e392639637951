//! A connection's Postgres settings: what `SET`, `RESET` and `SHOW` change and answer, the
//! ones reported to the client as they change, and those that act (`statement_timeout`,
//! `search_path`, the output styles).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::sql::parser::{ResetStatement as ResetVariable, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Reset, ResetStatement, Set, Statement};
use datafusion_postgres::pgwire::types::format::FormatOptions;

use crate::engine::setting_text;

/// Settings and their values at connection start.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    (crate::engine::DRY_RUN, "off"),
    (crate::engine::AWAIT_TIMEOUT, "30min"),
    (crate::engine::ACCOUNTS_ON_ERROR, "fail"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "off"),
    ("jit", "off"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("lc_messages", "C"),
    ("lc_monetary", "C"),
    ("lc_numeric", "C"),
    ("lc_time", "C"),
    ("max_identifier_length", "63"),
    ("max_index_keys", "32"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// The PostgreSQL version clients are told; SQLAlchemy and JDBC choose their dialect by it.
pub const SERVER_VERSION: &str = "16.0";

/// Settings clients learn of at startup and whenever they change (ParameterStatus).
const REPORTED: &[(&str, &str)] = &[
    ("application_name", "application_name"),
    ("client_encoding", "client_encoding"),
    ("datestyle", "DateStyle"),
    ("integer_datetimes", "integer_datetimes"),
    ("intervalstyle", "IntervalStyle"),
    ("is_superuser", "is_superuser"),
    ("server_encoding", "server_encoding"),
    ("server_version", "server_version"),
    ("standard_conforming_strings", "standard_conforming_strings"),
    ("timezone", "TimeZone"),
];

/// Settings a client may not change, with why.
const FIXED: &[(&str, &str)] = &[
    ("server_version", "it is the server's"),
    ("server_version_num", "it is the server's"),
    ("server_encoding", "it is the server's"),
    ("integer_datetimes", "it is the server's"),
    ("is_superuser", "it is the server's"),
    ("max_identifier_length", "it is the server's"),
    ("max_index_keys", "it is the server's"),
];

/// A connection's settings as its statements see them (`current_setting`, `set_config`).
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<RwLock<BTreeMap<String, String>>>);

impl Shared {
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(&name.to_lowercase()).cloned()
    }

    pub fn set(&self, name: &str, value: &str) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_lowercase(), value.to_string());
    }

    fn insert(&self, name: String, value: String) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(name, value);
    }

    pub fn all(&self) -> BTreeMap<String, String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Back to `values`, taken before (a transaction's start).
    pub fn restore(&self, values: BTreeMap<String, String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = values;
    }
}

#[derive(Debug)]
pub struct Settings {
    values: Shared,
}

/// What a SET, RESET or SHOW did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// SET or RESET: the settings whose reported value changed, by their reported names.
    Set { reported: Vec<(String, String)> },
    /// SHOW: the column name and the values.
    Show { column: String, rows: Vec<(String, String)> },
}

/// A setting that cannot be used as given: SQLSTATE and message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str, pub String);

impl Settings {
    pub fn new(startup: &[(String, String)]) -> Settings {
        let settings = Settings { values: Shared::default() };
        settings.reset(startup);
        settings
    }

    /// The defaults, with what the client's startup packet set.
    fn reset(&self, startup: &[(String, String)]) {
        let mut values: BTreeMap<String, String> =
            DEFAULTS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for (name, value) in startup {
            let name = name.to_lowercase();
            if name != "user" && name != "database" && !name.starts_with("_pq_") && !fixed(&name) {
                values.insert(name, value.clone());
            }
        }
        *self.values.0.write().unwrap_or_else(|e| e.into_inner()) = values;
    }

    /// The settings as the connection's statements read and change them.
    pub fn shared(&self) -> Shared {
        self.values.clone()
    }

    /// Back to the defaults (`DISCARD ALL`).
    pub fn discard(&self) {
        self.reset(&[]);
    }

    /// The reported settings with their values, for the client's startup.
    pub fn reported(&self) -> Vec<(String, String)> {
        REPORTED.iter().map(|(key, shown)| (shown.to_string(), self.get(key))).collect()
    }

    pub fn get(&self, name: &str) -> String {
        self.values.get(name).unwrap_or_default()
    }

    /// How long a statement may run; `None` without a limit.
    pub fn statement_timeout(&self) -> Option<Duration> {
        duration_ms(&self.get("statement_timeout")).filter(|ms| *ms > 0).map(Duration::from_millis)
    }

    /// The schemas unqualified names are looked up in, in order (`$user` left out).
    pub fn search_path(&self) -> Vec<String> {
        self.get("search_path")
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty() && s != "$user")
            .collect()
    }

    /// How values are written as text for this connection.
    pub fn format_options(&self) -> FormatOptions {
        let metadata = ["datestyle", "intervalstyle", "bytea_output", "extra_float_digits"]
            .iter()
            .map(|k| (k.to_string(), self.get(k)))
            .collect();
        FormatOptions::from_client_metadata(&metadata)
    }

    /// Applies a SET, RESET or SHOW (a [`crate::engine::Kind::Variable`] statement).
    pub fn apply(&mut self, statement: &DFStatement) -> Result<Applied, Refused> {
        let statement = match statement {
            DFStatement::Statement(statement) => statement.as_ref(),
            DFStatement::Reset(ResetVariable::Variable(name)) if name.to_string().eq_ignore_ascii_case("all") => {
                return self
                    .apply(&DFStatement::Statement(Box::new(Statement::Reset(ResetStatement { reset: Reset::ALL }))));
            }
            DFStatement::Reset(ResetVariable::Variable(name)) => return self.set(&name.to_string(), None),
            other => return Err(Refused("0A000", format!("{other} is not a setting"))),
        };
        match statement {
            Statement::Set(Set::SingleAssignment { variable, values, .. }) => {
                let value = values.iter().map(setting_text).collect::<Vec<_>>().join(", ");
                self.set(&variable.to_string(), Some(value))
            }
            Statement::Set(Set::SetTimeZone { value, .. }) => self.set("timezone", Some(setting_text(value))),
            Statement::Set(Set::SetNames { charset_name, .. }) => {
                self.set("client_encoding", Some(charset_name.value.clone()))
            }
            Statement::Set(_) => Ok(Applied::Set { reported: vec![] }),
            Statement::Reset(ResetStatement { reset: Reset::ConfigurationParameter(name) }) => {
                self.set(&name.to_string(), None)
            }
            Statement::Reset(ResetStatement { reset: Reset::ALL }) => {
                let before = self.reported();
                self.reset(&[]);
                let after = self.reported();
                Ok(Applied::Set { reported: after.into_iter().filter(|s| !before.contains(s)).collect() })
            }
            Statement::ShowVariable { variable } => {
                // `SHOW time zone` is two words; `SHOW imageql.dry_run` a dotted name.
                let name: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
                match self.values.get(&name.join(".")) {
                    Some(_) => self.show(&name.join(".")),
                    None => self.show(&name.join(" ")),
                }
            }
            other => Err(Refused("0A000", format!("{other} is not a setting"))),
        }
    }

    fn set(&mut self, name: &str, value: Option<String>) -> Result<Applied, Refused> {
        let name = match name.to_lowercase().as_str() {
            "time zone" => "timezone".to_string(),
            "names" => "client_encoding".to_string(),
            "accounts_on_error" => crate::engine::ACCOUNTS_ON_ERROR.to_string(),
            other => other.to_string(),
        };
        if let Some((_, why)) = FIXED.iter().find(|(n, _)| *n == name) {
            return Err(Refused("55P02", format!("parameter \"{name}\" cannot be changed: {why}")));
        }
        let value = value.unwrap_or_else(|| default(&name).to_string());
        match name.as_str() {
            "statement_timeout" if duration_ms(&value).is_none() => {
                return Err(Refused("22023", format!("invalid value for parameter \"statement_timeout\": {value:?}")));
            }
            "client_encoding" if !matches!(value.to_uppercase().as_str(), "UTF8" | "UTF-8" | "UNICODE") => {
                return Err(Refused("0A000", format!("this server speaks UTF8 only, not {value}")));
            }
            "client_encoding" => {
                self.values.insert(name, "UTF8".into());
                return Ok(Applied::Set { reported: vec![] });
            }
            _ => {}
        }
        let changed = self.values.get(&name).as_ref() != Some(&value);
        self.values.insert(name.clone(), value.clone());
        let reported = REPORTED
            .iter()
            .filter(|(key, _)| changed && *key == name)
            .map(|(_, shown)| (shown.to_string(), value.clone()))
            .collect();
        Ok(Applied::Set { reported })
    }

    fn show(&self, name: &str) -> Result<Applied, Refused> {
        let name = match name {
            "time zone" => "timezone",
            "transaction isolation level" => "transaction_isolation",
            "accounts_on_error" => crate::engine::ACCOUNTS_ON_ERROR,
            other => other,
        };
        if name == "all" {
            return Ok(Applied::Show { column: "name".into(), rows: self.values.all().into_iter().collect() });
        }
        match self.values.get(name) {
            Some(value) => Ok(Applied::Show { column: name.into(), rows: vec![(name.into(), value)] }),
            None => Err(Refused("42704", format!("unrecognized configuration parameter \"{name}\""))),
        }
    }
}

fn fixed(name: &str) -> bool {
    FIXED.iter().any(|(n, _)| *n == name)
}

fn default(name: &str) -> &'static str {
    DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or("")
}

/// A duration setting in milliseconds: `5000`, `'5s'`, `'2min'`, `'100ms'`.
fn duration_ms(value: &str) -> Option<u64> {
    let value = value.trim().trim_matches('\'');
    let split = value.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    Some((number * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Dialect, parse};

    fn apply(settings: &mut Settings, sql: &str) -> Result<Applied, Refused> {
        settings.apply(&parse(sql, Dialect::Postgres).unwrap().statement)
    }

    #[test]
    fn settings_change_report_and_show() {
        let mut settings = Settings::new(&[("application_name".into(), "psql".into())]);
        assert_eq!(settings.get("application_name"), "psql");
        assert_eq!(
            apply(&mut settings, "SET DateStyle TO 'ISO, DMY'"),
            Ok(Applied::Set { reported: vec![("DateStyle".into(), "ISO, DMY".into())] })
        );
        apply(&mut settings, "SET statement_timeout = '2s'").unwrap();
        assert_eq!(settings.statement_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(apply(&mut settings, "SET statement_timeout = 'soon'").unwrap_err().0, "22023");
        apply(&mut settings, "SET search_path TO images, public").unwrap();
        assert_eq!(settings.search_path(), ["images", "public"]);
        apply(&mut settings, "RESET statement_timeout").unwrap();
        assert_eq!(settings.statement_timeout(), None);
        assert_eq!(apply(&mut settings, "SHOW nope").unwrap_err().0, "42704");
        assert_eq!(apply(&mut settings, "SET server_version = '9'").unwrap_err().0, "55P02");
        let Applied::Show { rows, .. } = apply(&mut settings, "SHOW TIME ZONE").unwrap() else { panic!() };
        assert_eq!(rows, [("timezone".to_string(), "UTC".to_string())]);
    }
}
