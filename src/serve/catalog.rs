//! What a Postgres client finds beside the resources: a `pg_catalog` schema and the functions
//! drivers call while connecting and inspecting (from `datafusion-pg-catalog`, and a few
//! answered here as a Postgres server without extensions would).
//!
//! The catalog's tables describe the session's own catalogs, so they look them up through a
//! weak reference: a strong one would make the session's catalog list own itself, and no
//! session would ever be freed. The catalog's static tables are read once per server.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::CatalogProviderList;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, format_type,
    generate_series_arg_coercion::CoerceIntArgsToBigInt, has_privilege_udf, oid_type_planner::PgOidTypePlanner,
    pg_get_expr_udf, quote_ident_udf,
};

use super::settings::SERVER_VERSION;
use crate::error::Error;

/// The session's catalogs, without keeping them alive.
#[derive(Clone, Debug)]
struct Catalogs(Weak<dyn CatalogProviderList>);

impl Catalogs {
    fn list(&self) -> Result<Arc<dyn CatalogProviderList>, DataFusionError> {
        self.0.upgrade().ok_or_else(|| DataFusionError::Execution("the session has ended".into()))
    }
}

#[async_trait]
impl CatalogInfo for Catalogs {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        Ok(CatalogProviderList::catalog_names(self.list()?.as_ref()))
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        Ok(self.list()?.catalog(catalog).map(|c| c.schema_names()))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        Ok(self.list()?.catalog(catalog).and_then(|c| c.schema(schema)).map(|s| s.table_names()))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        match self.list()?.catalog(catalog).and_then(|c| c.schema(schema)) {
            Some(schema) => Ok(schema.table(table).await?.map(|t| t.schema())),
            None => Ok(None),
        }
    }

    async fn table_type(&self, catalog: &str, schema: &str, table: &str) -> Result<Option<TableType>, DataFusionError> {
        match self.list()?.catalog(catalog).and_then(|c| c.schema(schema)) {
            Some(schema) => schema.table_type(table).await,
            None => Ok(None),
        }
    }
}

/// The tables of `pg_catalog` that are the same for every session, read once.
pub fn static_tables() -> Result<Arc<PgCatalogStaticTables>, Error> {
    PgCatalogStaticTables::try_new().map(Arc::new).map_err(|e| Error::Query(format!("cannot load pg_catalog: {e}")))
}

/// Adds `pg_catalog` and the functions clients call to a session's context, in `database`;
/// `pid` is the connection's backend process id.
pub fn install(
    context: &SessionContext,
    database: &str,
    tables: &Arc<PgCatalogStaticTables>,
    pid: i32,
) -> Result<(), Error> {
    let failed = |e: DataFusionError| Error::Query(format!("cannot set up pg_catalog: {e}"));
    let catalogs = Catalogs(Arc::downgrade(&context.state().catalog_list().clone()));
    let schema = PgCatalogSchemaProvider::try_new(catalogs, tables.clone(), EmptyContextProvider).map_err(failed)?;
    let catalog = context.catalog(database).ok_or_else(|| Error::Query(format!("no catalog {database}")))?;
    catalog.register_schema("pg_catalog", Arc::new(schema)).map_err(failed)?;
    for function in [
        pg::create_current_database_udf(database),
        pg::create_current_schema_udf(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        pg::create_pg_table_is_visible(),
        format_type::create_format_type_udf(),
        pg::create_session_user_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
        array_bounds_udf::create_array_upper_udf(),
        array_bounds_udf::create_array_lower_udf(),
    ] {
        context.register_udf(function);
    }
    context.register_udtf("pg_get_keywords", tables.pg_get_keywords.clone());
    // Postgres' type names (`regclass`, …) in casts.
    let state = context.state_ref();
    let planned = SessionStateBuilder::new_from_existing(state.read().clone())
        .with_type_planner(Arc::new(PgOidTypePlanner))
        .build();
    *state.write() = planned;
    CoerceIntArgsToBigInt::widen(context);
    answered_as_postgres(context, pid);
    Ok(())
}

/// A function of `inputs` that always answers `value`.
fn constant(context: &SessionContext, name: &str, inputs: Vec<DataType>, value: ScalarValue) {
    let output = value.data_type();
    let answer = move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()));
    context.register_udf(create_udf(name, inputs, output, Volatility::Stable, Arc::new(answer)));
}

/// Functions drivers call that `pg_catalog` does not provide.
fn answered_as_postgres(context: &SessionContext, pid: i32) {
    // SQLAlchemy parses the server's version from this text.
    let version = format!("PostgreSQL {SERVER_VERSION} (imageql {})", env!("CARGO_PKG_VERSION"));
    constant(context, "version", vec![], ScalarValue::Utf8(Some(version)));
    // Drivers probe for extension types (hstore) this way; there are none.
    constant(context, "to_regtype", vec![DataType::Utf8], ScalarValue::Int32(None));
    // Every type the catalog lists is in the search path.
    constant(context, "pg_type_is_visible", vec![DataType::Int32], ScalarValue::Boolean(Some(true)));
    constant(context, "pg_backend_pid", vec![], ScalarValue::Int32(Some(pid)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionConfig;

    #[tokio::test]
    async fn the_catalog_does_not_keep_its_session_alive() {
        let tables = static_tables().unwrap();
        let context =
            SessionContext::new_with_config(SessionConfig::new().with_default_catalog_and_schema("linode", "public"));
        install(&context, "linode", &tables, 4242).unwrap();
        let answer = context.sql("SELECT count(*) AS n FROM pg_catalog.pg_namespace").await.unwrap().collect().await;
        assert!(answer.is_ok(), "{answer:?}");
        let catalogs = Arc::downgrade(context.state().catalog_list());
        drop(context);
        assert!(catalogs.upgrade().is_none(), "the session's catalogs outlive it");
    }
}
