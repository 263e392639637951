//! imageql's own settings of a session (`SET imageql.dry_run = on`), read the same way by
//! every front end: the command line and the shell run them here, `imageql serve` checks them
//! here before keeping them with the connection's other settings.

use datafusion::sql::parser::{ResetStatement, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Reset, Set, Statement, Value};

use std::time::Duration;

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::Session;
use crate::error::Error;
use crate::mutate;
use crate::outcome::Outcome;

/// Every change is previewed instead of sent.
pub const DRY_RUN: &str = "imageql.dry_run";
/// How long `/*+ AWAIT */` waits at most.
pub const AWAIT_TIMEOUT: &str = "imageql.await_timeout";
/// Whether a statement over an account set fails when an account does (`fail`) or answers
/// from the others (`skip`); also written without its prefix.
pub const ACCOUNTS_ON_ERROR: &str = "imageql.accounts_on_error";
const OWN: [&str; 3] = [DRY_RUN, AWAIT_TIMEOUT, ACCOUNTS_ON_ERROR];

/// What a statement does to one of imageql's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnSetting {
    /// SET (with the value as written) or RESET (`None`).
    Set {
        name: String,
        value: Option<String>,
    },
    Show {
        name: String,
    },
}

/// The statement, when it sets, resets or shows a setting named `imageql.…`.
pub fn own_setting(statement: &DFStatement) -> Option<OwnSetting> {
    let ours = |name: String| {
        let name = name.to_lowercase();
        match name.as_str() {
            "accounts_on_error" => Some(ACCOUNTS_ON_ERROR.to_string()),
            _ => name.starts_with("imageql.").then_some(name),
        }
    };
    match statement {
        DFStatement::Reset(ResetStatement::Variable(name)) => {
            Some(OwnSetting::Set { name: ours(name.to_string())?, value: None })
        }
        DFStatement::Statement(statement) => match statement.as_ref() {
            Statement::Set(Set::SingleAssignment { variable, values, .. }) => {
                let value = values.iter().map(setting_text).collect::<Vec<_>>().join(", ");
                Some(OwnSetting::Set { name: ours(variable.to_string())?, value: Some(value) })
            }
            Statement::Reset(datafusion::sql::sqlparser::ast::ResetStatement {
                reset: Reset::ConfigurationParameter(name),
            }) => Some(OwnSetting::Set { name: ours(name.to_string())?, value: None }),
            Statement::ShowVariable { variable } => {
                let name = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(".");
                Some(OwnSetting::Show { name: ours(name)? })
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether imageql has a setting of this name.
pub fn known(name: &str) -> Result<(), Error> {
    match OWN.contains(&name) {
        true => Ok(()),
        false => Err(Error::UnknownSetting(name.to_string())),
    }
}

/// The value of a setting as a switch; `None` (RESET) is off.
pub fn switch(name: &str, value: Option<&str>) -> Result<bool, Error> {
    known(name)?;
    match value.map(|v| v.trim().to_lowercase()).as_deref() {
        None | Some("off" | "false" | "f" | "0" | "no" | "default") => Ok(false),
        Some("on" | "true" | "t" | "1" | "yes") => Ok(true),
        Some(other) => {
            Err(Error::BadSetting { name: name.to_string(), value: other.to_string(), expected: "on or off" })
        }
    }
}

/// Whether the value of `accounts_on_error` is `skip`; `None` (RESET) is `fail`.
pub fn skips(name: &str, value: Option<&str>) -> Result<bool, Error> {
    match value.map(|v| v.trim().to_lowercase()).as_deref() {
        None | Some("fail" | "default") => Ok(false),
        Some("skip") => Ok(true),
        Some(other) => {
            Err(Error::BadSetting { name: name.to_string(), value: other.to_string(), expected: "fail or skip" })
        }
    }
}

/// The value of a setting as a duration: seconds, or a number with `s`, `min` or `h`.
pub fn duration(name: &str, value: &str) -> Result<Duration, Error> {
    let value = value.trim().to_lowercase();
    let split = value.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let factor = match unit.trim() {
        "" | "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    let seconds = number.parse::<f64>().map(|n| n * factor).unwrap_or(f64::NAN);
    match seconds.is_finite() && seconds > 0.0 && seconds <= 7.0 * 86_400.0 {
        true => Ok(Duration::from_secs_f64(seconds)),
        false => Err(Error::BadSetting {
            name: name.to_string(),
            value: value.to_string(),
            expected: "a duration above 0 and at most a week: 600, '90s', '10min', '2h'",
        }),
    }
}

/// A duration as people write it: `90 s`, `10 min`, `2 h`.
pub fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    match seconds {
        s if s >= 3600.0 && s % 3600.0 == 0.0 => format!("{} h", s / 3600.0),
        s if s >= 60.0 && s % 60.0 == 0.0 => format!("{} min", s / 60.0),
        s => format!("{s} s"),
    }
}

/// A value as a setting holds it: strings without their quotes.
pub fn setting_text(value: &Expr) -> String {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

impl Session {
    /// The warnings reported since the last call (a front end that shows them itself, as the
    /// command line does on stderr, need not call it).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether changes are previewed instead of sent.
    pub fn dry_run(&self) -> bool {
        self.dry_run.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_dry_run(&self, on: bool) {
        self.dry_run.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every change of the session is previewed, whatever its statements set (`--dry-run`).
    pub fn force_dry_run(&self) {
        self.dry_run_forced.store(true, std::sync::atomic::Ordering::Relaxed);
        self.set_dry_run(true);
    }

    /// How long `/*+ AWAIT */` waits at most.
    pub fn await_timeout(&self) -> std::time::Duration {
        *self.await_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_await_timeout(&self, timeout: std::time::Duration) {
        *self.await_timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
    }

    /// SET, RESET or SHOW of one of imageql's own settings.
    pub fn apply_own_setting(&self, own: &OwnSetting) -> Result<Outcome, Error> {
        match own {
            OwnSetting::Set { name, value } if name == ACCOUNTS_ON_ERROR => {
                self.on_error.set_skip(skips(name, value.as_deref())?);
                Ok(Outcome::Done)
            }
            OwnSetting::Set { name, value } if name == AWAIT_TIMEOUT => {
                let timeout = match value.as_deref().map(str::trim) {
                    Some(value) if !value.eq_ignore_ascii_case("default") => duration(name, value)?,
                    _ => mutate::AWAIT_TIMEOUT,
                };
                self.set_await_timeout(timeout);
                Ok(Outcome::Done)
            }
            OwnSetting::Set { name, value } => {
                let on = switch(name, value.as_deref())?;
                // RESET goes back to the run's own value; only turning it off is refused.
                if !on && value.is_some() && self.dry_run_forced.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(Error::Refused(
                        "--dry-run is on for this run: no statement of it can turn the dry run off".into(),
                    ));
                }
                self.set_dry_run(on || self.dry_run_forced.load(std::sync::atomic::Ordering::Relaxed));
                Ok(Outcome::Done)
            }
            OwnSetting::Show { name } => {
                known(name)?;
                let shown = match name.as_str() {
                    AWAIT_TIMEOUT => duration_text(self.await_timeout()),
                    ACCOUNTS_ON_ERROR if self.on_error.skip() => "skip".to_string(),
                    ACCOUNTS_ON_ERROR => "fail".to_string(),
                    _ if self.dry_run() => "on".to_string(),
                    _ => "off".to_string(),
                };
                let schema = Arc::new(Schema::new(vec![Field::new(name.as_str(), DataType::Utf8, false)]));
                let values = Arc::new(StringArray::from(vec![shown]));
                Ok(Outcome::batch(RecordBatch::try_new(schema, vec![values])?, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Dialect, parse};

    fn own(sql: &str) -> Option<OwnSetting> {
        own_setting(&parse(sql, Dialect::Postgres).unwrap().statement)
    }

    #[test]
    fn own_settings_are_recognised_and_checked() {
        let set = |value: Option<&str>| Some(OwnSetting::Set { name: DRY_RUN.into(), value: value.map(String::from) });
        assert_eq!(own("SET imageql.dry_run = on"), set(Some("on")));
        assert_eq!(own("SET imageql.dry_run TO 'off'"), set(Some("off")));
        assert_eq!(own("RESET imageql.dry_run"), set(None));
        assert_eq!(own("SHOW imageql.dry_run"), Some(OwnSetting::Show { name: DRY_RUN.into() }));
        assert_eq!(own("SET search_path = public"), None);
        assert_eq!(
            own("SET accounts_on_error = 'skip'"),
            Some(OwnSetting::Set { name: ACCOUNTS_ON_ERROR.into(), value: Some("skip".into()) })
        );
        assert!(skips(ACCOUNTS_ON_ERROR, Some("skip")).unwrap() && !skips(ACCOUNTS_ON_ERROR, None).unwrap());
        assert!(skips(ACCOUNTS_ON_ERROR, Some("ignore")).is_err());
        assert!(switch(DRY_RUN, Some("on")).unwrap());
        assert!(!switch(DRY_RUN, None).unwrap());
        assert!(matches!(switch(DRY_RUN, Some("maybe")), Err(Error::BadSetting { .. })));
        assert!(matches!(switch("imageql.nope", Some("on")), Err(Error::UnknownSetting(_))));
        assert_eq!(duration(AWAIT_TIMEOUT, "600").unwrap(), Duration::from_secs(600));
        assert_eq!(duration(AWAIT_TIMEOUT, "'10min'").ok(), None, "quotes are taken off by the parser");
        assert_eq!(duration(AWAIT_TIMEOUT, "2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration(AWAIT_TIMEOUT, "1.5 s").unwrap(), Duration::from_millis(1500));
        assert!(duration(AWAIT_TIMEOUT, "0").is_err() && duration(AWAIT_TIMEOUT, "soon").is_err());
        assert_eq!(duration_text(Duration::from_secs(1800)), "30 min");
        assert_eq!(duration_text(Duration::from_secs(90)), "90 s");
    }
}
