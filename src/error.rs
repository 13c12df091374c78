//! The one error type of the `gimvi` facade.

use gimvi_data::DataError;
use gimvi_metrics::MetricsError;
use gimvi_model::ModelError;
use gimvi_trainer::TrainError;

use crate::backend::BackendError;

/// Everything that can go wrong in gimvi, each variant naming its cause: a file that cannot be
/// read or written, data that cannot form a model (no shared gene, negative or non-integer
/// counts, …), a bad setting, a training that diverged, a missing compute backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing or preparing data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building, running, saving or loading a model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training failed (bad settings, or a diverging loss: epoch and term are named).
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The compute backend is not available.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A metric could not be computed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The inputs or settings cannot be used together.
    #[error("{0}")]
    Input(String),
}

/// `Result` with gimvi's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
