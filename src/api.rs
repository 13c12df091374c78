//! The front door: [`Gimvi`], a gimVI model of one scRNA-seq reference and one or more spatial
//! datasets — set up, train, latent space, imputation with uncertainty, save and load.

use std::path::Path;

use gimvi_data::h5ad::{write_h5ad, H5adOutput};
use gimvi_data::prepare::{validate_counts, CountPolicy};
use gimvi_data::{Column, Dataset};
use gimvi_likelihoods::CountLikelihood;
use gimvi_model::{LibraryModel, ModelConfig};
use gimvi_trainer::{EpochLog, TrainConfig};
use ndarray::Array2;

use crate::backend::BackendKind;
use crate::calibration::{calibrate_beside, calibration_train, raw_interval, IntervalCalibration};
use crate::ensemble::{FitObserver, ModelEnsemble};
use crate::error::{Error, Result};
use crate::kappa::{choose_kappa, KAPPA_CANDIDATES, KAPPA_INNER_SPLITS};
use crate::prepare::{prepare_model, ModelInputs, PreparedDataset};
use crate::Device;

/// Sets up a [`Gimvi`] model: the scRNA-seq reference (whose genes are the ones that can be
/// imputed), the spatial datasets with their likelihoods, and the architecture. Made by
/// [`Gimvi::builder`].
#[derive(Debug, Clone)]
pub struct GimviBuilder<'a> {
    reference: &'a Dataset,
    reference_likelihood: CountLikelihood,
    spatial: Vec<(&'a Dataset, CountLikelihood)>,
    n_latent: usize,
    n_hidden: Option<usize>,
    dropout: Option<f64>,
    decoder_layers: Vec<usize>,
    conditioned_decoder: bool,
    round_counts: bool,
    backend: BackendKind,
}

impl<'a> GimviBuilder<'a> {
    /// Adds a spatial dataset and its count likelihood: [`CountLikelihood::Poisson`] for
    /// smFISH / osmFISH / MERFISH panels, [`CountLikelihood::Nb`] for starMAP and other
    /// sequencing-like assays.
    pub fn spatial(mut self, data: &'a Dataset, likelihood: CountLikelihood) -> Self {
        self.spatial.push((data, likelihood));
        self
    }

    /// The reference's likelihood (default ZINB, as scvi-tools).
    pub fn reference_likelihood(mut self, likelihood: CountLikelihood) -> Self {
        self.reference_likelihood = likelihood;
        self
    }

    /// The latent dimension d (default 10; the paper's evaluation used 8).
    pub fn latent(mut self, d: usize) -> Self {
        self.n_latent = d;
        self
    }

    /// Hidden units of the encoder layers (default 64).
    pub fn hidden(mut self, units: usize) -> Self {
        self.n_hidden = Some(units);
        self
    }

    /// Dropout rate of the encoders (default 0.2).
    pub fn dropout(mut self, rate: f64) -> Self {
        self.dropout = Some(rate);
        self
    }

    /// Hidden layers of the decoder before its softmax, by width (default none: a decoder
    /// linear in z, as scvi-tools).
    pub fn decoder_layers(mut self, widths: Vec<usize>) -> Self {
        self.decoder_layers = widths;
        self
    }

    /// Feed the dataset label to the decoder, f_η(z, s) as in the paper (default false, as
    /// scvi-tools).
    pub fn conditioned_decoder(mut self, on: bool) -> Self {
        self.conditioned_decoder = on;
        self
    }

    /// Round non-integer counts instead of refusing them (default false).
    pub fn round_counts(mut self, on: bool) -> Self {
        self.round_counts = on;
        self
    }

