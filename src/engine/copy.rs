/*! `COPY … TO 'file'`: written by DataFusion to a hidden file beside the target and renamed
into place once complete, so that a failed COPY leaves no empty or partial file; the target's
directory must exist. CSV and JSON targets get values as `-o csv`/`-o json` print them:
timestamps in RFC 3339 with `Z`, intervals in days and hours, and in CSV lists and structs as
JSON text. */

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Column, Result as DFResult};
use datafusion::logical_expr::dml::CopyTo;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use crate::error::Error;
use crate::json_text::{is_nested, nested_as_json};
use crate::readable::{readable_array, readable_type};

/// Runs a COPY; returns the number of rows written.
pub async fn run(ctx: &SessionContext, copy: CopyTo) -> Result<u64, Error> {
    Ok(written(&copy_batches(ctx, copy).await?))
}

/// Rows written, from DataFusion's one-row count.
fn written(batches: &[RecordBatch]) -> u64 {
    let count = |batch: &RecordBatch| batch.column(0).as_primitive_opt::<UInt64Type>().map_or(0, |a| a.value(0));
    batches.iter().map(count).sum()
}

async fn copy_batches(ctx: &SessionContext, copy: CopyTo) -> Result<Vec<RecordBatch>, Error> {
    let target = PathBuf::from(&copy.output_url);
    let extension = target.extension().map(|e| e.to_string_lossy().into_owned());
    // Object stores, directories and partitioned output are DataFusion's alone.
    let single_file = !copy.output_url.contains("://") && copy.partition_by.is_empty() && extension.is_some();
    if !single_file {
        return Ok(ctx.execute_logical_plan(LogicalPlan::Copy(copy)).await?.collect().await?);
    }
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::Refused(format!(
            "cannot COPY to {}: the directory {} does not exist; create it first or choose another path",
            target.display(),
            parent.display()
        )));
    }
    let name = target.file_stem().unwrap_or_default().to_string_lossy();
    let partial =
        parent.join(format!(".{name}.partial-{}.{}", std::process::id(), extension.as_deref().unwrap_or_default()));
    let mut input = copy.input.as_ref().clone();
    let format = copy.file_type.get_ext().to_ascii_lowercase();
    if format == "csv" || format == "json" {
        input = readable_columns(input, format == "csv")?;
    }
    let written = CopyTo { input: Arc::new(input), output_url: partial.display().to_string(), ..copy };
    let result = async { Ok::<_, Error>(ctx.execute_logical_plan(LogicalPlan::Copy(written)).await?.collect().await?) };
    let outcome = match result.await {
        Ok(batches) => std::fs::rename(&partial, &target)
            .map(|_| batches)
            .map_err(|source| Error::File { path: target.display().to_string(), source }),
        Err(e) => Err(e),
    };
    if outcome.is_err() {
        let _ = std::fs::remove_file(&partial).or_else(|_| std::fs::remove_dir_all(&partial));
    }
    outcome
}

/// `plan` with its values as `-o FORMAT` prints them ([`crate::readable`]); for CSV, which has
/// no nested values, each list, struct or map column as its JSON text too.
fn readable_columns(plan: LogicalPlan, csv: bool) -> Result<LogicalPlan, Error> {
    let as_json = |data_type: &DataType| csv && is_nested(data_type);
    let changed = |data_type: &DataType| as_json(data_type) || readable_type(data_type) != *data_type;
    if !plan.schema().fields().iter().any(|f| changed(f.data_type())) {
        return Ok(plan);
    }
    let json_text = ScalarUDF::new_from_impl(Text { signature: Signature::any(1, Volatility::Immutable), json: true });
    let readable = ScalarUDF::new_from_impl(Text { signature: Signature::any(1, Volatility::Immutable), json: false });
    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            match (as_json(field.data_type()), changed(field.data_type())) {
                (true, _) => json_text.call(vec![column]).alias(field.name()),
                (false, true) => readable.call(vec![column]).alias(field.name()),
                (false, false) => column,
            }
        })
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(columns)?.build()?)
}

/// `readable_text(value)`: the value as output prints it; with `json`, a nested value's JSON
/// text (`json_text`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Text {
    signature: Signature,
    json: bool,
}

impl ScalarUDFImpl for Text {
    fn name(&self) -> &str {
        if self.json { "json_text" } else { "readable_text" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(if self.json { DataType::Utf8 } else { readable_type(&arg_types[0]) })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let array = readable_array(&args.args[0].to_array(args.number_rows)?)?;
        if !self.json {
            return Ok(ColumnarValue::Array(array));
        }
        let field = Field::new("value", array.data_type().clone(), true);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array])?;
        Ok(ColumnarValue::Array(nested_as_json(&batch)?.column(0).clone()))
    }
}
