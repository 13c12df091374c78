//! Several trained gimVI models used as one.
//!
//! One gimVI training is noisy: on the paper's held-out-gene evaluation the median Spearman
//! of a single model moves by several hundredths from seed to seed, and averaging the
//! imputations of three models trained from different seeds raised it by +0.033 ± 0.007
//! (mSMS, 20 seeds) and +0.012 ± 0.002 (mPFC, 6 seeds) over one model (docs/results.md).
//! A [`ModelEnsemble`] holds such models — from several seeds, and optionally from several
//! adversarial weights κ (the average over κ = 0, 1, 5 that `--kappa auto` falls back to when
//! no single κ is clearly better) — and imputes with their equally weighted average. Its
//! uncertainty is the variance of the pooled posterior: the mean of the members' posterior
//! variances plus the variance between the members' means (law of total variance), so the
//! disagreement between trainings is reported, not hidden.
//!
//! On disk an ensemble is a folder: member 0 is stored as a plain model (`config.json`,
//! `weights.bpk`, readable by [`GimviModel::load`]), member k ≥ 1 in `member-k/`, and
//! `ensemble.json` lists every member's κ and seed. A folder written by
//! [`GimviModel::save`] alone loads as a one-member ensemble.
//!
//! [`crate::Gimvi`] holds one; this module is its machinery.
//!

use std::path::Path;

use gimvi_data::CsrMatrix;
use gimvi_model::{GimviModel, Imputation, ImputeOptions, ModelConfig, ModelError};
use gimvi_trainer::{EpochLog, TrainConfig};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::calibration::IntervalCalibration;
use crate::error::Error;
use crate::prepare::{fit, pooled_moments, ENSEMBLE_SEED_STRIDE};
use crate::Device;

/// Callbacks of [`ModelEnsemble::fit`].
pub struct FitObserver<'a> {
    /// Called before model i of n trains, with its κ and seed.
    pub on_model: &'a mut dyn FnMut(usize, usize, f64, u64),
    /// Called after every epoch of the model training.
    pub on_epoch: &'a mut dyn FnMut(&EpochLog),
}

#[cfg(test)]
impl FitObserver<'static> {
    /// An observer that reports nothing (its closures are zero-sized, so leaking them
    /// allocates nothing).
    pub fn quiet_observer() -> Self {
        Self {
            on_model: Box::leak(Box::new(|_, _, _, _| {})),
            on_epoch: Box::leak(Box::new(|_: &EpochLog| {})),
        }
    }
}

/// One trained model of a [`ModelEnsemble`].
#[derive(Debug, Clone)]
pub struct EnsembleMember {
    /// The trained model.
    pub model: GimviModel,
    /// The κ it was trained with (`None` when unknown: a folder written without
    /// `ensemble.json`).
    pub kappa: Option<f64>,
    /// The seed it was trained from (`None` when unknown).
    pub seed: Option<u64>,
    /// Its training history (empty for a loaded model).
    pub history: Vec<EpochLog>,
}

/// Models of the same data and architecture whose imputations are averaged (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct ModelEnsemble {
    members: Vec<EnsembleMember>,
    /// The calibration of its prediction intervals (`calibration.json` on disk), if made.
    pub calibration: Option<IntervalCalibration>,
}

/// What `ensemble.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct SavedEnsemble {
    format: String,
    gimvi_version: String,
    /// κ and seed of member k (stored in `member-k/`, member 0 in the folder itself).
    members: Vec<SavedMember>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedMember {
    kappa: Option<f64>,
    seed: Option<u64>,
}

const FORMAT: &str = "gimvi-ensemble-1";
const INDEX: &str = "ensemble.json";
/// Where the interval calibration is stored in a model folder.
const CALIBRATION: &str = "calibration.json";

/// Where member `k` of an ensemble saved in `dir` lives.
fn member_dir(dir: &Path, k: usize) -> std::path::PathBuf {
    if k == 0 {
        dir.to_path_buf()
    } else {
        dir.join(format!("member-{k}"))
    }
}

impl ModelEnsemble {
    /// An ensemble of `members`; refuses an empty list and members whose configuration
    /// (genes, datasets, architecture) differs from the first's.
    pub fn new(members: Vec<EnsembleMember>) -> Result<Self, ModelError> {
        let first = members
            .first()
            .ok_or_else(|| ModelError::Config("an ensemble needs at least one model".into()))?;
        if let Some(k) = members
            .iter()
            .position(|m| m.model.config != first.model.config)
        {
            return Err(ModelError::Config(format!(
                "ensemble member {k} was built for other genes, datasets or architecture than \
                 member 0; every member must share one configuration"
            )));
        }
        Ok(Self {
            members,
            calibration: None,
        })
    }