    /// The compute backend (default [`BackendKind::default`]: flex, else ndarray).
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// Matches every dataset's genes to the reference (case-insensitively), drops the genes
    /// outside it and the cells left without counts, checks the counts (finite, ≥ 0, integer
    /// unless rounding) and builds the untrained model. Errors name the dataset and the cause
    /// (no spatial dataset, no shared gene, a bad count, a bad setting).
    pub fn build(self) -> Result<Gimvi> {
        if self.spatial.is_empty() {
            return Err(Error::Input(
                "a gimVI model needs at least one spatial dataset (GimviBuilder::spatial)".into(),
            ));
        }
        let likelihoods: Vec<CountLikelihood> = self.spatial.iter().map(|s| s.1).collect();
        let (mut config, prepared) = prepare_model(&ModelInputs {
            sc: vec![self.reference],
            spatial: self.spatial.iter().map(|s| s.0).collect(),
            sc_likelihood: self.reference_likelihood,
            spatial_likelihood: likelihoods[0],
            n_latent: self.n_latent,
            round_counts: self.round_counts,
        })?;
        for (spec, likelihood) in config.datasets[1..].iter_mut().zip(likelihoods) {
            spec.likelihood = likelihood;
        }
        if let Some(h) = self.n_hidden {
            config.n_hidden = h;
        }
        if let Some(p) = self.dropout {
            config.dropout_encoder = p;
        }
        config.decoder_hidden = self.decoder_layers;
        config.condition_decoder = self.conditioned_decoder;
        config.validate()?;
        let device = self.backend.open()?.autodiff();
        Ok(Gimvi {
            config,
            device,
            prepared,
            ensemble: None,
        })
    }
}

/// How [`Gimvi::train_with`] chooses the adversarial weight κ of its models.
#[derive(Debug, Clone, PartialEq)]
pub enum Kappa {
    /// The κ of the [`TrainConfig`].
    Given,
    /// One group of models at each of these κ, all averaged: no κ has to be chosen.
    Average(Vec<f64>),
    /// Chosen by an inner validation that hides 20 % of the spatial genes in turn
    /// (5 splits × the candidates, extra trainings): the best candidate, or with
    /// `keep_average` the average over all candidates unless one beats it by more than one
    /// standard error.
    Auto {
        /// The κ tried.
        candidates: Vec<f64>,
        /// Allow the average over the candidates as the outcome.
        keep_average: bool,
    },
}

/// What [`Gimvi::train_with`] trains: how κ is chosen and how many models per κ (each from
/// its own seed; their imputations are averaged and their spread adds to the variance).
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// How κ is chosen.
    pub kappa: Kappa,
    /// Models per κ (at least 1).
    pub models_per_kappa: usize,
    /// Extra trainings that calibrate the prediction intervals of [`Gimvi::impute`] (0–5,
    /// default 5; 0: no calibration, intervals are the raw
    /// posterior's). Each hides a different ~20 % of the measured spatial genes, imputes
    /// them and tabulates how far their counts fall from the imputation (split conformal,
    /// `docs/uncertainty.md`); the trainings use the κ the models use (the chosen one with an
    /// automatic κ, the first one of an average) and train the adversarial classifier on the
    /// encoders' first pass (cheaper; the models keep their `classifier_second_pass`).
    pub calibration_splits: usize,
    /// Epochs of each calibration training; `None` (the default): 40 % of the model's epochs
    /// (at least 1), which keeps a default fit under twice one model's time on 2 cores
    /// (`docs/performance.md`) and was checked for coverage on every real pair
    /// (`docs/results.md`, Prediction intervals).
    pub calibration_epochs: Option<usize>,
}

/// What a model training reports while it runs beside the calibration (turned into
/// [`Progress`] on the caller's thread).
enum FitEvent {
    /// Model i of n starts, with its κ and seed.
    Model(usize, usize, f64, u64),
    /// An epoch ended.
    Epoch(EpochLog),
}

/// Calibration trainings of a default fit ([`FitOptions::calibration_splits`]).
pub(crate) const DEFAULT_CALIBRATION_SPLITS: usize = 5;

impl Default for FitOptions {
    /// One model at the [`TrainConfig`]'s κ.
    fn default() -> Self {
        Self {
            kappa: Kappa::Given,
            models_per_kappa: 1,
            calibration_splits: DEFAULT_CALIBRATION_SPLITS,
            calibration_epochs: None,
        }
    }
}

impl FitOptions {
    /// The κ choice of the examples' best row ("κ*/avg"): automatic among 0, 1 and 5, the
    /// average over them unless one is clearly better.
    pub fn auto_kappa() -> Self {
        Self {
            kappa: Kappa::Auto {
                candidates: KAPPA_CANDIDATES.to_vec(),
                keep_average: true,
            },
            ..Self::default()
        }
    }

