//! What a Postgres client finds beside the resources: a `pg_catalog` schema and the functions
//! drivers call while connecting and inspecting (from `datafusion-pg-catalog`, and a few
//! answered here as a Postgres server without extensions would).
//!
//! The catalog's tables describe the session's own catalogs, so they look them up through a
//! weak reference: a strong one would make the session's catalog list own itself, and no
//! session would ever be freed. The catalog's static tables are read once per server.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::CatalogProviderList;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::datasource::TableType;
use datafusion::datasource::{MemTable, ViewTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{ColumnarValue, Expr, LogicalPlanBuilder, ScalarUDF, Signature, Volatility, col, lit};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, format_type,
    generate_series_arg_coercion::CoerceIntArgsToBigInt, has_privilege_udf, oid_type_planner::PgOidTypePlanner,
    pg_get_expr_udf, quote_ident_udf,
};

use datafusion_postgres::arrow_pg::datatypes::into_pg_type;
use datafusion_postgres::pgwire::api::Type;
use postgres_types::Kind;

use super::settings::Shared as SharedSettings;
use crate::engine::postgres::function;
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

/// Adds `pg_catalog` and its functions to a session's context, in `database`; `settings` are
/// what `pg_settings` shows.
pub fn install(
    context: &SessionContext,
    database: &str,
    tables: &Arc<PgCatalogStaticTables>,
    settings: SharedSettings,
) -> Result<(), Error> {
    let failed = |e: DataFusionError| Error::Query(format!("cannot set up pg_catalog: {e}"));
    let catalogs = Catalogs(Arc::downgrade(&context.state().catalog_list().clone()));
    let catalogs_for_overlay = catalogs.clone();
    let schema = PgCatalogSchemaProvider::try_new(catalogs, tables.clone(), EmptyContextProvider).map_err(failed)?;
    let catalog = context.catalog(database).ok_or_else(|| Error::Query(format!("no catalog {database}")))?;
    let overlay = Overlay { inner: Arc::new(schema), settings, catalogs: catalogs_for_overlay };
    catalog.register_schema("pg_catalog", Arc::new(overlay)).map_err(failed)?;
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
        super::functions::format_type(format_type::create_format_type_udf()),
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
    Ok(())
}

/// Columns `datafusion-pg-catalog` keeps as text that Postgres keeps as arrays, and the type
/// of their elements: clients `unnest` them, join on their elements, `array_to_string` them.
const ARRAYS: &[(&str, &[(&str, ElementType)])] = &[
    (
        "pg_index",
        &[
            ("indkey", ElementType::Int16),
            ("indoption", ElementType::Int16),
            ("indclass", ElementType::Oid),
            ("indcollation", ElementType::Oid),
        ],
    ),
    ("pg_constraint", &[("conkey", ElementType::Int16), ("confkey", ElementType::Int16)]),
    (
        "pg_proc",
        &[
            ("proargtypes", ElementType::Oid),
            ("proallargtypes", ElementType::Oid),
            ("protrftypes", ElementType::Oid),
            ("proargnames", ElementType::Text),
            ("proargmodes", ElementType::Text),
            ("proconfig", ElementType::Text),
            ("proacl", ElementType::Text),
        ],
    ),
    ("pg_namespace", &[("nspacl", ElementType::Text)]),
    ("pg_type", &[("typacl", ElementType::Text)]),
    (
        "pg_attribute",
        &[("attacl", ElementType::Text), ("attoptions", ElementType::Text), ("attfdwoptions", ElementType::Text)],
    ),
    ("pg_language", &[("lanacl", ElementType::Text)]),
    ("pg_tablespace", &[("spcacl", ElementType::Text), ("spcoptions", ElementType::Text)]),
    ("pg_statistic_ext", &[("stxkind", ElementType::Text)]),
    ("pg_extension", &[("extconfig", ElementType::Oid)]),
    ("pg_db_role_setting", &[("setconfig", ElementType::Text)]),
    ("pg_default_acl", &[("defaclacl", ElementType::Text)]),
    ("pg_policy", &[("polroles", ElementType::Oid)]),
    ("pg_event_trigger", &[("evttags", ElementType::Text)]),
];