    /// Trains `members` models at each κ of `kappas` on prepared data (as
    /// [`crate::prepare::fit`]): member k of every κ starts from seed
    /// `train.seed + k · ENSEMBLE_SEED_STRIDE` (member 0 is the model a plain fit with `train`
    /// at that κ gives). `observer.on_model(i, n, κ, seed)` is called before model i of n
    /// trains, `observer.on_epoch` after each of its epochs. A diverging training stops the
    /// whole ensemble with its error.
    pub fn fit(
        config: &ModelConfig,
        data: &[&CsrMatrix],
        train: &TrainConfig,
        kappas: &[f64],
        members: usize,
        device: &Device,
        observer: &mut FitObserver<'_>,
    ) -> Result<Self, Error> {
        if kappas.is_empty() || members == 0 {
            return Err(Error::Input(
                "an ensemble needs at least one κ and one model per κ".into(),
            ));
        }
        if let Some(bad) = kappas.iter().find(|k| !(k.is_finite() && **k >= 0.0)) {
            return Err(Error::Input(format!(
                "κ must be a finite number ≥ 0, got {bad}"
            )));
        }
        let n = kappas.len() * members;
        let mut trained = Vec::with_capacity(n);
        for (i, (kappa, k)) in kappas
            .iter()
            .flat_map(|&kappa| (0..members).map(move |k| (kappa, k)))
            .enumerate()
        {
            let seed = train.seed.wrapping_add(k as u64 * ENSEMBLE_SEED_STRIDE);
            (observer.on_model)(i, n, kappa, seed);
            let config_k = TrainConfig {
                kappa,
                seed,
                ..train.clone()
            };
            let result = fit(
                config.clone(),
                data,
                &config_k,
                device,
                &mut *observer.on_epoch,
            )?;
            trained.push(EnsembleMember {
                model: result.model,
                kappa: Some(kappa),
                seed: Some(seed),
                history: result.history,
            });
        }
        Ok(Self::new(trained)?)
    }

    /// The members.
    pub fn members(&self) -> &[EnsembleMember] {
        &self.members
    }

    /// How many models.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: an ensemble has at least one model.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The configuration every member shares.
    pub fn config(&self) -> &ModelConfig {
        &self.members[0].model.config
    }

    /// The first member (its latent space is the one [`ModelEnsemble::latent`] reports).
    pub fn first(&self) -> &GimviModel {
        &self.members[0].model
    }

    /// Indices of gene names in the shared gene space (as [`GimviModel::gene_indices`]).
    pub fn gene_indices(&self, names: &[String]) -> Result<Vec<usize>, ModelError> {
        self.first().gene_indices(names)
    }

    /// Latent representation (posterior means) of the cells of `counts` in dataset `m`, from
    /// the **first** member: each training has its own latent coordinates, so members' latents
    /// cannot be averaged.
    pub fn latent(&self, m: usize, counts: &CsrMatrix) -> Result<Array2<f32>, ModelError> {
        self.first().latent(m, counts)
    }

    /// Imputed expression of `genes` in the cells of `counts` (dataset `m`), as
    /// [`GimviModel::impute`] but averaged over the members. Member k draws its posterior
    /// samples from seed `options.seed + k · ENSEMBLE_SEED_STRIDE`. With `samples` ≥ 2 the
    /// variance is the pooled posterior's: mean over members of (variance + mean²) minus the
    /// squared ensemble mean, i.e. the members' own uncertainty plus their disagreement.
    /// A one-member ensemble returns exactly its model's imputation.
    pub fn impute(
        &self,
        m: usize,
        counts: &CsrMatrix,
        genes: &[usize],
        options: ImputeOptions,
    ) -> Result<Imputation, ModelError> {
        if self.members.len() == 1 {
            return self.members[0].model.impute(m, counts, genes, options);
        }
        let mut sum_mean: Option<Array2<f64>> = None;
        let mut sum_second: Option<Array2<f64>> = None;
        for (k, member) in self.members.iter().enumerate() {
            let imputed = member.model.impute(
                m,
                counts,
                genes,
                ImputeOptions {
                    seed: options.seed.wrapping_add(k as u64 * ENSEMBLE_SEED_STRIDE),
                    ..options
                },
            )?;
            let mean = imputed.mean.mapv(f64::from);
            if let Some(variance) = &imputed.variance {
                let second = variance.mapv(f64::from) + mean.mapv(|v| v * v);
                sum_second = Some(match sum_second {
                    None => second,
                    Some(s) => s + second,
                });
            }
            sum_mean = Some(match sum_mean {
                None => mean,
                Some(s) => s + mean,
            });
        }
        let n = self.members.len() as f64;
        let sum_mean = sum_mean.ok_or_else(|| ModelError::Internal("no ensemble member".into()))?;
        let (mean, variance) = match sum_second {
            Some(second) => {
                let (mean, variance) = pooled_moments(sum_mean, &second, n);
                (mean, Some(variance.mapv(|v| v as f32)))
            }
            None => (sum_mean / n, None),
        };
        Ok(Imputation {
            mean: mean.mapv(|v| v as f32),
            variance,
        })
    }