    fn check(&self) -> Result<()> {
        if self.calibration_splits > crate::inner::INNER_GROUPS {
            return Err(Error::Input(format!(
                "the interval calibration takes 0 to {} extra trainings, got {}",
                crate::inner::INNER_GROUPS,
                self.calibration_splits
            )));
        }
        if self.calibration_epochs == Some(0) {
            return Err(Error::Input(
                "a calibration training needs at least one epoch (calibration_epochs = 0)".into(),
            ));
        }
        if self.models_per_kappa == 0 {
            return Err(Error::Input(
                "at least one model per κ is needed (models_per_kappa = 0)".into(),
            ));
        }
        let listed = match &self.kappa {
            Kappa::Given => &[][..],
            Kappa::Average(k) | Kappa::Auto { candidates: k, .. } => {
                if k.is_empty() {
                    return Err(Error::Input("an empty list of κ was given".into()));
                }
                k
            }
        };
        if let Some(bad) = listed.iter().find(|k| !(k.is_finite() && **k >= 0.0)) {
            return Err(Error::Input(format!(
                "κ must be a finite number ≥ 0, got {bad}"
            )));
        }
        Ok(())
    }
}

/// What [`Gimvi::train_with`] reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A stage starts (e.g. the automatic κ's inner validation), or its outcome.
    Note(&'a str),
    /// Model `index` (from 0) of `count` starts training at κ from `seed`.
    Model {
        /// Which model.
        index: usize,
        /// How many.
        count: usize,
        /// Its κ.
        kappa: f64,
        /// Its seed.
        seed: u64,
    },
    /// The current model finished an epoch of `epochs`.
    Epoch {
        /// The epoch's numbers.
        log: &'a EpochLog,
        /// Epochs per model.
        epochs: usize,
    },
}

/// Which reference genes [`Gimvi::impute`] predicts.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Genes {
    /// Every reference gene the spatial file does not measure (default).
    #[default]
    Unmeasured,
    /// Every reference gene.
    All,
    /// These genes (matched case-insensitively).
    List(Vec<String>),
}

/// Settings of [`Gimvi::impute`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImputeOptions {
    /// The genes to impute.
    pub genes: Genes,
    /// Posterior samples of z for the uncertainty (default 50, as the paper; 0 or 1: the
    /// posterior mean only, no variance).
    pub samples: usize,
    /// Normalised expression (fractions of the cell's measured panel, scvi-tools'
    /// `normalized=True`) instead of expected counts (default false: counts). A tempered
    /// imputation ([`Imputed::tempering`]) is tempered in both: normalised values are the
    /// tempered counts divided by the cell's library.
    pub normalized: bool,
    /// Seed of the posterior samples.
    pub seed: u64,
    /// Coverage of the prediction interval returned around every imputed count (default
    /// 0.9; `None`: no interval). Calibrated when the model was trained with
    /// [`FitOptions::calibration_splits`] > 0, otherwise the raw posterior interval. Needs
    /// expected counts (not `normalized`) and at least 2 `samples`. A calibrated interval is
    /// centred by the spatial assay's efficiency for the gene, predicted from the gene's mean
    /// imputed count over the cells of this call (`docs/uncertainty.md`): impute a whole
    /// section at once, as the calibration did, rather than a handful of cells.
    pub coverage: Option<f64>,
    /// Calibrate the interval for a measurement **given that the gene is detected** (a
    /// nonzero count) instead of for any measurement (default false). Many spatial
    /// measurements are zeros, which an interval starting at 0 covers; this variant answers
    /// "if the gene is seen in this cell, how many counts?" and leaves the zeros out of the
    /// promise. Falls back to the raw posterior interval without a calibration.
    pub given_detection: bool,
}

impl Default for ImputeOptions {
    fn default() -> Self {
        Self {
            genes: Genes::Unmeasured,
            samples: 50,
            normalized: false,
            seed: 0,
            coverage: Some(crate::calibration::DEFAULT_COVERAGE),
            given_detection: false,
        }
    }
}

/// The prediction intervals of an [`Imputed`]: with probability `coverage`, a measurement of
/// the gene in the cell falls between `lower` and `upper` (inclusive).
///
/// Measurements are whole counts, so at a low coverage, or where nearly every measurement
/// like this one is 0, an interval may hold no whole count (e.g. `[0.3, 0.3]`): the
/// calibration counts such cells as not covered, which is what makes the promised share true.
#[derive(Debug, Clone)]
pub struct Intervals {
    /// Lower ends, cells × genes.
    pub lower: Array2<f32>,
    /// Upper ends, cells × genes (infinite where the calibration has too few points for the
    /// coverage asked).
    pub upper: Array2<f32>,
    /// The coverage asked for.
    pub coverage: f64,
    /// Whether the coverage is promised given detection (nonzero measurements only).
    pub given_detection: bool,
    /// Whether they are calibrated (`false`: the raw posterior interval, which tends to be
    /// too narrow).
    pub calibrated: bool,
    /// How they were made.
    pub method: String,
}

