//! The held-out-gene evaluation protocol of Lopez et al. 2019 (Table 1), reusable for any
//! imputation method.
//!
//! The genes measured in both datasets are split into K seeded folds (default 5, i.e. 20 % held
//! out per fold). For each fold the method sees the scRNA-seq counts of every shared gene and
//! the spatial counts of the training genes only, and predicts the held-out genes in the
//! spatial cells (those of the fold, below). After all folds every shared gene has been held
//! out exactly once; each gene is scored by the correlation across spatial cells between
//! prediction and measurement, and the median over genes summarises a method.
//!
//! Two scoring conventions are reported side by side, because published numbers use both:
//! * **paper** (the paper's reproduction code): the unnormalised prediction (expected counts,
//!   scaled by the cell's observed library on the training genes) against the raw held-out
//!   counts;
//! * **tutorial** (scvi-tools' gimVI tutorial): the normalised prediction (divided by that
//!   library) against the counts divided by the cell's total over all shared genes.
//!
//! Cells without counts on a fold's training genes are left out of that fold, as in the
//! paper's reproduction code (and scvi-tools' GIMVI benchmark): a spatial cell with no
//! observed counts has no library ℓ′ to scale a prediction by, and a scRNA-seq cell that is
//! empty once the held-out genes are hidden is dropped with it. The held-out genes of a fold
//! are scored over the spatial cells that fold kept.
//!
//! A correlation that is undefined (a constant prediction or a gene never detected) counts as 0
//! in the medians, as in the scvi-tools tutorial; the report says how many there were.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::correlation::{median, relative_change, spearman};
use crate::li2022::gene_metrics;
use crate::regression::{default_k, knn_regress};
use crate::MetricsError;

/// Error type imputers may return.
pub type ImputerError = Box<dyn std::error::Error + Send + Sync>;

/// Settings of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolConfig {
    /// Number of gene folds K (each fold holds out ~1/K of the shared genes). Default 5.
    pub folds: usize,
    /// Seed of the gene split (and handed to the imputers). Default 0.
    pub seed: u64,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self { folds: 5, seed: 0 }
    }
}

/// Splits gene indices 0..n into `folds` disjoint folds whose sizes differ by at most one,
/// after a seeded shuffle (ChaCha8). Each fold is sorted. Every gene is in exactly one fold.
pub fn gene_folds(
    n_genes: usize,
    folds: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>, MetricsError> {
    if folds < 2 || folds > n_genes {
        return Err(MetricsError::TooFewGenes {
            genes: n_genes,
            folds,
        });
    }
    let mut perm: Vec<usize> = (0..n_genes).collect();
    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    Ok((0..folds)
        .map(|f| {
            let mut fold = perm[f * n_genes / folds..(f + 1) * n_genes / folds].to_vec();
            fold.sort_unstable();
            fold
        })
        .collect())
}

/// What an imputer sees in one fold.
#[derive(Debug, Clone)]
pub struct FoldTask<'a> {
    /// Fold number, 0-based.
    pub fold: usize,
    /// Names of the shared genes (columns of `sc_counts`).
    pub gene_names: &'a [String],
    /// scRNA-seq counts of the fold's cells (those with counts on the training genes),
    /// cells × shared genes (all of them).
    pub sc_counts: ArrayView2<'a, f64>,
    /// Rows of the whole scRNA-seq matrix that `sc_counts` holds, in order.
    pub sc_cells: &'a [usize],
    /// Spatial counts of the training genes only, for the fold's cells (those with counts on
    /// the training genes): cells × `train_genes.len()`.
    pub spatial_train: ArrayView2<'a, f64>,
    /// Rows of the whole spatial matrix that `spatial_train` holds, in order.
    pub spatial_cells: &'a [usize],
    /// Indices (into the shared genes) of the genes the spatial data keeps in this fold.
    pub train_genes: &'a [usize],
    /// Indices (into the shared genes) of the held-out genes to predict.
    pub test_genes: &'a [usize],
    /// The protocol's seed, for imputers that need randomness.
    pub seed: u64,
}

