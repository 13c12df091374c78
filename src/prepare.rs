//! Turning an scRNA-seq reference and spatial datasets into a model's configuration and
//! prepared counts, and training one model on them.

use burn::tensor::Device;
use gimvi_data::prepare::{
    drop_empty_cells, library_stats, log_library_moments, match_genes, validate_counts, CountPolicy,
};
use gimvi_data::{CsrMatrix, DataError, Dataset};
use gimvi_likelihoods::CountLikelihood;
use gimvi_model::{DatasetSpec, GimviModel, LibraryModel, ModelConfig};
use gimvi_trainer::{train, TrainConfig, TrainResult};

use crate::error::Error;
use ndarray::Array2;

/// One dataset ready for the model: counts restricted and ordered as the model sees them.
#[derive(Debug, Clone)]
pub struct PreparedDataset {
    /// The dataset after gene selection and empty-cell removal.
    pub data: Dataset,
    /// How many cells were dropped for having no counts on the genes used.
    pub dropped_cells: usize,
    /// How many values were rounded (with `round_counts`).
    pub rounded: usize,
    /// Genes of the original file not used by the model.
    pub unused_genes: Vec<String>,
}

/// Inputs of [`prepare_model`].
#[derive(Debug, Clone)]
pub struct ModelInputs<'a> {
    /// scRNA-seq datasets; the first one defines the model's gene space G.
    pub sc: Vec<&'a Dataset>,
    /// Spatial datasets (each maps its genes into G).
    pub spatial: Vec<&'a Dataset>,
    /// Likelihood of the scRNA-seq datasets (default ZINB).
    pub sc_likelihood: CountLikelihood,
    /// Likelihood of the spatial datasets (Poisson for smFISH/osmFISH, NB for starMAP).
    pub spatial_likelihood: CountLikelihood,
    /// Latent dimension.
    pub n_latent: usize,
    /// Round non-integer counts instead of refusing them.
    pub round_counts: bool,
}

/// Matches every dataset's genes to the first scRNA-seq dataset (case-insensitively), drops
/// the genes outside it and the cells left without counts, validates the counts, and builds
/// the model configuration: scRNA-seq datasets with a latent library (prior from their own
/// log-library moments), spatial datasets with the observed library.
pub fn prepare_model(
    inputs: &ModelInputs<'_>,
) -> Result<(ModelConfig, Vec<PreparedDataset>), Error> {
    let reference = *inputs
        .sc
        .first()
        .ok_or_else(|| Error::Input("at least one scRNA-seq dataset is needed".into()))?;
    if inputs.spatial.is_empty() {
        return Err(Error::Input(
            "at least one spatial dataset is needed".into(),
        ));
    }
    let genes = reference.genes.clone();
    let policy = if inputs.round_counts {
        CountPolicy::Round
    } else {
        CountPolicy::RequireIntegers
    };
    let mut specs = Vec::new();
    let mut prepared = Vec::new();
    let all = inputs
        .sc
        .iter()
        .map(|d| (*d, true))
        .chain(inputs.spatial.iter().map(|d| (*d, false)));
    for (ds, is_sc) in all {
        let m = match_genes(reference, ds)?;
        if !is_sc && m.shared.len() < 2 {
            // ρ′ is renormalised over the measured genes: over one gene it is 1 whatever z is.
            return Err(Error::Input(format!(
                "only one gene ({}) in common between {} and {}: the spatial likelihood \
                 renormalises the expression over the shared genes, so one gene carries no \
                 information; at least 2 shared genes are needed",
                m.shared[0], reference.source, ds.source
            )));
        }
        // Columns of `ds` in the order of G.
        let mut order: Vec<(usize, usize)> = m
            .first_index
            .iter()
            .copied()
            .zip(m.second_index.iter().copied())
            .collect();
        order.sort_unstable();
        let gene_index: Vec<usize> = order.iter().map(|p| p.0).collect();
        let cols: Vec<usize> = order.iter().map(|p| p.1).collect();
        let mut sub = ds.select_genes(&cols);
        let rounded = validate_counts(&mut sub, policy)?;
        let (kept, dropped) = drop_empty_cells(&sub)?;
        let library = if is_sc {
            let s = library_stats(&kept);
            LibraryModel::Latent {
                log_mean: s.log_mean,
                log_var: s.log_var,
            }
        } else {
            LibraryModel::Observed
        };
        specs.push(DatasetSpec {
            name: ds.source.clone(),
            genes: kept.genes.clone(),
            gene_index,
            likelihood: if is_sc {
                inputs.sc_likelihood
            } else {
                inputs.spatial_likelihood
            },
            library,
        });
        prepared.push(PreparedDataset {
            data: kept,
            dropped_cells: dropped,
            rounded,
            unused_genes: m.only_in_second,
        });
    }
    let config = ModelConfig::new(genes, specs).with_latent(inputs.n_latent);
    config.validate()?;
    Ok((config, prepared))
}

