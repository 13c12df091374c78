//! # gimvi
//!
//! A pure-Rust implementation of gimVI (Lopez et al. 2019, *A joint model of unpaired data from
//! scRNA-seq and spatial transcriptomics for imputing missing gene expression measurements*):
//! a deep generative model that integrates an scRNA-seq reference with a spatial
//! transcriptomics panel and imputes the genes the spatial assay did not measure, with their
//! uncertainty.
//!
//! The front door is [`Gimvi`]: read the files ([`read`]), set the model up
//! ([`Gimvi::builder`]), train it ([`Gimvi::train`] with a [`TrainConfig`]), then ask for the
//! latent space ([`Gimvi::latent`]) or imputed genes with their variance ([`Gimvi::impute`],
//! written by [`Imputed::write_h5ad`]), and [`Gimvi::save`] / [`Gimvi::load`] it:
//!
//! ```
//! # fn main() -> Result<(), gimvi::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let (sc_path, sp_path) = gimvi::doc_example_files(dir.path())?;
//! # let (out, saved) = (dir.path().join("imputed.h5ad"), dir.path().join("model"));
//! use gimvi::{CountLikelihood, Gimvi, ImputeOptions, TrainConfig};
//!
//! let sc = gimvi::read(&sc_path)?;
//! let spatial = gimvi::read(&sp_path)?;
//! let mut model = Gimvi::builder(&sc)
//!     .spatial(&spatial, CountLikelihood::Poisson)
//!     .build()?;
//! model.train(&TrainConfig { epochs: 5, ..TrainConfig::default() })?;
//! let imputed = model.impute(&spatial, &ImputeOptions::default())?;
//! imputed.write_h5ad(&out)?;
//! model.save(&saved)?;
//! # Ok(())
//! # }
//! ```
//!
//! The crate also has [`paper`] (the paper's held-out-gene evaluation on a dataset pair), the
//! data layer in [`data`] (readers for `.h5ad`, loom, 10x and CSV, writers, the paper's
//! datasets), the count likelihoods in [`likelihoods`] and a few correlation [`metrics`].
//! The workspace crates behind it (`gimvi-data`, `gimvi-likelihoods`, `gimvi-model`,
//! `gimvi-trainer`, `gimvi-metrics`) hold the pieces; this facade is what a program needs.
//!
//! ## Backends
//!
//! burn 0.22 selects the compute backend at run time through the [`Device`] a tensor is
//! created on. gimvi's cargo features decide which backends are compiled in (`ndarray` and
//! `flex` on the CPU, the defaults; `wgpu`; `cuda`) and [`BackendKind`] picks one of them at
//! run time ([`GimviBuilder::backend`]; `auto` prefers flex):
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

mod alloc;
mod api;
mod backend;
mod calibration;
mod ensemble;
mod error;
pub mod figures;
mod folder;
mod imputers;
mod inner;
mod kappa;
pub mod paper;
mod prepare;
mod tempering;
#[cfg(test)]
mod tests;

pub use alloc::tune_allocator;
pub use api::{
    DatasetSummary, FitOptions, Genes, Gimvi, GimviBuilder, ImputeOptions, Imputed, Intervals,
    Kappa, Progress,
};
pub use backend::{BackendError, BackendKind};
pub use error::{Error, Result};
pub use gimvi_data::{read_any as read, Dataset};
pub use gimvi_likelihoods::CountLikelihood;
pub use gimvi_trainer::{Cycling, EpochLog, TrainConfig};

/// Data: the matrix and annotation types of a [`Dataset`], readers with options, and the
/// paper's real datasets.
pub mod data {
    pub use gimvi_data::h5ad::{read_h5ad, CountSource, H5adOptions};
    pub use gimvi_data::loom::{read_loom, LoomOptions};
    pub use gimvi_data::registry::{DatasetPair, Reference};
    pub use gimvi_data::{read_any, Column, CsrMatrix, DataError};
}

/// The count likelihoods of gimVI (Lopez et al. 2019, Eq. 3 and 6) as burn tensor functions:
/// elementwise log-probabilities on any device, differentiable.
pub mod likelihoods {
    pub use gimvi_likelihoods::{log_nb, log_poisson, log_zinb};
}

/// Correlations and summaries used by the evaluation.
pub mod metrics {
    pub use gimvi_metrics::correlation::{median, pearson, spearman};
}

/// Writes a small simulated pair (an scRNA-seq reference and a spatial panel, `.h5ad`) into
/// `dir` and returns their paths: the data of this crate's documentation examples.
#[doc(hidden)]
pub fn doc_example_files(
    dir: &std::path::Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    use gimvi_data::h5ad::{write_h5ad, H5adOutput};
    use gimvi_model::simulate::{simulate, SimulationConfig};
    let sim = simulate(&SimulationConfig {
        n_sc: 200,
        n_spatial: 150,
        ..SimulationConfig::default()
    });
    let write = |name: &str, counts: &gimvi_data::CsrMatrix, genes: Vec<String>| {
        let path = dir.join(name);
        let cells = (0..counts.n_rows()).map(|i| format!("cell{i}")).collect();
        let out = H5adOutput {
            obs_names: cells,
            var_names: genes,
            x: counts.to_dense(),
            layers: Vec::new(),
            obsm: Vec::new(),
            obs: Vec::new(),
            uns: Vec::new(),
        };
        write_h5ad(&path, &out).map(|()| path)
    };
    let spatial_genes = sim
        .spatial_genes
        .iter()
        .map(|&g| sim.genes[g].clone())
        .collect();
    Ok((
        write("reference.h5ad", &sim.sc_counts, sim.genes.clone())?,
        write("spatial.h5ad", &sim.spatial_counts, spatial_genes)?,
    ))
}
