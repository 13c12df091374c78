//! The gimVI model (Lopez et al. 2019) on burn.
//!
//! * [`config`]: [`ModelConfig`] (architecture; defaults from scvi-tools' `GIMVI`) and one
//!   [`DatasetSpec`] per dataset — its gene map into the model's gene space G, its likelihood
//!   (ZINB | NB | Poisson) and whether its library is latent (LogNormal prior) or observed.
//!   Any number of datasets ≥ 2.
//! * [`module`]: the networks — per-dataset private encoder layers with a **shared last
//!   layer**, q(z | x, s), library encoders, the softmax decoder renormalised over each
//!   dataset's measured genes (Eq. 5), θ per gene and dataset, and the adversarial
//!   [`module::Classifier`] — and the ELBO terms of a minibatch (Eq. 8–9).
//! * [`model`]: [`GimviModel`] — latent representations, imputation with the mean and variance
//!   over posterior samples, save / load.
//! * [`step`]: one training step (the objective and its gradients) behind the
//!   [`step::TrainStep`] trait, with the graph implementation (burn autodiff) and the host
//!   implementation for narrow data on CPU backends, chosen by [`step::select`].
//! * [`simulate`]: synthetic pairs sampled from the generative model, with ground truth.
//!
//! [`module`] is the one definition of the networks and the loss. On CPU backends its slow
//! pieces run as burn custom operations with hand-written backward passes (the private `ops`
//! module: the likelihood kernel, the host decoder heads, sparse encoder input), and the host
//! step is a second implementation of a whole step, checked against the graph step by
//! `host_step_matches_tensor_step`. Training lives in the `gimvi-trainer` crate.
#![warn(missing_docs)]

mod batch;
pub mod config;
mod host;
mod hoststep;
pub mod model;
pub mod module;
mod ops;
pub mod simulate;
pub mod step;

pub use host::HOST_PATH_MIN_GENES;

pub use config::{DatasetSpec, LibraryModel, ModelConfig};
pub use gimvi_likelihoods::CountLikelihood;
pub use model::{GimviModel, Imputation, ImputeOptions};

/// Errors of building, running, saving and loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The configuration is inconsistent.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// Input sizes do not match the model.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        /// Which input.
        what: String,
        /// Expected size.
        expected: usize,
        /// Size found.
        found: usize,
    },
    /// Input values are unusable (NaN, negative, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A dataset index beyond the model's datasets.
    #[error("the model has no dataset number {0}")]
    UnknownDataset(usize),
    /// A gene name not in the model's gene space.
    #[error("gene '{0}' is not in the model's genes")]
    UnknownGene(String),
    /// A file could not be read or written.
    #[error("cannot access {0}: {1}")]
    Io(String, std::io::Error),
    /// A saved model could not be read or written.
    #[error("model file {0}: {1}")]
    Record(String, String),
    /// An internal invariant failed (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(String),
}