impl FoldTask<'_> {
    /// Observed library of every spatial cell of the fold on the training genes (ℓ′ of the
    /// paper).
    pub fn spatial_library(&self) -> Vec<f64> {
        self.spatial_train.sum_axis(Axis(1)).to_vec()
    }

    /// scRNA-seq counts restricted to the training genes, cells × training genes.
    pub fn sc_train(&self) -> Array2<f64> {
        self.sc_counts.select(Axis(1), self.train_genes)
    }

    /// scRNA-seq counts of the held-out genes, cells × held-out genes.
    pub fn sc_test(&self) -> Array2<f64> {
        self.sc_counts.select(Axis(1), self.test_genes)
    }
}

/// An imputation method evaluated by the protocol.
pub trait Imputer {
    /// Name shown in reports.
    fn name(&self) -> String;

    /// Predicted expression of the held-out genes in every spatial cell of the fold
    /// (`task.spatial_train`'s rows) on the count scale (i.e. scaled by the cell's observed
    /// library on the training genes): those cells × `task.test_genes.len()`.
    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError>;
}

/// Score of one gene under one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneScore {
    /// Gene name.
    pub gene: String,
    /// Fold in which the gene was held out.
    pub fold: usize,
    /// Spearman, unnormalised prediction vs raw counts (paper protocol).
    pub spearman_paper: Option<f64>,
    /// Spearman, normalised prediction vs counts / cell total (tutorial protocol).
    pub spearman_tutorial: Option<f64>,
    /// Pearson, unnormalised prediction vs raw counts (Li et al. 2022's PCC).
    pub pearson_paper: Option<f64>,
    /// Li et al. 2022's SSIM of the max-scaled columns ([`crate::li2022::ssim`]).
    #[serde(default)]
    pub ssim: Option<f64>,
    /// Li et al. 2022's RMSE of the z-scored columns ([`crate::li2022::rmse_zscored`]).
    #[serde(default)]
    pub rmse: Option<f64>,
    /// Li et al. 2022's Jensen–Shannon divergence ([`crate::li2022::js_divergence`]).
    #[serde(default)]
    pub js: Option<f64>,
}

/// One method's results over all folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodReport {
    /// Method name.
    pub name: String,
    /// Wall-clock seconds spent in `impute` over all folds.
    pub seconds: f64,
    /// Per-gene scores, in the order of the shared genes.
    pub per_gene: Vec<GeneScore>,
    /// Median over genes of Spearman, paper protocol (undefined counted as 0).
    pub median_spearman_paper: f64,
    /// Median over genes of Spearman, tutorial protocol: prediction and measurement each
    /// normalised by the cell's library, so that library size alone scores nothing
    /// ("normalised Spearman"; undefined counted as 0).
    pub median_spearman_tutorial: f64,
    /// Median over genes of Pearson, paper scale (undefined counted as 0).
    pub median_pearson_paper: f64,
    /// Median over genes of δρ = (ρ − ρ_ref)/|ρ_ref| against the report's reference method
    /// (paper protocol Spearman); `None` for the reference itself or if undefined everywhere.
    pub median_delta_vs_reference: Option<f64>,
    /// Number of genes whose paper-protocol Spearman was undefined.
    pub undefined_genes: usize,
    /// Li et al. 2022's metrics, each the mean over the genes where it is defined.
    #[serde(default = "nan_means")]
    pub li2022: Li2022Means,
    /// Li et al. 2022's accuracy score among the report's methods
    /// ([`crate::li2022::accuracy_scores`]; recomputed by [`ProtocolReport::rank_accuracy`]).
    #[serde(default = "nan", deserialize_with = "crate::li2022::null_as_nan")]
    pub accuracy_score: f64,
}

/// A method's means over genes of Li et al. 2022's four metrics.
pub type Li2022Means = crate::li2022::MetricMeans;

fn nan() -> f64 {
    f64::NAN
}

fn nan_means() -> Li2022Means {
    Li2022Means {
        pcc: f64::NAN,
        ssim: f64::NAN,
        rmse: f64::NAN,
        js: f64::NAN,
    }
}

