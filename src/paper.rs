//! The paper's imputation benchmark (Lopez et al. 2019, Table 1) on a dataset pair, as its
//! reproduction code runs it: the scRNA-seq data restricted to the genes shared with the
//! spatial data, cells without counts dropped, the shared genes split into seeded folds (every
//! gene held out once), latent dimension 8, 100 epochs, and the **unnormalised** imputed mean
//! scored against the **raw** held-out counts (the tutorial's normalised scoring is reported
//! beside it).
//!
//! Methods: gimVI with κ = 0 (the δρ reference, as in Table 1), κ = 1, κ = 5 and κ chosen
//! automatically per fold on the fold's training genes only (`choose_kappa`);
//! the average of the κ = 0, 1 and 5 models ("gimVI avg κ=0,1,5", built from those rows'
//! fits, see `GimviImputer::kappa_average`); the automatic choice with that
//! average as a 4th candidate and the default ("gimVI κ*/avg", also from shared fits: the
//! average unless the best single κ beats it by more than one standard error in the inner
//! validation, [`KappaChoice::prefers_average`]); the paper's scVI + k-NN
//! baseline; a per-gene-mean baseline; k-NN on the shared genes.

use gimvi_data::prepare::{drop_empty_cells, match_genes, validate_counts, CountPolicy};
use gimvi_data::registry::DatasetPair;
use gimvi_likelihoods::CountLikelihood;
use std::collections::BTreeMap;

use gimvi_metrics::correlation::{median, spearman};
use gimvi_metrics::protocol::{
    evaluate, evaluate_with_folds, FoldTask, Imputer, ImputerError, KnnExpressionImputer,
    MeanImputer, PrecomputedImputer, ProtocolConfig,
};
use gimvi_trainer::TrainConfig;
use ndarray::{Array2, ArrayView2, Axis};
use std::time::Instant;

use crate::calibration::CALIBRATION_SAMPLES;
use crate::error::Error;
use crate::imputers::FoldLatent;
pub use crate::imputers::{method_name, FoldPosterior};
use crate::imputers::{GimviImputer, ScviKnnImputer, SharedFits};
pub use crate::kappa::KappaChoice;
use crate::kappa::KAPPA_CANDIDATES;
use crate::prepare::{prepare_model, single_dataset_latent, ModelInputs};
use crate::Device;
use crate::{FitOptions, Kappa};
use gimvi_data::Dataset;
pub use gimvi_metrics::intervals::IntervalReport;
use gimvi_metrics::intervals::{intervals_markdown, score_intervals, tissue_levels, FoldIntervals};
pub use gimvi_metrics::protocol::{gene_folds, GeneScore, MethodReport, ProtocolReport};

/// Settings of [`table1`].
#[derive(Debug, Clone)]
pub struct Table1Options {
    /// Training settings of every model (the paper's protocol: 100 epochs, 95 % of the cells
    /// for training, [`Table1Options::paper_training`]); each row sets its own κ. The seed also
    /// draws the gene folds.
    pub train: TrainConfig,
    /// Gene folds (paper: 5, i.e. 20 % held out).
    pub folds: usize,
    /// Latent dimension (paper: 8).
    pub n_latent: usize,
    /// Likelihood of the spatial counts (Poisson for osmFISH, NB for starMAP).
    pub spatial_likelihood: CountLikelihood,
    /// Include gimVI with automatically chosen κ (`KAPPA_INNER_SPLITS` × 3 inner trainings
    /// per fold) and the same choice with the average over κ as a 4th candidate and the
    /// default ("gimVI κ*/avg", no extra training).
    pub auto_kappa: bool,
    /// Training device (autodiff).
    pub device: Device,
    /// Use these gene folds instead of the seeded split: gene name (matched case-insensitively)
    /// → fold number 0..K. Every shared gene must be listed. Used to run the very folds of
    /// scvi-tools' anchor script (`scripts/anchor_folds.py`).
    pub fold_of: Option<BTreeMap<String, usize>>,
    /// Report progress on stderr: one line per method and fold (with its time and the fold's
    /// median Spearman).
    pub progress: bool,
    /// Posterior samples drawn by gimVI κ = 5 (and by each member of κ = 5 ×M) in every fold
    /// for the uncertainty of the imputed genes (paper: 50; 0 = skip). Fills
    /// [`Table1Data::posterior`] and [`Table1Data::posterior_ensemble`].
    pub posterior_samples: usize,
    /// Also report every gimVI method as an ensemble of this many models averaged per fold
    /// (rows named "… ×M"; 0 or 1: no ensemble rows). Member 0 is the one-model row's own
    /// fit, so an ensemble costs M − 1 extra trainings per method and fold, and κ*'s ensemble
    /// reuses κ*'s inner validation.
    pub ensemble: usize,
    /// Calibration trainings of gimVI κ = 5's prediction intervals per fold (nested inside
    /// the fold's training genes, as [`FitOptions::calibration_splits`]; needs
    /// `posterior_samples` ≥ 2; 0 = the raw posterior intervals). Fills
    /// [`Table1Data::intervals`] with the calibrated intervals' coverage beside the raw ones.
    pub calibration_splits: usize,
    /// Epochs of each calibration training (`None`: 40 % of the model's, as
    /// [`FitOptions::calibration_epochs`]).
    pub calibration_epochs: Option<usize>,
}

impl Table1Options {
    /// The paper's training settings: scvi-tools' defaults with 100 epochs and 95 % of each
    /// dataset's cells for training (its reproduction code).
    pub fn paper_training() -> TrainConfig {
        TrainConfig {
            epochs: PAPER_EPOCHS,
            train_fraction: PAPER_TRAIN_FRACTION,
            ..TrainConfig::default()
        }
    }
}

/// Epochs of the paper's evaluation (its reproduction code).
const PAPER_EPOCHS: usize = 100;
/// Fraction of each dataset's cells the paper's evaluation trains on.
const PAPER_TRAIN_FRACTION: f64 = 0.95;

/// Wraps an imputer and, when `print` is set, prints one line to stderr when it has finished
/// a fold.
struct Progress<'a> {
    inner: &'a mut dyn Imputer,
    /// All spatial counts (cells × shared genes), to score the finished fold.
    truth: ArrayView2<'a, f64>,
    folds: usize,
    started: Instant,
    print: bool,
    /// Every held-out gene's prediction from its fold, spatial cells × shared genes (NaN until
    /// its fold has run, and for the cells its fold left out).
    predictions: Array2<f64>,
}