/// Imputed expression of spatial cells: cells × genes, with its uncertainty.
#[derive(Debug, Clone)]
pub struct Imputed {
    /// Cell names (those of the file, in its order).
    pub cells: Vec<String>,
    /// The imputed genes (reference spelling).
    pub genes: Vec<String>,
    /// Posterior mean, cells × genes (tempered toward the cell's library where
    /// [`Imputed::tempering`] says so).
    pub mean: Array2<f32>,
    /// Posterior variance (over z samples, and the spread between models), cells × genes;
    /// `None` without posterior samples.
    pub variance: Option<Array2<f32>>,
    /// Prediction intervals at the coverage asked for (`None` without posterior samples,
    /// for normalised values, or when none was asked for).
    pub intervals: Option<Intervals>,
    /// The exponent w with which the point imputation was tempered toward the cell's library,
    /// μ̃ = k·ℓ′·(μ/ℓ′)^w with k keeping each gene's total over the cells imputed together
    /// (`docs/uncertainty.md`): chosen by the interval calibration on measured genes hidden
    /// from its trainings; `None` where the model's imputation is returned as it is (w = 1,
    /// or no calibration). The variance stays the model's posterior variance.
    pub tempering: Option<f64>,
    /// The cells' latent coordinates (posterior means of z; the first model's).
    pub latent: Array2<f32>,
    /// Whether the values are normalised expression rather than expected counts.
    pub normalized: bool,
    /// How many models were averaged.
    pub models: usize,
    /// The cells' annotations and coordinates, copied from the input for the output file.
    obs: Vec<(String, Column)>,
    spatial: Option<Vec<Vec<f64>>>,
}

impl Imputed {
    /// Writes an `.h5ad` file that scanpy opens: X and `layers/imputed` = the imputed means,
    /// `layers/variance`, `layers/imputed_lower` and `layers/imputed_upper` = the prediction
    /// interval (its coverage and method in `uns`; `uns/gimvi_tempering` the exponent w of
    /// a tempered imputation, [`Imputed::tempering`]), `obsm/X_gimvi` = the latent space,
    /// `obsm/spatial` and the input's cell annotations; the file is written to a temporary
    /// name and renamed when complete.
    pub fn write_h5ad(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut obsm = vec![(
            "X_gimvi".to_string(),
            self.latent.iter().copied().collect(),
            self.latent.ncols(),
        )];
        if let Some(sp) = &self.spatial {
            let d = sp.first().map_or(0, Vec::len);
            if d > 0 {
                obsm.push((
                    "spatial".into(),
                    sp.iter().flatten().map(|&v| v as f32).collect(),
                    d,
                ));
            }
        }
        let values = |m: &Array2<f32>| m.iter().copied().collect::<Vec<f32>>();
        let mut layers = vec![("imputed".to_string(), values(&self.mean))];
        if let Some(v) = &self.variance {
            layers.push(("variance".to_string(), values(v)));
        }
        let mut uns = vec![
            ("gimvi_version".into(), env!("CARGO_PKG_VERSION").into()),
            ("gimvi_models".into(), self.models.to_string()),
            (
                "gimvi_values".into(),
                if self.normalized {
                    "normalized expression".into()
                } else {
                    "expected counts".into()
                },
            ),
        ];
        if let Some(w) = self.tempering {
            uns.push(("gimvi_tempering".into(), w.to_string()));
        }
        if let Some(iv) = &self.intervals {
            layers.push(("imputed_lower".to_string(), values(&iv.lower)));
            layers.push(("imputed_upper".to_string(), values(&iv.upper)));
            uns.push(("gimvi_interval_coverage".into(), iv.coverage.to_string()));
            uns.push((
                "gimvi_interval_calibrated".into(),
                iv.calibrated.to_string(),
            ));
            uns.push((
                "gimvi_interval_given_detection".into(),
                iv.given_detection.to_string(),
            ));
            uns.push(("gimvi_interval_method".into(), iv.method.clone()));
        }
        let out = H5adOutput {
            obs_names: self.cells.clone(),
            var_names: self.genes.clone(),
            x: self.mean.iter().copied().collect(),
            layers,
            obsm,
            obs: self.obs.clone(),
            uns,
        };
        Ok(write_h5ad(path, &out)?)
    }

