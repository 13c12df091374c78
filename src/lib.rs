//! # gimvi
//!
//! A pure-Rust implementation of gimVI (Lopez et al. 2019, *A joint model of unpaired data from
//! scRNA-seq and spatial transcriptomics for imputing missing gene expression measurements*):
//! a deep generative model that integrates an scRNA-seq reference with a spatial
//! transcriptomics panel and imputes the genes the spatial assay did not measure.
//!
//! This is the facade crate that users `cargo add`. It re-exports the workspace crates:
//!
//! * [`likelihoods`]: ZINB, NB and Poisson log-probabilities, Gaussian KL terms and a
//!   differentiable `lgamma`, all on burn tensors;
//! * [`metrics`]: per-gene Spearman/Pearson, entropy of mixing, k-NN purity, exact k-NN,
//!   k-NN regression and the held-out-gene evaluation protocol;
//! * [`data`]: readers for AnnData `.h5ad`, loom, 10x MatrixMarket and CSV/TSV, an `.h5ad`
//!   and CSV writer, data preparation and the registry of the paper's datasets;
//! * [`model`]: the gimVI model — configuration, networks, inference (latent space,
//!   imputation with posterior uncertainty), save / load, and a simulator;
//! * [`trainer`]: the training loop (Adam, KL warm-up, the adversarial classifier,
//!   validation, early stopping, divergence detection, progress bar, per-epoch callback).
//!
//! and adds [`pipeline`] (data preparation, fitting, the automatic κ, the evaluation's
//! imputers), [`ensemble`] (several models imputing as one, saved as one folder) and
//! [`paper`] (the paper's Table 1 evaluation).
//!
//! ## Backends
//!
//! burn 0.22 selects the compute backend at run time through the [`Device`] a tensor is
//! created on, rather than through a type parameter. gimvi's cargo features decide which
//! backends are compiled in (`ndarray`, the default CPU backend; `flex`, burn's newer pure-Rust
//! CPU backend; `wgpu`; `cuda`) and [`BackendKind`] picks one of them at run time:
//!
//! ```
//! use gimvi::BackendKind;
//!
//! let kind: BackendKind = "ndarray".parse().unwrap();
//! let device = kind.open().unwrap(); // checks the backend works here
//! # let _ = device;
//! ```
#![warn(missing_docs)]

pub use burn;
pub use burn::tensor::Device;
pub use gimvi_data as data;
pub use gimvi_likelihoods as likelihoods;
pub use gimvi_metrics as metrics;
pub use gimvi_model as model;
pub use gimvi_trainer as trainer;

mod alloc;
mod backend;
pub mod ensemble;
pub mod paper;
pub mod pipeline;

pub use alloc::tune_allocator;
pub use backend::{BackendError, BackendKind};
