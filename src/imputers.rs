//! gimVI and the paper's scVI + k-NN baseline as imputers of the held-out-gene protocol
//! (`gimvi_metrics::protocol`), with fits shared between the evaluation's rows.

use burn::tensor::Device;
use gimvi_data::prepare::log_library_moments;
use gimvi_data::CsrMatrix;
use gimvi_likelihoods::CountLikelihood;
use gimvi_metrics::protocol::{FoldTask, Imputer, ImputerError};
use gimvi_model::{DatasetSpec, ImputeOptions, LibraryModel, ModelConfig};
use gimvi_trainer::TrainConfig;

use crate::calibration::{calibrate_beside, calibration_train, IntervalCalibration};
use crate::error::Error;
use crate::kappa::{choose_kappa, KappaChoice, KAPPA_CANDIDATES};
use crate::prepare::{fit, pooled_moments, to_csr, ENSEMBLE_SEED_STRIDE};
use ndarray::Array2;

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
    /// The transcriptome protocol: the reference's genes outside the shared ones (names, and
    /// their counts for every scRNA-seq row of the evaluation, in its row order). The model's
    /// gene space is then the shared genes followed by these, so the held-out genes shape the
    /// latent space through the reference (gimVI's advantage over mapping methods). `None`:
    /// the paper's protocol (reference restricted to the shared genes).
    pub extra_reference: Option<std::sync::Arc<(Vec<String>, CsrMatrix)>>,
    /// Calibrate each fold's prediction intervals with this many extra trainings on the
    /// fold's training genes (nested: the held-out genes never take part; 0 = none). Needs
    /// `posterior_samples ≥ 2`; the calibration lands in [`FoldPosterior::calibration`].
    pub calibration_splits: usize,
    /// Epochs of each calibration training (`None`: 40 % of `train.epochs`, as
    /// [`crate::FitOptions::calibration_epochs`]).
    pub calibration_epochs: Option<usize>,
}

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
    /// Mean over the posterior samples, the fold's spatial cells × `genes`: tempered toward
    /// the cell's library where [`FoldPosterior::tempering`] says so, as `Gimvi::impute`
    /// returns it.
    pub mean: Array2<f64>,
    /// Variance over the posterior samples, the fold's spatial cells × `genes` (the model's,
    /// not tempered).
    pub variance: Array2<f64>,
    /// The interval calibration made on the fold's training genes (model dataset 1), when
    /// asked for.
    pub(crate) calibration: Option<IntervalCalibration>,
    /// Each gene's level, the mean of `mean`'s column (the calibrated interval is centred by
    /// the efficiency predicted from it).
    gene_levels: Vec<f64>,
}

impl FoldPosterior {
    /// The posterior of one fold, its genes' levels taken from `mean`.
    pub(crate) fn new(
        genes: Vec<usize>,
        cells: Vec<usize>,
        mean: Array2<f64>,
        variance: Array2<f64>,
        calibration: Option<IntervalCalibration>,
    ) -> Self {
        let gene_levels = crate::calibration::gene_levels(&mean);
        Self {
            genes,
            cells,
            mean,
            variance,
            calibration,
            gene_levels,
        }
    }

    /// The raw posterior prediction interval at `coverage` of row `row`, column `col` (the
    /// uncalibrated baseline of `docs/uncertainty.md`: normal quantiles of the log-scale
    /// posterior and Poisson spread).
    pub fn raw_interval(&self, row: usize, col: usize, coverage: f64) -> (f64, f64) {
        crate::calibration::raw_interval(self.mean[[row, col]], self.variance[[row, col]], coverage)
    }

    /// The exponent w with which this fold's point imputation was tempered toward the cell's
    /// library (chosen by its calibration; `None`: the model's imputation as it is).
    pub fn tempering(&self) -> Option<f64> {
        self.calibration.as_ref().and_then(|c| c.tempering(1))
    }

    /// Whether this fold's intervals are calibrated (its imputer was asked for calibration
    /// trainings and they gave a calibration).
    pub fn is_calibrated(&self) -> bool {
        self.calibration.is_some()
    }

    /// The prediction interval at `coverage` of row `row`, column `col` that the product
    /// gives: the calibrated one (the spatial dataset's calibration, every measurement
    /// counted) when the fold has a calibration, else [`FoldPosterior::raw_interval`].
    pub fn interval(&self, row: usize, col: usize, coverage: f64) -> (f64, f64) {
        self.interval_given(row, col, coverage, false)
    }

    /// [`FoldPosterior::interval`], or with `given_detection` the detection-conditional
    /// calibrated interval (`--given-detection`).
    pub(crate) fn interval_given(
        &self,
        row: usize,
        col: usize,
        coverage: f64,
        given_detection: bool,
    ) -> (f64, f64) {
        let (mu, var) = (self.mean[[row, col]], self.variance[[row, col]]);
        let level = self.gene_levels.get(col).copied().unwrap_or(mu);
        self.calibration
            .as_ref()
            .and_then(|cal| cal.interval(1, (mu, var), level, coverage, given_detection))
            .unwrap_or_else(|| crate::calibration::raw_interval(mu, var, coverage))
    }
}

