/*! Changes: INSERT, REPLACE, DELETE and EXEC become calls of the methods the provider files
map them to.

[`bind`] turns a statement into a [`Bound`] change without reading or sending anything: it
picks the method (the first in `sqlVerbs` whose required parameters are all given), checks
names, and says where each call's values come from, either literal rows or a DataFusion
[`DataFrame`] planned from the statement's AST (INSERT … SELECT, REPLACE/DELETE … WHERE).
[`execute`] reads those rows, builds and validates every call, and only then sends them, in
order and never retried, through a narrow interface: the API client and a cancel token. */

mod accounts;
mod bind;
mod execute;
mod placeholders;
mod preview;
mod references;
mod secrets;
mod sets;
mod upload;
mod values;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionState;
use datafusion::sql::sqlparser::ast::SelectItem;
use serde_json::{Map, Value};

use crate::provider::{HttpVerb, Method, Provider, Resource, Verb};
pub use accounts::{AccountRows, Part, Scope, combined, execute_parts, nothing_changed, split};
pub use bind::{bind, bind_for_describe, changes_resources, target};
pub use execute::{await_all, execute, input_rows, result_schema};

/// Values a profile gives the fields an INSERT leaves out (linode-cli's `region`, `type`, …).
pub type Defaults = std::collections::BTreeMap<String, String>;

/// How long `/*+ AWAIT */` waits unless the session says otherwise.
pub const AWAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
pub use placeholders::value_types;
pub use preview::{preview, preview_parts, preview_schema};
pub use secrets::{masked, secret_values};
use sets::SetChange;
pub use values::rows_of_batches;

/// One request of a change.
#[derive(Debug, Clone)]
pub struct Call {
    pub verb: HttpVerb,
    /// Relative to the API base, encoded, with the query string.
    pub path: String,
    pub body: Option<Map<String, Value>>,
    /// What the call is about, for reports: `row 2`, `private/42`.
    pub subject: String,
}

/// Where the values of a change's calls come from: one call per row.
pub enum Input {
    /// Rows known when binding (VALUES of constants, `WHERE id = …`, EXEC's arguments).
    Rows(Vec<Vec<Value>>),
    /// Rows a query yields when the change runs; it may read the API.
    Query(DataFrame),
}

/// A statement bound to a method, ready to run or explain.
pub struct Bound {
    pub verb: Verb,
    pub provider: Arc<Provider>,
    pub resource: Arc<Resource>,
    pub method_name: String,
    /// The names of each input row's values: path or query parameters and body fields.
    pub columns: Vec<String>,
    pub input: Input,
    /// Values every call gets (REPLACE's constant SET values, an INSERT's profile defaults),
    /// already checked.
    pub constants: Vec<(String, Value)>,
    /// The fields whose values came from the profile's defaults.
    pub defaulted: Vec<String>,
    /// Query rows end with a flag telling a protected row, which must not be changed.
    pub protected_flag: bool,
    /// INSERT leaves nulls out of the body; REPLACE sends them (to clear a field).
    pub keep_nulls: bool,
    pub returning: Option<Vec<SelectItem>>,
    pub await_ready: bool,
    /// How long `/*+ AWAIT */` waits at most.
    pub await_timeout: std::time::Duration,
    pub upload: Option<Upload>,
    /// Members an EXEC adds to or removes from a set its method replaces as a whole.
    pub set_change: Option<SetChange>,
    /// For planning RETURNING over the response rows, and the reads of a dry run and of
    /// the checks of references.
    pub state: SessionState,
    /// Whether the change is over an account set, and which account.
    pub scope: Scope,
    /// The number of each input row in the statement's rows, for reports; empty when they
    /// are all of them, in order.
    pub row_numbers: Vec<usize>,
}

/// A local file to send to the URL the response gives (`@file` of an upload method).
#[derive(Clone)]
pub struct Upload {
    /// Where the file is.
    pub path: PathBuf,
    /// The file as the statement named it, for messages.
    pub shown: PathBuf,
    /// What looks wrong with the file's content, though it may still be sent.
    pub warning: Option<&'static str>,
}

impl Bound {
    pub fn method(&self) -> &Method {
        &self.resource.methods[&self.method_name]
    }
}
