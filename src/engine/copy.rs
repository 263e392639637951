/*! `COPY … TO 'file'`: written by DataFusion to a hidden file beside the target and renamed
into place once complete, so that a failed COPY leaves no empty or partial file; the target's
directory must exist. A CSV target gets list and struct columns as JSON text, as `-o csv`
prints them. */

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
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

/// Runs a COPY; returns DataFusion's one-row count of rows written.
pub async fn run(ctx: &SessionContext, copy: CopyTo) -> Result<Vec<RecordBatch>, Error> {
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
    if copy.file_type.get_ext().eq_ignore_ascii_case("csv") {
        input = nested_columns_as_json(input)?;
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

/// `plan` with each list, struct or map column replaced by its JSON text.
fn nested_columns_as_json(plan: LogicalPlan) -> Result<LogicalPlan, Error> {
    let fields = plan.schema().fields().clone();
    if !fields.iter().any(|f| is_nested(f.data_type())) {
        return Ok(plan);
    }
    let json_text = ScalarUDF::new_from_impl(JsonText::default());
    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            match is_nested(field.data_type()) {
                true => json_text.call(vec![column]).alias(field.name()),
                false => column,
            }
        })
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(columns)?.build()?)
}

/// `json_text(nested)`: the JSON text of a nested value, null for null.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonText {
    signature: Signature,
}

impl Default for JsonText {
    fn default() -> Self {
        JsonText { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for JsonText {
    fn name(&self) -> &str {
        "json_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let field = args.arg_fields[0].as_ref().clone().with_name("value");
        let array = args.args[0].to_array(args.number_rows)?;
        let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array])?;
        let text = nested_as_json(&batch)?;
        Ok(ColumnarValue::Array(text.column(0).clone()))
    }
}
