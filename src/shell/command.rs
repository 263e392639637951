//! The shell's backslash commands, parsed once into a [`Command`]; `\?` (the commands and
//! the statement forms) and `\h` (one statement's syntax) are tables printed like any result.

use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::output::Format;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    /// `\d` lists resources and views; `\d NAME` describes one.
    Describe(Option<String>),
    /// `\timing` toggles; `\timing on|off` sets.
    Timing(Option<bool>),
    /// `\o` shows the format; `\o FORMAT` sets it.
    Output(Option<Format>),
    /// `\x` toggles expanded display; `\x on|off|auto` sets it.
    Expanded(Option<Expanded>),
    /// `\i FILE` runs the statements of a file.
    Include(String),
    /// `\h` lists the statements; `\h STATEMENT` gives the syntax of one.
    Syntax(Option<String>),
    /// `\pset pager` toggles; `\pset pager on|off|always` sets (the one `\pset` option).
    Pager(Option<Pager>),
    /// `\set` lists the settings and variables; `\set NAME VALUE` sets one.
    Set(Option<(String, String)>),
}

/// When results go through the pager, as psql's `\pset pager` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pager {
    Off,
    /// When a result is taller than the terminal.
    On,
    Always,
}

/// Rows as a table, or one block of `column | value` lines per row (psql's `\x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expanded {
    Off,
    On,
    /// Expanded when a table row would be wider than the terminal.
    Auto,
}

const HELP: &[(&str, &str)] = &[
    ("\\q", "quit (Ctrl-D too)"),
    ("\\?", "this help"),
    ("\\d", "list resources and views"),
    ("\\d NAME", "describe a resource (provider.service.resource)"),
    ("\\timing [on|off]", "show or hide the time each statement takes"),
    ("\\o [FORMAT]", "show or set the output format: table, json, ndjson, csv, text"),
    ("\\x [on|off|auto]", "expanded display: one block per row; auto when rows are wider than the terminal"),
    ("\\i FILE", "run the statements of FILE"),
    ("\\h [STATEMENT]", "the syntax of a statement (SELECT, INSERT, EXEC, …)"),
    ("\\pset pager [on|off|always]", "page results taller than the terminal through $PAGER (on by default)"),
    ("\\set dry_run on|off", "preview changes instead of sending them (off by default)"),
    ("\\set confirm on|off", "ask before a change that sends more than one request (on by default)"),
    ("\\set NAME VALUE", "set the variable {{ NAME }}; \\set alone lists the settings and variables"),
];

/// Each statement form: its name for `\h`, its syntax, and one example.
const STATEMENTS: &[(&str, &str, &str)] = &[
    (
        "SELECT",
        "SELECT items FROM provider.service.resource [JOIN …] [WHERE …] [GROUP BY …] [ORDER BY …] [LIMIT n]",
        "SELECT id, label, size FROM linode.images.images WHERE NOT is_public ORDER BY size DESC LIMIT 5;",
    ),
    (
        "SHOW",
        "SHOW PROVIDERS | SERVICES | RESOURCES [IN provider.service] | METHODS IN resource",
        "SHOW METHODS IN linode.images.images;",
    ),
    (
        "DESCRIBE",
        "DESCRIBE [EXTENDED] resource | DESCRIBE METHOD resource.method",
        "DESCRIBE METHOD linode.images.images.post_image;",
    ),
    (
        "INSERT",
        "INSERT [/*+ AWAIT */] INTO resource (columns) VALUES (…) | SELECT … [RETURNING items]",
        "INSERT INTO linode.images.images (disk_id, label) VALUES (67890, 'golden') RETURNING id, status;",
    ),
    (
        "REPLACE",
        "REPLACE resource SET column = value, … WHERE id = … | WHERE predicate [RETURNING items]",
        "REPLACE linode.images.images SET description = 'v2' WHERE id = 'private/42';",
    ),
    (
        "DELETE",
        "DELETE FROM resource WHERE id = … | WHERE predicate [LIMIT n]",
        "DELETE FROM linode.images.images WHERE id = 'private/42';",
    ),
    (
        "EXEC",
        "EXEC [/*+ AWAIT */] resource.method @param = value, … [@@json = '{…}'] [RETURNING items]",
        "EXEC linode.images.images.post_replicate_image @imageId = 'private/42', @add = 'eu-west';",
    ),
    (
        "AWAIT",
        "/*+ AWAIT */ after INSERT or EXEC: wait until the image is available",
        "INSERT /*+ AWAIT */ INTO linode.images.images (disk_id) VALUES (67890);",
    ),
    (
        "EXPLAIN",
        "EXPLAIN statement: the requests it would make, none sent",
        "EXPLAIN SELECT * FROM linode.images.images WHERE size > 2000;",
    ),
    (
        "COPY",
        "COPY (query) | resource TO 'file.csv' | 'file.json' | 'file.parquet'",
        "COPY (SELECT id, tags FROM linode.images.images) TO 'images.csv';",
    ),
];