/// Columns Postgres has that `datafusion-pg-catalog` lacks, always null here: arrays of
/// elements, or single values (`None`: an oid).
const MISSING: &[(&str, &[(&str, Option<ElementType>)])] = &[
    ("pg_class", &[("relacl", Some(ElementType::Text)), ("reloptions", Some(ElementType::Text))]),
    ("pg_language", &[("tableoid", None)]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementType {
    Int16,
    Oid,
    Text,
}

impl ElementType {
    fn data_type(self) -> DataType {
        match self {
            ElementType::Int16 => DataType::Int16,
            ElementType::Oid => DataType::Int32,
            ElementType::Text => DataType::Utf8,
        }
    }

    fn list(self) -> DataType {
        DataType::List(Arc::new(Field::new_list_field(self.data_type(), true)))
    }
}

impl ElementType {
    /// The function that reads the catalog's text for an array of these (`[1, 2]`,
    /// `['a', 'b']`, `1 2`, `{a,b}`).
    fn reader(self) -> ScalarUDF {
        let name = match self {
            ElementType::Int16 => "pg_catalog_int2_array",
            ElementType::Oid => "pg_catalog_oid_array",
            ElementType::Text => "pg_catalog_text_array",
        };
        let body = move |args: &[ColumnarValue], rows: usize| -> datafusion::common::Result<ColumnarValue> {
            let texts = datafusion::arrow::compute::cast(&args[0].to_array(rows)?, &DataType::Utf8)?;
            let mut items = ListBuilder::new(StringBuilder::new());
            for text in texts.as_string::<i32>().iter() {
                match text {
                    None => items.append_null(),
                    Some(text) => {
                        for item in catalog_items(text) {
                            items.values().append_value(item);
                        }
                        items.append(true);
                    }
                }
            }
            let strings: ArrayRef = Arc::new(items.finish());
            Ok(ColumnarValue::Array(datafusion::arrow::compute::cast(&strings, &self.list())?))
        };
        function(name, Signature::any(1, Volatility::Immutable), self.list(), Arc::new(body))
    }
}

/// The items of a catalog's text for an array.
fn catalog_items(text: &str) -> Vec<String> {
    let inner = text.trim().trim_start_matches(['[', '{']).trim_end_matches([']', '}']);
    let separator = if inner.contains(',') { ',' } else { ' ' };
    inner
        .split(separator)
        .map(|item| item.trim().trim_matches(['\'', '"']).to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

/// `pg_catalog` as clients expect it: `datafusion-pg-catalog`'s, with its text-kept arrays
/// as arrays, the columns it lacks, columns typed as the wire sends them, and `pg_settings`
/// from the connection's settings.
#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn SchemaProvider>,
    settings: SharedSettings,
    catalogs: Catalogs,
}

impl Overlay {
    /// `pg_database` with the databases a client can connect to: `datafusion-pg-catalog` adds
    /// a `postgres` that is not one, and tools would offer it.
    async fn databases(&self, table: Arc<dyn TableProvider>) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let names = self.catalogs.catalog_names().await?.into_iter().map(lit).collect();
        let plan = LogicalPlanBuilder::scan("pg_database", provider_as_source(table), None)?
            .filter(col("datname").in_list(names, false))?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }

    /// The table with its array columns converted and its missing columns added.
    fn converted(
        &self,
        name: &str,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let arrays = ARRAYS.iter().find(|(t, _)| *t == name).map(|(_, c)| *c).unwrap_or_default();
        let missing = MISSING.iter().find(|(t, _)| *t == name).map(|(_, c)| *c).unwrap_or_default();
        if arrays.is_empty() && missing.is_empty() {
            return Ok(table);
        }
        let schema = table.schema();
        let mut columns: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|field| {
                let column = col(Column::new(Some(TableReference::bare(name)), field.name()));
                match arrays.iter().find(|(c, _)| c == field.name()) {
                    Some((_, element)) => {
                        Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(element.reader()), vec![column]))
                            .alias(field.name())
                    }
                    None => column,
                }
            })
            .collect();
        for (column, element) in missing.iter().filter(|(c, _)| schema.field_with_name(c).is_err()) {
            let data_type = element.map_or(DataType::Int32, ElementType::list);
            columns.push(Expr::Cast(Cast::new(Box::new(lit(ScalarValue::Null)), data_type)).alias(*column));
        }
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)?.project(columns)?.build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