    /// Writes the ensemble into `dir` (created if needed): member 0 as a plain model, member
    /// k in `dir/member-k`, each with its `history.json` when it has one, and `ensemble.json`.
    ///
    /// The folder is written atomically (a temporary folder beside it takes its place when
    /// complete): an interrupted or failed save leaves no folder, or the previous model intact.
    /// A target that is a file, or a folder holding files but no model, is refused.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        crate::folder::write_folder_atomic(dir.as_ref(), |tmp| self.save_into(tmp))
    }

    /// Writes the members and `ensemble.json` into the (new, empty) folder `dir`.
    fn save_into(&self, dir: &Path) -> Result<(), ModelError> {
        if let Some(calibration) = &self.calibration {
            let path = dir.join(CALIBRATION);
            let json = serde_json::to_string(calibration)
                .map_err(|e| ModelError::Internal(e.to_string()))?;
            std::fs::write(&path, json)
                .map_err(|e| ModelError::Io(path.display().to_string(), e))?;
        }
        for (k, member) in self.members.iter().enumerate() {
            let target = member_dir(dir, k);
            member.model.save(&target)?;
            if !member.history.is_empty() {
                let path = target.join("history.json");
                let json = serde_json::to_string_pretty(&member.history)
                    .map_err(|e| ModelError::Internal(e.to_string()))?;
                std::fs::write(&path, json)
                    .map_err(|e| ModelError::Io(path.display().to_string(), e))?;
            }
        }
        let index = SavedEnsemble {
            format: FORMAT.into(),
            gimvi_version: env!("CARGO_PKG_VERSION").into(),
            members: self
                .members
                .iter()
                .map(|m| SavedMember {
                    kappa: m.kappa,
                    seed: m.seed,
                })
                .collect(),
        };
        let json = serde_json::to_string_pretty(&index)
            .map_err(|e| ModelError::Internal(e.to_string()))?;
        let path = dir.join(INDEX);
        std::fs::write(&path, json).map_err(|e| ModelError::Io(path.display().to_string(), e))
    }

    /// Loads an ensemble written by [`ModelEnsemble::save`] onto `device`, or a folder
    /// written by [`GimviModel::save`] (no `ensemble.json`) as a one-member ensemble.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let mut ensemble = Self::load_members(dir, device)?;
        let path = dir.join(CALIBRATION);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ModelError::Io(path.display().to_string(), e))?;
            ensemble.calibration = Some(
                serde_json::from_str(&text)
                    .map_err(|e| ModelError::Record(path.display().to_string(), e.to_string()))?,
            );
        }
        Ok(ensemble)
    }

    /// The members of a saved ensemble (or of a plain model folder).
    fn load_members(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let path = dir.join(INDEX);
        if !path.exists() {
            return Self::new(vec![EnsembleMember {
                model: GimviModel::load(dir, device)?,
                kappa: None,
                seed: None,
                history: Vec::new(),
            }]);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::Io(path.display().to_string(), e))?;
        let index: SavedEnsemble = serde_json::from_str(&text)
            .map_err(|e| ModelError::Record(path.display().to_string(), e.to_string()))?;
        if index.format != FORMAT {
            return Err(ModelError::Record(
                path.display().to_string(),
                format!(
                    "unknown ensemble format '{}', expected '{FORMAT}'",
                    index.format
                ),
            ));
        }
        let members = index
            .members
            .iter()
            .enumerate()
            .map(|(k, saved)| {
                Ok(EnsembleMember {
                    model: GimviModel::load(member_dir(dir, k), device)?,
                    kappa: saved.kappa,
                    seed: saved.seed,
                    history: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        if members.is_empty() {
            return Err(ModelError::Record(
                path.display().to_string(),
                "lists no model".into(),
            ));
        }
        Self::new(members)
    }
}
