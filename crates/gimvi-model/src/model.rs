//! A gimVI model ready for inference: latent representations, imputation with posterior
//! uncertainty, save and load.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use gimvi_data::CsrMatrix;
use ndarray::Array2;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::batch::dense_batch;
use crate::config::{LibraryModel, ModelConfig};
use crate::module::{normal_noise, Classifier, GimviModule, ModelRng, MIN_OBSERVED_LIBRARY};
use crate::ModelError;

/// Cells per inference batch (bounded memory on large inputs).
pub const INFERENCE_BATCH: usize = 1024;

/// A gimVI model: configuration plus networks on a device.
#[derive(Debug, Clone)]
pub struct GimviModel {
    /// Architecture and datasets.
    pub config: ModelConfig,
    /// The networks (on an autodiff device while training).
    pub module: GimviModule,
    /// The device the networks live on.
    pub device: Device,
}

/// Options of [`GimviModel::impute`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImputeOptions {
    /// Posterior samples of z (and ℓ). 0 = decode the posterior mean only (no variance);
    /// the paper's uncertainty uses 50.
    pub samples: usize,
    /// `true`: normalised expression ρ (renormalised over the dataset's measured genes, as
    /// scvi-tools' `normalized=True`); `false`: expected counts ρ · ℓ, with ℓ the cell's
    /// observed library (spatial) or the posterior mean library (scRNA-seq).
    pub normalized: bool,
    /// Seed of the posterior samples.
    pub seed: u64,
}

impl Default for ImputeOptions {
    fn default() -> Self {
        Self {
            samples: 0,
            normalized: true,
            seed: 0,
        }
    }
}

/// Imputed values: cells × requested genes.
#[derive(Debug, Clone, PartialEq)]
pub struct Imputation {
    /// Posterior mean (the decoded mean when `samples` = 0, else the average over samples).
    pub mean: Array2<f32>,
    /// Variance over posterior samples (`None` when `samples` < 2).
    pub variance: Option<Array2<f32>>,
}

/// What `save` writes next to the weights.
#[derive(Debug, Serialize, Deserialize)]
struct SavedConfig {
    format: String,
    gimvi_version: String,
    config: ModelConfig,
}

const FORMAT: &str = "gimvi-model-1";

impl GimviModel {
    /// A freshly initialised model on `device` (use an autodiff device for training); `seed`
    /// fixes the initial weights.
    pub fn new(config: ModelConfig, device: &Device, seed: u64) -> Result<Self, ModelError> {
        let module = GimviModule::new(&config, seed, device)?;
        Ok(Self {
            config,
            module,
            device: device.clone(),
        })
    }

    /// A fresh adversarial classifier matching this model's configuration, initialised from
    /// `seed`.
    pub fn new_classifier(&self, seed: u64) -> Classifier {
        Classifier::new(
            &self.config,
            &mut ModelRng::seed_from_u64(seed),
            &self.device,
        )
    }

    /// Index of every name in the model's gene space G (case-insensitive); an error names the
    /// first gene that is not there.
    pub fn gene_indices(&self, names: &[String]) -> Result<Vec<usize>, ModelError> {
        let lower: Vec<String> = self.config.genes.iter().map(|g| g.to_lowercase()).collect();
        names
            .iter()
            .map(|n| {
                let key = n.to_lowercase();
                lower
                    .iter()
                    .position(|g| *g == key)
                    .ok_or_else(|| ModelError::UnknownGene(n.clone()))
            })
            .collect()
    }

