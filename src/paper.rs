//! The paper's imputation benchmark (Lopez et al. 2019, Table 1) on a dataset pair, as its
//! reproduction code runs it: the scRNA-seq data restricted to the genes shared with the
//! spatial data, cells without counts dropped, the shared genes split into seeded folds (every
//! gene held out once), latent dimension 8, 100 epochs, and the **unnormalised** imputed mean
//! scored against the **raw** held-out counts (the tutorial's normalised scoring is reported
//! beside it).
//!
//! Methods: gimVI with κ = 0 (the δρ reference, as in Table 1), κ = 1, κ = 5 and κ chosen
//! automatically per fold on the fold's training genes only ([`crate::pipeline::choose_kappa`]);
//! the paper's scVI + k-NN baseline; a per-gene-mean baseline; k-NN on the shared genes.

use gimvi_data::prepare::{drop_empty_cells, match_genes, validate_counts, CountPolicy};
use gimvi_data::registry::DatasetPair;
use gimvi_likelihoods::CountLikelihood;
use std::collections::BTreeMap;

use gimvi_metrics::correlation::{median, spearman};
use gimvi_metrics::protocol::{
    evaluate, evaluate_with_folds, FoldTask, Imputer, ImputerError, KnnExpressionImputer,
    MeanImputer, ProtocolConfig, ProtocolReport,
};
use gimvi_trainer::TrainConfig;
use ndarray::{Array2, ArrayView2};
use std::time::Instant;

use crate::pipeline::{GimviImputer, PipelineError, ScviKnnImputer};
use crate::Device;

/// Settings of [`table1`].
#[derive(Debug, Clone)]
pub struct Table1Options {
    /// Training epochs per model (paper: 100).
    pub epochs: usize,
    /// Gene folds (paper: 5, i.e. 20 % held out).
    pub folds: usize,
    /// Seed of the folds and of training.
    pub seed: u64,
    /// Latent dimension (paper: 8).
    pub n_latent: usize,
    /// Likelihood of the spatial counts (Poisson for osmFISH, NB for starMAP).
    pub spatial_likelihood: CountLikelihood,
    /// Include gimVI with automatically chosen κ (4 trainings per fold).
    pub auto_kappa: bool,
    /// Training device (autodiff).
    pub device: Device,
    /// Use these gene folds instead of the seeded split: gene name (matched case-insensitively)
    /// → fold number 0..K. Every shared gene must be listed. Used to run the very folds of
    /// scvi-tools' anchor script (`scripts/anchor_folds.py`).
    pub fold_of: Option<BTreeMap<String, usize>>,
    /// Report progress on stderr: one line per method and fold (with its time and the fold's
    /// median Spearman) and, on a terminal, an epoch bar while a model trains.
    pub progress: bool,
}

/// Wraps an imputer and, when `print` is set, prints one line to stderr when it has finished
/// a fold.
struct Progress<'a> {
    inner: &'a mut dyn Imputer,
    /// All spatial counts (cells × shared genes), to score the finished fold.
    truth: ArrayView2<'a, f64>,
    folds: usize,
    started: Instant,
    print: bool,
}