impl Imputer for Progress<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        let start = Instant::now();
        let out = self.inner.impute(task);
        if let Ok(pred) = &out {
            if pred.dim() == (task.spatial_cells.len(), task.test_genes.len()) {
                for (j, &g) in task.test_genes.iter().enumerate() {
                    for (i, &c) in task.spatial_cells.iter().enumerate() {
                        if let Some(v) = self.predictions.get_mut((c, g)) {
                            *v = pred[[i, j]];
                        }
                    }
                }
            }
        }
        if let (true, Ok(pred)) = (self.print, &out) {
            // The fold's median Spearman (paper scoring) of this method, for orientation.
            let rhos: Vec<f64> = task
                .test_genes
                .iter()
                .enumerate()
                .filter_map(|(j, &g)| {
                    let truth: Vec<f64> = task
                        .spatial_cells
                        .iter()
                        .map(|&c| self.truth.get((c, g)).copied().unwrap_or(f64::NAN))
                        .collect();
                    spearman(&pred.column(j).to_vec(), &truth).ok().flatten()
                })
                .collect();
            eprintln!(
                "  fold {}/{} {:<24} {:>7.1} s   fold median ρ {:>6}   (elapsed {:.0} s)",
                task.fold + 1,
                self.folds,
                self.inner.name(),
                start.elapsed().as_secs_f64(),
                median(&rhos).map_or("n/a".to_string(), |m| format!("{m:.3}")),
                self.started.elapsed().as_secs_f64()
            );
        }
        out
    }
}

/// What [`table1`] used, for the report's header.
#[derive(Debug, Clone)]
pub struct Table1Data {
    /// Shared genes scored.
    pub genes: Vec<String>,
    /// scRNA-seq cells kept / dropped (no counts on the shared genes).
    pub sc_cells: (usize, usize),
    /// Spatial cells kept / dropped.
    pub spatial_cells: (usize, usize),
    /// The automatic method's choice in each fold: κ and its inner-validation scores.
    pub chosen_kappas: Vec<KappaChoice>,
    /// Per method (report order): each shared gene's imputation from the fold that held it
    /// out, spatial cells (kept) × shared genes, expected counts; NaN where the gene's fold
    /// left the cell out (no counts on that fold's training genes).
    pub predictions: Vec<(String, Array2<f64>)>,
    /// The kept spatial cells' raw counts on the shared genes (cells × genes).
    pub spatial_counts: Array2<f64>,
    /// The kept spatial cells' coordinates, when the file has them.
    pub coordinates: Option<Vec<Vec<f64>>>,
    /// gimVI κ = 5's posterior mean and variance per fold (empty unless
    /// [`Table1Options::posterior_samples`] ≥ 2).
    pub posterior: Vec<FoldPosterior>,
    /// gimVI κ = 5 ×M's posterior pooled over its M members (the mixture of their posteriors:
    /// mean of the means, law of total variance), per fold; empty unless
    /// [`Table1Options::ensemble`] ≥ 2 and [`Table1Options::posterior_samples`] ≥ 2. Its
    /// variance includes the members' disagreement.
    pub posterior_ensemble: Vec<FoldPosterior>,
    /// Per shared gene, the fraction of its variance across scRNA-seq cells that a linear
    /// regression on the fold's training genes leaves unexplained (1 − R², log-normalised
    /// scRNA-seq data): the paper's "predictability" axis of Fig. 3 (low = predictable).
    pub unexplained: Vec<Option<f64>>,
    /// Fig. 2: integration metrics of each latent-space method in the first fold.
    pub integration: Vec<IntegrationCurve>,
    /// Coverage and widths of gimVI κ = 5's prediction intervals on the held-out genes: the
    /// calibrated ones (when [`Table1Options::calibration_splits`] > 0) and the raw posterior
    /// ones; empty without a posterior.
    pub intervals: Vec<IntervalReport>,
}

/// Integration of the two datasets in one method's latent space (the paper's Fig. 2), over k.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationCurve {
    /// Method name.
    pub method: String,
    /// The fold the model was trained on.
    pub fold: usize,
    /// Neighbourhood sizes.
    pub ks: Vec<usize>,
    /// Mean over all cells of the entropy of mixing (KL form; 0 = neighbourhoods mixed in the
    /// global proportions, negative = segregated), per k.
    pub mixing: Vec<f64>,
    /// Mean k-NN purity (Jaccard) of the scRNA-seq cells: joint latent space against the
    /// cells' own space, per k ([`table1`]: the latent space of a model fitted on the
    /// scRNA-seq data alone, as in the paper).
    pub purity_sc: Vec<f64>,
    /// The same for the spatial cells.
    pub purity_spatial: Vec<f64>,
}

/// Fig. 2's metrics for one fold's latents. `own_sc` and `own_spatial` are each dataset's own
/// space, cells in the latents' order (the fold's cells, [`FoldLatent::sc_cells`] and
/// [`FoldLatent::spatial_cells`]): [`table1`] passes, as the paper does, the latent space
/// of a model fitted on that dataset alone (`single_dataset_latent`), so
/// purity asks how much of each dataset's own neighbourhood structure the joint space keeps.
pub(crate) fn integration_curve(
    method: &str,
    latent: &FoldLatent,
    own_sc: ArrayView2<'_, f32>,
    own_spatial: ArrayView2<'_, f32>,
    ks: &[usize],
) -> Result<IntegrationCurve, gimvi_metrics::MetricsError> {
    use gimvi_metrics::integration::{entropy_of_mixing, knn_purity};
    let joint = ndarray::concatenate(ndarray::Axis(0), &[latent.sc.view(), latent.spatial.view()])
        .map_err(|_| gimvi_metrics::MetricsError::ShapeMismatch {
            what: "latent dimensions of the two datasets",
            expected: latent.sc.ncols(),
            got: latent.spatial.ncols(),
        })?;
    let labels: Vec<usize> = (0..joint.nrows())
        .map(|i| usize::from(i >= latent.sc.nrows()))
        .collect();
    let mean = |per_k: Vec<Vec<f64>>| -> Vec<f64> {
        per_k
            .iter()
            .map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
            .collect()
    };
    Ok(IntegrationCurve {
        method: method.to_string(),
        fold: latent.fold,
        ks: ks.to_vec(),
        mixing: mean(entropy_of_mixing(joint.view(), &labels, ks)?),
        purity_sc: mean(knn_purity(latent.sc.view(), own_sc, ks)?),
        purity_spatial: mean(knn_purity(latent.spatial.view(), own_spatial, ks)?),
    })
}

impl Table1Options {
    /// The report rows [`table1`] produces with these options, in order (e.g. to announce
    /// the work before it starts).
    pub fn methods(&self) -> Vec<String> {
        table1_methods(self)
    }
}