impl FromStr for Command {
    type Err = String;

    /// A command without its backslash: `d linode.images.images`, `timing on`.
    fn from_str(text: &str) -> Result<Command, String> {
        if text.split_whitespace().next() == Some("pset") {
            return match text.split_whitespace().skip(1).collect::<Vec<_>>().as_slice() {
                ["pager"] => Ok(Command::Pager(None)),
                ["pager", "on"] => Ok(Command::Pager(Some(Pager::On))),
                ["pager", "off"] => Ok(Command::Pager(Some(Pager::Off))),
                ["pager", "always"] => Ok(Command::Pager(Some(Pager::Always))),
                ["pager", other, ..] => Err(format!("\\pset pager takes on, off or always, not {other}")),
                [] => Err("\\pset needs an option: \\pset pager [on|off|always]".into()),
                [option, ..] => {
                    Err(format!("\\pset {option} is not an option here: only \\pset pager [on|off|always]"))
                }
            };
        }
        if text.split_whitespace().next() == Some("set") {
            let rest = text.trim_start().trim_start_matches("set").trim();
            return match rest.split_once(char::is_whitespace) {
                _ if rest.is_empty() => Ok(Command::Set(None)),
                Some((name, value)) => Ok(Command::Set(Some((name.to_string(), value.trim().to_string())))),
                None => Err(format!("\\set {rest} needs a value: \\set {rest} VALUE")),
            };
        }
        let mut words = text.split_whitespace();
        let (name, argument) = (words.next().unwrap_or(""), words.next());
        if let Some(extra) = words.next() {
            return Err(format!("\\{name} takes at most one argument, not {extra}"));
        }
        match (name, argument) {
            ("q" | "quit", None) => Ok(Command::Quit),
            ("?", None) => Ok(Command::Help),
            ("d", name) => Ok(Command::Describe(name.map(str::to_string))),
            ("timing", None) => Ok(Command::Timing(None)),
            ("timing", Some("on")) => Ok(Command::Timing(Some(true))),
            ("timing", Some("off")) => Ok(Command::Timing(Some(false))),
            ("timing", Some(other)) => Err(format!("\\timing takes on or off, not {other}")),
            ("x", None) => Ok(Command::Expanded(None)),
            ("x", Some("on")) => Ok(Command::Expanded(Some(Expanded::On))),
            ("x", Some("off")) => Ok(Command::Expanded(Some(Expanded::Off))),
            ("x", Some("auto")) => Ok(Command::Expanded(Some(Expanded::Auto))),
            ("x", Some(other)) => Err(format!("\\x takes on, off or auto, not {other}")),
            ("i" | "include", Some(file)) => Ok(Command::Include(file.to_string())),
            ("i" | "include", None) => Err("\\i needs a file: \\i report.sql".into()),
            ("h" | "help", topic) => Ok(Command::Syntax(topic.map(str::to_uppercase))),
            ("o", None) => Ok(Command::Output(None)),
            ("o", Some(name)) => <Format as clap::ValueEnum>::from_str(name, true)
                .map(|f| Command::Output(Some(f)))
                .map_err(|_| format!("unknown format {name}: use table, json, ndjson, csv or text")),
            (other, Some(_)) if ["q", "quit", "?"].contains(&other) => Err(format!("\\{other} takes no argument")),
            (other, _) => Err(format!("\\{other} is not a command; \\? lists them")),
        }
    }
}