impl GimviImputer {
    /// The fold's model and training settings (κ chosen here when `auto_kappa` is set) and
    /// the κ whose models the fold's imputation averages (one κ, or several).
    fn fold_setup(
        &mut self,
        task: &FoldTask<'_>,
        sc_counts: &CsrMatrix,
        sp_counts: &CsrMatrix,
    ) -> Result<(ModelConfig, TrainConfig, Vec<f64>), Error> {
        let mut genes = task.gene_names.to_vec();
        if let Some(extra) = &self.extra_reference {
            genes.extend(extra.0.iter().cloned());
        }
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
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.fits.lock().map_or(0, |f| f.len())
    }

    /// How many automatic-κ choices are stored.
    #[cfg(test)]
    pub fn choices(&self) -> usize {
        self.choices.lock().map_or(0, |c| c.len())
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

    /// Trains the fold's models (every κ × `members`) and returns the sum of their
    /// imputations and, with posterior samples, the sums of their posterior means and second
    /// moments (Σ mean, Σ (variance + mean²)).
    fn train_members(
        &mut self,
        task: &FoldTask<'_>,
        config: &ModelConfig,
        data: [&CsrMatrix; 2],
        train_config: &TrainConfig,
        kappas: &[f64],
        members: usize,
    ) -> Result<MemberImputation, ImputerError> {
        let mut prediction: Option<Array2<f64>> = None;
        let mut pooled: Option<(Array2<f64>, Array2<f64>)> = None;
        for (kappa, member) in kappas
            .iter()
            .flat_map(|&k| (0..members).map(move |m| (k, m)))
        {
            let (p, posterior) = self.impute_member(
                task,
                config,
                data,
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
        Ok((prediction.ok_or("no ensemble member trained")?, pooled))
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
        let sc_counts = match &self.extra_reference {
            None => to_csr(task.sc_counts.view())?,
            Some(extra) => hstack(
                &to_csr(task.sc_counts.view())?,
                &extra.1.select_rows(task.sc_cells),
            )?,
        };
        let sp_counts = to_csr(task.spatial_train.view())?;
        // One κ, or every κ of the average (each with its `members` models).
        let (config, train_config, kappas) = self.fold_setup(task, &sc_counts, &sp_counts)?;
        let members = self.ensemble.max(1);
        // The interval calibration (nested: only the fold's training genes are visible here)
        // needs the posterior; on the CPU its trainings run on threads beside the fold's own
        // models (each seeded on its own: the same result as one after the other).
        let splits = if self.posterior_samples >= 2 {
            self.calibration_splits
        } else {
            0
        };
        let device = self.device.clone();
        let calibration_train =
            calibration_train(&train_config, kappas[0], self.calibration_epochs);
        let train_models = |_: &dyn Fn(())| {
            self.train_members(
                task,
                &config,
                [&sc_counts, &sp_counts],
                &train_config,
                &kappas,
                members,
            )
        };
        let (trained, calibration) = calibrate_beside(
            &config,
            &[&sc_counts, &sp_counts],
            &calibration_train,
            splits,
            &device,
            train_models,
            |()| {},
        );
        let (prediction, pooled) = trained?;
        let n = (members * kappas.len()) as f64;
        let calibration = calibration.transpose()?.flatten();
        // The point imputation tempered toward the cell's library with the exponent the
        // calibration chose on the fold's training genes (crate::tempering), as
        // `Gimvi::impute` does.
        let tempering = calibration
            .as_ref()
            .and_then(|c| c.tempering(1))
            .map(|w| (w, crate::tempering::libraries(&sp_counts)));
        let mut prediction = prediction / n;
        if let Some((w, libs)) = &tempering {
            crate::tempering::temper_columns(&mut prediction, libs, *w, false);
        }
        if let Some((sum_mean, sum_second)) = pooled {
            let (mut mean, variance) = pooled_moments(sum_mean, &sum_second, n);
            if let Some((w, libs)) = &tempering {
                crate::tempering::temper_columns(&mut mean, libs, *w, false);
            }
            self.posterior.push(FoldPosterior::new(
                task.test_genes.to_vec(),
                task.spatial_cells.to_vec(),
                mean,
                variance,
                calibration,
            ));
        }
        Ok(prediction)
    }
}

/// The columns of `a` followed by those of `b` (same rows).
fn hstack(a: &CsrMatrix, b: &CsrMatrix) -> Result<CsrMatrix, gimvi_data::DataError> {
    let (mut indptr, mut indices, mut data) = (vec![0usize], Vec::new(), Vec::new());
    let offset = u32::try_from(a.n_cols()).unwrap_or(u32::MAX);
    for r in 0..a.n_rows() {
        for (c, v) in a.row(r) {
            indices.push(c as u32);
            data.push(v);
        }
        for (c, v) in b.row(r) {
            indices.push(offset + c as u32);
            data.push(v);
        }
        indptr.push(indices.len());
    }
    CsrMatrix::from_parts(a.n_rows(), a.n_cols() + b.n_cols(), indptr, indices, data)
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