impl Table1Data {
    /// [`Table1Data::intervals`] as a markdown table (coverage at 50 / 80 / 90 / 95 %, genes
    /// more than 10 points under, calibration error, median widths); empty without intervals.
    pub fn intervals_markdown(&self) -> String {
        if self.intervals.is_empty() {
            String::new()
        } else {
            intervals_markdown(&self.intervals)
        }
    }
}

fn table1_methods(options: &Table1Options) -> Vec<String> {
    let members = options.ensemble.max(1);
    let mut names = Vec::new();
    let mut gimvi = |ensemble: usize| {
        for kappa in KAPPA_CANDIDATES {
            names.push(method_name(kappa, false, &[], ensemble));
        }
        if options.auto_kappa {
            names.push(method_name(5.0, true, &[], ensemble));
        }
        names.push(method_name(5.0, false, &KAPPA_CANDIDATES, ensemble));
        if options.auto_kappa {
            names.push(method_name(5.0, true, &KAPPA_CANDIDATES, ensemble));
        }
    };
    gimvi(1);
    if members > 1 {
        gimvi(members);
    }
    names.extend(
        [
            "scVI + k-NN (shared genes)",
            "per-gene mean",
            "k-NN on shared genes",
        ]
        .map(String::from),
    );
    names
}

/// Runs the benchmark on `pair`; returns the protocol report and what it ran on.
pub fn table1(
    pair: &DatasetPair,
    options: &Table1Options,
) -> Result<(ProtocolReport, Table1Data), Error> {
    let m = match_genes(&pair.sc, &pair.spatial)?;
    let mut sc = pair.sc.select_genes(&m.first_index);
    let mut sp = pair.spatial.select_genes(&m.second_index);
    validate_counts(&mut sc, CountPolicy::RequireIntegers)?;
    validate_counts(&mut sp, CountPolicy::RequireIntegers)?;
    let (sc, sc_dropped) = drop_empty_cells(&sc)?;
    let (sp, sp_dropped) = drop_empty_cells(&sp)?;
    let train = options.train.clone();
    let shared = SharedFits::default();
    let members = options.ensemble.max(1);
    let gimvi = |kappa: f64, auto: bool, ensemble: usize| GimviImputer {
        name: method_name(kappa, auto, &[], ensemble),
        train: TrainConfig {
            kappa,
            ..train.clone()
        },
        n_latent: options.n_latent,
        sc_likelihood: CountLikelihood::Zinb,
        spatial_likelihood: options.spatial_likelihood,
        device: options.device.clone(),
        auto_kappa: auto,
        chosen_kappas: Vec::new(),
        posterior_samples: if kappa == 5.0 && !auto {
            options.posterior_samples
        } else {
            0
        },
        posterior: Vec::new(),
        record_latent: !auto && ensemble == 1,
        latents: Vec::new(),
        // κ* reuses the fixed-κ fit of its fold when it chooses 0, 1 or 5, and ensembles
        // reuse the one-model fits as their first member.
        shared: Some(shared.clone()),
        ensemble,
        kappa_average: Vec::new(),
        extra_reference: None,
        // Only the one-model κ = 5 row draws a posterior, so only it calibrates.
        calibration_splits: if kappa == 5.0 && !auto && ensemble == 1 {
            options.calibration_splits
        } else {
            0
        },
        calibration_epochs: options.calibration_epochs,
    };
    // The average over the paper's three κ: built from the fixed-κ rows' own fits (shared),
    // so it trains nothing; it is computed after them in every fold.
    let average = |ensemble: usize| GimviImputer {
        name: method_name(5.0, false, &KAPPA_CANDIDATES, ensemble),
        posterior_samples: 0,
        record_latent: false,
        kappa_average: KAPPA_CANDIDATES.to_vec(),
        ..gimvi(5.0, false, ensemble)
    };
    let (mut a1, mut am) = (average(1), average(members));
    // κ* with the average as a 4th candidate: κ*'s inner validation already scores the
    // average (shared choice), and every model it may use is a fixed-κ row's fit, so it
    // trains nothing either.
    let auto_average = |ensemble: usize| GimviImputer {
        name: method_name(5.0, true, &KAPPA_CANDIDATES, ensemble),
        auto_kappa: true,
        ..average(ensemble)
    };
    let (mut aa1, mut aam) = (auto_average(1), auto_average(members));
    let (mut k0, mut k1, mut k5, mut kauto) = (
        gimvi(0.0, false, 1),
        gimvi(1.0, false, 1),
        gimvi(5.0, false, 1),
        gimvi(5.0, true, 1),
    );
    let (mut e0, mut e1, mut e5, mut eauto) = (
        gimvi(0.0, false, members),
        gimvi(1.0, false, members),
        gimvi(5.0, false, members),
        gimvi(5.0, true, members),
    );
    let mut scvi = ScviKnnImputer {
        train: train.clone(),
        n_latent: options.n_latent,
        sc_likelihood: CountLikelihood::Zinb,
        spatial_likelihood: options.spatial_likelihood,
        device: options.device.clone(),
        record_latent: true,
        latents: Vec::new(),
    };
    let mut mean = MeanImputer;
    let mut knn = KnnExpressionImputer::default();
    let mut methods: Vec<&mut dyn Imputer> = vec![&mut k0, &mut k1, &mut k5];
    if options.auto_kappa {
        methods.push(&mut kauto);
    }
    methods.push(&mut a1);
    if options.auto_kappa {
        methods.push(&mut aa1);
    }
    if members > 1 {
        methods.extend([&mut e0 as &mut dyn Imputer, &mut e1, &mut e5]);
        if options.auto_kappa {
            methods.push(&mut eauto);
        }
        methods.push(&mut am);
        if options.auto_kappa {
            methods.push(&mut aam);
        }
    }
    methods.extend([
        &mut scvi as &mut dyn Imputer,
        &mut mean as &mut dyn Imputer,
        &mut knn as &mut dyn Imputer,
    ]);
    // An internal invariant (no input can break it): the announced rows are the run rows.
    assert_eq!(
        methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        table1_methods(options),
        "table1_methods is out of step with table1"
    );
    let (sc_dense, sp_dense) = (sc.counts.to_dense_f64(), sp.counts.to_dense_f64());
    // Explicit gene folds (the anchor's), as indices into the shared genes.
    let explicit_folds = options
        .fold_of
        .as_ref()
        .map(|fold_of| folds_from_map(fold_of, &sc.genes))
        .transpose()?;
    let started = Instant::now();
    let (report, predictions) = {
        let mut wrapped: Vec<Progress<'_>> = methods
            .into_iter()
            .map(|inner| Progress {
                inner,
                truth: sp_dense.view(),
                folds: explicit_folds.as_ref().map_or(options.folds, Vec::len),
                started,
                print: options.progress,
                predictions: Array2::from_elem(sp_dense.dim(), f64::NAN),
            })
            .collect();
        let mut methods: Vec<&mut dyn Imputer> =
            wrapped.iter_mut().map(|p| p as &mut dyn Imputer).collect();
        let report = match &explicit_folds {
            None => evaluate(
                &sc.genes,
                sc_dense.view(),
                sp_dense.view(),
                &mut methods,
                ProtocolConfig {
                    folds: options.folds,
                    seed: train.seed,
                },
            ),
            Some(folds) => evaluate_with_folds(
                &sc.genes,
                sc_dense.view(),
                sp_dense.view(),
                &mut methods,
                folds,
                train.seed,
            ),
        }
        .map_err(|e| Error::Input(e.to_string()))?;
        drop(methods);
        let predictions: Vec<(String, Array2<f64>)> = wrapped
            .into_iter()
            .map(|p| (p.inner.name(), p.predictions))
            .collect();
        (report, predictions)
    };
    // Each fold's held-out and training genes, as indices into the shared genes.
    let held_out: Vec<Vec<usize>> = report
        .folds
        .iter()
        .map(|fold| {
            fold.iter()
                .filter_map(|g| sc.genes.iter().position(|h| h == g))
                .collect()
        })
        .collect();
    let training = |held: &[usize]| -> Vec<usize> {
        (0..sc.genes.len()).filter(|g| !held.contains(g)).collect()
    };
    // Predictability of every gene from its fold's training genes (Fig. 3's x axis).
    let log_norm = log_normalise(sc_dense.view());
    let mut unexplained = vec![None; sc.genes.len()];
    for held in &held_out {
        let x = log_norm.select(ndarray::Axis(1), &training(held));
        for &g in held {
            unexplained[g] = unexplained_fraction(x.view(), log_norm.column(g));
        }
    }
    // Fig. 2 on the first fold's latents.
    let mut integration = Vec::new();
    let recorded: Vec<(String, &FoldLatent)> = [&k0, &k1, &k5]
        .iter()
        .filter_map(|m| m.latents.first().map(|l| (m.name.clone(), l)))
        .chain(scvi.latents.first().map(|l| (scvi.name(), l)))
        .collect();
    if let Some((_, first)) = recorded.first() {
        let fold_genes = held_out
            .get(first.fold)
            .map(|held| training(held))
            .unwrap_or_default();
        let n_min = first.sc.nrows().min(first.spatial.nrows());
        let ks: Vec<usize> = gimvi_metrics::integration::default_ks()
            .into_iter()
            .filter(|&k| k < n_min)
            .collect();
        if !ks.is_empty() {
            // The paper's reference spaces: a model of each dataset alone (scVI, κ = 0) on the
            // cells and genes the joint model saw for it — the fold's cells; all shared genes
            // for the scRNA-seq data, the fold's training genes for the spatial data — trained
            // like the joint models.
            let own_train = TrainConfig {
                seed: train.seed.wrapping_add(first.fold as u64),
                ..train.clone()
            };
            let own_sc = single_dataset_latent(
                &sc.counts.select_rows(&first.sc_cells),
                &sc.genes,
                CountLikelihood::Zinb,
                true,
                options.n_latent,
                &own_train,
                &options.device,
            )?;
            let sp_genes: Vec<String> = fold_genes.iter().map(|&g| sc.genes[g].clone()).collect();
            let own_sp = single_dataset_latent(
                &sp.counts
                    .select_rows(&first.spatial_cells)
                    .select_cols(&fold_genes),
                &sp_genes,
                options.spatial_likelihood,
                false,
                options.n_latent,
                &own_train,
                &options.device,
            )?;
            for (name, latent) in &recorded {
                // Every method recorded the same (first) fold, so the same cells in the same
                // order; checked, since the curves compare neighbourhoods row by row.
                if latent.sc_cells != first.sc_cells || latent.spatial_cells != first.spatial_cells
                {
                    return Err(Error::Input(format!(
                        "{name}: its latent holds other cells than the reference spaces' fold"
                    )));
                }
                integration.push(
                    integration_curve(name, latent, own_sc.view(), own_sp.view(), &ks)
                        .map_err(|e| Error::Input(e.to_string()))?,
                );
            }
        }
    }
    // Empty without a posterior.
    let intervals = score_posterior_intervals(&k5.posterior, sp_dense.view());
    Ok((
        report,
        Table1Data {
            intervals,
            genes: sc.genes.clone(),
            sc_cells: (sc.n_cells(), sc_dropped),
            spatial_cells: (sp.n_cells(), sp_dropped),
            chosen_kappas: kauto.chosen_kappas,
            predictions,
            spatial_counts: sp_dense,
            coordinates: sp.spatial.clone(),
            posterior: k5.posterior,
            posterior_ensemble: if members > 1 {
                e5.posterior
            } else {
                Vec::new()
            },
            unexplained,
            integration,
        },
    ))
}