    /// Writes the means as CSV (cells as rows, genes as columns) and, with variances and
    /// intervals, files beside it (`NAME.variance.csv`, `NAME.lower.csv`, `NAME.upper.csv`);
    /// returns the paths written.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<Vec<std::path::PathBuf>> {
        let path = path.as_ref();
        let values = |m: &Array2<f32>| m.iter().copied().collect::<Vec<f32>>();
        gimvi_data::delimited::write_csv(path, &self.cells, &self.genes, &values(&self.mean))?;
        let mut written = vec![path.to_path_buf()];
        if let Some(v) = &self.variance {
            let var_path = path.with_extension("variance.csv");
            gimvi_data::delimited::write_csv(&var_path, &self.cells, &self.genes, &values(v))?;
            written.push(var_path);
        }
        if let Some(iv) = &self.intervals {
            for (name, m) in [("lower", &iv.lower), ("upper", &iv.upper)] {
                let p = path.with_extension(format!("{name}.csv"));
                gimvi_data::delimited::write_csv(&p, &self.cells, &self.genes, &values(m))?;
                written.push(p);
            }
        }
        Ok(written)
    }
}

/// One dataset of a [`Gimvi`] model as training saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    /// Its name (the file it came from).
    pub name: String,
    /// The genes the model uses, in the reference's order.
    pub genes: Vec<String>,
    /// Its likelihood.
    pub likelihood: CountLikelihood,
    /// Cells used (`None` for a loaded model).
    pub cells: Option<usize>,
    /// Cells dropped for having no counts on the genes used.
    pub dropped_cells: usize,
    /// Values rounded (with rounding on).
    pub rounded: usize,
    /// Genes of the file the model does not use (not in the reference).
    pub unused_genes: usize,
}

/// A gimVI model (Lopez et al. 2019) of one scRNA-seq reference and one or more spatial
/// datasets: the front door of this crate.
///
/// ```
/// # fn main() -> Result<(), gimvi::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let (sc_path, sp_path) = gimvi::doc_example_files(dir.path())?;
/// # let out = dir.path().join("imputed.h5ad");
/// use gimvi::{CountLikelihood, Gimvi, ImputeOptions, TrainConfig};
///
/// let sc = gimvi::read(&sc_path)?; // scRNA-seq reference (.h5ad, .loom, 10x, CSV)
/// let spatial = gimvi::read(&sp_path)?; // spatial panel
/// let mut model = Gimvi::builder(&sc)
///     .spatial(&spatial, CountLikelihood::Poisson)
///     .build()?;
/// model.train(&TrainConfig { epochs: 5, ..TrainConfig::default() })?;
/// let imputed = model.impute(&spatial, &ImputeOptions::default())?; // unmeasured genes
/// imputed.write_h5ad(&out)?; // X = means, layers/variance, obsm/X_gimvi
/// # assert_eq!(imputed.mean.nrows(), spatial.n_cells());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Gimvi {
    config: ModelConfig,
    device: Device,
    /// The training data (empty for a loaded model).
    prepared: Vec<PreparedDataset>,
    ensemble: Option<ModelEnsemble>,
}