/// Mean of the defined values (NaN when none is).
fn mean_defined(values: impl Iterator<Item = Option<f64>>) -> f64 {
    let (sum, n) = values
        .flatten()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

impl MethodReport {
    /// Li et al. 2022's four metrics of these per-gene scores.
    pub fn li2022_means(per_gene: &[GeneScore]) -> Li2022Means {
        Li2022Means {
            pcc: mean_defined(per_gene.iter().map(|s| s.pearson_paper)),
            ssim: mean_defined(per_gene.iter().map(|s| s.ssim)),
            rmse: mean_defined(per_gene.iter().map(|s| s.rmse)),
            js: mean_defined(per_gene.iter().map(|s| s.js)),
        }
    }
}

/// The protocol's machine-readable output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolReport {
    /// Settings used.
    pub config: ProtocolConfig,
    /// scRNA-seq cells.
    pub n_sc_cells: usize,
    /// Spatial cells.
    pub n_spatial_cells: usize,
    /// Shared genes, in column order.
    pub genes: Vec<String>,
    /// Held-out genes of each fold.
    pub folds: Vec<Vec<String>>,
    /// The method δρ is measured against (the first one evaluated).
    pub reference_method: Option<String>,
    /// scRNA-seq cells each fold kept (those with counts on its training genes).
    #[serde(default)]
    pub fold_sc_cells: Vec<usize>,
    /// Spatial cells each fold kept and scored its held-out genes over.
    #[serde(default)]
    pub fold_spatial_cells: Vec<usize>,
    /// One entry per method, in evaluation order.
    pub methods: Vec<MethodReport>,
}

impl ProtocolReport {
    /// Recomputes every method's Li et al. 2022 accuracy score among the methods the report
    /// holds now (after methods were added or removed).
    pub fn rank_accuracy(&mut self) {
        let means: Vec<Li2022Means> = self.methods.iter().map(|m| m.li2022).collect();
        for (m, s) in self
            .methods
            .iter_mut()
            .zip(crate::li2022::accuracy_scores(&means))
        {
            m.accuracy_score = s;
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report contains only serialisable data")
    }

    /// A markdown table: one row per method.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "Held-out-gene protocol: {} shared genes, {} folds (seed {}), {} scRNA-seq cells, \
             {} spatial cells. δρ against {}.\n\n",
            self.genes.len(),
            self.config.folds,
            self.config.seed,
            self.n_sc_cells,
            self.n_spatial_cells,
            self.reference_method.as_deref().unwrap_or("—")
        );
        let range = |v: &[usize]| match (v.iter().min(), v.iter().max()) {
            (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
            (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
            _ => "—".to_string(),
        };
        if !self.fold_sc_cells.is_empty() {
            out.push_str(&format!(
                "Per fold, cells without counts on the fold's training genes are left out: \
                 {} scRNA-seq and {} spatial cells kept.\n\n",
                range(&self.fold_sc_cells),
                range(&self.fold_spatial_cells)
            ));
        }
        out.push_str(
            "Medians over genes: Spearman of the imputed counts vs the raw counts (paper), of \
             both normalised by the cell's library (normalised), Pearson. Means over genes: Li \
             et al. 2022's PCC, SSIM, RMSE (z-scored) and JS, and their accuracy score (AS) \
             among the methods below.\n\n",
        );
        out.push_str(
            "| method | Spearman (paper) | Spearman (normalised) | Pearson | PCC | SSIM | RMSE | \
             JS | AS | median δρ | undefined genes | seconds |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for m in &self.methods {
            let l = &m.li2022;
            out.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | \
                 {:.1} |\n",
                m.name,
                m.median_spearman_paper,
                m.median_spearman_tutorial,
                m.median_pearson_paper,
                l.pcc,
                l.ssim,
                l.rmse,
                l.js,
                m.accuracy_score,
                m.median_delta_vs_reference
                    .map_or("—".to_string(), |d| format!("{d:+.3}")),
                m.undefined_genes,
                m.seconds
            ));
        }
        out
    }
}