/// Settings of [`evaluate_pair`].
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Training settings of every model.
    pub train: TrainConfig,
    /// The gimVI models of each fold (one, several, the average over κ, the automatic κ).
    pub fit: FitOptions,
    /// Latent dimension.
    pub n_latent: usize,
    /// Likelihood of the scRNA-seq counts.
    pub sc_likelihood: CountLikelihood,
    /// Likelihood of the spatial counts.
    pub spatial_likelihood: CountLikelihood,
    /// Gene folds.
    pub folds: usize,
    /// Round non-integer counts instead of refusing them.
    pub round_counts: bool,
    /// Training device (autodiff).
    pub device: Device,
    /// Use these gene folds instead of the seeded split: gene name (case-insensitive) → fold
    /// 0..K, every shared gene listed (e.g. the folds the peer tools ran on).
    pub fold_of: Option<BTreeMap<String, usize>>,
    /// The transcriptome protocol: the reference keeps all its genes (the held-out genes
    /// shape the latent space through it) instead of being restricted to the shared genes.
    pub transcriptome: bool,
    /// Imputations other tools made on the same folds, scored beside gimVI's: a name and a
    /// dataset with one row per cell of the spatial file (in file order, or named by row
    /// number) and one column per shared gene (NaN where the tool made no prediction).
    pub peers: Vec<(String, Dataset)>,
    /// Score only the baselines and the peers, without training gimVI (e.g. to add a peer's
    /// imputations to an earlier evaluation on the same folds).
    pub skip_gimvi: bool,
}

