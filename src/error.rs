//! The errors a user can cause, each with its exit code (1: a statement failed, 2: usage).

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;

use crate::api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Provider(#[from] crate::provider::LoadError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("{0}")]
    Sql(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Query(String),
    /// A statement that was refused before any request: every problem found.
    #[error("{0}")]
    Validation(String),
    /// A mutation that failed after sending something: what was done and what was not.
    #[error("{0}")]
    Mutation(String),
    #[error("cannot write the result: {0}")]
    Output(#[from] ArrowError),
    #[error("{path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("{origin}:{line}: {source}")]
    At { origin: String, line: usize, source: Box<Error> },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::At { source, .. } => source.exit_code(),
            _ => 1,
        }
    }

    /// The reader of our output went away (`imageql … | head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Output(ArrowError::IoError(_, e)) => e.kind() == std::io::ErrorKind::BrokenPipe,
            Error::At { source, .. } => source.is_broken_pipe(),
            _ => false,
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::External(inner) => match inner.downcast_ref::<ApiError>() {
                Some(api) => Error::Query(api.to_string()),
                None => Error::Query(inner.to_string()),
            },
            DataFusionError::ArrowError(arrow, _) => Error::Query(arrow.to_string()),
            DataFusionError::Plan(message) => Error::Query(message.clone()),
            root => Error::Query(root.strip_backtrace()),
        }
    }
}