impl Gimvi {
    /// Starts setting up a model on the scRNA-seq `reference` (the genes that can be imputed).
    pub fn builder(reference: &Dataset) -> GimviBuilder<'_> {
        GimviBuilder {
            reference,
            reference_likelihood: CountLikelihood::Zinb,
            spatial: Vec::new(),
            n_latent: 10,
            n_hidden: None,
            dropout: None,
            decoder_layers: Vec::new(),
            conditioned_decoder: false,
            round_counts: false,
            backend: BackendKind::default(),
        }
    }

    /// Trains the model with `config` (one model at its κ; see [`Gimvi::train_with`] for
    /// several models and the automatic κ). Training again replaces the earlier models.
    pub fn train(&mut self, config: &TrainConfig) -> Result<()> {
        self.train_with(config, &FitOptions::default(), |_| {})
    }

    /// Trains the models `options` asks for with `config`, reporting through `progress` (the
    /// `gimvi` tool turns it into a progress bar). A diverging training stops with
    /// [`Error::Train`] naming the epoch and the term.
    pub fn train_with(
        &mut self,
        config: &TrainConfig,
        options: &FitOptions,
        mut progress: impl FnMut(Progress<'_>),
    ) -> Result<()> {
        config.validate()?;
        options.check()?;
        if self.prepared.is_empty() {
            return Err(Error::Input(
                "this model was loaded from disk without its training data; build a new one \
                 with Gimvi::builder to train"
                    .into(),
            ));
        }
        let counts: Vec<&gimvi_data::CsrMatrix> =
            self.prepared.iter().map(|p| &p.data.counts).collect();
        let mut train = config.clone();
        let kappas =
            match &options.kappa {
                Kappa::Given => vec![config.kappa],
                Kappa::Average(k) => k.clone(),
                Kappa::Auto {
                    candidates,
                    keep_average,
                } => {
                    let listed: Vec<String> = candidates.iter().map(f64::to_string).collect();
                    progress(Progress::Note(&format!(
                    "choosing κ among {}{}: {KAPPA_INNER_SPLITS} inner splits, each hiding 20 % \
                     of the spatial genes",
                    listed.join(", "),
                    if *keep_average { " and their average" } else { "" }
                )));
                    let choice =
                        choose_kappa(&self.config, &counts, candidates, config, &self.device)?;
                    train.kappa = choice.kappa;
                    if *keep_average && choice.prefers_average() {
                        progress(Progress::Note(&format!(
                            "κ = {} does not clearly beat the average: the models of every κ are \
                         kept and averaged",
                            choice.kappa
                        )));
                        candidates.clone()
                    } else {
                        progress(Progress::Note(&format!("κ = {} chosen", choice.kappa)));
                        vec![choice.kappa]
                    }
                }
            };
        let epochs = config.epochs;
        let progress = std::cell::RefCell::new(progress);
        let splits = options.calibration_splits;
        let calibration_train = calibration_train(&train, kappas[0], options.calibration_epochs);
        // On the CPU the calibration trainings run on threads beside the model's own training
        // (each seeded on its own: the same result as one after the other).
        let beside = splits > 0 && crate::backend::is_cpu(&self.device);
        if splits > 0 {
            (progress.borrow_mut())(Progress::Note(&format!(
                "calibrating the prediction intervals: {splits} extra training(s) of {} epochs, \
                 each hiding 20 % of the spatial genes{}",
                calibration_train.epochs,
                if beside {
                    ", on threads beside the model's training"
                } else {
                    ""
                }
            )));
        }
        // The training reports through events (it runs on a thread of its own beside the
        // calibration; `progress` stays on this thread).
        let fit_models = |emit: &dyn Fn(FitEvent)| {
            ModelEnsemble::fit(
                &self.config,
                &counts,
                &train,
                &kappas,
                options.models_per_kappa,
                &self.device,
                &mut FitObserver {
                    on_model: &mut |index, count, kappa, seed| {
                        emit(FitEvent::Model(index, count, kappa, seed))
                    },
                    on_epoch: &mut |log| emit(FitEvent::Epoch(log.clone())),
                },
            )
        };
        let (ensemble, calibration) = calibrate_beside(
            &self.config,
            &counts,
            &calibration_train,
            splits,
            &self.device,
            fit_models,
            |event| match event {
                FitEvent::Model(index, count, kappa, seed) => {
                    (progress.borrow_mut())(Progress::Model {
                        index,
                        count,
                        kappa,
                        seed,
                    })
                }
                FitEvent::Epoch(log) => {
                    (progress.borrow_mut())(Progress::Epoch { log: &log, epochs })
                }
            },
        );
        let mut ensemble = ensemble?;
        if let Some(calibration) = calibration {
            let calibration = calibration?;
            if calibration.is_none() {
                (progress.borrow_mut())(Progress::Note(
                    "no spatial dataset has 4 genes to hide: the intervals stay the raw \
                     posterior's (uncalibrated)",
                ));
            }
            ensemble.calibration = calibration;
        }
        self.ensemble = Some(ensemble);
        Ok(())
    }

    /// Whether the model has been trained (or loaded).
    pub fn is_trained(&self) -> bool {
        self.ensemble.is_some()
    }

    /// The model's gene space: the reference's genes, which can all be imputed.
    pub fn genes(&self) -> &[String] {
        &self.config.genes
    }

    /// The model's datasets: the reference first, then the spatial datasets.
    pub fn datasets(&self) -> Vec<DatasetSummary> {
        self.config
            .datasets
            .iter()
            .enumerate()
            .map(|(m, spec)| {
                let p = self.prepared.get(m);
                DatasetSummary {
                    name: spec.name.clone(),
                    genes: spec.genes.clone(),
                    likelihood: spec.likelihood,
                    cells: p.map(|p| p.data.n_cells()),
                    dropped_cells: p.map_or(0, |p| p.dropped_cells),
                    rounded: p.map_or(0, |p| p.rounded),
                    unused_genes: p.map_or(0, |p| p.unused_genes.len()),
                }
            })
            .collect()
    }

    /// The latent dimension.
    pub fn n_latent(&self) -> usize {
        self.config.n_latent
    }

    /// How many trained models the imputation averages (0 before training).
    pub fn models(&self) -> usize {
        self.ensemble.as_ref().map_or(0, ModelEnsemble::len)
    }

    /// The training history of each model (epoch logs; empty for a loaded model).
    pub fn history(&self) -> Vec<Vec<EpochLog>> {
        self.ensemble.as_ref().map_or_else(Vec::new, |e| {
            e.members().iter().map(|m| m.history.clone()).collect()
        })
    }

    fn trained(&self) -> Result<&ModelEnsemble> {
        self.ensemble.as_ref().ok_or_else(|| {
            Error::Input("the model is not trained yet: call Gimvi::train first".into())
        })
    }

    /// The model dataset `data` belongs to (the one whose genes it covers best, spatial
    /// datasets first unless `reference` is allowed) and its counts on that dataset's genes, in
    /// the dataset's order, checked (finite, ≥ 0).
    fn match_dataset(&self, data: &Dataset, reference: bool) -> Result<(usize, Dataset)> {
        let lower: Vec<String> = data.genes.iter().map(|g| g.to_lowercase()).collect();
        let covered = |genes: &[String]| {
            genes
                .iter()
                .filter(|g| lower.contains(&g.to_lowercase()))
                .count()
        };
        let (m, spec) = self
            .config
            .datasets
            .iter()
            .enumerate()
            .filter(|(_, s)| reference || matches!(s.library, LibraryModel::Observed))
            .max_by_key(|(_, s)| covered(&s.genes))
            .ok_or_else(|| Error::Input("the model has no spatial dataset".into()))?;
        let mut cols = Vec::with_capacity(spec.genes.len());
        let mut missing = Vec::new();
        for g in &spec.genes {
            match lower.iter().position(|x| *x == g.to_lowercase()) {
                Some(i) => cols.push(i),
                None => missing.push(g.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::Input(format!(
                "{} lacks {} of the {} genes the model's dataset '{}' was trained on (e.g. {})",
                data.source,
                missing.len(),
                spec.genes.len(),
                spec.name,
                missing[..missing.len().min(5)].join(", ")
            )));
        }
        let mut sub = data.select_genes(&cols);
        validate_counts(&mut sub, CountPolicy::AllowReal)?;
        Ok((m, sub))
    }

    /// The latent coordinates (posterior means of z) of the cells of `data`, a file with the
    /// genes of one of the model's datasets (the reference or a spatial one): cells × d. With
    /// several models, the first model's (each training has its own coordinates).
    pub fn latent(&self, data: &Dataset) -> Result<Array2<f32>> {
        let ensemble = self.trained()?;
        let (m, sub) = self.match_dataset(data, true)?;
        Ok(ensemble.latent(m, &sub.counts)?)
    }

    /// Imputes reference genes in the cells of `spatial`, a file with the genes of one of the
    /// model's spatial datasets (the training file, or new cells of the same panel): the
    /// posterior mean and, with samples, the variance over posterior samples of z (Lopez et
    /// al. 2019, Fig. 3), pooled over the models (their spread included). With an interval
    /// calibration that chose w < 1 ([`Imputed::tempering`]), the mean is tempered toward the
    /// cell's library over the cells of this call (impute a whole section at once).
    pub fn impute(&self, spatial: &Dataset, options: &ImputeOptions) -> Result<Imputed> {
        let ensemble = self.trained()?;
        let (m, sub) = self.match_dataset(spatial, false)?;
        let spec = &self.config.datasets[m];
        let genes: Vec<String> = match &options.genes {
            Genes::List(list) => list
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Genes::All => self.config.genes.clone(),
            Genes::Unmeasured => self
                .config
                .genes
                .iter()
                .enumerate()
                .filter(|(i, _)| !spec.gene_index.contains(i))
                .map(|(_, g)| g.clone())
                .collect(),
        };
        if genes.is_empty() {
            return Err(Error::Input(
                "no gene to impute (the file measures every reference gene; ask for all genes)"
                    .into(),
            ));
        }
        if let Some(c) = options.coverage {
            crate::calibration::check_coverage(c)?;
        }
        let index = ensemble.gene_indices(&genes)?;
        let mut imputed = ensemble.impute(
            m,
            &sub.counts,
            &index,
            gimvi_model::ImputeOptions {
                samples: options.samples,
                normalized: options.normalized,
                seed: options.seed,
            },
        )?;
        // The point imputation tempered toward the cell's library with the exponent the
        // calibration chose (crate::tempering); without a calibration, the model's own.
        let tempering = ensemble.calibration.as_ref().and_then(|c| c.tempering(m));
        if let Some(w) = tempering {
            crate::tempering::temper_columns(
                &mut imputed.mean,
                &crate::tempering::libraries(&sub.counts),
                w,
                options.normalized,
            );
        }
        let intervals = match (options.coverage, &imputed.variance, options.normalized) {
            (Some(coverage), Some(variance), false) => Some(intervals(
                ensemble.calibration.as_ref().filter(|c| c.covers(m, false)),
                m,
                &imputed.mean,
                variance,
                coverage,
                options.given_detection,
            )),
            _ => None,
        };
        Ok(Imputed {
            cells: sub.cells.clone(),
            genes: index
                .iter()
                .map(|&g| self.config.genes[g].clone())
                .collect(),
            mean: imputed.mean,
            variance: imputed.variance,
            intervals,
            tempering,
            latent: ensemble.latent(m, &sub.counts)?,
            normalized: options.normalized,
            models: ensemble.len(),
            obs: sub.obs.clone(),
            spatial: sub.spatial.clone(),
        })
    }

    /// Saves the trained model(s) into the folder `dir` (created if needed): `config.json`,
    /// `weights.bpk`, `history.json`, and for several models `ensemble.json` and `member-k/`.
    ///
    /// The folder is written atomically: an interrupted or failed save leaves no folder, or the
    /// previous model exactly as it was. An existing folder is replaced only when it is empty or
    /// holds a saved model; a file, or a folder holding other files, is refused.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        Ok(self.trained()?.save(dir)?)
    }

    /// Checks, without writing anything lasting, that [`Gimvi::save`] could write a model at
    /// `dir` (its parent folder exists and is writable; `dir` is absent, empty or a model
    /// folder). Call it before a long training so that a bad output path fails at once.
    pub fn check_save_path(dir: impl AsRef<Path>) -> Result<()> {
        Ok(crate::folder::preflight(dir.as_ref())?)
    }

    /// Loads a model saved by [`Gimvi::save`] (or by `gimvi fit`) onto `backend`. A loaded
    /// model imputes and gives latent coordinates; it cannot be trained further.
    pub fn load(dir: impl AsRef<Path>, backend: BackendKind) -> Result<Self> {
        let device = backend.open()?.autodiff();
        let ensemble = ModelEnsemble::load(dir, &device)?;
        Ok(Self {
            config: ensemble.config().clone(),
            device,
            prepared: Vec::new(),
            ensemble: Some(ensemble),
        })
    }
}