fn validate_counts(name: &'static str, m: ArrayView2<'_, f64>) -> Result<(), MetricsError> {
    if m.nrows() == 0 {
        return Err(MetricsError::Empty(name));
    }
    if m.iter().any(|x| !x.is_finite()) {
        return Err(MetricsError::NonFinite(name));
    }
    if m.iter().any(|&x| x < 0.0) {
        return Err(MetricsError::Negative(name));
    }
    Ok(())
}

/// Runs the protocol for every imputer (the first one is the δρ reference).
///
/// `sc_counts` (scRNA-seq cells × shared genes) and `spatial_counts` (spatial cells × shared
/// genes) must have the shared genes in the same column order, named by `gene_names`.
pub fn evaluate(
    gene_names: &[String],
    sc_counts: ArrayView2<'_, f64>,
    spatial_counts: ArrayView2<'_, f64>,
    imputers: &mut [&mut dyn Imputer],
    config: ProtocolConfig,
) -> Result<ProtocolReport, MetricsError> {
    let n_genes = gene_names.len();
    for (what, got) in [
        ("scRNA-seq columns vs shared genes", sc_counts.ncols()),
        ("spatial columns vs shared genes", spatial_counts.ncols()),
    ] {
        if got != n_genes {
            return Err(MetricsError::ShapeMismatch {
                what,
                expected: n_genes,
                got,
            });
        }
    }
    let folds = gene_folds(n_genes, config.folds, config.seed)?;
    evaluate_with_folds(
        gene_names,
        sc_counts,
        spatial_counts,
        imputers,
        &folds,
        config.seed,
    )
}

