/*! imageql: SQL over cloud image resources, starting with Linode images.

`SELECT … FROM linode.images.images` pages through the Linode API v4 into Arrow batches that
DataFusion filters, joins and aggregates; the sandbox is a local implementation of the same
API. Resources are described declaratively in `providers/`. */

pub mod api;
pub mod cli;
pub mod error;
pub mod gzip;
pub mod meta;
pub mod output;
pub mod plan;
pub mod progress;
pub mod provider;
pub mod repl;
pub mod sandbox;
pub mod session;
pub mod sql;
pub mod table;
pub mod template;
pub mod upload;
pub mod validate;
pub mod xfilter;
