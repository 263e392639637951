/*! The provider registry: the declarative description of every resource imageql can query.

Files live under `providers/<provider>/provider.yaml` and `providers/<provider>/services/<service>.yaml`
(format in `docs/providers.md`). The default set is embedded in the binary; `--providers DIR`
replaces it. Nothing outside this module knows what a resource looks like: tables, the
pushdown, the sandbox's filter validation and the mutation planner all read it from here. */

mod arrow;
mod seed;
mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use include_dir::{Dir, include_dir};
use serde::Deserialize;

pub use arrow::{data_type, resource_schema, scalar_type, sent_schema};
pub use seed::{Row, Seed, seed_params};
pub use template::{PathTemplate, Pattern, encode_segment};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/providers");

#[derive(Debug, thiserror::Error)]
#[error("provider file {file}: {message}")]
pub struct LoadError {
    file: String,
    message: String,
}

impl LoadError {
    fn new(file: impl Into<String>, message: impl fmt::Display) -> Self {
        LoadError { file: file.into(), message: message.to_string() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provider {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub base_url: String,
    pub auth: Auth,
    pub pagination: Pagination,
    pub filter: Option<FilterConfig>,
    #[serde(default)]
    pub rate_limits: Option<RateLimits>,
    /// Values views refer to as `{{ name }}` (prices, for instance).
    #[serde(default)]
    pub constants: BTreeMap<String, serde_json::Value>,
    #[serde(skip)]
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    #[serde(rename = "type")]
    pub kind: AuthKind,
    pub env_var: String,
    /// A cheap authenticated GET (relative to the base URL) that any valid token may make: a
    /// 401 there means the token is refused. Servers check a client's token with it.
    #[serde(default)]
    pub check: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Bearer,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pagination {
    pub algorithm: PaginationAlgorithm,
    pub page_param: String,
    pub page_size_param: String,
    pub page_size: PageSizeRange,
    /// The body key with the number of pages.
    pub response_pages: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PaginationAlgorithm {
    PageNumber,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSizeRange {
    pub min: u32,
    pub max: u32,
}

impl PageSizeRange {
    pub fn clamp(&self, n: u64) -> u32 {
        n.clamp(self.min as u64, self.max as u64) as u32
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterConfig {
    pub header: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimits {
    /// Requests per minute and token, for requests no class below claims.
    pub per_minute: u32,
    /// Stricter limits of some requests, which count against `per_minute` as well.
    #[serde(default)]
    pub classes: Vec<RateClass>,
}

/// A limit of its own for some requests: those with `verb` and, when given, `path` (the
/// request's path without its query), and, when `lists` is set, only paginated listings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateClass {
    pub name: String,
    pub per_minute: u32,
    #[serde(default = "get_verb")]
    pub verb: HttpVerb,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub lists: bool,
}

fn get_verb() -> HttpVerb {
    HttpVerb::Get
}

impl RateLimits {
    /// The first class a request belongs to, if any.
    pub fn class_for(&self, verb: HttpVerb, path: &str, listing: bool) -> Option<&RateClass> {
        self.classes
            .iter()
            .find(|c| c.verb == verb && c.path.as_deref().is_none_or(|p| p == path) && (!c.lists || listing))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub resources: BTreeMap<String, Arc<Resource>>,
    /// Named queries over the service's resources, queried like tables.
    #[serde(default)]
    pub views: BTreeMap<String, View>,
    /// Rows for the sandbox, from `<service>.seed.json` beside the service file.
    #[serde(skip)]
    pub seed: Seed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct View {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// The query; `{{ name }}` stands for the provider's constant `name`, `$name` for the
    /// parameter `name`.
    pub sql: String,
    /// A view with parameters is a table function: `provider.service.view(arg, …)`.
    #[serde(default)]
    pub params: Vec<ViewParam>,
}

/// A parameter of a view, given as an argument in the order declared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ViewParam {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default)]
    pub description: String,
}

impl Provider {
    /// A view's query with the provider's constants filled in.
    pub fn view_sql(&self, view: &View) -> Result<String, String> {
        crate::template::fill_constants(&view.sql, |name| {
            self.constants.get(name).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource {
    #[serde(skip)]
    pub name: String,
    /// `provider.service.resource`, filled in on load.
    #[serde(skip)]
    pub full_name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub fields: Vec<Field>,
    pub methods: BTreeMap<String, Method>,
    #[serde(default)]
    pub sql_verbs: BTreeMap<SqlVerb, Vec<String>>,
    /// Rows the API will not let anyone change (public images).
    pub protected: Option<Protected>,
    /// How to tell when a row is ready, for `/*+ AWAIT */`.
    pub lifecycle: Option<Lifecycle>,
    /// What a dry run shows of each row a change touches.
    pub preview: Option<Preview>,
    /// Recorded by `imageql record` into the history store.
    pub history: Option<History>,
}

/// How a resource is recorded: which of its rows (a SQL predicate over its columns).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    #[serde(rename = "where")]
    pub filter: Option<String>,
}

/// The columns a dry run (EXPLAIN of a change) shows of each row a request touches, and
/// where the monthly cost a deletion frees is read: a view of the same service, by id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Preview {
    pub columns: Vec<String>,
    pub frees: Option<Frees>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Frees {
    pub view: String,
    pub column: String,
}

/// Rows that cannot be changed: those whose `column` is true, recognisable before any request
/// by an id matching `idPattern`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Protected {
    pub column: String,
    pub id_pattern: Option<Pattern>,
    pub reason: String,
}

impl Protected {
    /// Whether an id alone shows that its row is protected.
    pub fn protects_id(&self, id: &str) -> bool {
        self.id_pattern.as_ref().is_some_and(|p| p.is_match(id))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Lifecycle {
    /// The select method that re-reads a row by its id.
    pub get: String,
    pub status: String,
    pub ready: Vec<String>,
    #[serde(default)]
    pub failed: Vec<String>,
    /// Copies of the row in places (image regions), each with its own status.
    pub regions: Option<PlacesLifecycle>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacesLifecycle {
    pub field: String,
    pub status: String,
    pub ready: Vec<String>,
}

/// A method whose response carries a URL to send a file to (image uploads).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upload {
    /// The response field with the URL.
    pub url_field: String,
    /// The EXEC parameter that names the local file.
    pub param: String,
    pub content_type: String,
    pub encoding: UploadEncoding,
    pub content: Option<UploadContent>,
    /// Limits on the file as sent and once decoded.
    pub max_bytes: u64,
    pub max_decoded_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UploadEncoding {
    Gzip,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UploadContent {
    /// A raw disk image holding one unpartitioned ext3/ext4 filesystem.
    ExtDiskImage,
}

/// A field of a response object, a request body or an array's items.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Field {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub items: Option<Box<Field>>,
    #[serde(default)]
    pub fields: Vec<Field>,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// X-Filter operators the API accepts on this field; empty = not filterable.
    #[serde(default)]
    pub filter: Vec<FilterOp>,
    #[serde(default)]
    pub orderable: bool,
    #[serde(default, rename = "enum")]
    pub allowed: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Strings: length bounds in characters, and a regular expression the value must match.
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    /// As written; compiled into [`Field::pattern`] when the files load.
    #[serde(rename = "pattern")]
    pub pattern_source: Option<String>,
    #[serde(skip)]
    pub pattern: Option<Pattern>,
    /// What `pattern` allows, in words, for error messages.
    pub pattern_hint: Option<String>,
    /// Arrays: bounds on the number of items.
    pub min_items: Option<usize>,
    pub max_items: Option<usize>,
    /// A value (each item of a list) that must name a row of another table.
    pub references: Option<Reference>,
    /// A secret (a root password): never shown in a dry run, an error or the shell's history.
    #[serde(default)]
    pub secret: bool,
    /// A column the API does not send, read from another field of the same row.
    pub derived: Option<Derived>,
}

/// `{from: regions, item: region}`: the `item` of each object in the list field `from`
/// (`["us-east", "eu-west"]`), a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    pub from: String,
    pub item: String,
}

/// A value that names a row of `table` by its `column`, a row whose `has` field holds (or
/// is) `value`: a region that offers Object Storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reference {
    pub table: String,
    pub column: String,
    pub has: Option<Requirement>,
    /// The row must have a ready copy where the body's `field` says (an image in the region an
    /// instance is deployed to); a row whose list is null (a public image) is everywhere.
    pub placed_in: Option<Placement>,
    /// The row's `field` must be at most the body's `at_most` (an image no larger than the disk).
    pub fits: Option<Fits>,
    /// A statement that would fix a row not placed where it must be; `{value}` and the body's
    /// fields (`{region}`) are filled in.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    pub list: String,
    pub item: String,
    pub status: String,
    pub ready: String,
    pub field: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fits {
    pub field: String,
    pub at_most: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirement {
    pub field: String,
    pub value: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    Datetime,
    Array,
    Object,
    /// Free-form JSON, exposed as JSON text.
    Json,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::Boolean => "boolean",
            Kind::Datetime => "datetime",
            Kind::Array => "array",
            Kind::Object => "object",
            Kind::Json => "json",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
}

impl Field {
    pub fn is_filterable(&self) -> bool {
        !self.filter.is_empty()
    }

    pub fn supports(&self, op: FilterOp) -> bool {
        self.filter.contains(&op)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SqlVerb {
    Select,
    Insert,
    Replace,
    Delete,
}

/// The statements that change resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Insert,
    Replace,
    Delete,
    Exec,
}

impl Verb {
    pub fn keyword(self) -> &'static str {
        match self {
            Verb::Insert => "INSERT",
            Verb::Replace => "REPLACE",
            Verb::Delete => "DELETE",
            Verb::Exec => "EXEC",
        }
    }

    /// The methods a statement may call: those mapped in `sqlVerbs`, or any for EXEC.
    pub fn sql_verb(self) -> Option<SqlVerb> {
        match self {
            Verb::Insert => Some(SqlVerb::Insert),
            Verb::Replace => Some(SqlVerb::Replace),
            Verb::Delete => Some(SqlVerb::Delete),
            Verb::Exec => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpVerb {
    Get,
    Post,
    Put,
    Delete,
}

impl fmt::Display for HttpVerb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpVerb::Get => "GET",
            HttpVerb::Post => "POST",
            HttpVerb::Put => "PUT",
            HttpVerb::Delete => "DELETE",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Method {
    #[serde(default)]
    pub description: String,
    pub verb: HttpVerb,
    pub path: PathTemplate,
    #[serde(default)]
    pub params: Vec<Param>,
    /// The JSON request body's fields, and which of them must be given.
    #[serde(default)]
    pub body: Vec<Field>,
    #[serde(default)]
    pub required: Vec<String>,
    /// Where the rows are in the response: the array of a list, or the object that holds the
    /// row (`image` of an upload); absent when the body is the row.
    pub object_key: Option<String>,
    #[serde(default)]
    pub paginated: bool,
    /// Accepts the provider's filter header.
    #[serde(default)]
    pub filtered: bool,
    #[serde(default)]
    pub not_found: NotFound,
    pub upload: Option<Upload>,
    pub complete_set: Option<CompleteSet>,
    /// Fields of which one is required when another is given (a root password or SSH keys
    /// with an image).
    #[serde(default)]
    pub one_of_with: Vec<OneOfWith>,
    /// What the call destroys besides what it names, said by every dry run of it.
    pub destroys: Option<String>,
    /// Body fields an INSERT leaves out that the profile may give (linode-cli's defaults:
    /// region, type, image, authorized_keys, authorized_users).
    #[serde(default)]
    pub profile_defaults: Vec<String>,
}

/// When `when` is given, at least one of `one_of` must be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OneOfWith {
    pub when: String,
    pub one_of: Vec<String>,
}

/// A body field that replaces a whole set the row holds (an image's regions): members left
/// out are removed. EXEC then takes members to add and remove by name, and the current set is
/// read before the call so that a removal is never a surprise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompleteSet {
    /// The body field (a list of strings).
    pub field: String,
    /// Where the row holds the members now.
    pub current: SetMembers,
    /// The EXEC parameter naming members to add to the current ones.
    pub add: String,
    /// The EXEC parameter naming members to remove; the only way to leave one out.
    pub remove: String,
}

/// The members of a set in a row: a list of objects, each naming one in `item`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetMembers {
    pub field: String,
    pub item: String,
    /// The objects' status field, and the statuses of members already on their way out.
    pub status: Option<String>,
    #[serde(default)]
    pub leaving: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NotFound {
    #[default]
    Error,
    /// A 404 means "no rows".
    Empty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Param {
    pub name: String,
    #[serde(rename = "in")]
    pub location: ParamLocation,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default)]
    pub required: bool,
    /// The response column that carries the same value (so `WHERE id = …` binds `imageId`).
    pub column: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ParamLocation {
    Path,
    Query,
}

impl Resource {
    /// A field by name, or a field of an object field by its dotted path (`entity.type`), as
    /// X-Filter names nested fields.
    pub fn field(&self, name: &str) -> Option<&Field> {
        if let Some(field) = self.fields.iter().find(|f| f.name == name) {
            return Some(field);
        }
        let (outer, rest) = name.split_once('.')?;
        let mut field = self.fields.iter().find(|f| f.name == outer)?;
        for part in rest.split('.') {
            field = field.fields.iter().find(|f| f.name == part)?;
        }
        Some(field)
    }

    /// The methods mapped to `verb`, in the order they are tried.
    pub fn methods_for(&self, verb: SqlVerb) -> impl Iterator<Item = (&str, &Method)> {
        self.sql_verbs
            .get(&verb)
            .into_iter()
            .flatten()
            .filter_map(|name| self.methods.get(name).map(|m| (name.as_str(), m)))
    }

    /// The select method that lists rows (no required params), if any.
    pub fn list_method(&self) -> Option<(&str, &Method)> {
        self.methods_for(SqlVerb::Select).find(|(_, m)| !m.params.iter().any(|p| p.required))
    }

    /// How one row is addressed: the select method that reads it by a single path parameter
    /// bound to a column (`get_image` by `imageId`, carried by `id`). Every caller that needs a
    /// row's id (lookups, re-reads, AWAIT, reports) asks here.
    pub fn key(&self) -> Option<RowKey<'_>> {
        self.methods_for(SqlVerb::Select).find_map(|(name, method)| {
            let required: Vec<&Param> = method.params.iter().filter(|p| p.required).collect();
            match required.as_slice() {
                [param] if param.location == ParamLocation::Path => {
                    Some(RowKey { method_name: name, method, param, column: param.column.as_deref()? })
                }
                _ => None,
            }
        })
    }

    /// Required parameters of select methods that no response field carries (`linodeId` of
    /// disks): they are columns of the table too, filled with the value they were given.
    pub fn param_columns(&self) -> Vec<&Param> {
        let mut columns: Vec<&Param> = Vec::new();
        for (_, method) in self.methods_for(SqlVerb::Select) {
            for p in method.params.iter().filter(|p| p.required && p.column.is_none()) {
                if !columns.iter().any(|c| c.name == p.name) {
                    columns.push(p);
                }
            }
        }
        columns
    }

    /// Parameters whose name is an alias of a column (`imageId` → `id`).
    pub fn column_aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.methods
            .values()
            .flat_map(|m| m.params.iter())
            .filter_map(|p| p.column.as_deref().map(|c| (p.name.as_str(), c)))
    }
}

/// See [`Resource::key`].
#[derive(Debug, Clone, Copy)]
pub struct RowKey<'a> {
    pub method_name: &'a str,
    pub method: &'a Method,
    pub param: &'a Param,
    pub column: &'a str,
}

impl RowKey<'_> {
    /// The path that reads the row with this id.
    pub fn path(&self, id: &str) -> PathTemplate {
        self.method.path.fill(&self.param.name, id)
    }
}

/// What a dotted name refers to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub provider: Arc<Provider>,
    pub resource: Arc<Resource>,
    /// The method of a four-part name (`EXEC provider.service.resource.method`).
    pub method: Option<String>,
}

/// A name that refers to no resource: the resources a shortened name could mean, or the
/// closest one when it looks like a typo.
#[derive(Debug, Clone)]
pub struct UnknownResource {
    pub name: String,
    pub matches: Vec<String>,
    pub nearest: Option<String>,
    pub known: Vec<String>,
}

impl std::fmt::Display for UnknownResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.matches.len() > 1 {
            let matches = self.matches.join(", ");
            return write!(
                f,
                "{} is ambiguous: several resources have that name: {matches}; write one in full",
                self.name
            );
        }
        write!(f, "unknown resource {}: ", self.name)?;
        if let Some(nearest) = &self.nearest {
            write!(f, "did you mean {nearest}? ")?;
        }
        write!(f, "resources are {}", self.known.join(", "))
    }
}

impl std::error::Error for UnknownResource {}

#[derive(Debug, Default)]
pub struct Registry {
    pub providers: BTreeMap<String, Arc<Provider>>,
}

impl Registry {
    /// The provider files compiled into the binary.
    pub fn embedded() -> Result<Registry, LoadError> {
        let mut registry = Registry::default();
        for dir in EMBEDDED.dirs() {
            let name = dir.path().display().to_string();
            let file = |rel: &str| format!("{name}/{rel}");
            let provider_text = dir
                .get_file(dir.path().join("provider.yaml"))
                .and_then(|f| f.contents_utf8())
                .ok_or_else(|| LoadError::new(file("provider.yaml"), "missing"))?;
            let mut services = Vec::new();
            if let Some(sdir) = dir.get_dir(dir.path().join("services")) {
                for f in sdir.files() {
                    if f.path().extension().is_some_and(|e| e == "yaml" || e == "yml") {
                        let text = f
                            .contents_utf8()
                            .ok_or_else(|| LoadError::new(f.path().display().to_string(), "not UTF-8"))?;
                        services.push((f.path().display().to_string(), text.to_string()));
                    }
                }
            }
            registry.add(&file("provider.yaml"), provider_text, services, &seed::read_embedded)?;
        }
        Ok(registry)
    }

    /// Provider files from a directory laid out like `providers/`.
    pub fn from_dir(root: &Path) -> Result<Registry, LoadError> {
        let read_dir = |p: &Path| std::fs::read_dir(p).map_err(|e| LoadError::new(p.display().to_string(), e));
        let mut registry = Registry::default();
        let mut provider_dirs: Vec<_> = read_dir(root)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        provider_dirs.sort();
        for dir in provider_dirs.into_iter().filter(|p| p.is_dir()) {
            let provider_file = dir.join("provider.yaml");
            let text = std::fs::read_to_string(&provider_file)
                .map_err(|e| LoadError::new(provider_file.display().to_string(), e))?;
            let mut services = Vec::new();
            let services_dir = dir.join("services");
            if services_dir.is_dir() {
                let mut files: Vec<_> = read_dir(&services_dir)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                files.sort();
                for f in files {
                    if f.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                        let body =
                            std::fs::read_to_string(&f).map_err(|e| LoadError::new(f.display().to_string(), e))?;
                        services.push((f.display().to_string(), body));
                    }
                }
            }
            registry.add(&provider_file.display().to_string(), &text, services, &seed::read_disk)?;
        }
        if registry.providers.is_empty() {
            return Err(LoadError::new(root.display().to_string(), "no <provider>/provider.yaml found"));
        }
        Ok(registry)
    }

    fn add(
        &mut self,
        file: &str,
        text: &str,
        services: Vec<(String, String)>,
        read: seed::Reader,
    ) -> Result<(), LoadError> {
        let mut provider: Provider = serde_yaml::from_str(text).map_err(|e| LoadError::new(file, e))?;
        for (sfile, stext) in services {
            let mut service: Service = serde_yaml::from_str(&stext).map_err(|e| LoadError::new(&sfile, e))?;
            for (name, resource) in service.resources.iter_mut() {
                let resource = Arc::get_mut(resource).expect("just deserialized, not shared");
                resource.name = name.clone();
                resource.full_name = format!("{}.{}.{}", provider.id, service.id, name);
                validate_resource(resource).map_err(|m| LoadError::new(&sfile, m))?;
            }
            if provider.services.contains_key(&service.id) {
                return Err(LoadError::new(sfile, format!("service `{}` is defined twice", service.id)));
            }
            service.seed = seed::load(&sfile, &service, read)?;
            provider.services.insert(service.id.clone(), service);
        }
        self.providers.insert(provider.id.clone(), Arc::new(provider));
        Ok(())
    }

    /// The resources the history store records.
    pub fn recorded(&self) -> Vec<Arc<Resource>> {
        self.resources().filter(|(_, _, r)| r.history.is_some()).map(|(_, _, r)| r.clone()).collect()
    }

    /// The names of the body fields that hold secrets (`root_pass`), lowercase.
    pub fn secret_fields(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .resources()
            .flat_map(|(_, _, r)| r.methods.values().flat_map(|m| m.body.iter()))
            .filter(|f| f.secret)
            .map(|f| f.name.to_lowercase())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The full names of the views with parameters (table functions), lowercase.
    pub fn functions(&self) -> impl Iterator<Item = String> + '_ {
        let views = self.providers.values().flat_map(|p| {
            p.services.values().flat_map(move |s| {
                s.views
                    .iter()
                    .filter(|(_, v)| !v.params.is_empty())
                    .map(move |(name, _)| format!("{}.{}.{name}", p.id, s.id).to_lowercase())
            })
        });
        // The history's: each recorded resource at a moment, and the changes of a period.
        let recorded = self.recorded();
        let history = self.providers.values().flat_map(move |p| {
            let own: Vec<String> = recorded
                .iter()
                .filter(|r| r.full_name.starts_with(&format!("{}.", p.id)))
                .map(|r| format!("{}.history.{}_at", p.id, r.name).to_lowercase())
                .collect();
            let changes = (!own.is_empty()).then(|| format!("{}.history.changes", p.id));
            own.into_iter().chain(changes)
        });
        views.chain(history)
    }

    /// Every resource with its provider, in name order.
    /// The full names of everything a query can read: resources and views.
    pub fn table_names(&self) -> Vec<String> {
        self.providers
            .values()
            .flat_map(|p| {
                p.services.values().flat_map(move |s| {
                    let names = s.resources.keys().chain(s.views.keys());
                    names.map(move |name| format!("{}.{}.{name}", p.id, s.id))
                })
            })
            .collect()
    }

    /// The full names that a shortened name (`images`, `images.images`) stands for: those
    /// ending in its parts, compared without case.
    pub fn completions(&self, parts: &[&str]) -> Vec<String> {
        let suffix: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        self.table_names()
            .into_iter()
            .filter(|full| {
                let names: Vec<String> = full.split('.').map(str::to_lowercase).collect();
                suffix.len() < names.len() && names.ends_with(&suffix)
            })
            .collect()
    }

    /// The full name of a shortened resource, view or method name (`images`,
    /// `images.post_image`) that stands for exactly one; `None` for a full or unknown name.
    pub fn completed(&self, name: &str) -> Option<String> {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() < 3
            && let [full] = self.completions(&parts).as_slice()
        {
            return Some(full.clone());
        }
        let found = self.resolve(name).ok()?;
        let full = match found.method {
            Some(method) => format!("{}.{method}", found.resource.full_name),
            None => found.resource.full_name.clone(),
        };
        (full != name).then_some(full)
    }

    pub fn resources(&self) -> impl Iterator<Item = (&Arc<Provider>, &Service, &Arc<Resource>)> {
        self.providers
            .values()
            .flat_map(|p| p.services.values().flat_map(move |s| s.resources.values().map(move |r| (p, s, r))))
    }

    pub fn resource(&self, provider: &str, service: &str, resource: &str) -> Option<(&Arc<Provider>, &Arc<Resource>)> {
        let p = self.providers.get(provider)?;
        let r = p.services.get(service)?.resources.get(resource)?;
        Some((p, r))
    }

    /// `provider.service.resource` or `provider.service.resource.method`; the resource's
    /// parts compare without case, as SQL identifiers do.
    /// A shortened resource (`images`, `images.images`) stands for the one resource whose full
    /// name ends in it, also before a method (`images.post_image`); the parts compare without
    /// case, as SQL identifiers do.
    pub fn resolve(&self, name: &str) -> Result<Resolved, UnknownResource> {
        let parts: Vec<&str> = name.split('.').collect();
        let full_names = |found: &[Arc<Resource>]| found.iter().map(|r| r.full_name.clone()).collect();
        let tables = self.resources_named(&parts);
        match tables.as_slice() {
            [resource] => return Ok(self.resolved(resource, None)),
            [] => {}
            several => return Err(self.unknown(name, full_names(several))),
        }
        if let Some((method, table)) = parts.split_last()
            && !table.is_empty()
        {
            match self.resources_named(table).as_slice() {
                [resource] => return Ok(self.resolved(resource, Some(method))),
                [] => {}
                several => return Err(self.unknown(name, full_names(several))),
            }
        }
        Err(self.unknown(name, vec![]))
    }

    /// The resource a full name names, or those a shortened name (one or two parts) ends.
    fn resources_named(&self, parts: &[&str]) -> Vec<Arc<Resource>> {
        let lower: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        let suffix: Vec<&str> = lower.iter().map(String::as_str).collect();
        match lower.as_slice() {
            [p, s, r] => self.resource(p, s, r).map(|(_, r)| vec![r.clone()]).unwrap_or_default(),
            [_] | [_, _] => self
                .resources()
                .map(|(_, _, r)| r)
                .filter(|r| r.full_name.to_lowercase().split('.').collect::<Vec<_>>().ends_with(&suffix))
                .cloned()
                .collect(),
            _ => vec![],
        }
    }

    fn resolved(&self, resource: &Arc<Resource>, method: Option<&str>) -> Resolved {
        let provider = resource.full_name.split('.').next().and_then(|id| self.providers.get(id));
        Resolved {
            provider: provider.expect("a resource's provider is registered").clone(),
            resource: resource.clone(),
            method: method.map(str::to_string),
        }
    }

    fn unknown(&self, name: &str, matches: Vec<String>) -> UnknownResource {
        let known: Vec<String> = self.resources().map(|(_, _, r)| r.full_name.clone()).collect();
        // The name as a table, else without its last part (a method).
        let parts: Vec<&str> = name.split('.').collect();
        let nearest = nearest_table(&parts[..parts.len().min(3)].join("."), &known)
            .or_else(|| nearest_table(&parts[..parts.len() - 1].join("."), &known).filter(|_| parts.len() > 1))
            .map(str::to_string);
        UnknownResource { name: name.to_string(), matches, nearest, known }
    }
}

/// The full table name closest to `written`, which may be shortened (`imagse` is close to
/// `linode.images.images` by its last part).
pub fn nearest_table<'a>(written: &str, known: &'a [String]) -> Option<&'a str> {
    nearest(written, known.iter().map(String::as_str)).or_else(|| {
        let depth = written.split('.').count().min(3);
        let short: Vec<String> =
            known.iter().map(|full| full.split('.').skip(3 - depth).collect::<Vec<_>>().join(".")).collect();
        let close = nearest(written, short.iter().map(String::as_str))?;
        known.iter().zip(&short).find(|(_, s)| s.as_str() == close).map(|(full, _)| full.as_str())
    })
}

/// The closest of `candidates` to `name`, if one is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .map(|c| (edit_distance(&name, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edits between two names, a swap of neighbours counting as one (`lable` is one from `label`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=b.len() {
        d[0][j] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn validate_resource(r: &mut Resource) -> Result<(), String> {
    let full_name = r.full_name.clone();
    for f in r.fields.iter_mut() {
        resolve_field(f).map_err(|m| format!("{full_name}: {m}"))?;
    }
    for (name, m) in r.methods.iter_mut() {
        for f in m.body.iter_mut() {
            resolve_field(f).map_err(|e| format!("{full_name}: method {name}: {e}"))?;
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(f) = r.fields.iter().find(|f| !seen.insert(f.name.as_str())) {
        return Err(format!("{full_name}: field `{}` is declared twice", f.name));
    }
    for f in &r.fields {
        let Some(derived) = &f.derived else { continue };
        let source = r.fields.iter().find(|s| s.name == derived.from && s.derived.is_none());
        let items = source.filter(|s| s.kind == Kind::Array).and_then(|s| s.items.as_deref());
        let item =
            items.filter(|i| i.kind == Kind::Object).and_then(|i| i.fields.iter().find(|x| x.name == derived.item));
        let strings = f.kind == Kind::Array && f.items.as_deref().is_some_and(|i| i.kind == Kind::String);
        if item.is_none_or(|i| i.kind != Kind::String) || !strings || f.filter.len() > 0 {
            return Err(format!(
                "{full_name}: field `{}` is derived from `{}`'s `{}`, which must be a string field of a list of \
                 objects; a derived field is a list of strings and cannot be filtered by the API",
                f.name, derived.from, derived.item
            ));
        }
    }
    for (name, m) in &r.methods {
        for p in &m.params {
            if p.location == ParamLocation::Path && !m.path.has(&p.name) {
                return Err(format!("{}: method {name}: path `{}` has no {{{}}}", r.full_name, m.path, p.name));
            }
            if let Some(c) = &p.column
                && r.field(c).is_none()
            {
                return Err(format!("{}: method {name}: param {} names unknown column `{c}`", r.full_name, p.name));
            }
        }
        if let Some(missing) = m.required.iter().find(|k| !m.body.iter().any(|f| &f.name == *k)) {
            return Err(format!("{}: method {name}: required body field `{missing}` is not in `body`", r.full_name));
        }
        let named = m.one_of_with.iter().flat_map(|rule| std::iter::once(&rule.when).chain(&rule.one_of));
        if let Some(missing) = named.into_iter().find(|k| !m.body.iter().any(|f| &f.name == *k)) {
            return Err(format!("{}: method {name}: oneOfWith names `{missing}`, which is not in `body`", r.full_name));
        }
        for placeholder in m.path.placeholders() {
            if !m.params.iter().any(|p| p.name == placeholder && p.location == ParamLocation::Path) {
                return Err(format!("{}: method {name}: path param {{{placeholder}}} is not declared", r.full_name));
            }
        }
        if let Some(set) = &m.complete_set {
            let problem = if !m.body.iter().any(|f| f.name == set.field) {
                Some(format!("field `{}` is not in `body`", set.field))
            } else if r.field(&set.current.field).is_none() {
                Some(format!("current.field names unknown field `{}`", set.current.field))
            } else if r.key().is_none() {
                Some("the resource has no select method that reads one row by its id".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(format!("{}: method {name}: completeSet: {problem}", r.full_name));
            }
        }
    }
    if let Some(p) = &r.protected {
        if r.field(&p.column).is_none() {
            return Err(format!("{}: protected.column names unknown field `{}`", r.full_name, p.column));
        }
    }
    if let Some(preview) = &r.preview
        && let Some(unknown) = preview.columns.iter().find(|c| r.field(c).is_none())
    {
        return Err(format!("{}: preview.columns names unknown field `{unknown}`", r.full_name));
    }
    if let Some(l) = &r.lifecycle
        && r.key().is_none_or(|key| key.method_name != l.get)
    {
        return Err(format!(
            "{}: lifecycle.get must name the select method that reads one row by its id, not `{}`",
            r.full_name, l.get
        ));
    }
    for (verb, methods) in &r.sql_verbs {
        for m in methods {
            if !r.methods.contains_key(m) {
                return Err(format!("{}: sqlVerbs.{verb:?} names unknown method `{m}`", r.full_name));
            }
        }
    }
    Ok(())
}

/// Checks a field and compiles its pattern; errors name the field.
fn resolve_field(f: &mut Field) -> Result<(), String> {
    if let Some(source) = &f.pattern_source {
        let pattern = Pattern::try_from(source.clone()).map_err(|e| format!("field `{}`: {e}", f.name))?;
        f.pattern = Some(pattern);
    }
    match f.kind {
        Kind::Array if f.items.is_none() => Err(format!("array field `{}` needs `items`", f.name)),
        Kind::Object if f.fields.is_empty() => {
            Err(format!("object field `{}` needs `fields` (use type json for free-form objects)", f.name))
        }
        _ => {
            for op in &f.filter {
                let numeric = matches!(f.kind, Kind::Integer | Kind::Number | Kind::Datetime);
                let ok = match op {
                    FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte => numeric,
                    FilterOp::Contains => f.kind == Kind::String,
                    FilterOp::Eq | FilterOp::Neq => !matches!(f.kind, Kind::Object | Kind::Json),
                };
                if !ok {
                    return Err(format!("field `{}`: filter {op:?} does not apply to type {}", f.name, f.kind));
                }
            }
            f.items.iter_mut().try_for_each(|i| resolve_field(i))?;
            f.fields.iter_mut().try_for_each(resolve_field)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_registry_describes_images() {
        let reg = Registry::embedded().unwrap();
        let (provider, images) = reg.resource("linode", "images", "images").unwrap();
        assert_eq!(provider.auth.env_var, "LINODE_TOKEN");
        assert_eq!(images.full_name, "linode.images.images");
        let filterable: Vec<&str> =
            images.fields.iter().filter(|f| f.is_filterable()).map(|f| f.name.as_str()).collect();
        assert_eq!(
            filterable,
            ["label", "size", "type", "tags", "is_public", "is_shared", "deprecated", "vendor", "status"]
        );
        let key = images.key().unwrap();
        assert_eq!((key.method_name, key.param.name.as_str(), key.column), ("get_image", "imageId", "id"));
        assert_eq!(images.list_method().unwrap().0, "get_images");
    }

    #[test]
    fn bad_provider_files_are_rejected_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("acme");
        std::fs::create_dir_all(p.join("services")).unwrap();
        std::fs::write(
            p.join("provider.yaml"),
            "id: acme\nbaseUrl: http://x\nauth: {type: bearer, envVar: T}\npagination: {algorithm: page_number, pageParam: page, pageSizeParam: page_size, pageSize: {min: 1, max: 10}, responsePages: pages}\n",
        )
        .unwrap();
        std::fs::write(
            p.join("services/things.yaml"),
            "id: things\nresources:\n  things:\n    fields: [{name: id, type: strin}]\n    methods: {}\n",
        )
        .unwrap();
        let err = Registry::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("things.yaml"), "{err}");
        assert!(err.contains("strin"), "{err}");
        std::fs::write(
            p.join("services/things.yaml"),
            "id: things\nresources:\n  things:\n    fields: [{name: id, type: string, pattern: '[a-'}]\n    methods: {}\n",
        )
        .unwrap();
        let err = Registry::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("things.yaml") && err.contains("field `id`: invalid pattern `[a-`"), "{err}");
    }

    #[test]
    fn names_resolve_to_resources_and_methods() {
        let reg = Registry::embedded().unwrap();
        let found = reg.resolve("Linode.Images.images.post_image").unwrap();
        assert_eq!(
            (found.resource.full_name.as_str(), found.method.as_deref()),
            ("linode.images.images", Some("post_image"))
        );
        let err = reg.resolve("linode.images.imagse").unwrap_err();
        assert_eq!(err.nearest.as_deref(), Some("linode.images.images"));
    }
}