/// Builds a model for prepared data on `device` (an autodiff device) and trains it.
pub fn fit(
    config: ModelConfig,
    data: &[&CsrMatrix],
    train_config: &TrainConfig,
    device: &Device,
    on_epoch: impl FnMut(&gimvi_trainer::EpochLog),
) -> Result<TrainResult, Error> {
    let model = GimviModel::new(config, device, train_config.seed)?;
    Ok(train(model, data, train_config, on_epoch)?)
}

/// Fits a model of one dataset alone — scVI: a private encoder, the softmax decoder, no
/// adversary (κ = 0) — and returns its cells' latent posterior means (cells × `n_latent`).
/// This is the paper's reference space for k-NN purity (Fig. 2): how much of each dataset's
/// own neighbourhood structure the joint latent space keeps. `latent_library` models the
/// library as scRNA-seq does (LogNormal prior from the data's own log-library moments);
/// otherwise the observed library is used, as for spatial data. `train.kappa` is ignored.
pub fn single_dataset_latent(
    counts: &CsrMatrix,
    genes: &[String],
    likelihood: CountLikelihood,
    latent_library: bool,
    n_latent: usize,
    train: &TrainConfig,
    device: &Device,
) -> Result<Array2<f32>, Error> {
    if genes.len() != counts.n_cols() {
        return Err(Error::Input(format!(
            "{} gene names for a matrix of {} genes",
            genes.len(),
            counts.n_cols()
        )));
    }
    let library = if latent_library {
        let (log_mean, log_var) = log_library_moments(counts);
        LibraryModel::Latent { log_mean, log_var }
    } else {
        LibraryModel::Observed
    };
    let spec = DatasetSpec {
        name: "own".into(),
        genes: genes.to_vec(),
        gene_index: (0..genes.len()).collect(),
        likelihood,
        library,
    };
    let config = ModelConfig::new(genes.to_vec(), vec![spec]).with_latent(n_latent);
    let train = TrainConfig {
        kappa: 0.0,
        ..train.clone()
    };
    let result = fit(config, &[counts], &train, device, |_| {})?;
    Ok(result.model.latent(0, counts)?)
}

/// A dense f64 count matrix as CSR (f32 values).
pub fn to_csr(m: ndarray::ArrayView2<'_, f64>) -> Result<CsrMatrix, DataError> {
    let v: Vec<f32> = m.iter().map(|&x| x as f32).collect();
    CsrMatrix::from_dense(m.nrows(), m.ncols(), &v)
}

/// Seed distance between the members of a ensemble (`crate::imputers::GimviImputer`, `crate::ensemble::ModelEnsemble`): larger than any fold
/// offset (`seed + fold`) and inner κ-validation offset (`seed + 1000 · split`, splits ≤ 5)
/// so that no member repeats another training's seed.
pub const ENSEMBLE_SEED_STRIDE: u64 = 7_919;

/// Mean and variance of an equally weighted mixture of `n` posteriors, from the sums over its
/// members of their means and of (variance + mean²): the law of total variance,
/// E[var + mean²] − (E[mean])², so the spread between the members' means adds to their own
/// variance. Negative rounding residues are clamped at 0.
pub(crate) fn pooled_moments(
    sum_mean: Array2<f64>,
    sum_second: &Array2<f64>,
    n: f64,
) -> (Array2<f64>, Array2<f64>) {
    let mean = sum_mean / n;
    let variance = (sum_second / n - mean.mapv(|m| m * m)).mapv(|v| v.max(0.0));
    (mean, variance)
}