/// [`evaluate`] with a given split of the genes into folds (indices into `gene_names`; every
/// gene in exactly one fold, at least two folds) instead of the seeded one — e.g. to use the
/// very folds another tool used. `seed` is handed to the imputers.
pub fn evaluate_with_folds(
    gene_names: &[String],
    sc_counts: ArrayView2<'_, f64>,
    spatial_counts: ArrayView2<'_, f64>,
    imputers: &mut [&mut dyn Imputer],
    folds: &[Vec<usize>],
    seed: u64,
) -> Result<ProtocolReport, MetricsError> {
    let n_genes = gene_names.len();
    for (what, got) in [
        ("scRNA-seq columns vs shared genes", sc_counts.ncols()),
        ("spatial columns vs shared genes", spatial_counts.ncols()),
    ] {
        if got != n_genes {
            return Err(MetricsError::ShapeMismatch {
                what,
                expected: n_genes,
                got,
            });
        }
    }
    validate_counts("scRNA-seq counts", sc_counts)?;
    validate_counts("spatial counts", spatial_counts)?;
    if imputers.is_empty() {
        return Err(MetricsError::Empty("list of imputers"));
    }
    let mut seen = vec![0usize; n_genes];
    for &g in folds.iter().flatten() {
        if g >= n_genes {
            return Err(MetricsError::ShapeMismatch {
                what: "gene index in a fold (number of shared genes)",
                expected: n_genes,
                got: g + 1,
            });
        }
        seen[g] += 1;
    }
    if folds.len() < 2 || folds.iter().any(|f| f.is_empty()) || seen.iter().any(|&c| c != 1) {
        return Err(MetricsError::InvalidFolds(format!(
            "{} folds over {n_genes} genes; every fold must be non-empty and every gene in \
             exactly one fold",
            folds.len()
        )));
    }
    let config = ProtocolConfig {
        folds: folds.len(),
        seed,
    };
    let n_cells = spatial_counts.nrows();
    let mut fold_of = vec![0usize; n_genes];

    // Predictions on the count scale and normalised by the fold's training library; NaN for
    // the cells a gene's fold left out.
    let mut raw_pred = vec![Array2::<f64>::from_elem((n_cells, n_genes), f64::NAN); imputers.len()];
    let mut norm_pred = raw_pred.clone();
    let mut seconds = vec![0.0f64; imputers.len()];
    let (mut fold_sc_cells, mut fold_spatial_cells) = (Vec::new(), Vec::new());

    for (f, test) in folds.iter().enumerate() {
        let train: Vec<usize> = (0..n_genes).filter(|g| !test.contains(g)).collect();
        for &g in test {
            fold_of[g] = f;
        }
        let sc_cells = cells_with_counts(sc_counts, &train);
        let spatial_cells = cells_with_counts(spatial_counts, &train);
        if sc_cells.is_empty() {
            return Err(MetricsError::Empty(
                "scRNA-seq cells with counts on a fold's training genes",
            ));
        }
        if spatial_cells.is_empty() {
            return Err(MetricsError::Empty(
                "spatial cells with counts on a fold's training genes",
            ));
        }
        fold_sc_cells.push(sc_cells.len());
        fold_spatial_cells.push(spatial_cells.len());
        let sc_fold = sc_counts.select(Axis(0), &sc_cells);
        let spatial_train = spatial_counts
            .select(Axis(0), &spatial_cells)
            .select(Axis(1), &train);
        let task = FoldTask {
            fold: f,
            gene_names,
            sc_counts: sc_fold.view(),
            sc_cells: &sc_cells,
            spatial_train: spatial_train.view(),
            spatial_cells: &spatial_cells,
            train_genes: &train,
            test_genes: test,
            seed: config.seed,
        };
        let library = task.spatial_library();
        let n_fold = spatial_cells.len();
        for (m, imputer) in imputers.iter_mut().enumerate() {
            let start = Instant::now();
            let pred = imputer
                .impute(&task)
                .map_err(|source| MetricsError::Imputer {
                    method: imputer.name(),
                    source,
                })?;
            seconds[m] += start.elapsed().as_secs_f64();
            if pred.dim() != (n_fold, test.len()) {
                return Err(MetricsError::ShapeMismatch {
                    what: "imputer output (the fold's spatial cells · held-out genes)",
                    expected: n_fold * test.len(),
                    got: pred.len(),
                });
            }
            if pred.iter().any(|x| !x.is_finite()) {
                return Err(MetricsError::NonFinite("imputer output"));
            }
            for (j, &g) in test.iter().enumerate() {
                for (i, &c) in spatial_cells.iter().enumerate() {
                    raw_pred[m][[c, g]] = pred[[i, j]];
                    // Every kept cell has a positive library on the training genes.
                    norm_pred[m][[c, g]] = pred[[i, j]] / library[i];
                }
            }
        }
    }

    let totals = spatial_counts.sum_axis(Axis(1));
    let mut truth_norm = spatial_counts.to_owned();
    for (mut row, &t) in truth_norm.outer_iter_mut().zip(totals.iter()) {
        if t > 0.0 {
            row.mapv_inplace(|v| v / t);
        }
    }

    let mut methods = Vec::with_capacity(imputers.len());
    let mut reference_rho: Option<Vec<Option<f64>>> = None;
    for (m, imputer) in imputers.iter().enumerate() {
        let mut per_gene = Vec::with_capacity(n_genes);
        for g in 0..n_genes {
            // The cells the gene's fold kept.
            let scored: Vec<usize> = (0..n_cells)
                .filter(|&c| raw_pred[m][[c, g]].is_finite())
                .collect();
            let pick = |a: &Array2<f64>| scored.iter().map(|&c| a[[c, g]]).collect::<Vec<_>>();
            let p = pick(&raw_pred[m]);
            let t = scored
                .iter()
                .map(|&c| spatial_counts[[c, g]])
                .collect::<Vec<_>>();
            let pn = pick(&norm_pred[m]);
            let tn = pick(&truth_norm);
            let [pcc, ssim, rmse, js] = gene_metrics(&t, &p)?;
            per_gene.push(GeneScore {
                gene: gene_names[g].clone(),
                fold: fold_of[g],
                spearman_paper: spearman(&p, &t)?,
                spearman_tutorial: spearman(&pn, &tn)?,
                pearson_paper: pcc,
                ssim,
                rmse,
                js,
            });
        }
        let zero_filled = |f: fn(&GeneScore) -> Option<f64>| -> f64 {
            let v: Vec<f64> = per_gene.iter().map(|s| f(s).unwrap_or(0.0)).collect();
            median(&v).unwrap_or(0.0)
        };
        let rho: Vec<Option<f64>> = per_gene.iter().map(|s| s.spearman_paper).collect();
        let median_delta_vs_reference = reference_rho.as_ref().and_then(|r0| {
            let d: Vec<f64> = relative_change(&rho, r0).into_iter().flatten().collect();
            median(&d)
        });
        if reference_rho.is_none() {
            reference_rho = Some(rho.clone());
        }
        methods.push(MethodReport {
            name: imputer.name(),
            seconds: seconds[m],
            median_spearman_paper: zero_filled(|s| s.spearman_paper),
            median_spearman_tutorial: zero_filled(|s| s.spearman_tutorial),
            median_pearson_paper: zero_filled(|s| s.pearson_paper),
            median_delta_vs_reference,
            undefined_genes: rho.iter().filter(|r| r.is_none()).count(),
            li2022: MethodReport::li2022_means(&per_gene),
            accuracy_score: f64::NAN,
            per_gene,
        });
    }

    let mut report = ProtocolReport {
        config,
        n_sc_cells: sc_counts.nrows(),
        n_spatial_cells: n_cells,
        genes: gene_names.to_vec(),
        folds: folds
            .iter()
            .map(|f| f.iter().map(|&g| gene_names[g].clone()).collect())
            .collect(),
        reference_method: methods.first().map(|m| m.name.clone()),
        fold_sc_cells,
        fold_spatial_cells,
        methods,
    };
    report.rank_accuracy();
    Ok(report)
}