/// What [`evaluate_pair`] measured.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The shared genes that were held out and scored.
    pub genes: Vec<String>,
    /// Per-method, per-gene scores.
    pub report: ProtocolReport,
    /// The automatic κ's choice in each fold (empty unless it was asked for).
    pub chosen_kappas: Vec<KappaChoice>,
    /// Coverage and widths of gimVI's prediction intervals on the held-out genes: the
    /// calibrated ones (when [`FitOptions::calibration_splits`] > 0, calibrated inside each
    /// fold's training genes) and the raw posterior ones (empty with `skip_gimvi`).
    pub intervals: Vec<IntervalReport>,
    /// The folds' posteriors of the held-out genes (mean, variance, calibration), rows and
    /// columns as [`FoldPosterior`] says (for figures).
    pub posterior: Vec<FoldPosterior>,
    /// The evaluated spatial counts: cells kept × shared genes (the rows of `posterior`).
    pub truth: Array2<f64>,
    /// The evaluated spatial cells' coordinates, when the file has them.
    pub coordinates: Option<Vec<Vec<f64>>>,
}

/// The held-out-gene evaluation on a user's own pair: both datasets restricted to their shared
/// genes, which are split into `folds` seeded folds; each fold's genes are hidden from the
/// spatial data, imputed by gimVI (the models `options.fit` asks for), the per-gene mean and
/// k-NN on the shared genes, and scored against the measurement.
pub fn evaluate_pair(
    sc: &Dataset,
    spatial: &Dataset,
    options: &EvaluateOptions,
) -> Result<Evaluation, Error> {
    let (config, prepared) = prepare_model(&ModelInputs {
        sc: vec![sc],
        spatial: vec![spatial],
        sc_likelihood: options.sc_likelihood,
        spatial_likelihood: options.spatial_likelihood,
        n_latent: options.n_latent,
        round_counts: options.round_counts,
    })?;
    let shared_idx = &config.datasets[1].gene_index;
    let genes: Vec<String> = shared_idx
        .iter()
        .map(|&g| config.genes[g].clone())
        .collect();
    let sc_dense = prepared[0]
        .data
        .select_genes(shared_idx)
        .counts
        .to_dense_f64();
    let sp_dense = prepared[1].data.counts.to_dense_f64();
    // The transcriptome protocol: the reference's other genes, every evaluated reference row.
    let extra_reference = if options.transcriptome {
        let other: Vec<usize> = (0..config.genes.len())
            .filter(|g| !shared_idx.contains(g))
            .collect();
        if other.is_empty() {
            return Err(Error::Input(
                "the transcriptome protocol needs reference genes outside the spatial panel; \
                 every reference gene is shared"
                    .into(),
            ));
        }
        let names = other.iter().map(|&g| config.genes[g].clone()).collect();
        Some(std::sync::Arc::new((
            names,
            prepared[0].data.select_genes(&other).counts,
        )))
    } else {
        None
    };
    let explicit_folds = options
        .fold_of
        .as_ref()
        .map(|fold_of| folds_from_map(fold_of, &genes))
        .transpose()?;
    let mut peers = options
        .peers
        .iter()
        .map(|(name, ds)| peer_imputer(name, ds, spatial, &prepared[1].data, &genes))
        .collect::<Result<Vec<_>, Error>>()?;
    let (auto, average) = match &options.fit.kappa {
        Kappa::Given => (false, Vec::new()),
        Kappa::Average(k) => (false, k.clone()),
        Kappa::Auto {
            candidates,
            keep_average: true,
        } => (true, candidates.clone()),
        Kappa::Auto {
            candidates,
            keep_average: false,
        } => {
            if candidates.as_slice() != KAPPA_CANDIDATES {
                return Err(Error::Input(format!(
                    "the automatic κ of the evaluation chooses among {KAPPA_CANDIDATES:?}, or \
                     among given κ together with their average; {candidates:?} was asked for"
                )));
            }
            (true, Vec::new())
        }
    };
    let members = options.fit.models_per_kappa;
    let mut gimvi = GimviImputer {
        name: method_name(options.train.kappa, auto, &average, members),
        train: options.train.clone(),
        n_latent: options.n_latent,
        sc_likelihood: options.sc_likelihood,
        spatial_likelihood: options.spatial_likelihood,
        device: options.device.clone(),
        auto_kappa: auto,
        chosen_kappas: Vec::new(),
        posterior_samples: CALIBRATION_SAMPLES,
        posterior: Vec::new(),
        record_latent: false,
        latents: Vec::new(),
        shared: None,
        ensemble: members,
        kappa_average: average,
        extra_reference,
        calibration_splits: options.fit.calibration_splits,
        calibration_epochs: options.fit.calibration_epochs,
    };
    let mut mean = MeanImputer;
    let mut knn = KnnExpressionImputer::default();
    let mut methods: Vec<&mut dyn Imputer> = if options.skip_gimvi {
        vec![&mut mean, &mut knn]
    } else {
        vec![&mut gimvi, &mut mean, &mut knn]
    };
    methods.extend(peers.iter_mut().map(|p| p as &mut dyn Imputer));
    let report = match &explicit_folds {
        None => evaluate(
            &genes,
            sc_dense.view(),
            sp_dense.view(),
            &mut methods,
            ProtocolConfig {
                folds: options.folds,
                seed: options.train.seed,
            },
        ),
        Some(folds) => evaluate_with_folds(
            &genes,
            sc_dense.view(),
            sp_dense.view(),
            &mut methods,
            folds,
            options.train.seed,
        ),
    }
    .map_err(|e| Error::Input(e.to_string()))?;
    drop(methods);
    let intervals = if options.skip_gimvi {
        Vec::new()
    } else {
        score_posterior_intervals(&gimvi.posterior, sp_dense.view())
    };
    Ok(Evaluation {
        genes,
        report,
        chosen_kappas: gimvi.chosen_kappas,
        intervals,
        posterior: gimvi.posterior,
        truth: sp_dense,
        coordinates: prepared[1].data.spatial.clone(),
    })
}

impl Evaluation {
    /// The interval report as a markdown table (one row per kind of interval and headline
    /// coverage).
    pub fn intervals_markdown(&self) -> String {
        intervals_markdown(&self.intervals)
    }