impl Imputer for Progress<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        let start = Instant::now();
        let out = self.inner.impute(task);
        if let (true, Ok(pred)) = (self.print, &out) {
            // The fold's median Spearman (paper scoring) of this method, for orientation.
            let rhos: Vec<f64> = task
                .test_genes
                .iter()
                .enumerate()
                .filter_map(|(j, &g)| {
                    spearman(&pred.column(j).to_vec(), &self.truth.column(g).to_vec())
                        .ok()
                        .flatten()
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
    /// κ chosen in each fold by the automatic method.
    pub chosen_kappas: Vec<f64>,
}

/// Runs the benchmark on `pair`; returns the protocol report and what it ran on.
pub fn table1(
    pair: &DatasetPair,
    options: &Table1Options,
) -> Result<(ProtocolReport, Table1Data), PipelineError> {
    let m = match_genes(&pair.sc, &pair.spatial)?;
    let mut sc = pair.sc.select_genes(&m.first_index);
    let mut sp = pair.spatial.select_genes(&m.second_index);
    validate_counts(&mut sc, CountPolicy::RequireIntegers)?;
    validate_counts(&mut sp, CountPolicy::RequireIntegers)?;
    let (sc, sc_dropped) = drop_empty_cells(&sc)?;
    let (sp, sp_dropped) = drop_empty_cells(&sp)?;
    let train = TrainConfig {
        epochs: options.epochs,
        seed: options.seed,
        // The paper's reproduction code trains on 95 % of each dataset's cells.
        train_fraction: 0.95,
        progress: options.progress,
        ..TrainConfig::default()
    };
    let gimvi = |kappa: f64, auto: bool| GimviImputer {
        name: if auto {
            "gimVI κ* (automatic)".to_string()
        } else {
            format!("gimVI κ={kappa}")
        },
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
    };
    let (mut k0, mut k1, mut k5, mut kauto) = (
        gimvi(0.0, false),
        gimvi(1.0, false),
        gimvi(5.0, false),
        gimvi(5.0, true),
    );
    let mut scvi = ScviKnnImputer {
        train: train.clone(),
        n_latent: options.n_latent,
        sc_likelihood: CountLikelihood::Zinb,
        spatial_likelihood: options.spatial_likelihood,
        device: options.device.clone(),
    };
    let mut mean = MeanImputer;
    let mut knn = KnnExpressionImputer::default();
    let mut methods: Vec<&mut dyn Imputer> = vec![&mut k0, &mut k1, &mut k5];
    if options.auto_kappa {
        methods.push(&mut kauto);
    }
    methods.extend([
        &mut scvi as &mut dyn Imputer,
        &mut mean as &mut dyn Imputer,
        &mut knn as &mut dyn Imputer,
    ]);
    let (sc_dense, sp_dense) = (sc.counts.to_dense_f64(), sp.counts.to_dense_f64());
    // Explicit gene folds (the anchor's), as indices into the shared genes.
    let explicit_folds = match &options.fold_of {
        None => None,
        Some(fold_of) => {
            let lower: BTreeMap<String, usize> = fold_of
                .iter()
                .map(|(g, &f)| (g.to_lowercase(), f))
                .collect();
            let n_folds = lower.values().max().map_or(0, |&m| m + 1);
            let mut folds = vec![Vec::new(); n_folds];
            for (i, g) in sc.genes.iter().enumerate() {
                let f = lower.get(&g.to_lowercase()).ok_or_else(|| {
                    PipelineError::Input(format!("gene '{g}' has no fold in the given folds"))
                })?;
                folds[*f].push(i);
            }
            Some(folds)
        }
    };
    let started = Instant::now();
    let report = {
        let mut wrapped: Vec<Progress<'_>> = methods
            .into_iter()
            .map(|inner| Progress {
                inner,
                truth: sp_dense.view(),
                folds: explicit_folds.as_ref().map_or(options.folds, Vec::len),
                started,
                print: options.progress,
            })
            .collect();
        let mut methods: Vec<&mut dyn Imputer> =
            wrapped.iter_mut().map(|p| p as &mut dyn Imputer).collect();
        match &explicit_folds {
            None => evaluate(
                &sc.genes,
                sc_dense.view(),
                sp_dense.view(),
                &mut methods,
                ProtocolConfig {
                    folds: options.folds,
                    seed: options.seed,
                },
            ),
            Some(folds) => evaluate_with_folds(
                &sc.genes,
                sc_dense.view(),
                sp_dense.view(),
                &mut methods,
                folds,
                options.seed,
            ),
        }
        .map_err(|e| PipelineError::Input(e.to_string()))?
    };
    Ok((
        report,
        Table1Data {
            genes: sc.genes.clone(),
            sc_cells: (sc.n_cells(), sc_dropped),
            spatial_cells: (sp.n_cells(), sp_dropped),
            chosen_kappas: kauto.chosen_kappas.iter().map(|c| c.kappa).collect(),
        },
    ))
}
