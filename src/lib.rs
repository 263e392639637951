/*! imageql: SQL over cloud image resources, starting with Linode images.

The pipeline reads in module names. Front ends ([`cli`], [`shell`], [`output`]) hand
statement text to the [`engine`], which parses it ([`sql`]) and either queries through
DataFusion, whose tables ([`scan`]) page through the API, or binds and runs a change
([`mutate`]); both call the API through [`api`]. The engine returns an [`outcome::Outcome`] or an
[`error::Error`] and never prints. Resources are described declaratively in `providers/`
and loaded once into the [`provider`] registry; the X-Filter grammar ([`xfilter`]) and body
validation ([`validate`]) are shared by the client and the [`sandbox`], a local
implementation of the same API. */

pub mod api;
pub mod cancel;
pub mod cli;
pub mod engine;
pub mod error;
pub mod files;
pub mod gzip;
pub mod history;
pub mod json_text;
pub mod mutate;
pub mod outcome;
pub mod output;
pub mod profile;
pub mod provider;
pub mod random;
pub mod readable;
pub mod sandbox;
pub mod scan;
pub mod serve;
pub mod shell;
pub mod sql;
pub mod template;
pub mod validate;
pub mod xfilter;