    /// Writes the figures of this evaluation into `dir` (SVG and PNG each; created if
    /// needed): `calibration` (nominal against empirical coverage of the held-out genes'
    /// intervals, one line per kind of interval), `fig3` (per held-out gene: the median
    /// posterior CV against 1 − its paper Spearman, the paper's Fig. 3 as error against
    /// uncertainty) and, with coordinates, `fig4` (a held-out gene on the tissue: measured,
    /// imputed, width of its 90 % interval). Returns the files written.
    pub fn write_figures(&self, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, Error> {
        evaluation_figures(self, dir)
    }
}

/// Draws the calibration curve of `intervals` (nominal against empirical coverage of held-out
/// genes, one line per kind of interval, its calibration error in the legend) as `stem`.svg and
/// `stem`.png; the detection-conditional intervals are drawn over nonzero measurements, which
/// is what they promise. Returns the files written.
pub fn calibration_figure(
    intervals: &[IntervalReport],
    stem: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, Error> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = intervals
        .iter()
        .map(|r| {
            let (curve, ce, over) = if r.name.contains("given detection") {
                (
                    &r.coverage_nonzero,
                    r.calibration_error_nonzero,
                    "nonzero measurements",
                )
            } else {
                (&r.coverage, r.calibration_error, "all measurements")
            };
            (
                format!("{}: {over} (CE {ce:.3})", r.name),
                r.levels
                    .iter()
                    .copied()
                    .zip(curve.iter().copied())
                    .collect(),
            )
        })
        .collect();
    crate::figures::line_panels(
        stem,
        "Prediction intervals of held-out genes: empirical vs nominal coverage",
        "nominal coverage",
        &[(String::new(), curves)],
        true,
    )
}

/// Writes the figures of an evaluation into `dir` (SVG and PNG each): `calibration` (nominal
/// against empirical coverage of the held-out genes' intervals, one line per kind of
/// interval), `fig3` (per held-out gene: the median posterior CV against 1 − its paper
/// Spearman, the paper's Fig. 3 as error against uncertainty) and, with coordinates, `fig4`
/// (a held-out gene on the tissue: measured, imputed, width of its 90 % interval). Returns
/// the files written.
fn evaluation_figures(
    evaluation: &Evaluation,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, Error> {
    use crate::figures;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Input(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    if !evaluation.intervals.is_empty() {
        written.extend(calibration_figure(
            &evaluation.intervals,
            &dir.join("calibration"),
        )?);
    }
    let gimvi_report = evaluation
        .report
        .methods
        .iter()
        .find(|m| m.name.starts_with("gimVI"));
    if let Some(report) = gimvi_report {
        let mut points = Vec::new();
        for fold in &evaluation.posterior {
            for (j, &g) in fold.genes.iter().enumerate() {
                let cv: Vec<f64> = fold
                    .mean
                    .column(j)
                    .iter()
                    .zip(fold.variance.column(j))
                    .filter(|(m, _)| **m > 0.0)
                    .map(|(m, v)| v.max(0.0).sqrt() / m)
                    .collect();
                let rho = report.per_gene.get(g).and_then(|s| s.spearman_paper);
                if let (Some(cv), Some(rho)) = (median(&cv), rho) {
                    points.push((cv, 1.0 - rho, evaluation.genes[g].clone()));
                }
            }
        }
        if !points.is_empty() {
            written.extend(figures::scatter(
                &dir.join("fig3"),
                &format!(
                    "{}: error against posterior uncertainty, per held-out gene",
                    report.name
                ),
                "median posterior CV of the imputed gene",
                "1 − Spearman (imputed vs measured)",
                &points,
            )?);
        }
    }
    if let (Some(xy), Some(fold)) = (&evaluation.coordinates, evaluation.posterior.first()) {
        // The fold's held-out gene with the highest mean count.
        let truth = evaluation
            .truth
            .select(Axis(0), &fold.cells)
            .select(Axis(1), &fold.genes);
        let j = (0..fold.genes.len())
            .max_by(|&a, &b| truth.column(a).sum().total_cmp(&truth.column(b).sum()))
            .unwrap_or(0);
        let gene = &evaluation.genes[fold.genes[j]];
        let n = fold.cells.len();
        let width: Vec<f64> = (0..n)
            .map(|c| {
                let (lo, hi) = fold.interval(c, j, 0.9);
                hi - lo
            })
            .collect();
        let kind = if fold.is_calibrated() {
            "calibrated"
        } else {
            "raw posterior"
        };
        let coords: Vec<(f64, f64)> = fold
            .cells
            .iter()
            .map(|&r| {
                let p = &xy[r];
                (
                    p.first().copied().unwrap_or(0.0),
                    p.get(1).copied().unwrap_or(0.0),
                )
            })
            .collect();
        written.extend(figures::spatial_panels(
            &dir.join("fig4"),
            &format!(
                "{gene}, held out in fold {}: measured, imputed, interval width",
                1
            ),
            &coords,
            &[
                (
                    format!("{gene} measured (counts)"),
                    truth.column(j).to_vec(),
                ),
                (
                    format!("{gene} imputed (posterior mean)"),
                    fold.mean.column(j).to_vec(),
                ),
                (format!("90 % interval width ({kind})"), width),
            ],
        )?);
    }
    Ok(written)
}

/// The headline coverages of the interval reports.
const HEADLINE_COVERAGES: [f64; 4] = [0.5, 0.8, 0.9, 0.95];

/// Coverage of the calibrated (when every fold has a calibration) and raw posterior intervals
/// of held-out genes against `truth` (the evaluated spatial cells × shared genes).
fn score_posterior_intervals(
    posterior: &[FoldPosterior],
    truth: ArrayView2<'_, f64>,
) -> Vec<IntervalReport> {
    let truths: Vec<Array2<f64>> = posterior
        .iter()
        .map(|f| truth.select(Axis(0), &f.cells).select(Axis(1), &f.genes))
        .collect();
    let levels = tissue_levels();
    let mut reports = Vec::new();
    let calibrated = !posterior.is_empty() && posterior.iter().all(|f| f.calibration.is_some());
    for (name, given_detection) in [
        ("gimVI calibrated", false),
        ("gimVI calibrated, given detection", true),
    ] {
        if !calibrated {
            break;
        }
        let closures: Vec<_> = posterior
            .iter()
            .map(|f| {
                move |c: usize, g: usize, level: f64| f.interval_given(c, g, level, given_detection)
            })
            .collect();
        let folds: Vec<FoldIntervals<'_>> = truths
            .iter()
            .zip(&closures)
            .map(|(t, f)| FoldIntervals {
                truth: t.view(),
                interval: f,
            })
            .collect();
        reports.push(score_intervals(name, &folds, &levels, &HEADLINE_COVERAGES));
    }
    let raw: Vec<_> = posterior
        .iter()
        .map(|f| move |c: usize, g: usize, level: f64| f.raw_interval(c, g, level))
        .collect();
    let folds: Vec<FoldIntervals<'_>> = truths
        .iter()
        .zip(&raw)
        .map(|(t, f)| FoldIntervals {
            truth: t.view(),
            interval: f,
        })
        .collect();
    if !folds.is_empty() {
        reports.push(score_intervals(
            "gimVI raw posterior",
            &folds,
            &levels,
            &HEADLINE_COVERAGES,
        ));
    }
    reports
}

/// Gene folds as indices into `genes` from a map gene name (case-insensitive) → fold.
fn folds_from_map(
    fold_of: &BTreeMap<String, usize>,
    genes: &[String],
) -> Result<Vec<Vec<usize>>, Error> {
    let lower: BTreeMap<String, usize> = fold_of
        .iter()
        .map(|(g, &f)| (g.to_lowercase(), f))
        .collect();
    let n_folds = lower.values().max().map_or(0, |&m| m + 1);
    let mut folds = vec![Vec::new(); n_folds];
    for (i, g) in genes.iter().enumerate() {
        let f = lower
            .get(&g.to_lowercase())
            .ok_or_else(|| Error::Input(format!("gene '{g}' has no fold in the given folds")))?;
        folds[*f].push(i);
    }
    Ok(folds)
}

/// A peer tool's predictions (`peer`: one row per cell of the spatial file `spatial_file`,
/// columns named by gene) as an imputer over the evaluated spatial cells (`evaluated`, the
/// file's cells that preparation kept, in file order) and shared `genes`.
fn peer_imputer(
    name: &str,
    peer: &Dataset,
    spatial_file: &Dataset,
    evaluated: &Dataset,
    genes: &[String],
) -> Result<PrecomputedImputer, Error> {
    if peer.counts.n_rows() != spatial_file.counts.n_rows() {
        return Err(Error::Input(format!(
            "predictions of '{name}' ({}) have {} rows; the spatial file {} has {} cells",
            peer.source,
            peer.counts.n_rows(),
            spatial_file.source,
            spatial_file.counts.n_rows()
        )));
    }
    let column: BTreeMap<String, usize> = peer
        .genes
        .iter()
        .enumerate()
        .map(|(j, g)| (g.to_lowercase(), j))
        .collect();
    let cols = genes
        .iter()
        .map(|g| {
            column.get(&g.to_lowercase()).copied().ok_or_else(|| {
                Error::Input(format!(
                    "predictions of '{name}' ({}) have no column for shared gene '{g}'",
                    peer.source
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The evaluated cells are the file's cells in order, some left out: walk both lists.
    let mut rows = Vec::with_capacity(evaluated.cells.len());
    let mut next = 0;
    for cell in &evaluated.cells {
        while next < spatial_file.cells.len() && &spatial_file.cells[next] != cell {
            next += 1;
        }
        if next == spatial_file.cells.len() {
            return Err(Error::Input(format!(
                "cell '{cell}' of the evaluation is not in {}",
                spatial_file.source
            )));
        }
        rows.push(next);
        next += 1;
    }
    // Sparse storage drops exact zeros; NaN (no prediction) is stored as a value.
    let dense = peer
        .counts
        .select_rows(&rows)
        .select_cols(&cols)
        .to_dense_f64();
    Ok(PrecomputedImputer {
        name: name.to_string(),
        predictions: dense,
    })
}

/// ln(1 + 10⁴ · x / cell total) per cell (rows), the usual log-normalisation; all-zero rows
/// stay zero.
pub(crate) fn log_normalise(counts: ArrayView2<'_, f64>) -> Array2<f64> {
    let mut out = counts.to_owned();
    for mut row in out.rows_mut() {
        let total: f64 = row.sum();
        if total > 0.0 {
            row.mapv_inplace(|v| (1e4 * v / total).ln_1p());
        }
    }
    out
}

/// 1 − R² of the least-squares fit of `y` on the columns of `x` plus an intercept (a ridge of
/// 10⁻⁸ × the mean column variance keeps collinear columns solvable): the fraction of y's
/// variance the linear regression leaves unexplained. `None` if y is constant or there are
/// fewer rows than columns + 2.
pub(crate) fn unexplained_fraction(
    x: ArrayView2<'_, f64>,
    y: ndarray::ArrayView1<'_, f64>,
) -> Option<f64> {
    let (n, p) = x.dim();
    if n < p + 2 || y.len() != n {
        return None;
    }
    let y_mean = y.mean()?;
    let tss: f64 = y.iter().map(|v| (v - y_mean).powi(2)).sum();
    if tss <= 0.0 {
        return None;
    }
    // Centre the columns (absorbs the intercept), then solve (XᵀX + λI) b = Xᵀy by Cholesky.
    let means = x.mean_axis(ndarray::Axis(0))?;
    let xc = &x - &means.insert_axis(ndarray::Axis(0));
    let yc = y.mapv(|v| v - y_mean);
    let mut a = xc.t().dot(&xc);
    let ridge = 1e-8 * (0..p).map(|j| a[[j, j]]).sum::<f64>().max(1e-300) / p.max(1) as f64;
    for j in 0..p {
        a[[j, j]] += ridge;
    }
    let b = cholesky_solve(a, xc.t().dot(&yc))?;
    let fitted = xc.dot(&b);
    let rss: f64 = yc.iter().zip(&fitted).map(|(v, f)| (v - f).powi(2)).sum();
    Some((rss / tss).clamp(0.0, 1.0))
}

/// Solves A x = b for a symmetric positive-definite A (Cholesky); `None` if A is not.
fn cholesky_solve(mut a: Array2<f64>, b: ndarray::Array1<f64>) -> Option<ndarray::Array1<f64>> {
    let p = a.nrows();
    for j in 0..p {
        let d = a[[j, j]] - (0..j).map(|k| a[[j, k]].powi(2)).sum::<f64>();
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..p {
            let v = a[[i, j]] - (0..j).map(|k| a[[i, k]] * a[[j, k]]).sum::<f64>();
            a[[i, j]] = v / d;
        }
    }
    // L y = b, then Lᵀ x = y.
    let mut y = b;
    for i in 0..p {
        let v = y[i] - (0..i).map(|k| a[[i, k]] * y[k]).sum::<f64>();
        y[i] = v / a[[i, i]];
    }
    for i in (0..p).rev() {
        let v = y[i] - (i + 1..p).map(|k| a[[k, i]] * y[k]).sum::<f64>();
        y[i] = v / a[[i, i]];
    }
    Some(y)
}

/// The per-gene "worth imputing" score from gimVI's posterior (the paper's suggested next
/// direction): minus the median over cells of the posterior coefficient of variation
/// sd / mean of the imputed expected count. Higher = the model is more certain relative to the
/// level it predicts. `None` for genes no fold covered.
pub fn worth_imputing(posterior: &[FoldPosterior], n_genes: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; n_genes];
    for fold in posterior {
        for (j, &g) in fold.genes.iter().enumerate() {
            let cv: Vec<f64> = fold
                .mean
                .column(j)
                .iter()
                .zip(fold.variance.column(j))
                .filter(|(m, _)| **m > 0.0)
                .map(|(m, v)| v.max(0.0).sqrt() / m)
                .collect();
            if g < n_genes {
                out[g] = median(&cv).map(|m| -m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimvi_data::CsrMatrix;
    use ndarray::array;

    /// Ten genes, two cell types with opposite profiles, 60 cells each side, coordinates on
    /// the spatial side.
    fn small_pair() -> DatasetPair {
        let (n_cells, n_genes) = (60, 10);
        let mut sc = Vec::new();
        let mut sp = Vec::new();
        for c in 0..n_cells {
            for g in 0..n_genes {
                let high = (c % 2 == 0) == (g < 5);
                let v = if high {
                    8 + (c * 7 + g) % 5
                } else {
                    (c + g) % 2
                };
                sc.push(v as f32);
                sp.push((v / 2 + c % 3) as f32);
            }
        }
        let genes: Vec<String> = (0..n_genes).map(|g| format!("G{g}")).collect();
        let dataset = |name: &str, values: &[f32], xy: Option<Vec<Vec<f64>>>| {
            Dataset::new(
                name,
                CsrMatrix::from_dense(n_cells, n_genes, values).unwrap(),
                genes.clone(),
                (0..n_cells).map(|c| format!("{name}{c}")).collect(),
                Vec::new(),
                xy,
            )
            .unwrap()
        };
        let xy = (0..n_cells)
            .map(|c| vec![(c % 8) as f64, (c / 8) as f64])
            .collect();
        DatasetPair {
            name: "small",
            sc: dataset("sc", &sc, None),
            sc_label: "simulated reference",
            spatial: dataset("sp", &sp, Some(xy)),
            spatial_label: "simulated spatial",
        }
    }

    fn small_options(calibration_splits: usize) -> Table1Options {
        Table1Options {
            train: TrainConfig {
                epochs: 3,
                seed: 7,
                ..Table1Options::paper_training()
            },
            folds: 2,
            n_latent: 4,
            spatial_likelihood: CountLikelihood::Poisson,
            auto_kappa: false,
            device: crate::BackendKind::NdArray.open().unwrap().autodiff(),
            fold_of: None,
            progress: false,
            posterior_samples: 5,
            ensemble: 1,
            calibration_splits,
            calibration_epochs: None,
        }
    }

    #[test]
    fn table1_calibrates_kappa_5_intervals_when_asked() {
        let pair = small_pair();
        let (_, calibrated) = table1(&pair, &small_options(2)).unwrap();
        assert_eq!(calibrated.posterior.len(), 2);
        assert!(calibrated
            .posterior
            .iter()
            .all(FoldPosterior::is_calibrated));
        let names: Vec<&str> = calibrated
            .intervals
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "gimVI calibrated",
                "gimVI calibrated, given detection",
                "gimVI raw posterior"
            ]
        );
        assert!(calibrated.intervals_markdown().contains("gimVI calibrated"));
        // The product's interval is the calibrated one, not the raw posterior's.
        let fold = &calibrated.posterior[0];
        let differs = (0..fold.cells.len()).any(|c| {
            (0..fold.genes.len()).any(|j| fold.interval(c, j, 0.9) != fold.raw_interval(c, j, 0.9))
        });
        assert!(
            differs,
            "calibrated intervals equal the raw ones everywhere"
        );

        // Without calibration trainings: the raw intervals only, and the model's own point
        // imputation (the calibration trains beside the model, never instead of it); the
        // calibrated run returns it tempered with the w its calibration chose, which keeps
        // each gene's total, or as it is when the calibration keeps w = 1.
        let (_, raw) = table1(&pair, &small_options(0)).unwrap();
        assert!(raw.posterior.iter().all(|f| !f.is_calibrated()));
        let names: Vec<&str> = raw.intervals.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["gimVI raw posterior"]);
        let fold = &raw.posterior[0];
        assert_eq!(fold.interval(0, 0, 0.9), fold.raw_interval(0, 0, 0.9));
        let (model, returned) = (&raw.posterior[0].mean, &calibrated.posterior[0].mean);
        match calibrated.posterior[0].tempering() {
            None => assert_eq!(model, returned),
            Some(w) => {
                assert!((0.0..1.0).contains(&w), "w = {w}");
                for (a, b) in model.columns().into_iter().zip(returned.columns()) {
                    let (a, b) = (a.sum(), b.sum());
                    assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn unexplained_fraction_of_an_exact_linear_relation_is_zero() {
        let x = array![[1.0, 0.0], [2.0, 1.0], [3.0, 5.0], [4.0, 2.0], [5.0, 3.0]];
        let y = x.column(0).mapv(|v| 2.0 * v) + x.column(1).mapv(|v| -0.5 * v) + 1.0;
        let u = unexplained_fraction(x.view(), y.view()).unwrap();
        assert!(u < 1e-9, "{u}");
    }

    #[test]
    fn unexplained_fraction_of_an_unrelated_gene_is_high() {
        // y alternates independently of the single regressor's trend.
        let x = array![[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]];
        let y = array![1.0, -1.0, 1.0, -1.0, 1.0, -1.0];
        let u = unexplained_fraction(x.view(), y.view()).unwrap();
        // Least squares: slope −0.2286 explains R² = 0.0857 of the variance.
        assert!((u - (1.0 - 0.0857)).abs() < 1e-3, "{u}");
        assert!(
            unexplained_fraction(x.view(), ndarray::Array1::from_elem(6, 2.0).view()).is_none()
        );
    }

    #[test]
    fn worth_imputing_ranks_the_less_uncertain_gene_higher() {
        let fold = FoldPosterior::new(
            vec![0, 2],
            vec![0, 1],
            array![[10.0, 10.0], [20.0, 20.0]],
            array![[1.0, 25.0], [4.0, 100.0]],
            None,
        );
        let w = worth_imputing(&[fold], 3);
        assert_eq!(w[1], None);
        assert!((w[0].unwrap() + 0.1).abs() < 1e-12);
        assert!((w[2].unwrap() + 0.5).abs() < 1e-12);
    }
}