/// Prediction intervals at `coverage` around imputed counts of dataset `m` (posterior `mean`
/// and `variance`): calibrated with `calibration`, else the raw posterior interval.
fn intervals(
    calibration: Option<&IntervalCalibration>,
    m: usize,
    mean: &Array2<f32>,
    variance: &Array2<f32>,
    coverage: f64,
    given_detection: bool,
) -> Intervals {
    let mut lower = Array2::<f32>::zeros(mean.raw_dim());
    let mut upper = Array2::<f32>::zeros(mean.raw_dim());
    let levels = crate::calibration::gene_levels(mean);
    for ((ij, &mu), &var) in mean.indexed_iter().zip(variance.iter()) {
        let (mu, var) = (f64::from(mu), f64::from(var));
        let (lo, hi) = calibration
            .and_then(|c| c.interval(m, (mu, var), levels[ij.1], coverage, given_detection))
            .unwrap_or_else(|| raw_interval(mu, var, coverage));
        lower[ij] = lo as f32;
        upper[ij] = hi as f32;
    }
    let calibrated = calibration.is_some_and(|c| c.covers(m, given_detection));
    Intervals {
        lower,
        upper,
        coverage,
        given_detection,
        calibrated,
        method: calibration.filter(|_| calibrated).map_or_else(
            || {
                "raw posterior: normal quantiles of the log-scale posterior and Poisson spread \
                 (uncalibrated; train with calibration_splits > 0 to calibrate)"
                    .to_string()
            },
            IntervalCalibration::method,
        ),
    }
}
