//! The model's configuration: architecture hyper-parameters and the description of each
//! dataset (its genes, likelihood and library model). Serialised as JSON next to the weights.

use gimvi_likelihoods::CountLikelihood;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// How a dataset's library size ℓ enters the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LibraryModel {
    /// ℓ is latent, ln ℓ ~ N(`log_mean`, `log_var`) — the empirical mean and population
    /// variance of the log library (Lopez et al. 2019, Eq. 2; scRNA-seq).
    Latent {
        /// Prior mean of ln ℓ.
        log_mean: f64,
        /// Prior variance of ln ℓ (floored at 10⁻⁴ when used: a constant library would give 0).
        log_var: f64,
    },
    /// ℓ′ is the observed total count of the cell over its measured genes (spatial data).
    Observed,
}

/// One dataset of the joint model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Name used in reports and errors.
    pub name: String,
    /// Gene names of this dataset's columns, in its own order.
    pub genes: Vec<String>,
    /// For each of this dataset's columns, its index in the model's gene space G.
    pub gene_index: Vec<usize>,
    /// Observation model.
    pub likelihood: CountLikelihood,
    /// Library model.
    pub library: LibraryModel,
}

/// Architecture and datasets of a gimVI model.
///
/// Defaults follow scvi-tools' `GIMVI` (1.4, as coded; see `shared/reference` §2.1 and §6):
/// latent dimension 10; encoders with one private layer per dataset and one shared layer of 64
/// units (Linear → BatchNorm(momentum 0.01, ε 10⁻³) → ReLU → Dropout 0.2); a library encoder
/// with 128 hidden units for datasets whose library is latent; a decoder that is **linear in
/// z, with no dataset input and one shared dropout head** (`decoder_hidden` empty,
/// `condition_decoder` false) — unlike the paper's f_η(z, s), which the two options restore;
/// inverse dispersion θ per gene and per dataset ("gene-batch"), initialised from N(0, 1) on
/// the log scale; adversarial classifier with 3 hidden layers of 32 units and dropout 0.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model gene space G (usually the scRNA-seq genes). Every dataset maps into it.
    pub genes: Vec<String>,
    /// The datasets, in order; dataset index = position here.
    pub datasets: Vec<DatasetSpec>,
    /// Latent dimension d (default 10; the paper's notebooks use 8).
    pub n_latent: usize,
    /// Hidden units of the z encoder layers (default 64).
    pub n_hidden: usize,
    /// Hidden units of the library encoder (default 128).
    pub n_hidden_library: usize,
    /// Dropout rate of the encoders (default 0.2).
    pub dropout_encoder: f64,
    /// Hidden layer widths of the decoder before the softmax (default none: linear decoder).
    pub decoder_hidden: Vec<usize>,
    /// Dropout rate of the decoder hidden layers (default 0.2; unused without hidden layers).
    pub dropout_decoder: f64,
    /// Feed the one-hot dataset label to the decoder, f_η(z, s) as in the paper (default
    /// false, as scvi-tools).
    pub condition_decoder: bool,
    /// Hidden layers of the adversarial classifier (default 3).
    pub classifier_layers: usize,
    /// Hidden units of the classifier layers (default 32).
    pub classifier_hidden: usize,
    /// Dropout of the classifier (default 0.1).
    pub classifier_dropout: f64,
}

impl ModelConfig {
    /// A configuration with scvi-tools' defaults for the given gene space and datasets.
    pub fn new(genes: Vec<String>, datasets: Vec<DatasetSpec>) -> Self {
        Self {
            genes,
            datasets,
            n_latent: 10,
            n_hidden: 64,
            n_hidden_library: 128,
            dropout_encoder: 0.2,
            decoder_hidden: Vec::new(),
            dropout_decoder: 0.2,
            condition_decoder: false,
            classifier_layers: 3,
            classifier_hidden: 32,
            classifier_dropout: 0.1,
        }
    }

    /// Sets the latent dimension.
    pub fn with_latent(mut self, n_latent: usize) -> Self {
        self.n_latent = n_latent;
        self
    }

    /// Number of genes in the model space G.
    pub fn n_genes(&self) -> usize {
        self.genes.len()
    }

    /// Checks internal consistency: ≥ 1 dataset, gene maps in range and of the right length,
    /// positive sizes, dropout rates in [0, 1), finite library priors. One dataset makes a
    /// single-dataset VAE (scVI); the trainer then refuses κ > 0, since the adversary needs two.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.datasets.is_empty() {
            return bad("the model needs at least one dataset, got none".into());
        }
        if self.genes.is_empty() {
            return bad("the model gene space is empty".into());
        }
        if self.n_latent == 0 || self.n_hidden == 0 || self.n_hidden_library == 0 {
            return bad("latent and hidden sizes must be positive".into());
        }
        for p in [
            self.dropout_encoder,
            self.dropout_decoder,
            self.classifier_dropout,
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("dropout rate {p} outside [0, 1)"));
            }
        }
        for d in &self.datasets {
            if d.gene_index.is_empty() {
                return bad(format!("dataset '{}' has no genes", d.name));
            }
            if d.gene_index.len() != d.genes.len() {
                return bad(format!(
                    "dataset '{}': {} gene names but {} gene indices",
                    d.name,
                    d.genes.len(),
                    d.gene_index.len()
                ));
            }
            if let Some(&g) = d.gene_index.iter().find(|&&g| g >= self.genes.len()) {
                return bad(format!(
                    "dataset '{}': gene index {g} outside the model's {} genes",
                    d.name,
                    self.genes.len()
                ));
            }
            if let LibraryModel::Latent { log_mean, log_var } = d.library {
                if !log_mean.is_finite() || !log_var.is_finite() || log_var < 0.0 {
                    return bad(format!(
                        "dataset '{}': library prior mean {log_mean}, variance {log_var}",
                        d.name
                    ));
                }
            }
        }
        Ok(())
    }
}
