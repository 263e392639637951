//! Tables whose rows are made in memory when a query scans them: the session's accounts
//! (`meta.accounts`) and the history store's tables. Each says its columns and makes its
//! rows; [`ComputedTable`] is the DataFusion table over it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// The columns of a computed table, and its rows as they are now.
pub trait Computed: std::fmt::Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    fn rows(&self) -> Result<RecordBatch>;
}

#[derive(Debug)]
pub struct ComputedTable<T> {
    rows: T,
    table_type: TableType,
}

impl<T: Computed> ComputedTable<T> {
    pub fn new(rows: T, table_type: TableType) -> Arc<ComputedTable<T>> {
        Arc::new(ComputedTable { rows, table_type })
    }
}

#[async_trait]
impl<T: Computed> TableProvider for ComputedTable<T> {
    fn schema(&self) -> SchemaRef {
        self.rows.schema()
    }

    fn table_type(&self) -> TableType {
        self.table_type
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.rows.rows()?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], self.rows.schema(), projection.cloned())?)
    }
}