fn two_columns(names: [&str; 2], rows: Vec<(String, String)>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(names[0], DataType::Utf8, false),
        Field::new(names[1], DataType::Utf8, false),
    ]));
    let (left, right): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(left)), Arc::new(StringArray::from(right))])
        .expect("columns of equal length")
}

/// The commands and what they do, then the statement forms with an example each, as rows.
pub fn help() -> RecordBatch {
    let mut rows: Vec<(String, String)> = HELP.iter().map(|(c, m)| (c.to_string(), m.to_string())).collect();
    rows.push(("…;".into(), "a statement ends with ; and may span lines; Ctrl-C stops the running one".into()));
    rows.extend(STATEMENTS.iter().map(|(name, _, example)| (name.to_string(), example.to_string())));
    two_columns(["command", "meaning"], rows)
}

/// `\h`: every statement's syntax; `\h NAME`: that statement's syntax and example.
pub fn syntax(topic: Option<&str>) -> Result<RecordBatch, String> {
    let rows: Vec<(String, String)> = match topic {
        None => STATEMENTS.iter().map(|(name, syntax, _)| (name.to_string(), syntax.to_string())).collect(),
        Some(topic) => {
            let Some((name, syntax, example)) = STATEMENTS.iter().find(|(name, ..)| *name == topic) else {
                let names: Vec<&str> = STATEMENTS.iter().map(|(name, ..)| *name).collect();
                return Err(format!("no help for {topic}: \\h takes one of {}", names.join(", ")));
            };
            vec![(name.to_string(), syntax.to_string()), ("example".into(), example.to_string())]
        }
    };
    Ok(two_columns(["statement", "syntax"], rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!("q".parse(), Ok(Command::Quit));
        assert_eq!("d linode.images.images".parse(), Ok(Command::Describe(Some("linode.images.images".into()))));
        assert_eq!("timing on".parse(), Ok(Command::Timing(Some(true))));
        assert_eq!("set".parse(), Ok(Command::Set(None)));
        assert_eq!("set dry_run on".parse(), Ok(Command::Set(Some(("dry_run".into(), "on".into())))));
        assert_eq!("set tag web servers".parse(), Ok(Command::Set(Some(("tag".into(), "web servers".into())))));
        assert!("set confirm".parse::<Command>().is_err());
        assert_eq!("o CSV".parse(), Ok(Command::Output(Some(Format::Csv))));
        assert!("o xml".parse::<Command>().unwrap_err().contains("unknown format"));
        assert!("y".parse::<Command>().unwrap_err().contains("\\?"));
        assert_eq!("x auto".parse(), Ok(Command::Expanded(Some(Expanded::Auto))));
        assert_eq!("h insert".parse(), Ok(Command::Syntax(Some("INSERT".into()))));
        assert_eq!(help().num_rows(), HELP.len() + 1 + STATEMENTS.len());
        assert_eq!(syntax(Some("COPY")).unwrap().num_rows(), 2);
        assert!(syntax(Some("MERGE")).unwrap_err().contains("INSERT"));
        assert_eq!("pset pager off".parse(), Ok(Command::Pager(Some(Pager::Off))));
        assert_eq!("pset pager".parse(), Ok(Command::Pager(None)));
        assert!("pset format aligned".parse::<Command>().unwrap_err().contains("only \\pset pager"));
        assert!("pset pager maybe".parse::<Command>().unwrap_err().contains("on, off or always"));
    }
}
