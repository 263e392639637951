//! The shell's backslash commands, parsed once into a [`Command`]; `\?` is a table printed
//! like any result.

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
}

const HELP: &[(&str, &str)] = &[
    ("\\q", "quit (Ctrl-D too)"),
    ("\\?", "this help"),
    ("\\d", "list resources and views"),
    ("\\d NAME", "describe a resource (provider.service.resource)"),
    ("\\timing [on|off]", "show or hide the time each statement takes"),
    ("\\o [FORMAT]", "show or set the output format: table, json, ndjson, csv, text"),
];

impl FromStr for Command {
    type Err = String;

    /// A command without its backslash: `d linode.images.images`, `timing on`.
    fn from_str(text: &str) -> Result<Command, String> {
        let mut words = text.split_whitespace();
        let (name, argument) = (words.next().unwrap_or(""), words.next());
        if let Some(extra) = words.next() {
            return Err(format!("\\{name} takes at most one argument, not {extra}"));
        }
        match (name, argument) {
            ("q" | "quit", None) => Ok(Command::Quit),
            ("?" | "help", None) => Ok(Command::Help),
            ("d", name) => Ok(Command::Describe(name.map(str::to_string))),
            ("timing", None) => Ok(Command::Timing(None)),
            ("timing", Some("on")) => Ok(Command::Timing(Some(true))),
            ("timing", Some("off")) => Ok(Command::Timing(Some(false))),
            ("timing", Some(other)) => Err(format!("\\timing takes on or off, not {other}")),
            ("o", None) => Ok(Command::Output(None)),
            ("o", Some(name)) => <Format as clap::ValueEnum>::from_str(name, true)
                .map(|f| Command::Output(Some(f)))
                .map_err(|_| format!("unknown format {name}: use table, json, ndjson, csv or text")),
            (other, Some(_)) if ["q", "quit", "?", "help"].contains(&other) => {
                Err(format!("\\{other} takes no argument"))
            }
            (other, _) => Err(format!("\\{other} is not a command; \\? lists them")),
        }
    }
}

/// The commands and what they do, as rows.
pub fn help() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("command", DataType::Utf8, false),
        Field::new("meaning", DataType::Utf8, false),
    ]));
    let mut rows: Vec<(&str, &str)> = HELP.to_vec();
    rows.push(("…;", "a statement ends with ; and may span lines; Ctrl-C stops the running one"));
    let (commands, meanings): (Vec<&str>, Vec<&str>) = rows.into_iter().unzip();
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(commands)), Arc::new(StringArray::from(meanings))])
        .expect("columns of equal length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!("q".parse(), Ok(Command::Quit));
        assert_eq!("d linode.images.images".parse(), Ok(Command::Describe(Some("linode.images.images".into()))));
        assert_eq!("timing on".parse(), Ok(Command::Timing(Some(true))));
        assert_eq!("o CSV".parse(), Ok(Command::Output(Some(Format::Csv))));
        assert!("o xml".parse::<Command>().unwrap_err().contains("unknown format"));
        assert!("x".parse::<Command>().unwrap_err().contains("\\?"));
        assert_eq!(help().num_rows(), HELP.len() + 1);
    }
}