/// Rows of `counts` with a positive sum over `genes` (the cells a fold keeps).
fn cells_with_counts(counts: ArrayView2<'_, f64>, genes: &[usize]) -> Vec<usize> {
    counts
        .outer_iter()
        .enumerate()
        .filter(|(_, row)| genes.iter().map(|&g| row[g]).sum::<f64>() > 0.0)
        .map(|(c, _)| c)
        .collect()
}

/// Row-normalised proportions of `counts` (each row divided by its sum; zero rows stay zero).
fn proportions(counts: ArrayView2<'_, f64>) -> Array2<f64> {
    let mut out = counts.to_owned();
    for mut row in out.outer_iter_mut() {
        let t: f64 = row.sum();
        if t > 0.0 {
            row.mapv_inplace(|v| v / t);
        }
    }
    out
}

/// Baseline: each held-out gene's mean scRNA-seq expression, as a fraction of the cell's
/// counts on the training genes, times the spatial cell's observed library on the training
/// genes. Every cell gets the same profile up to its library size, so its per-gene Spearman
/// measures how much of a gene's spatial variation library size alone explains.
#[derive(Debug, Clone, Default)]
pub struct MeanImputer;

impl Imputer for MeanImputer {
    fn name(&self) -> String {
        "per-gene mean".to_string()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        let sc_train = task.sc_train();
        let sc_test = task.sc_test();
        let lib: Vec<f64> = sc_train.sum_axis(Axis(1)).to_vec();
        let used: Vec<usize> = (0..lib.len()).filter(|&i| lib[i] > 0.0).collect();
        if used.is_empty() {
            return Err("no scRNA-seq cell has counts on the training genes".into());
        }
        let mut mean = vec![0.0; task.test_genes.len()];
        for &i in &used {
            for (m, v) in mean.iter_mut().zip(sc_test.row(i)) {
                *m += v / lib[i];
            }
        }
        mean.iter_mut().for_each(|m| *m /= used.len() as f64);
        let spatial_lib = task.spatial_library();
        Ok(Array2::from_shape_fn(
            (spatial_lib.len(), mean.len()),
            |(c, g)| mean[g] * spatial_lib[c],
        ))
    }
}

/// Baseline without a model: k-NN regression in the space of the training genes.
///
/// Both datasets are log-normalised on the training genes (log(1 + n_train · proportion)),
/// each gene z-scored within its own dataset (removing platform-specific detection
/// efficiencies, as SpaGE does), then every spatial cell averages the normalised held-out
/// expression of its k nearest scRNA-seq cells (k = 5 % of them by default, as the paper's
/// k-NN baselines), scaled by its own observed library.
#[derive(Debug, Clone, Default)]
pub struct KnnExpressionImputer {
    /// Neighbourhood size; `None` = 5 % of the scRNA-seq cells.
    pub k: Option<usize>,
}