#[async_trait]
impl SchemaProvider for Overlay {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if name == "pg_settings" {
            return Ok(Some(Arc::new(ComputedTable(SettingsTable(self.settings.clone())))));
        }
        let Some(table) = self.inner.table(name).await? else { return Ok(None) };
        if name == "pg_database" {
            return Ok(Some(self.databases(table).await?));
        }
        let converted = self.converted(name, table)?;
        if name == "pg_attribute" {
            let attributes = AttributeTable { inner: converted, catalogs: self.catalogs.clone() };
            return Ok(Some(Arc::new(ComputedTable(attributes))));
        }
        Ok(Some(converted))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_attribute` with each column's type as the wire describes it: `datafusion-pg-catalog`
/// calls every type it does not know text (lists of records, `int8[]`, records), and a driver
/// that reads a column's type from the catalog must find the one its rows arrive as.
#[derive(Debug)]
struct AttributeTable {
    inner: Arc<dyn TableProvider>,
    catalogs: Catalogs,
}

impl AttributeTable {
    /// The wire's type of each row's column, in the order the catalog lists them.
    async fn wire_types(&self) -> datafusion::common::Result<Vec<(String, Type)>> {
        let mut columns = Vec::new();
        for catalog in self.catalogs.catalog_names().await? {
            for schema in self.catalogs.schema_names(&catalog).await?.unwrap_or_default() {
                for table in self.catalogs.table_names(&catalog, &schema).await?.unwrap_or_default() {
                    let Some(fields) = self.catalogs.table_schema(&catalog, &schema, &table).await? else { continue };
                    for field in fields.fields() {
                        columns.push((field.name().clone(), into_pg_type(field.data_type()).unwrap_or(Type::TEXT)));
                    }
                }
            }
        }
        Ok(columns)
    }

    /// `batch` with its types replaced, unless its rows are not the columns listed (a table
    /// came or went in between: its types are then left as they are).
    fn retyped(batch: RecordBatch, columns: &[(String, Type)]) -> datafusion::common::Result<RecordBatch> {
        let schema = batch.schema();
        let index = |name: &str| schema.index_of(name);
        let (names, types, dimensions) = (index("attname")?, index("atttypid")?, index("attndims")?);
        let listed = batch.column(names).as_string::<i32>();
        if listed.len() != columns.len() || listed.iter().zip(columns).any(|(name, (column, _))| name != Some(column)) {
            return Ok(batch);
        }
        let mut arrays = batch.columns().to_vec();
        arrays[types] = Arc::new(Int32Array::from_iter_values(columns.iter().map(|(_, t)| t.oid() as i32)));
        let array_dimensions = |t: &Type| i32::from(matches!(t.kind(), Kind::Array(_)));
        arrays[dimensions] = Arc::new(Int32Array::from_iter_values(columns.iter().map(|(_, t)| array_dimensions(t))));
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}

#[async_trait]
impl Computed for AttributeTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    async fn rows(&self, state: &dyn Session) -> datafusion::common::Result<RecordBatch> {
        let rows = self.inner.scan(state, None, &[], None).await?;
        let batches = collect(rows, state.task_ctx()).await?;
        let batch = concat_batches(&self.schema(), &batches)?;
        Self::retyped(batch, &self.wire_types().await?)
    }
}

/// `pg_settings`: the connection's settings.
#[derive(Debug)]
struct SettingsTable(SharedSettings);

fn settings_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        text("name"),
        text("setting"),
        text("unit"),
        text("category"),
        text("short_desc"),
        text("extra_desc"),
        text("context"),
        text("vartype"),
        text("source"),
        text("min_val"),
        text("max_val"),
        text("boot_val"),
        text("reset_val"),
        Field::new("pending_restart", DataType::Boolean, true),
    ]))
}

#[async_trait]
impl Computed for SettingsTable {
    fn schema(&self) -> SchemaRef {
        settings_schema()
    }

    async fn rows(&self, _: &dyn Session) -> datafusion::common::Result<RecordBatch> {
        let values = self.0.all();
        let names: StringArray = values.keys().map(Some).collect();
        let settings: StringArray = values.values().map(Some).collect();
        let nulls = || Arc::new(StringArray::new_null(values.len())) as ArrayRef;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(names), Arc::new(settings)];
        columns.extend((0..11).map(|_| nulls()));
        columns.push(Arc::new(BooleanArray::from(vec![false; values.len()])));
        Ok(RecordBatch::try_new(settings_schema(), columns)?)
    }
}

/// A catalog table whose rows are made anew for each scan.
#[async_trait]
trait Computed: std::fmt::Debug + Send + Sync {
    fn schema(&self) -> SchemaRef;
    async fn rows(&self, state: &dyn Session) -> datafusion::common::Result<RecordBatch>;
}

#[derive(Debug)]
struct ComputedTable<T>(T);

#[async_trait]
impl<T: Computed + 'static> TableProvider for ComputedTable<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let batch = self.0.rows(state).await?;
        MemTable::try_new(self.schema(), vec![vec![batch]])?.scan(state, projection, filters, limit).await
    }
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
        install(&context, "linode", &tables, SharedSettings::default()).unwrap();
        let answer = context.sql("SELECT count(*) AS n FROM pg_catalog.pg_namespace").await.unwrap().collect().await;
        assert!(answer.is_ok(), "{answer:?}");
        let catalogs = Arc::downgrade(context.state().catalog_list());
        drop(context);
        assert!(catalogs.upgrade().is_none(), "the session's catalogs outlive it");
    }
}
