//! End-to-end building blocks shared by the command-line tool and the examples: turning an
//! scRNA-seq reference and spatial datasets into a model, training it, and a gimVI
//! [`Imputer`] for the held-out-gene protocol.

use burn::tensor::Device;
use gimvi_data::prepare::{
    drop_empty_cells, library_stats, log_library_moments, match_genes, validate_counts, CountPolicy,
};
use gimvi_data::{CsrMatrix, DataError, Dataset};
use gimvi_likelihoods::CountLikelihood;
use gimvi_metrics::protocol::{FoldTask, Imputer, ImputerError};
use gimvi_model::{DatasetSpec, GimviModel, ImputeOptions, LibraryModel, ModelConfig, ModelError};
use gimvi_trainer::{train, TrainConfig, TrainError, TrainResult};
use ndarray::Array2;

/// Errors of the end-to-end pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or preparing data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building or running the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The inputs cannot form a model.
    #[error("{0}")]
    Input(String),
}

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
) -> Result<(ModelConfig, Vec<PreparedDataset>), PipelineError> {
    let reference = *inputs
        .sc
        .first()
        .ok_or_else(|| PipelineError::Input("at least one scRNA-seq dataset is needed".into()))?;
    if inputs.spatial.is_empty() {
        return Err(PipelineError::Input(
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
) -> Result<TrainResult, PipelineError> {
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
) -> Result<Array2<f32>, PipelineError> {
    if genes.len() != counts.n_cols() {
        return Err(PipelineError::Input(format!(
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

/// gimVI as an [`Imputer`] of the held-out-gene protocol: per fold, a model with the
/// scRNA-seq data on all shared genes and the spatial data on the fold's training genes is
/// trained, and the held-out genes are imputed as expected counts (ρ′ scaled by the observed
/// library — the paper's protocol).
#[derive(Debug, Clone)]
pub struct GimviImputer {
    /// Name in reports, e.g. "gimVI κ=5".
    pub name: String,
    /// Training settings (epochs, κ, seed, …).
    pub train: TrainConfig,
    /// Latent dimension (the paper's evaluation: 8).
    pub n_latent: usize,
    /// scRNA-seq likelihood.
    pub sc_likelihood: CountLikelihood,
    /// Spatial likelihood.
    pub spatial_likelihood: CountLikelihood,
    /// Device to train on (autodiff).
    pub device: Device,
    /// Choose κ per fold with [`choose_kappa`] on the fold's training genes (the κ in
    /// `train` is then ignored); the choices are recorded in `chosen_kappas`. The candidates
    /// are [`KAPPA_CANDIDATES`], or the κ of a non-empty `kappa_average` — which then also
    /// becomes a candidate itself and the default: a fold imputes the average over those κ
    /// unless the best single κ beats it in the inner validation by more than one standard
    /// error ([`KappaChoice::prefers_average`]).
    pub auto_kappa: bool,
    /// κ chosen in each fold when `auto_kappa` is set.
    pub chosen_kappas: Vec<KappaChoice>,
    /// Posterior samples drawn per fold for the uncertainty of the imputed genes (0 = none;
    /// the paper uses 50). The results are appended to `posterior`.
    pub posterior_samples: usize,
    /// One entry per fold when `posterior_samples ≥ 2`.
    pub posterior: Vec<FoldPosterior>,
    /// Record both datasets' latent representations (posterior means) in the first fold
    /// (for the integration metrics of the paper's Fig. 2).
    pub record_latent: bool,
    /// The recorded latents.
    pub latents: Vec<FoldLatent>,
    /// Share fits with the other imputers of an evaluation holding the same [`SharedFits`]
    /// (`None`: always train).
    pub shared: Option<SharedFits>,
    /// Models averaged per fold (0 and 1: one model, the paper's protocol). Member k trains
    /// from seed `seed + k · ENSEMBLE_SEED_STRIDE` (member 0 is the single model, so an
    /// ensemble's first member is shared with the one-model imputer of the same settings);
    /// the imputed means are averaged. With `posterior_samples ≥ 2` every member draws its
    /// samples and the fold's posterior is their pooled mixture (so the variance also holds
    /// the spread between members); latents are the first member's.
    pub ensemble: usize,
    /// Average over κ instead of one κ (empty: one κ, `train.kappa` or the automatic
    /// choice): each fold's imputation is the mean of models trained at each of these κ
    /// (each an ensemble of `ensemble` members, all equally weighted), so no κ has to be
    /// chosen. With `auto_kappa` set, the automatic choice picks per fold among these κ and
    /// their average (see `auto_kappa`). With [`SharedFits`] held by the fixed-κ imputers of
    /// the same settings it trains nothing of its own. Used by [`Imputer::impute`];
    /// [`GimviImputer::fit_fold`] trains one model at `train.kappa` (or at the chosen κ).
    pub kappa_average: Vec<f64>,
}

/// Seed distance between the members of a [`GimviImputer`] ensemble: larger than any fold
/// offset (`seed + fold`) and inner κ-validation offset (`seed + 1000 · split`, splits ≤ 5)
/// so that no member repeats another training's seed.
pub const ENSEMBLE_SEED_STRIDE: u64 = 7_919;

/// Latent representations (posterior means of z) of both datasets' cells in one fold.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldLatent {
    /// The fold.
    pub fold: usize,
    /// The fold's scRNA-seq cells ([`FoldTask::sc_cells`]: rows of the whole matrix) ×
    /// latent dimensions.
    pub sc: Array2<f32>,
    /// Rows of the whole scRNA-seq matrix that `sc`'s rows are.
    pub sc_cells: Vec<usize>,
    /// The fold's spatial cells × latent dimensions.
    pub spatial: Array2<f32>,
    /// Rows of the whole spatial matrix that `spatial`'s rows are.
    pub spatial_cells: Vec<usize>,
}

/// Posterior uncertainty of one fold's imputed genes (Lopez et al. 2019: variance over
/// posterior samples of z, decoded to expected counts).
#[derive(Debug, Clone, PartialEq)]
pub struct FoldPosterior {
    /// The fold's held-out genes (indices into the shared genes).
    pub genes: Vec<usize>,
    /// Rows of the whole spatial matrix that the rows below are (the fold's cells,
    /// [`FoldTask::spatial_cells`]).
    pub cells: Vec<usize>,
    /// Mean over the posterior samples, the fold's spatial cells × `genes`.
    pub mean: Array2<f64>,
    /// Variance over the posterior samples, the fold's spatial cells × `genes`.
    pub variance: Array2<f64>,
}

impl GimviImputer {
    /// Trains on one fold and returns the model (also used by callers that need the latent
    /// space or uncertainties of that fold).
    pub fn fit_fold(&mut self, task: &FoldTask<'_>) -> Result<TrainResult, PipelineError> {
        let sc_counts = to_csr(task.sc_counts.view())?;
        let sp_counts = to_csr(task.spatial_train.view())?;
        let (config, train_config, _) = self.fold_setup(task, &sc_counts, &sp_counts)?;
        fit(
            config,
            &[&sc_counts, &sp_counts],
            &train_config,
            &self.device,
            |_| {},
        )
    }

    /// The fold's model and training settings (κ chosen here when `auto_kappa` is set) and
    /// the κ whose models the fold's imputation averages (one κ, or several).
    fn fold_setup(
        &mut self,
        task: &FoldTask<'_>,
        sc_counts: &CsrMatrix,
        sp_counts: &CsrMatrix,
    ) -> Result<(ModelConfig, TrainConfig, Vec<f64>), PipelineError> {
        let genes = task.gene_names.to_vec();
        let (log_mean, log_var) = log_library_moments(sc_counts);
        let sc = DatasetSpec {
            name: "scRNA-seq".into(),
            genes: genes.clone(),
            gene_index: (0..genes.len()).collect(),
            likelihood: self.sc_likelihood,
            library: LibraryModel::Latent { log_mean, log_var },
        };
        let spatial = DatasetSpec {
            name: "spatial".into(),
            genes: task.train_genes.iter().map(|&g| genes[g].clone()).collect(),
            gene_index: task.train_genes.to_vec(),
            likelihood: self.spatial_likelihood,
            library: LibraryModel::Observed,
        };
        let config = ModelConfig::new(genes, vec![sc, spatial]).with_latent(self.n_latent);
        let mut train_config = self.train.clone();
        train_config.seed = self.train.seed.wrapping_add(task.fold as u64);
        let mut kappas = if self.kappa_average.is_empty() {
            vec![train_config.kappa]
        } else {
            self.kappa_average.clone()
        };
        if self.auto_kappa {
            let candidates = if self.kappa_average.is_empty() {
                KAPPA_CANDIDATES.to_vec()
            } else {
                self.kappa_average.clone()
            };
            // Only the fold's training genes are visible here: the held-out genes never
            // influence the choice. Imputers sharing fits also share the choice (it depends
            // on the same things as a fit and on the candidates, not on the ensemble size or
            // on whether the average may be chosen: its inner score is always computed).
            let key = self.shared.as_ref().map(|_| {
                format!(
                    "κ choice among {candidates:?}: {}",
                    self.share_key(task, [sc_counts, sp_counts], &train_config)
                )
            });
            let stored = match (&self.shared, &key) {
                (Some(shared), Some(key)) => shared.get_choice(key),
                _ => None,
            };
            let choice = match stored {
                Some(choice) => choice,
                None => {
                    let choice = choose_kappa(
                        &config,
                        &[sc_counts, sp_counts],
                        &candidates,
                        &train_config,
                        &self.device,
                    )?;
                    if let (Some(shared), Some(key)) = (&self.shared, key) {
                        shared.put_choice(key, &choice);
                    }
                    choice
                }
            };
            train_config.kappa = choice.kappa;
            if self.kappa_average.is_empty() || !choice.prefers_average() {
                kappas = vec![choice.kappa];
            }
            self.chosen_kappas.push(choice);
        }
        Ok((config, train_config, kappas))
    }

    /// What identifies a fold's fit in [`SharedFits`]: everything that determines it — the
    /// data (shape, entries and a weighted checksum of the counts), the genes, the split, the
    /// model and the training settings.
    fn share_key(
        &self,
        task: &FoldTask<'_>,
        data: [&CsrMatrix; 2],
        train_config: &TrainConfig,
    ) -> String {
        let tc = TrainConfig {
            progress: false,
            ..train_config.clone()
        };
        let fingerprint: Vec<(usize, usize, usize, f64)> = data
            .iter()
            .map(|m| {
                let checksum = m
                    .data()
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| f64::from(v) * (1.0 + (i % 97) as f64))
                    .sum();
                (m.n_rows(), m.n_cols(), m.nnz(), checksum)
            })
            .collect();
        format!(
            "fold {}, data {:?}, genes {:?}, train {:?}, test {:?}, latent {}, {:?}/{:?}, {:?}, {:?}",
            task.fold,
            fingerprint,
            task.gene_names,
            task.train_genes,
            task.test_genes,
            self.n_latent,
            self.sc_likelihood,
            self.spatial_likelihood,
            self.device,
            tc
        )
    }
}

/// Imputations shared between [`GimviImputer`]s: a fit is a pure function of its data, fold,
/// model and training settings (seeded, deterministic on CPU), so when the automatic κ lands
/// on a κ another imputer already trained on the same fold of the same data, its predictions
/// are reused instead of training the same model again. Keys cover all of these (the counts by
/// shape and checksum), so sharing one `SharedFits` across evaluations is safe; it holds every
/// stored prediction until dropped.
///
/// The automatic κ's per-fold choices are shared the same way (two κ* imputers that differ
/// only in their ensemble size run the inner validation once).
#[derive(Debug, Clone, Default)]
pub struct SharedFits {
    fits: std::sync::Arc<std::sync::Mutex<Vec<StoredFit>>>,
    choices: std::sync::Arc<std::sync::Mutex<Vec<(String, KappaChoice)>>>,
}

/// A stored fit: its key, its predictions and, when posterior samples were drawn, their number
/// with the posterior mean and variance.
type StoredFit = (String, (Array2<f64>, Option<StoredPosterior>));

/// Posterior samples drawn, posterior mean, posterior variance.
type StoredPosterior = (usize, Array2<f64>, Array2<f64>);

/// The entry stored under `key`, if any.
fn lookup<T: Clone>(store: &std::sync::Mutex<Vec<(String, T)>>, key: &str) -> Option<T> {
    let entries = store.lock().ok()?;
    entries
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// Stores `value` under `key` unless an entry has that key already.
fn store<T: Clone>(store: &std::sync::Mutex<Vec<(String, T)>>, key: String, value: &T) {
    if let Ok(mut entries) = store.lock() {
        if !entries.iter().any(|(k, _)| *k == key) {
            entries.push((key, value.clone()));
        }
    }
}

impl SharedFits {
    fn get(&self, key: &str) -> Option<(Array2<f64>, Option<StoredPosterior>)> {
        lookup(&self.fits, key)
    }

    /// Stores a fit's predictions; a posterior is added to an entry stored without one.
    fn put(&self, key: String, prediction: &Array2<f64>, posterior: Option<StoredPosterior>) {
        if let Ok(mut entries) = self.fits.lock() {
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some((_, (_, stored @ None))) => *stored = posterior,
                Some(_) => {}
                None => entries.push((key, (prediction.clone(), posterior))),
            }
        }
    }

    fn get_choice(&self, key: &str) -> Option<KappaChoice> {
        lookup(&self.choices, key)
    }

    fn put_choice(&self, key: String, choice: &KappaChoice) {
        store(&self.choices, key, choice);
    }

    /// How many fits are stored.
    pub fn len(&self) -> usize {
        self.fits.lock().map_or(0, |f| f.len())
    }

    /// How many automatic-κ choices are stored.
    pub fn choices(&self) -> usize {
        self.choices.lock().map_or(0, |c| c.len())
    }

    /// Whether no fit is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One ensemble member's imputed held-out genes and, when samples were drawn, its posterior
/// (mean, variance).
type MemberImputation = (Array2<f64>, Option<(Array2<f64>, Array2<f64>)>);

impl GimviImputer {
    /// Trains (or reuses) ensemble member `member` of a fold and returns its imputed held-out
    /// genes (expected counts) and, when samples were drawn, its posterior mean and variance.
    fn impute_member(
        &mut self,
        task: &FoldTask<'_>,
        config: &ModelConfig,
        data: [&CsrMatrix; 2],
        train_config: &TrainConfig,
        member: usize,
    ) -> Result<MemberImputation, ImputerError> {
        let [sc_counts, sp_counts] = data;
        let train_config = TrainConfig {
            seed: train_config
                .seed
                .wrapping_add(member as u64 * ENSEMBLE_SEED_STRIDE),
            ..train_config.clone()
        };
        let wants_latent = member == 0 && self.record_latent && self.latents.is_empty();
        let key = self
            .shared
            .as_ref()
            .map(|_| self.share_key(task, data, &train_config));
        if let (Some(shared), Some(key), false) = (&self.shared, &key, wants_latent) {
            match shared.get(key) {
                Some((prediction, _)) if self.posterior_samples < 2 => {
                    return Ok((prediction, None));
                }
                // The same fit drew as many samples with the same seed: the same posterior.
                Some((prediction, Some((n, mean, variance)))) if n == self.posterior_samples => {
                    return Ok((prediction, Some((mean, variance))));
                }
                _ => {}
            }
        }
        let result = fit(config.clone(), &data, &train_config, &self.device, |_| {})?;
        let imputed = result.model.impute(
            1,
            sp_counts,
            task.test_genes,
            ImputeOptions {
                normalized: false,
                ..ImputeOptions::default()
            },
        )?;
        if wants_latent {
            self.latents.push(FoldLatent {
                fold: task.fold,
                sc: result.model.latent(0, sc_counts)?,
                sc_cells: task.sc_cells.to_vec(),
                spatial: result.model.latent(1, sp_counts)?,
                spatial_cells: task.spatial_cells.to_vec(),
            });
        }
        let posterior = if self.posterior_samples >= 2 {
            let sampled = result.model.impute(
                1,
                sp_counts,
                task.test_genes,
                ImputeOptions {
                    normalized: false,
                    samples: self.posterior_samples,
                    // Member 0 draws as the one-model imputer does.
                    seed: self
                        .train
                        .seed
                        .wrapping_add(member as u64 * ENSEMBLE_SEED_STRIDE),
                },
            )?;
            let variance = sampled.variance.ok_or("no posterior variance returned")?;
            Some((sampled.mean.mapv(f64::from), variance.mapv(f64::from)))
        } else {
            None
        };
        let prediction = imputed.mean.mapv(f64::from);
        if let (Some(shared), Some(key)) = (&self.shared, key) {
            let stored = posterior
                .as_ref()
                .map(|(mean, variance)| (self.posterior_samples, mean.clone(), variance.clone()));
            shared.put(key, &prediction, stored);
        }
        Ok((prediction, posterior))
    }
}

impl Imputer for GimviImputer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        // Settings first (before any conversion or training): the trainer would reject a bad
        // κ too, but only after the average's earlier κ had been trained.
        if let Some(&bad) = self
            .kappa_average
            .iter()
            .find(|k| !(k.is_finite() && **k >= 0.0))
        {
            return Err(format!("κ must be a finite number ≥ 0, got {bad}").into());
        }
        let sc_counts = to_csr(task.sc_counts.view())?;
        let sp_counts = to_csr(task.spatial_train.view())?;
        // One κ, or every κ of the average (each with its `members` models).
        let (config, train_config, kappas) = self.fold_setup(task, &sc_counts, &sp_counts)?;
        let members = self.ensemble.max(1);
        let mut prediction: Option<Array2<f64>> = None;
        // Pooled posterior over the members: Σ means and Σ (variance + mean²).
        let mut pooled: Option<(Array2<f64>, Array2<f64>)> = None;
        for (kappa, member) in kappas
            .iter()
            .flat_map(|&k| (0..members).map(move |m| (k, m)))
        {
            let (p, posterior) = self.impute_member(
                task,
                &config,
                [&sc_counts, &sp_counts],
                &TrainConfig {
                    kappa,
                    ..train_config.clone()
                },
                member,
            )?;
            prediction = Some(match prediction {
                None => p,
                Some(sum) => sum + p,
            });
            if let Some((mean, variance)) = posterior {
                let second = &variance + &mean.mapv(|m| m * m);
                pooled = Some(match pooled {
                    None => (mean, second),
                    Some((m, s)) => (m + mean, s + second),
                });
            }
        }
        let n = (members * kappas.len()) as f64;
        if let Some((sum_mean, sum_second)) = pooled {
            let (mean, variance) = pooled_moments(sum_mean, &sum_second, n);
            self.posterior.push(FoldPosterior {
                genes: task.test_genes.to_vec(),
                cells: task.spatial_cells.to_vec(),
                mean,
                variance,
            });
        }
        Ok(prediction.ok_or("no ensemble member trained")? / n)
    }
}

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

/// The report name of a gimVI configuration, the same in the examples, `table1` and the CLI:
/// "gimVI κ=5", "gimVI κ* (automatic)" (`auto`), "gimVI avg κ=0,1,5" (a non-empty
/// `average`, which takes precedence over `kappa`), "gimVI κ*/avg (automatic)" (`auto` with
/// a non-empty `average`: the choice includes the average), each with " ×M" for an ensemble
/// of M > 1 models per fold ("gimVI κ* ×M", "gimVI κ*/avg ×M" for the automatic choices).
pub fn method_name(kappa: f64, auto: bool, average: &[f64], ensemble: usize) -> String {
    let times = if ensemble > 1 {
        format!(" ×{ensemble}")
    } else {
        String::new()
    };
    if auto && !average.is_empty() {
        if ensemble > 1 {
            format!("gimVI κ*/avg{times}")
        } else {
            "gimVI κ*/avg (automatic)".to_string()
        }
    } else if !average.is_empty() {
        let list: Vec<String> = average.iter().map(f64::to_string).collect();
        format!("gimVI avg κ={}{times}", list.join(","))
    } else if auto {
        if ensemble > 1 {
            format!("gimVI κ*{times}")
        } else {
            "gimVI κ* (automatic)".to_string()
        }
    } else {
        format!("gimVI κ={kappa}{times}")
    }
}

/// A dense f64 count matrix as CSR (f32 values).
pub fn to_csr(m: ndarray::ArrayView2<'_, f64>) -> Result<CsrMatrix, DataError> {
    let v: Vec<f32> = m.iter().map(|&x| x as f32).collect();
    CsrMatrix::from_dense(m.nrows(), m.ncols(), &v)
}

/// The κ candidates tried by [`choose_kappa`] by default: the values the paper compares.
pub const KAPPA_CANDIDATES: [f64; 3] = [0.0, 1.0, 5.0];

/// Result of [`choose_kappa`].
#[derive(Debug, Clone, PartialEq)]
pub struct KappaChoice {
    /// The chosen κ (the best single candidate).
    pub kappa: f64,
    /// (κ, median Spearman over the inner held-out genes) for every candidate.
    pub scores: Vec<(f64, f64)>,
    /// The same score for the average of all candidates' imputations (the models of the
    /// inner validation, no extra training); `None` with a single candidate.
    pub average_score: Option<f64>,
    /// How many (gene, split) pairs were scored in the inner validation.
    pub inner_genes: usize,
    /// Per candidate (in the order of `scores`): the Spearman of every inner held-out
    /// (gene, split) pair, in the same order for every candidate.
    pub gene_scores: Vec<Vec<f64>>,
    /// The same for the average of the candidates' imputations (empty with one candidate).
    pub average_gene_scores: Vec<f64>,
}

impl KappaChoice {
    /// Whether a fold that may also use the average over the candidates should use it
    /// rather than the best single κ — a one-standard-error rule with the average as the
    /// default: the best single κ (by median inner score) replaces the average only when its
    /// per-gene inner Spearman beats the average's by more than one standard error of the
    /// paired difference (mean of the differences > sd / √n over the inner genes). With
    /// ~13 inner genes (an mSMS fold) the medians of the candidates differ by less than their
    /// noise, and picking the highest one chose worse than averaging (docs/results.md); the
    /// average is the safer estimate unless one κ is clearly better. Always false with a
    /// single candidate; true with fewer than two inner genes.
    pub fn prefers_average(&self) -> bool {
        if self.average_gene_scores.is_empty() {
            return false;
        }
        self.margin_over_average()
            .is_none_or(|(mean, se)| mean <= se)
    }

    /// The best single κ's per-gene inner Spearman minus the average's: (mean, standard
    /// error of the mean) over the inner genes; `None` without an average or with fewer than
    /// two inner genes.
    pub fn margin_over_average(&self) -> Option<(f64, f64)> {
        let best = self
            .scores
            .iter()
            .position(|&(k, _)| k == self.kappa)
            .and_then(|i| self.gene_scores.get(i))?;
        let d: Vec<f64> = best
            .iter()
            .zip(&self.average_gene_scores)
            .map(|(b, a)| b - a)
            .collect();
        let n = d.len();
        if n < 2 {
            return None;
        }
        let mean = d.iter().sum::<f64>() / n as f64;
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some((mean, (var / n as f64).sqrt()))
    }

    /// What a fold that may also choose the average uses: "avg" or the κ.
    pub fn label_with_average(&self) -> String {
        if self.prefers_average() {
            "avg".to_string()
        } else {
            self.kappa.to_string()
        }
    }
}

/// Inner validation splits [`choose_kappa`] uses: the training genes are cut into 5 seeded
/// groups of 20 % (the outer protocol's fraction) and this many of them are hidden in turn —
/// all 5, so every training gene is scored once (with 13 training genes per mSMS fold, 3 splits
/// scored only ~7 genes and the choice flipped with float-level differences between runs).
pub const KAPPA_INNER_SPLITS: usize = 5;

/// Chooses κ automatically (the paper leaves this open) by an inner held-out-gene validation
/// that uses only the genes the model is given; [`choose_kappa_with`] with
/// [`KAPPA_INNER_SPLITS`] splits.
pub fn choose_kappa(
    config: &ModelConfig,
    data: &[&CsrMatrix],
    candidates: &[f64],
    train_config: &TrainConfig,
    device: &Device,
) -> Result<KappaChoice, PipelineError> {
    choose_kappa_with(
        config,
        data,
        candidates,
        train_config,
        KAPPA_INNER_SPLITS,
        device,
    )
}

/// Chooses κ by inner cross-validation on the genes the model is given. The genes of every
/// spatial (observed-library) dataset with at least 3 genes are shuffled (seeded) and cut into
/// 5 groups of ~20 %; for each of the first `splits` groups (1–5; 5 hides every gene once) and
/// each candidate κ a model is trained with that group hidden, the hidden genes are imputed as
/// expected counts and scored by Spearman against their counts. A candidate's score is the
/// median over all hidden genes of all splits; the highest wins (ties: the earlier candidate).
/// With two or more candidates the average of their imputations (expected counts, equally
/// weighted) is scored the same way ([`KappaChoice::average_score`]; it trains nothing more);
/// the per-gene scores are kept for [`KappaChoice::prefers_average`].
/// Callers evaluating held-out genes must pass data that already excludes them, so the choice
/// never sees them. Costs `splits × candidates.len()` trainings.
pub fn choose_kappa_with(
    config: &ModelConfig,
    data: &[&CsrMatrix],
    candidates: &[f64],
    train_config: &TrainConfig,
    splits: usize,
    device: &Device,
) -> Result<KappaChoice, PipelineError> {
    use gimvi_metrics::correlation::median;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    const GROUPS: usize = 5;
    if candidates.is_empty() {
        return Err(PipelineError::Input("no κ candidate given".into()));
    }
    if !(1..=GROUPS).contains(&splits) {
        return Err(PipelineError::Input(format!(
            "κ inner validation needs 1 to {GROUPS} splits, got {splits}"
        )));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(train_config.seed ^ 0x00ca_ffe0);
    // Per eligible dataset: its index and its genes' columns cut into GROUPS groups.
    let mut groups: Vec<(usize, Vec<Vec<usize>>)> = Vec::new();
    for (m, spec) in config.datasets.iter().enumerate() {
        if !matches!(spec.library, LibraryModel::Observed) || spec.gene_index.len() < 3 {
            continue;
        }
        let mut cols: Vec<usize> = (0..spec.gene_index.len()).collect();
        cols.shuffle(&mut rng);
        let n = cols.len();
        // Contiguous near-equal groups; with fewer genes than groups the later ones are empty.
        let cut: Vec<Vec<usize>> = (0..GROUPS)
            .map(|k| cols[k * n / GROUPS..(k + 1) * n / GROUPS].to_vec())
            .collect();
        groups.push((m, cut));
    }
    if groups.is_empty() {
        return Err(PipelineError::Input(
            "automatic κ needs a spatial dataset with at least 3 genes".into(),
        ));
    }
    let mut rhos: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
    // The same for the average of the candidates' imputations.
    let mut average: Vec<f64> = Vec::new();
    let mut inner_genes = 0;
    for split in 0..splits {
        let mut inner = config.clone();
        // The datasets that lose genes in this split, reduced to the kept ones; the others are
        // used as given.
        let mut reduced: Vec<Option<CsrMatrix>> = vec![None; data.len()];
        // (dataset, model gene indices hidden, their counts)
        let mut hidden: Vec<(usize, Vec<usize>, Array2<f64>)> = Vec::new();
        for (m, cut) in &groups {
            let mut hide = cut[split].clone();
            if hide.is_empty() {
                continue;
            }
            hide.sort_unstable();
            let spec = &config.datasets[*m];
            let keep: Vec<usize> = (0..spec.gene_index.len())
                .filter(|c| !hide.contains(c))
                .collect();
            let s = &mut inner.datasets[*m];
            s.genes = keep.iter().map(|&c| spec.genes[c].clone()).collect();
            s.gene_index = keep.iter().map(|&c| spec.gene_index[c]).collect();
            hidden.push((
                *m,
                hide.iter().map(|&c| spec.gene_index[c]).collect(),
                data[*m].select_cols(&hide).to_dense_f64(),
            ));
            reduced[*m] = Some(data[*m].select_cols(&keep));
        }
        if hidden.is_empty() {
            continue;
        }
        inner_genes += hidden.iter().map(|h| h.1.len()).sum::<usize>();
        let refs: Vec<&CsrMatrix> = data
            .iter()
            .zip(&reduced)
            .map(|(&given, r)| r.as_ref().unwrap_or(given))
            .collect();
        // Per hidden dataset: the sum of the candidates' imputations, for the average.
        let mut sums: Vec<Option<Array2<f64>>> = vec![None; hidden.len()];
        for (c, &kappa) in candidates.iter().enumerate() {
            let cfg = TrainConfig {
                kappa,
                progress: false,
                // Each split trains from its own initialisation.
                seed: train_config.seed.wrapping_add(1000 * split as u64),
                ..train_config.clone()
            };
            let result = fit(inner.clone(), &refs, &cfg, device, |_| {})?;
            for (h, (m, genes, truth)) in hidden.iter().enumerate() {
                let imputed = result.model.impute(
                    *m,
                    refs[*m],
                    genes,
                    ImputeOptions {
                        normalized: false,
                        ..ImputeOptions::default()
                    },
                )?;
                let prediction = imputed.mean.mapv(f64::from);
                score_columns(&prediction, truth, &mut rhos[c])?;
                sums[h] = Some(match sums[h].take() {
                    None => prediction,
                    Some(sum) => sum + prediction,
                });
            }
        }
        if candidates.len() > 1 {
            for (sum, (_, _, truth)) in sums.into_iter().zip(&hidden) {
                if let Some(sum) = sum {
                    score_columns(&(sum / candidates.len() as f64), truth, &mut average)?;
                }
            }
        }
    }
    let scores: Vec<(f64, f64)> = candidates
        .iter()
        .zip(&rhos)
        .map(|(&k, r)| (k, median(r).unwrap_or(0.0)))
        .collect();
    let best = scores
        .iter()
        .fold(scores[0], |b, &s| if s.1 > b.1 { s } else { b });
    Ok(KappaChoice {
        kappa: best.0,
        scores,
        average_score: (candidates.len() > 1).then(|| median(&average).unwrap_or(0.0)),
        inner_genes,
        gene_scores: rhos,
        average_gene_scores: average,
    })
}

/// Spearman correlation of every column of `prediction` (cells × hidden genes) with the same
/// column of `truth` (0 where a column is constant), appended to `out`.
fn score_columns(
    prediction: &Array2<f64>,
    truth: &Array2<f64>,
    out: &mut Vec<f64>,
) -> Result<(), PipelineError> {
    use gimvi_metrics::correlation::spearman;
    for (p, t) in prediction.columns().into_iter().zip(truth.columns()) {
        let (p, t): (Vec<f64>, Vec<f64>) = (p.to_vec(), t.to_vec());
        out.push(
            spearman(&p, &t)
                .map_err(|e| PipelineError::Input(e.to_string()))?
                .unwrap_or(0.0),
        );
    }
    Ok(())
}

/// The paper's baseline (Lopez et al. 2019, Table 1, "scVI"): one joint model fitted on the
/// genes both datasets measure (here: the fold's training genes), without the adversary
/// (κ = 0), then k-NN regression in its latent space — each spatial cell averages the held-out
/// expression (as a fraction of the training-gene library) of its k nearest scRNA-seq cells
/// (k = 5 % of them), scaled by its own library.
#[derive(Debug, Clone)]
pub struct ScviKnnImputer {
    /// Training settings (κ is forced to 0).
    pub train: TrainConfig,
    /// Latent dimension.
    pub n_latent: usize,
    /// scRNA-seq likelihood.
    pub sc_likelihood: CountLikelihood,
    /// Spatial likelihood.
    pub spatial_likelihood: CountLikelihood,
    /// Device to train on (autodiff).
    pub device: Device,
    /// Record both datasets' latents in the first fold (see [`GimviImputer::record_latent`]).
    pub record_latent: bool,
    /// The recorded latents.
    pub latents: Vec<FoldLatent>,
}

impl Imputer for ScviKnnImputer {
    fn name(&self) -> String {
        "scVI + k-NN (shared genes)".to_string()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        use gimvi_metrics::regression::{default_k, knn_regress};
        let train_names: Vec<String> = task
            .train_genes
            .iter()
            .map(|&g| task.gene_names[g].clone())
            .collect();
        let sc_train = to_csr(task.sc_train().view())?;
        let sp_train = to_csr(task.spatial_train)?;
        let (log_mean, log_var) = log_library_moments(&sc_train);
        let n = train_names.len();
        let spec = |name: &str, likelihood, library| DatasetSpec {
            name: name.into(),
            genes: train_names.clone(),
            gene_index: (0..n).collect(),
            likelihood,
            library,
        };
        let config = ModelConfig::new(
            train_names.clone(),
            vec![
                spec(
                    "scRNA-seq",
                    self.sc_likelihood,
                    LibraryModel::Latent { log_mean, log_var },
                ),
                spec("spatial", self.spatial_likelihood, LibraryModel::Observed),
            ],
        )
        .with_latent(self.n_latent);
        let cfg = TrainConfig {
            kappa: 0.0,
            seed: self.train.seed.wrapping_add(task.fold as u64),
            ..self.train.clone()
        };
        let result = fit(config, &[&sc_train, &sp_train], &cfg, &self.device, |_| {})?;
        let z_sc = result.model.latent(0, &sc_train)?;
        let z_sp = result.model.latent(1, &sp_train)?;
        if self.record_latent && self.latents.is_empty() {
            self.latents.push(FoldLatent {
                fold: task.fold,
                sc: z_sc.clone(),
                sc_cells: task.sc_cells.to_vec(),
                spatial: z_sp.clone(),
                spatial_cells: task.spatial_cells.to_vec(),
            });
        }
        let lib = sc_train.row_sums();
        let mut target = task.sc_test();
        for (mut row, &l) in target.outer_iter_mut().zip(&lib) {
            row.mapv_inplace(|v| if l > 0.0 { v / l } else { 0.0 });
        }
        let k = default_k(z_sc.nrows());
        let mut pred = knn_regress(z_sc.view(), target.view(), z_sp.view(), k)?;
        for (mut row, l) in pred.outer_iter_mut().zip(task.spatial_library()) {
            row.mapv_inplace(|v| v * l);
        }
        Ok(pred)
    }
}
