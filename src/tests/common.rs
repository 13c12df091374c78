//! Helpers shared by the integration tests that train on simulated data.

use crate::{BackendKind, Device};
use gimvi_likelihoods::CountLikelihood;
use gimvi_model::simulate::Simulation;
use gimvi_model::{DatasetSpec, LibraryModel, ModelConfig};

/// The default CPU backend's autodiff device.
pub fn device() -> Device {
    BackendKind::default()
        .open()
        .expect("the default CPU backend opens")
        .autodiff()
}

/// The gimVI configuration of a simulated pair: scRNA-seq (ZINB, latent library with the
/// data's own log-library prior) over every gene, spatial (Poisson, observed library) over the
/// simulation's spatial genes, with a `latent`-dimensional z.
pub fn model_config(sim: &Simulation, latent: usize) -> ModelConfig {
    let (log_mean, log_var) = gimvi_data::prepare::log_library_moments(&sim.sc_counts);
    let sc = DatasetSpec {
        name: "scRNA-seq".into(),
        genes: sim.genes.clone(),
        gene_index: (0..sim.genes.len()).collect(),
        likelihood: CountLikelihood::Zinb,
        library: LibraryModel::Latent { log_mean, log_var },
    };
    let spatial = DatasetSpec {
        name: "spatial".into(),
        genes: sim
            .spatial_genes
            .iter()
            .map(|&g| sim.genes[g].clone())
            .collect(),
        gene_index: sim.spatial_genes.clone(),
        likelihood: CountLikelihood::Poisson,
        library: LibraryModel::Observed,
    };
    ModelConfig::new(sim.genes.clone(), vec![sc, spatial]).with_latent(latent)
}