fn log_normalised_z(counts: ArrayView2<'_, f64>) -> Array2<f32> {
    let g = counts.ncols() as f64;
    let mut x = proportions(counts).mapv(|p| (g * p).ln_1p());
    for mut col in x.columns_mut() {
        let n = col.len() as f64;
        let mean = col.sum() / n;
        let sd = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        col.mapv_inplace(|v| if sd > 0.0 { (v - mean) / sd } else { 0.0 });
    }
    x.mapv(|v| v as f32)
}

impl Imputer for KnnExpressionImputer {
    fn name(&self) -> String {
        "k-NN on shared genes".to_string()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        let sc_train = task.sc_train();
        let sc_space = log_normalised_z(sc_train.view());
        let sp_space = log_normalised_z(task.spatial_train);
        // Held-out expression as a fraction of the training-gene library.
        let lib = sc_train.sum_axis(Axis(1));
        let mut target = task.sc_test();
        for (mut row, &l) in target.outer_iter_mut().zip(lib.iter()) {
            row.mapv_inplace(|v| if l > 0.0 { v / l } else { 0.0 });
        }
        let k = self.k.unwrap_or_else(|| default_k(sc_space.nrows()));
        let mut pred = knn_regress(sc_space.view(), target.view(), sp_space.view(), k)?;
        let spatial_lib = task.spatial_library();
        for (mut row, l) in pred.outer_iter_mut().zip(spatial_lib) {
            row.mapv_inplace(|v| v * l);
        }
        Ok(pred)
    }
}

/// An imputer that returns the measured held-out counts: an upper bound (Spearman 1 for every
/// gene with variation) used to test the protocol itself. It needs the full spatial matrix.
#[derive(Debug, Clone)]
pub struct OracleImputer {
    /// The full spatial counts, cells × shared genes.
    pub spatial_counts: Array2<f64>,
}

impl Imputer for OracleImputer {
    fn name(&self) -> String {
        "oracle (measured values)".to_string()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        Ok(self
            .spatial_counts
            .select(Axis(0), task.spatial_cells)
            .select(Axis(1), task.test_genes))
    }
}

/// Imputations another tool made beforehand on the same folds (e.g. scvi-tools' GIMVI or
/// Tangram, run by `scripts/peers/`), scored by the same protocol as the methods run here.
#[derive(Debug, Clone)]
pub struct PrecomputedImputer {
    /// Name in reports.
    pub name: String,
    /// Predictions, spatial cells × shared genes (the evaluation's rows and columns): entry
    /// (c, g) is the tool's imputation of gene g in cell c from the fold that held g out; NaN
    /// where the tool made none. A gene NaN in every cell of its fold is scored as a constant
    /// prediction (undefined correlations count as 0); one NaN in only some cells is an error.
    pub predictions: Array2<f64>,
}

impl Imputer for PrecomputedImputer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        let mut out = self
            .predictions
            .select(Axis(0), task.spatial_cells)
            .select(Axis(1), task.test_genes);
        // A gene the tool made no finite value for at all (Tangram leaves NaN where a gene has
        // no expression in its reference cells) is scored as a constant prediction: its
        // correlations are undefined and count as 0, it is counted among the undefined genes,
        // and Li 2022's means leave it out. A gene missing in only some cells is an error.
        for mut col in out.columns_mut() {
            if col.iter().all(|v| !v.is_finite()) {
                col.fill(0.0);
            }
        }
        if let Some(((i, j), _)) = out.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!(
                "no finite prediction for spatial cell {} of gene '{}' (fold {}): the tool \
                 dropped a cell this fold keeps, or ran on other folds",
                task.spatial_cells[i], task.gene_names[task.test_genes[j]], task.fold
            )
            .into());
        }
        Ok(out)
    }
}