    /// Checks that `counts` fits dataset `m` and holds finite non-negative values.
    pub fn check_input(&self, m: usize, counts: &CsrMatrix) -> Result<(), ModelError> {
        let spec = self
            .config
            .datasets
            .get(m)
            .ok_or(ModelError::UnknownDataset(m))?;
        if counts.n_cols() != spec.gene_index.len() {
            return Err(ModelError::Shape {
                what: format!("genes of the input for dataset '{}'", spec.name),
                expected: spec.gene_index.len(),
                found: counts.n_cols(),
            });
        }
        if let Some(v) = counts.data().iter().find(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!(
                "dataset '{}' holds a non-finite count ({v})",
                spec.name
            )));
        }
        if let Some(v) = counts.data().iter().find(|v| **v < 0.0) {
            return Err(ModelError::InvalidInput(format!(
                "dataset '{}' holds a negative count ({v})",
                spec.name
            )));
        }
        Ok(())
    }

    fn inference_parts(&self) -> (GimviModule, Device) {
        (self.module.valid(), self.device.clone().without_autodiff())
    }

    /// Posterior mean of z for every cell (row) of `counts` in dataset `m`: cells × d.
    pub fn latent(&self, m: usize, counts: &CsrMatrix) -> Result<Array2<f32>, ModelError> {
        self.check_input(m, counts)?;
        let (module, device) = self.inference_parts();
        let d = self.config.n_latent;
        let mut out = Vec::with_capacity(counts.n_rows() * d);
        for rows in batches(counts.n_rows()) {
            let x = dense_batch(counts, &rows, &device);
            let (mean, _) = module.encode(m, x, None);
            out.extend(to_vec(mean));
        }
        Array2::from_shape_vec((counts.n_rows(), d), out)
            .map_err(|e| ModelError::Internal(e.to_string()))
    }

    /// Imputed expression of `genes` (indices into G — use [`GimviModel::gene_indices`]) for
    /// every cell of `counts` in dataset `m`: the main use is spatial cells and genes the
    /// spatial assay did not measure. With `samples` ≥ 2 the variance over posterior samples
    /// is returned as the uncertainty (Lopez et al. 2019, Fig. 3).
    pub fn impute(
        &self,
        m: usize,
        counts: &CsrMatrix,
        genes: &[usize],
        options: ImputeOptions,
    ) -> Result<Imputation, ModelError> {
        self.check_input(m, counts)?;
        if let Some(&g) = genes.iter().find(|&&g| g >= self.config.n_genes()) {
            return Err(ModelError::Shape {
                what: "requested gene index".into(),
                expected: self.config.n_genes(),
                found: g,
            });
        }
        let (module, device) = self.inference_parts();
        let mut rng = ModelRng::seed_from_u64(options.seed);
        let spec = &self.config.datasets[m];
        let n_genes = genes.len();
        let mut mean_out = Vec::with_capacity(counts.n_rows() * n_genes);
        let mut var_out = Vec::new();
        for rows in batches(counts.n_rows()) {
            let x = dense_batch(counts, &rows, &device);
            let (qz_mean, qz_var) = module.encode(m, x.clone(), None);
            let library = if options.normalized {
                None
            } else {
                Some(
                    match (module.encode_library(m, x.clone(), None), spec.library) {
                        (Some((ql_mean, _)), LibraryModel::Latent { .. }) => ql_mean.exp(),
                        _ => x.clone().sum_dim(1).clamp_min(MIN_OBSERVED_LIBRARY),
                    },
                )
            };
            let decode = |z: Tensor<2>| {
                let rho = module.rho(&self.config, m, z, genes, &spec.gene_index);
                match &library {
                    Some(l) => rho.mul(l.clone()),
                    None => rho,
                }
            };
            if options.samples == 0 {
                mean_out.extend(to_vec(decode(qz_mean)));
                continue;
            }
            let sd = qz_var.sqrt();
            let mut sum = Tensor::<2>::zeros([rows.len(), n_genes], &device);
            let mut sum_sq = sum.clone();
            for _ in 0..options.samples {
                let eps = normal_noise(qz_mean.shape(), &mut rng, &device);
                let v = decode(qz_mean.clone().add(sd.clone().mul(eps)));
                sum = sum.add(v.clone());
                sum_sq = sum_sq.add(v.square());
            }
            let s = options.samples as f64;
            let mean = sum.div_scalar(s);
            if options.samples >= 2 {
                // Unbiased sample variance over posterior samples.
                let var = sum_sq
                    .sub(mean.clone().square().mul_scalar(s))
                    .div_scalar(s - 1.0)
                    .clamp_min(0.0);
                var_out.extend(to_vec(var));
            }
            mean_out.extend(to_vec(mean));
        }
        let shape = (counts.n_rows(), n_genes);
        let mean = Array2::from_shape_vec(shape, mean_out)
            .map_err(|e| ModelError::Internal(e.to_string()))?;
        let variance = if options.samples >= 2 {
            Some(
                Array2::from_shape_vec(shape, var_out)
                    .map_err(|e| ModelError::Internal(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Imputation { mean, variance })
    }

    /// Writes `config.json` (configuration, gene lists) and `weights.bpk` (burn record) into
    /// `dir`, creating it if needed.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
        let saved = SavedConfig {
            format: FORMAT.into(),
            gimvi_version: env!("CARGO_PKG_VERSION").into(),
            config: self.config.clone(),
        };
        let json = serde_json::to_string_pretty(&saved)
            .map_err(|e| ModelError::Internal(e.to_string()))?;
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, json).map_err(|e| ModelError::Io(cfg.display().to_string(), e))?;
        let weights = dir.join("weights.bpk");
        self.module
            .valid()
            .save_file(&weights)
            .map_err(|e| ModelError::Record(weights.display().to_string(), e.to_string()))
    }

    /// Loads a model written by [`GimviModel::save`] onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let cfg = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg)
            .map_err(|e| ModelError::Io(cfg.display().to_string(), e))?;
        let saved: SavedConfig = serde_json::from_str(&text)
            .map_err(|e| ModelError::Record(cfg.display().to_string(), e.to_string()))?;
        if saved.format != FORMAT {
            return Err(ModelError::Record(
                cfg.display().to_string(),
                format!(
                    "unknown model format '{}', expected '{FORMAT}'",
                    saved.format
                ),
            ));
        }
        let weights = dir.join("weights.bpk");
        if !weights.is_file() {
            return Err(ModelError::Record(
                weights.display().to_string(),
                "missing: a model folder holds config.json and weights.bpk, both written by \
                 a save (gimvi fit --out)"
                    .into(),
            ));
        }
        let module = GimviModule::new(&saved.config, 0, device)?
            .try_load_file(&weights)
            .map_err(|e| ModelError::Record(weights.display().to_string(), e.to_string()))?;
        Ok(Self {
            config: saved.config,
            module,
            device: device.clone(),
        })
    }
}

/// Row ranges of at most [`INFERENCE_BATCH`] cells.
fn batches(n: usize) -> Vec<Vec<usize>> {
    (0..n)
        .step_by(INFERENCE_BATCH)
        .map(|s| (s..(s + INFERENCE_BATCH).min(n)).collect())
        .collect()
}

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}
