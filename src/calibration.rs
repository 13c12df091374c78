//! Prediction intervals for imputed counts, calibrated by split conformal prediction on the
//! measured spatial genes.
//!
//! gimVI's posterior (Lopez et al. 2019, Fig. 3: the variance over samples of z) says where the
//! model is unsure, but not how far a measurement falls from the imputation: most of that error
//! is the platform's gene-specific capture efficiency, which no posterior of z sees. So the
//! spread is *calibrated* on genes whose truth is known. Some of the measured spatial genes are
//! hidden in turn from extra trainings (the inner splits of [`crate::inner`], nested inside
//! whatever the caller holds out), imputed, and every hidden (cell, gene) gives a signed,
//! scaled residual on the log scale
//!
//! r = (ln(1 + x) − ln(1 + μ)) / s,  s = √((v + μ + τ) / (1 + μ)² + σ²_G),
//!
//! where μ and v are the posterior mean and variance of the imputed expected count (the
//! variance over posterior samples of z, Fig. 3) and μ the Poisson noise of the count itself
//! (Eq. 6), carried to the log scale (delta method), τ a small floor; σ²_G is the spread the
//! posterior cannot see, the between-gene variance of the calibration genes' mean log-scale
//! errors (a gene's efficiency on the spatial assay relative to the reference: the sample
//! variance over calibration genes of each gene's mean of ln(1 + x) − ln(1 + μ)). The log
//! scale turns the multiplicative, gene-level errors of a capture efficiency into shifts that
//! one table of quantiles can hold, and σ²_G puts them in every point's scale: without it a
//! highly expressed imputation, whose Poisson and posterior spread on the log scale is small,
//! had the largest scaled residuals, and the quantiles of a stratum mixed points whose error
//! is mostly efficiency with points whose error is mostly counting noise.
//!
//! Part of a gene's efficiency is predictable from its level: a targeted panel regresses to
//! the mean, measuring a gene the reference expresses little relatively more and one it
//! expresses much relatively less. So before its residual or interval, every imputation (μ, v)
//! is moved to (μ·e^δ̂, v·e^{2δ̂}), with δ̂ = a + b·ln(L + 10⁻³) the least-squares line of the
//! calibration genes' log efficiencies ln((Σx + ½)/(Σμ + ½)) on their log levels, L a gene's
//! mean imputed count over the cells imputed together, and the line shrunk toward 0 by
//! b²/(b² + se(b)²) so that a slope the genes do not determine is not used; σ²_G is then the
//! spread the line leaves. The residuals are
//! grouped in strata of expression level × posterior coefficient of variation (tertiles of
//! each, nine strata, a stratum with too few points or genes falls back to all points), and
//! an interval at coverage c is
//!
//! [exp(ln(1 + μ) + s·q₋) − 1, exp(ln(1 + μ) + s·q₊) − 1] (lower end at least 0),
//!
//! with q₋, q₊ the stratum's conformal quantiles of r at (1 − c)/2 and (1 + c)/2 (finite-sample
//! ranks ⌊(n + 1)·p⌋ and ⌈(n + 1)·p⌉), the upper one taken in count space: since the lower end
//! is clamped at 0, a zero count is never above an interval, so the upper tail is cut among the
//! nonzero residuals (and from the zeros' low end where a stratum has too few of them). Without
//! a calibration the same form with the normal quantiles ±z gives the *raw posterior*
//! interval, the uncalibrated baseline.
//!
//! The same hidden genes choose how far the point imputation is tempered toward the cell's
//! library ([`crate::tempering`]): the exponent w is chosen on the points first, the points
//! are tempered with it, and everything above is built on the tempered μ (with the model's
//! own v), the point [`crate::Gimvi::impute`] returns.
//!
//! The guarantee is split conformal's: coverage holds on average over genes exchangeable with
//! the calibration genes. Errors of one gene share its efficiency, so the effective sample is
//! closer to the number of calibration genes than to the number of points.

use burn::tensor::Device;
use gimvi_data::CsrMatrix;
use gimvi_model::{ImputeOptions, ModelConfig};
use gimvi_trainer::TrainConfig;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::statistics::Statistics;

use crate::error::Error;
use crate::inner::{gene_groups, inner_split, InnerSplit, INNER_GROUPS};
use crate::prepare::fit;

/// Floor added to the variance of the scale s (keeps s > 0 where μ ≈ 0).
const SCALE_FLOOR: f64 = 0.01;
/// Order statistics kept per stratum (its quantile function on a grid of this many steps).
const GRID: usize = 1000;
/// A stratum is used on its own only with at least this many points …
const MIN_STRATUM_POINTS: usize = 200;
/// … from at least this many genes; otherwise the pooled table is used.
const MIN_STRATUM_GENES: usize = 5;
/// Posterior samples of z drawn for the calibration genes (the paper's 50).
pub(crate) const CALIBRATION_SAMPLES: usize = 50;
/// Seed offset of the calibration's gene split (independent of the κ choice's).
const SPLIT_SEED: u64 = 0x0c0f_fee5;
/// Seed offset of the calibration trainings.
const TRAIN_SEED: u64 = 7_777;

/// Default coverage of the intervals [`crate::Gimvi::impute`] returns.
pub(crate) const DEFAULT_COVERAGE: f64 = 0.9;

/// Share of the model's epochs a calibration training runs by default. Five trainings of 40 %
/// cost two models' worth of work, and on two cores they run beside the model's own training
/// (`docs/performance.md`); the coverage they calibrate was checked on every real pair
/// (`docs/results.md`, Prediction intervals).
const DEFAULT_EPOCH_SHARE: f64 = 0.4;

/// Epochs of one calibration training: `given`, or by default [`DEFAULT_EPOCH_SHARE`] of the
/// model's `epochs` (rounded up, at least 1). A given 0 stays 0, which [`calibrate_beside`]
/// refuses.
fn calibration_epochs(epochs: usize, given: Option<usize>) -> usize {
    given.unwrap_or_else(|| ((epochs as f64 * DEFAULT_EPOCH_SHARE).ceil() as usize).max(1))
}

/// The training configuration of a calibration training: the model's own `train` at κ =
/// `kappa` (the fit's first κ) for [`calibration_epochs`] epochs, with the adversarial
/// classifier trained on the encoders' first pass of each step
/// (`TrainConfig::classifier_second_pass` off). The second pass helps the model's own
/// accuracy (`docs/results.md`), but a calibration training only has to err as the model does
/// on the genes it hides: without the pass the calibration costs ~14 % less CPU, a default fit
/// ~12 % less wall time, and the intervals stayed within the seed spread on every real pair
/// (seeds 0–2; `docs/notes/intervals-2026-12.md`).
pub(crate) fn calibration_train(
    train: &TrainConfig,
    kappa: f64,
    given_epochs: Option<usize>,
) -> TrainConfig {
    TrainConfig {
        kappa,
        classifier_second_pass: false,
        epochs: calibration_epochs(train.epochs, given_epochs),
        ..train.clone()
    }
}

/// The scale s of a residual for posterior mean `mu` and variance `var`, with the
/// between-gene variance `gene_var` (σ²_G, 0 for the raw posterior) added on the log scale
/// (module docs).
fn scale(mu: f64, var: f64, gene_var: f64) -> f64 {
    let mu = mu.max(0.0);
    ((var.max(0.0) + mu + SCALE_FLOOR) / (1.0 + mu).powi(2) + gene_var.max(0.0)).sqrt()
}

/// The log-scale error ln(1 + x) − ln(1 + μ) of count `x` (the residual before scaling).
fn log_error(x: f64, mu: f64) -> f64 {
    x.max(0.0).ln_1p() - mu.max(0.0).ln_1p()
}

/// The signed scaled residual r of count `x` (module docs).
fn residual(x: f64, mu: f64, var: f64, gene_var: f64) -> f64 {
    log_error(x, mu) / scale(mu, var, gene_var)
}

/// The between-gene variance σ²_G of a calibration's points (module docs): the sample
/// variance over genes of each gene's mean log-scale error. 0 with fewer than two genes.
fn gene_shift_variance(points: &[&Point]) -> f64 {
    // Gene → (Σ error, points), in gene order (a deterministic sum).
    let mut per_gene: std::collections::BTreeMap<usize, (f64, usize)> = Default::default();
    for p in points {
        let e = log_error(p.1, p.2);
        if e.is_finite() {
            let g = per_gene.entry(p.0).or_insert((0.0, 0));
            g.0 += e;
            g.1 += 1;
        }
    }
    if per_gene.len() < 2 {
        return 0.0;
    }
    // statrs' sample variance (n − 1).
    let var = per_gene.values().map(|g| g.0 / g.1 as f64).variance();
    if var.is_finite() {
        var
    } else {
        0.0
    }
}

/// Floor added to a gene's mean imputed count before its logarithm (a gene imputed at 0 in
/// every cell keeps a finite level).
const LEVEL_FLOOR: f64 = 1e-3;
/// Pseudo-count added to a gene's summed counts and summed imputations in its efficiency.
const EFFICIENCY_PSEUDO: f64 = 0.5;

/// The level of a gene in the cells imputed together: the mean of its imputed counts μ,
/// one value per column of `mean` (cells × genes). [`IntervalCalibration::interval`] takes
/// it; the calibration computes it the same way over the cells of each calibration training.
pub(crate) fn gene_levels<'a, T>(mean: &'a ndarray::Array2<T>) -> Vec<f64>
where
    T: Copy + Into<f64> + 'a,
{
    mean.columns()
        .into_iter()
        .map(|c| {
            let n = c.len().max(1) as f64;
            c.iter().map(|&v| v.into()).sum::<f64>() / n
        })
        .collect()
}

/// The spatial assay's efficiency for a gene relative to the imputation, predicted from the
/// gene's imputed level (module docs): δ̂(L) = a + b·ln(L + 10⁻³), the least-squares line of
/// the calibration genes' log efficiencies ln((Σx + ½) / (Σμ + ½)) on their log levels, shrunk
/// toward 0 by b² / (b² + se(b)²) (a slope the genes do not determine is not used). A
/// targeted panel regresses to the mean: a gene the reference expresses little is measured
/// relatively more, one it expresses much relatively less (slopes −0.57 to −0.74 on the
/// osmFISH and starMAP panels, about 0 on PDAC's whole transcriptome).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct GeneBias {
    /// a: the log efficiency at level 1 − 10⁻³.
    intercept: f64,
    /// b: change of the log efficiency per unit of log level.
    slope: f64,
}

/// Gene (index into G) → (Σ x, Σ μ, points) of a calibration's points, in gene order.
type GeneSums = std::collections::BTreeMap<usize, (f64, f64, usize)>;

/// Per gene of `points` (in gene order, so that sums are deterministic): (Σ x, Σ μ, points),
/// over the points whose count and imputation are finite.
fn gene_sums(points: &[Point]) -> GeneSums {
    let mut per_gene = GeneSums::new();
    for p in points.iter().filter(|p| p.1.is_finite() && p.2.is_finite()) {
        let g = per_gene.entry(p.0).or_insert((0.0, 0.0, 0));
        g.0 += p.1.max(0.0);
        g.1 += p.2.max(0.0);
        g.2 += 1;
    }
    per_gene
}

impl GeneBias {
    /// The line through the genes of `sums` ([`gene_sums`] of one dataset's calibration
    /// points), one (level, efficiency) per gene; `None` with fewer than three genes or levels
    /// that do not vary.
    fn fit(sums: &GeneSums) -> Option<Self> {
        if sums.len() < 3 {
            return None;
        }
        let (levels, efficiencies): (Vec<f64>, Vec<f64>) = sums
            .values()
            .map(|&(x, mu, n)| {
                (
                    (mu / n as f64 + LEVEL_FLOOR).ln(),
                    ((x + EFFICIENCY_PSEUDO) / (mu + EFFICIENCY_PSEUDO)).ln(),
                )
            })
            .unzip();
        let (l_mean, e_mean) = (levels.iter().mean(), efficiencies.iter().mean());
        // statrs' sample covariance and variance (both over n − 1).
        let l_var = levels.iter().variance();
        let spread = l_var * (levels.len() - 1) as f64;
        let slope = levels.iter().covariance(efficiencies.iter()) / l_var;
        let intercept = e_mean - slope * l_mean;
        // Shrunk toward no bias by the slope's own uncertainty, b² / (b² + se(b)²): where the
        // genes' levels barely vary, the slope is noise and the line is dropped.
        let rss: f64 = levels
            .iter()
            .zip(&efficiencies)
            .map(|(l, e)| (e - intercept - slope * l).powi(2))
            .sum();
        let se2 = rss / (levels.len() - 2).max(1) as f64 / spread;
        let shrink = slope * slope / (slope * slope + se2);
        let line = Self {
            intercept: intercept * shrink,
            slope: slope * shrink,
        };
        (spread > 1e-12 && line.intercept.is_finite() && line.slope.is_finite()).then_some(line)
    }

    /// The imputation (μ, v) moved by the predicted efficiency of a gene at `level`:
    /// (μ·e^δ̂, v·e^{2δ̂}).
    fn adjust(&self, mu: f64, var: f64, level: f64) -> (f64, f64) {
        let delta = self.intercept + self.slope * (level.max(0.0) + LEVEL_FLOOR).ln();
        // e^±20 bounds a line extrapolated far outside the calibration genes' levels (no
        // overflow of μ or v); on the real panels |δ̂| stays under 3.
        let factor = delta.clamp(-20.0, 20.0).exp();
        (mu * factor, var * factor * factor)
    }
}

/// The interval of quantiles `(q_lo, q_hi)` of r around `mu` (module docs).
fn interval_from(mu: f64, var: f64, gene_var: f64, q_lo: f64, q_hi: f64) -> (f64, f64) {
    let (centre, s) = (mu.max(0.0).ln_1p(), scale(mu, var, gene_var));
    let lo = if q_lo == f64::NEG_INFINITY {
        0.0
    } else {
        (centre + s * q_lo).exp_m1().max(0.0)
    };
    let hi = if q_hi == f64::INFINITY {
        f64::INFINITY
    } else {
        // At least the lower end: where the calibration leaves every nonzero count above
        // (q₊ = −∞) and the lower end is above 0, [lo, lo] holds no whole count, as it must.
        (centre + s * q_hi).exp_m1().max(0.0).max(lo)
    };
    (lo, hi)
}

/// The raw posterior interval at `coverage`: the normal quantiles ±z of the scaled residual.
pub(crate) fn raw_interval(mu: f64, var: f64, coverage: f64) -> (f64, f64) {
    let z = normal_quantile(0.5 + coverage / 2.0);
    interval_from(mu, var, 0.0, -z, z)
}

fn normal_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p.clamp(1e-12, 1.0 - 1e-12))
}

/// Checks a coverage given by a user.
pub(crate) fn check_coverage(coverage: f64) -> Result<(), Error> {
    if coverage.is_finite() && coverage > 0.0 && coverage < 1.0 {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "the interval coverage must lie strictly between 0 and 1 (e.g. 0.9), got {coverage}"
        )))
    }
}

/// Which stratum a (μ, v) pair falls in, given the tertile edges.
fn stratum_of(mu: f64, var: f64, level_edges: &[f64; 2], cv_edges: &[f64; 2]) -> usize {
    let (level, cv) = features(mu, var);
    let bin = |v: f64, e: &[f64; 2]| usize::from(v > e[0]) + usize::from(v > e[1]);
    3 * bin(level, level_edges) + bin(cv, cv_edges)
}

/// Expression level ln(1 + μ) and posterior coefficient of variation √v / μ.
fn features(mu: f64, var: f64) -> (f64, f64) {
    let mu = mu.max(0.0);
    (mu.ln_1p(), var.max(0.0).sqrt() / mu.max(1e-6))
}

/// A hidden (cell, gene): the gene (index into G), its count x, and the posterior mean μ and
/// variance v of its imputation.
type Point = (usize, f64, f64, f64);

/// The points of one calibration training, per spatial dataset: its index, its points and
/// each point's cell library ℓ′ (over the genes the training saw).
type SplitPoints = Vec<(usize, Vec<Point>, Vec<f64>)>;

/// `points` with every gene's imputations μ tempered with exponent `w` over the cells of its
/// training ([`crate::tempering::temper_gene`], `libs` the points' cell libraries); the
/// posterior variances stay as they are (module docs of [`crate::tempering`]).
fn temper_points(points: &[Point], libs: &[f64], w: f64) -> Vec<Point> {
    let mut out = points.to_vec();
    for rows in crate::tempering::rows_by_gene(points.iter().map(|p| p.0)).values() {
        let mu: Vec<f64> = rows.iter().map(|&i| points[i].2).collect();
        let cell_libs: Vec<f64> = rows.iter().map(|&i| libs[i]).collect();
        let tempered = crate::tempering::temper_gene(&mu, &cell_libs, w);
        for (&i, t) in rows.iter().zip(tempered) {
            out[i].2 = t;
        }
    }
    out
}

/// Sorted values kept as a grid of order statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Grid {
    /// Values it was built from.
    points: usize,
    /// Order statistics at ranks 1 + t·(points − 1)/GRID, t = 0..=GRID (interpolated).
    order: Vec<f64>,
}

impl Grid {
    /// From finite values (`None` if there are none).
    fn new(mut r: Vec<f64>) -> Option<Self> {
        r.retain(|v| v.is_finite());
        if r.is_empty() {
            return None;
        }
        r.sort_by(f64::total_cmp);
        let n = r.len();
        let order = (0..=GRID)
            .map(|t| {
                let pos = t as f64 * (n - 1) as f64 / GRID as f64;
                let (i, f) = (pos.floor() as usize, pos.fract());
                r[i] + f * (r[(i + 1).min(n - 1)] - r[i])
            })
            .collect();
        Some(Self { points: n, order })
    }

    /// The order statistic of rank `rank` (1..=points), interpolated on the grid.
    fn at_rank(&self, rank: f64) -> f64 {
        if self.points == 1 {
            return self.order[0];
        }
        let pos = (rank - 1.0) / (self.points - 1) as f64 * GRID as f64;
        let pos = pos.clamp(0.0, GRID as f64);
        let (i, f) = (pos.floor() as usize, pos.fract());
        self.order[i] + f * (self.order[(i + 1).min(GRID)] - self.order[i])
    }
}

/// The residuals of one stratum: all of them, and those of zero and of nonzero counts apart.
///
/// The count interval's lower end is clamped at 0, so a zero count is covered whenever the
/// lower quantile lies at or below its residual, whatever the upper one: in count space the
/// upper end only ever excludes *nonzero* counts. The quantiles are therefore chosen in count
/// space ([`Table::quantiles`]): the upper tail is cut among the nonzero residuals, and where
/// the stratum has too few of them the rest of the tail is cut from the zeros' lower end.
/// Without this, a stratum of mostly zeros covers almost all of them at every nominal level
/// (Zeisel550 + starMAP: 27 % of held-out entries covered at nominal 1 %).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Table {
    /// All its residuals.
    #[serde(flatten)]
    all: Grid,
    /// Distinct genes among them.
    genes: usize,
    /// Residuals of zero counts (`None` if none; absent in calibrations saved before the
    /// count-space rule, which then use the equal-tailed quantiles of `order`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zeros: Option<Grid>,
    /// Residuals of nonzero counts (`None` if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonzero: Option<Grid>,
    /// Whether `zeros` and `nonzero` were recorded (the count-space rule applies).
    #[serde(default)]
    split_by_zero: bool,
}

impl Table {
    /// From (count, residual) pairs of `genes` distinct genes.
    fn new(points: Vec<(f64, f64)>, genes: usize) -> Option<Self> {
        let points: Vec<(f64, f64)> = points.into_iter().filter(|p| p.1.is_finite()).collect();
        let all = Grid::new(points.iter().map(|p| p.1).collect())?;
        let of = |zero: bool| {
            Grid::new(
                points
                    .iter()
                    .filter(|p| (p.0 <= 0.0) == zero)
                    .map(|p| p.1)
                    .collect(),
            )
        };
        Some(Self {
            all,
            genes,
            zeros: of(true),
            nonzero: of(false),
            split_by_zero: true,
        })
    }

    /// Conformal quantiles (q₋, q₊) of r for an interval at `coverage`.
    ///
    /// Split conformal leaves k₋ − 1 points below and n − k₊ above, with the finite-sample
    /// ranks k₋ = ⌊(n + 1)α/2⌋ and k₊ = ⌈(n + 1)(1 − α/2)⌉ (α = 1 − coverage; a bound is
    /// infinite where its rank falls outside 1..=n). In count space only nonzero counts can lie
    /// above an interval, so q₊ is the order statistic of the nonzero residuals that leaves
    /// n − k₊ of them above; if the stratum has fewer nonzero points than that, all of them
    /// are left out (q₊ = −∞: upper end 0) and the remainder is taken from the low end of the
    /// zeros. Either way the calibration points left out number (k₋ − 1) + (n − k₊), as in
    /// the equal-tailed rule.
    fn quantiles(&self, coverage: f64) -> (f64, f64) {
        let n = self.all.points as f64;
        let alpha = 1.0 - coverage;
        // A hair of slack so that 1 − 0.9 = 0.0999… does not move a rank.
        let lo_rank = ((n + 1.0) * alpha / 2.0 + 1e-9).floor();
        let hi_rank = ((n + 1.0) * (1.0 - alpha / 2.0) - 1e-9).ceil();
        let lower = |rank: f64| {
            if rank < 1.0 {
                f64::NEG_INFINITY
            } else {
                self.all.at_rank(rank)
            }
        };
        if hi_rank > n {
            // Nothing left out above: unbounded.
            return (lower(lo_rank), f64::INFINITY);
        }
        if !self.split_by_zero {
            return (lower(lo_rank), self.all.at_rank(hi_rank));
        }
        let above = n - hi_rank;
        let nonzero = self.nonzero.as_ref().map_or(0.0, |g| g.points as f64);
        match &self.nonzero {
            Some(g) if above < nonzero => (lower(lo_rank), g.at_rank(nonzero - above)),
            _ => {
                // Every nonzero point lies above; the rest of the upper tail comes from the
                // zeros' low end (largest μ first), after the k₋ − 1 of the lower tail.
                let excess = above - nonzero;
                let rank = lo_rank + excess;
                let lo = match &self.zeros {
                    Some(z) if rank >= 1.0 => z.at_rank(rank.min(z.points as f64)),
                    _ => f64::NEG_INFINITY,
                };
                (lo, f64::NEG_INFINITY)
            }
        }
    }
}

/// The genes and (count, residual) pairs of one stratum's calibration points.
type StratumPoints = (Vec<usize>, Vec<(f64, f64)>);

/// Quantile tables of one set of calibration points: per stratum and pooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TableSet {
    /// Tables of the nine strata (`None`: too few points or genes, the pooled one is used).
    strata: Vec<Option<Table>>,
    /// All points together.
    pooled: Table,
}

impl TableSet {
    fn new(
        points: &[&Point],
        level_edges: &[f64; 2],
        cv_edges: &[f64; 2],
        gene_var: f64,
    ) -> Option<Self> {
        // Each point's stratum and (count, residual), computed once, in point order: per
        // stratum, its points' genes and (count, residual) pairs.
        let mut members: Vec<StratumPoints> = vec![Default::default(); 9];
        let mut all_genes = Vec::with_capacity(points.len());
        let mut all_pairs = Vec::with_capacity(points.len());
        for p in points {
            let pair = (p.1, residual(p.1, p.2, p.3, gene_var));
            let m = &mut members[stratum_of(p.2, p.3, level_edges, cv_edges)];
            m.0.push(p.0);
            m.1.push(pair);
            all_genes.push(p.0);
            all_pairs.push(pair);
        }
        let distinct = |mut g: Vec<usize>| {
            g.sort_unstable();
            g.dedup();
            g.len()
        };
        let pooled = Table::new(all_pairs, distinct(all_genes))?;
        let strata = members
            .into_iter()
            .map(|(genes, pairs)| {
                let genes = distinct(genes);
                if pairs.len() < MIN_STRATUM_POINTS || genes < MIN_STRATUM_GENES {
                    return None;
                }
                Table::new(pairs, genes)
            })
            .collect();
        Some(Self { strata, pooled })
    }

    fn table(&self, stratum: usize) -> &Table {
        self.strata
            .get(stratum)
            .and_then(Option::as_ref)
            .unwrap_or(&self.pooled)
    }
}

/// The calibration of one spatial dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DatasetCalibration {
    /// Its index among the model's datasets.
    dataset: usize,
    /// Tertile edges of ln(1 + μ) over the calibration points.
    level_edges: [f64; 2],
    /// Tertile edges of the posterior coefficient of variation.
    cv_edges: [f64; 2],
    /// The between-gene variance σ²_G of the calibration genes' mean log-scale errors, part
    /// of every residual's scale (module docs; 0 in calibrations saved before it was, whose
    /// tables were made without it).
    #[serde(default)]
    gene_var: f64,
    /// The predicted efficiency of a gene from its imputed level, applied to every imputation
    /// before its residual or interval (module docs; `None` in calibrations saved before it
    /// was, or with fewer than three calibration genes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gene_bias: Option<GeneBias>,
    /// The exponent w of the tempered point imputation chosen on the calibration points
    /// ([`crate::tempering`]; the points were tempered with it before everything else here).
    /// `None` in calibrations saved before it was, or with fewer than three genes: the
    /// model's imputation, untempered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tempering: Option<f64>,
    /// Tables of every calibration point: intervals for a measurement, zero or not.
    all: TableSet,
    /// Tables of the points with a nonzero count: intervals for a measurement given that the
    /// gene is detected in the cell (`None` without enough such points).
    detected: Option<TableSet>,
}

impl DatasetCalibration {
    /// From (gene, x, μ, v) points of hidden genes and each point's cell library `libs`: the
    /// tempering exponent w chosen on them ([`crate::tempering::choose`]), the points tempered
    /// with it, then [`DatasetCalibration::new`] on the tempered points.
    fn tempered(dataset: usize, points: &[Point], libs: &[f64]) -> Option<Self> {
        let triples: Vec<(usize, f64, f64)> = points.iter().map(|p| (p.0, p.1, p.2)).collect();
        let choice = crate::tempering::choose(&triples, libs);
        let tempered: Vec<Point>;
        let points = match choice {
            Some(w) if w < 1.0 => {
                tempered = temper_points(points, libs, w);
                &tempered[..]
            }
            _ => points,
        };
        let mut calibration = Self::new(dataset, points)?;
        calibration.tempering = choice;
        Some(calibration)
    }

    /// From (gene, x, μ, v) points of hidden genes, each gene's points being all the cells of
    /// the training that hid it (its level is their mean μ).
    fn new(dataset: usize, points: &[Point]) -> Option<Self> {
        let sums = gene_sums(points);
        Self::with_bias(dataset, points, &sums, GeneBias::fit(&sums))
    }

    /// [`DatasetCalibration::new`] with the gene-bias line given (`None`: no line), `sums`
    /// being [`gene_sums`] of `points`.
    fn with_bias(
        dataset: usize,
        points: &[Point],
        sums: &GeneSums,
        gene_bias: Option<GeneBias>,
    ) -> Option<Self> {
        let adjusted: Vec<Point>;
        let points = match &gene_bias {
            Some(bias) => {
                adjusted = points
                    .iter()
                    .map(|&(gene, x, mu, var)| {
                        let level = sums.get(&gene).map_or(0.0, |g| g.1 / g.2.max(1) as f64);
                        let (mu, var) = bias.adjust(mu, var, level);
                        (gene, x, mu, var)
                    })
                    .collect();
                &adjusted[..]
            }
            None => points,
        };
        let tertiles = |mut v: Vec<f64>| {
            v.retain(|x| x.is_finite());
            v.sort_by(f64::total_cmp);
            if v.is_empty() {
                return [0.0, 0.0];
            }
            [v[v.len() / 3], v[2 * v.len() / 3]]
        };
        let level_edges = tertiles(points.iter().map(|p| features(p.2, p.3).0).collect());
        let cv_edges = tertiles(points.iter().map(|p| features(p.2, p.3).1).collect());
        let all: Vec<&Point> = points.iter().collect();
        let detected: Vec<&Point> = points.iter().filter(|p| p.1 > 0.0).collect();
        // From every point, zeros included, for both table sets: one scale per imputation.
        let gene_var = gene_shift_variance(&all);
        Some(Self {
            dataset,
            all: TableSet::new(&all, &level_edges, &cv_edges, gene_var)?,
            detected: TableSet::new(&detected, &level_edges, &cv_edges, gene_var),
            level_edges,
            cv_edges,
            gene_var,
            gene_bias,
            tempering: None,
        })
    }

    /// The calibrated interval of an imputation (μ, v) of a gene at `level` (module docs).
    fn interval(
        &self,
        (mu, var): (f64, f64),
        level: f64,
        coverage: f64,
        given_detection: bool,
    ) -> Option<(f64, f64)> {
        let (mu, var) = self
            .gene_bias
            .map_or((mu, var), |bias| bias.adjust(mu, var, level));
        let (q_lo, q_hi) = self.table(mu, var, given_detection)?.quantiles(coverage);
        Some(interval_from(mu, var, self.gene_var, q_lo, q_hi))
    }

    /// The table for an imputation (μ, v): of all points, or of the detected ones.
    fn table(&self, mu: f64, var: f64, given_detection: bool) -> Option<&Table> {
        let s = stratum_of(mu, var, &self.level_edges, &self.cv_edges);
        if given_detection {
            self.detected.as_ref().map(|t| t.table(s))
        } else {
            Some(self.all.table(s))
        }
    }
}

/// Conformal calibration of a model's prediction intervals (module docs): for each spatial
/// dataset, quantile tables of the scaled residuals of genes hidden from extra trainings. Made
/// by training with [`crate::FitOptions::calibration_splits`] > 0, saved with the model
/// (`calibration.json`), used by [`crate::Gimvi::impute`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IntervalCalibration {
    datasets: Vec<DatasetCalibration>,
    /// Extra trainings it took.
    pub trainings: usize,
    /// Hidden (cell, gene) pairs it was built from, over all datasets.
    pub points: usize,
    /// Hidden genes it was built from, over all datasets.
    pub genes: usize,
    /// Epochs of each extra training (0 in files written before this was recorded).
    #[serde(default)]
    pub epochs: usize,
    /// Whether the extra trainings' adversarial classifier trained on a second encoder pass
    /// (`None` in files written before this was recorded).
    #[serde(default)]
    pub classifier_second_pass: Option<bool>,
}

impl IntervalCalibration {
    /// How the intervals of this calibration are made (recorded in the output file).
    pub fn method(&self) -> String {
        // Calibrations saved before σ²_G have it 0 in every dataset.
        let gene = if self.datasets.iter().any(|d| d.gene_var > 0.0) {
            " and the between-gene variance of the calibration genes' mean log errors"
        } else {
            ""
        };
        let bias = if self.datasets.iter().any(|d| d.gene_bias.is_some()) {
            "centred by the gene's efficiency predicted from its imputed level, "
        } else {
            ""
        };
        let tempered: Vec<String> = self
            .datasets
            .iter()
            .filter_map(|d| d.tempering)
            .map(|w| format!("{w:.2}"))
            .collect();
        let temper = if tempered.is_empty() {
            String::new()
        } else {
            format!(
                "; point imputation tempered toward the cell's library with w = {} chosen on them",
                tempered.join(", ")
            )
        };
        let pass = match self.classifier_second_pass {
            Some(false) => ", adversarial classifier on the first encoder pass",
            Some(true) => ", adversarial classifier on a second encoder pass",
            None => "",
        };
        format!(
            "split conformal on {} measured spatial genes hidden from {} extra trainings \
             of {} epochs{pass} ({} points): log-scale residuals {bias}scaled by the posterior and \
             Poisson spread{gene}, quantiles per stratum of expression level x posterior CV{temper}",
            self.genes, self.trainings, self.epochs, self.points
        )
    }

    /// The tempering exponent w < 1 of dataset `m`'s point imputation ([`crate::tempering`]),
    /// `None` when the model's imputation is kept (w = 1 chosen, none chosen, or no such
    /// dataset).
    pub(crate) fn tempering(&self, m: usize) -> Option<f64> {
        self.datasets
            .iter()
            .find(|d| d.dataset == m)?
            .tempering
            .filter(|&w| w < 1.0)
    }

    /// Whether dataset `m` has a calibration (with `given_detection`: one of its detected
    /// points).
    pub(crate) fn covers(&self, m: usize, given_detection: bool) -> bool {
        self.datasets
            .iter()
            .any(|d| d.dataset == m && (!given_detection || d.detected.is_some()))
    }

    /// The calibrated interval of an imputed count with posterior mean `mu` and variance
    /// `var` in dataset `m`, of a gene whose level (mean imputed count over the cells imputed
    /// together, [`gene_levels`]) is `level`: for a measurement (zero or not), or with
    /// `given_detection` for a measurement given that the gene is detected (nonzero) in the
    /// cell; `None` if the dataset has no such calibration.
    pub(crate) fn interval(
        &self,
        m: usize,
        (mu, var): (f64, f64),
        level: f64,
        coverage: f64,
        given_detection: bool,
    ) -> Option<(f64, f64)> {
        self.datasets.iter().find(|d| d.dataset == m)?.interval(
            (mu, var),
            level,
            coverage,
            given_detection,
        )
    }
}

/// Calibrates intervals for the model `config` on `data` (module docs): `splits` (1–5) extra
/// trainings with `train`, each hiding one of five seeded groups of ~20 % of every spatial
/// dataset's genes (datasets with at least 4 genes); the hidden genes are imputed with
/// [`CALIBRATION_SAMPLES`] posterior samples and their residuals tabulated. Callers
/// evaluating held-out genes pass data without them, so the calibration never sees them.
/// `Some(Ok(None))` when no spatial dataset has 4 genes to hide from (the intervals are then
/// the raw posterior's); `None` when `splits` is 0 (no calibration asked for).
///
/// `main` (the model's own training) reports progress through the `emit` function it is
/// given; the calling thread hands each event to `on_event` (so `on_event` need not be
/// `Send`). On a CPU with several cores `main` runs at the same time as the calibration, on a
/// thread of its own: the cores are split into rayon pools, one per concurrent training, one
/// worker per other core takes the calibration trainings one after another, and `main`'s
/// thread joins them once `main` has returned, so no core waits for the slowest training of a
/// batch and no two trainings share a pool. On other devices (or one core), and without
/// calibration (`splits` 0, or a refused request), `main` runs on the calling thread, then the
/// calibration trainings one at a time. Each training is seeded on its own and the results
/// are merged in split order, so they do not depend on the scheduling.
pub(crate) fn calibrate_beside<T: Send, E: Send>(
    config: &ModelConfig,
    data: &[&CsrMatrix],
    train: &TrainConfig,
    splits: usize,
    device: &Device,
    main: impl FnOnce(&dyn Fn(E)) -> T + Send,
    on_event: impl FnMut(E),
) -> (T, Option<Result<Option<IntervalCalibration>, Error>>) {
    let on_event = std::cell::RefCell::new(on_event);
    if splits == 0 {
        return (run_here(main, &on_event), None);
    }
    if splits > INNER_GROUPS {
        return (
            run_here(main, &on_event),
            Some(Err(Error::Input(format!(
                "interval calibration takes 1 to {INNER_GROUPS} extra trainings, got {splits}"
            )))),
        );
    }
    if train.epochs == 0 {
        return (
            run_here(main, &on_event),
            Some(Err(Error::Input(
                "a calibration training needs at least one epoch (calibration epochs = 0)".into(),
            ))),
        );
    }
    let groups = gene_groups(config, train.seed ^ SPLIT_SEED, 4);
    if groups.is_empty() {
        return (run_here(main, &on_event), Some(Ok(None)));
    }
    let tasks: Vec<_> = (0..splits)
        .filter_map(|split| inner_split(config, data, &groups, split).map(|inner| (split, inner)))
        .collect();
    let cores = if crate::backend::is_cpu(device) {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::OnceLock<Result<SplitPoints, Error>>> =
        tasks.iter().map(|_| std::sync::OnceLock::new()).collect();
    // Takes the next training not yet taken until none is left.
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some((split, inner)) = tasks.get(i) else {
            break;
        };
        // A panic stays inside its split (the scope would re-raise it).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            split_points(data, inner, *split, train, device)
        }))
        .unwrap_or_else(|_| Err(Error::Input("a calibration training panicked".into())));
        // Each index is taken once, so the slot is empty.
        let _ = slots[i].set(result);
    };
    // Each training runs in its own rayon pool: in one shared pool, the parallel kernels of
    // concurrent trainings queue behind one another and their threads sit blocked (one
    // process: 5.1× one model's time for 6 trainings on 2 cores, where two processes side by
    // side each train at full speed). `main` runs on a thread of its own, in a pool with the
    // cores the workers leave. One core (or a GPU): no worker, all in turn on this thread.
    let workers = (cores - 1).min(tasks.len());
    let per_pool = (cores / (workers + 1)).max(1);
    let pool = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .ok()
    };
    let main_result = if workers == 0 {
        // One core, or a device that is not the CPU: in turn, on the calling thread.
        let out = run_here(main, &on_event);
        work();
        out
    } else {
        let main_pool = pool(cores.saturating_sub(workers * per_pool).max(1));
        let (sender, events) = std::sync::mpsc::channel::<E>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(move || match pool(per_pool) {
                    Some(pool) => pool.install(work),
                    None => work(),
                });
            }
            let main_thread = scope.spawn(move || {
                let body = move || {
                    // The sender goes with `main`'s emit: once `main` returns, the events end.
                    let out = {
                        let sender = sender;
                        main(&move |e| {
                            // The receiver lives until every event is in (below).
                            let _ = sender.send(e);
                        })
                    };
                    work();
                    out
                };
                match main_pool {
                    Some(pool) => pool.install(body),
                    None => body(),
                }
            });
            for e in events {
                (on_event.borrow_mut())(e);
            }
            main_thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    };
    let results: Vec<Result<SplitPoints, Error>> = slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|| Err(Error::Input("a calibration training panicked".into())))
        })
        .collect();
    (main_result, Some(merge(results, train)))
}

/// Runs `main` on the calling thread, its events straight to `on_event`.
fn run_here<T, E>(
    main: impl FnOnce(&dyn Fn(E)) -> T,
    on_event: &std::cell::RefCell<impl FnMut(E)>,
) -> T {
    main(&|e| (on_event.borrow_mut())(e))
}

/// The calibration tables from the splits' points (in split order), each trained with
/// `train`.
fn merge(
    results: Vec<Result<SplitPoints, Error>>,
    train: &TrainConfig,
) -> Result<Option<IntervalCalibration>, Error> {
    // Per dataset: (gene, x, μ, v) of every hidden (cell, gene), in split order, and its
    // cell's library.
    let mut points: SplitPoints = Vec::new();
    let mut trainings = 0;
    for result in results {
        trainings += 1;
        for (dataset, new, libs) in result? {
            match points.iter_mut().find(|p| p.0 == dataset) {
                Some(p) => {
                    p.1.extend(new);
                    p.2.extend(libs);
                }
                None => points.push((dataset, new, libs)),
            }
        }
    }
    let mut genes = 0;
    let mut total = 0;
    let mut datasets = Vec::new();
    for (m, p, libs) in &points {
        if let Some(d) = DatasetCalibration::tempered(*m, p, libs) {
            genes += d.all.pooled.genes;
            total += d.all.pooled.all.points;
            datasets.push(d);
        }
    }
    if datasets.is_empty() {
        return Err(Error::Input(
            "interval calibration found no hidden gene with a finite residual".into(),
        ));
    }
    Ok(Some(IntervalCalibration {
        datasets,
        trainings,
        points: total,
        genes,
        epochs: train.epochs,
        classifier_second_pass: Some(train.classifier_second_pass),
    }))
}

/// One calibration training: fits the model without the split's hidden genes (seeded by the
/// split) and returns, per spatial dataset, the (gene, x, μ, v) of every hidden (cell, gene).
fn split_points(
    data: &[&CsrMatrix],
    inner: &InnerSplit,
    split: usize,
    train: &TrainConfig,
    device: &Device,
) -> Result<SplitPoints, Error> {
    let refs = inner.data(data);
    let cfg = TrainConfig {
        seed: train
            .seed
            .wrapping_add(TRAIN_SEED)
            .wrapping_add(1000 * split as u64),
        ..train.clone()
    };
    let result = fit(inner.config.clone(), &refs, &cfg, device, |_| {})?;
    let mut out: SplitPoints = Vec::new();
    for hidden in &inner.hidden {
        let imputed = result.model.impute(
            hidden.dataset,
            refs[hidden.dataset],
            &hidden.genes,
            ImputeOptions {
                samples: CALIBRATION_SAMPLES,
                normalized: false,
                seed: cfg.seed,
            },
        )?;
        let var = imputed
            .variance
            .ok_or_else(|| Error::Input("no posterior variance returned".into()))?;
        let cell_libs = crate::tempering::libraries(refs[hidden.dataset]);
        let mut entry = Vec::with_capacity(hidden.truth.len());
        let mut libs = Vec::with_capacity(hidden.truth.len());
        for ((c, j), &x) in hidden.truth.indexed_iter() {
            libs.push(cell_libs[c]);
            entry.push((
                hidden.genes[j],
                x,
                f64::from(imputed.mean[[c, j]]),
                f64::from(var[[c, j]]),
            ));
        }
        match out.iter_mut().find(|p| p.0 == hidden.dataset) {
            Some(p) => {
                p.1.extend(entry);
                p.2.extend(libs);
            }
            None => out.push((hidden.dataset, entry, libs)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fraction of `test` points inside their calibrated interval at `level` (every
    /// interval checked to be ordered).
    fn coverage(calib: &DatasetCalibration, test: &[Point], level: f64) -> f64 {
        let levels = levels_of(test);
        let inside = test
            .iter()
            .filter(|p| {
                let (lo, hi) = calib
                    .interval((p.2, p.3), levels[&p.0], level, false)
                    .unwrap();
                assert!(lo <= hi, "{lo} > {hi}");
                lo <= p.1 && p.1 <= hi
            })
            .count();
        inside as f64 / test.len() as f64
    }

    /// Each gene's level: the mean μ of its points.
    fn levels_of(points: &[Point]) -> std::collections::HashMap<usize, f64> {
        gene_sums(points)
            .into_iter()
            .map(|(g, (_, mu, n))| (g, mu / n as f64))
            .collect()
    }

    /// A panel of `genes` genes, 300 cells each: `gene` draws a gene's range of imputations
    /// (μ uniform in [lo, hi)) and its log efficiency δ; the count is Poisson(μ·e^δ), the
    /// posterior variance 0.1·μ.
    fn efficiency_panel<R: rand::Rng>(
        rng: &mut R,
        genes: usize,
        mut gene: impl FnMut(&mut R) -> (f64, f64, f64),
    ) -> Vec<Point> {
        use rand_distr::{Distribution, Poisson};
        let mut out = Vec::new();
        for g in 0..genes {
            let (lo, hi, shift) = gene(rng);
            for _ in 0..300 {
                let mu: f64 = rng.random_range(lo..hi);
                let x = Poisson::new(mu * shift.exp()).unwrap().sample(rng);
                out.push((g, x, mu, 0.1 * mu));
            }
        }
        out
    }

    /// Per gene, its coverage at `level` of its points in `test`.
    fn gene_coverages(calib: &DatasetCalibration, test: &[Point], level: f64) -> Vec<f64> {
        let levels = levels_of(test);
        let mut per_gene: std::collections::BTreeMap<usize, (f64, f64)> = Default::default();
        for p in test {
            let (lo, hi) = calib
                .interval((p.2, p.3), levels[&p.0], level, false)
                .unwrap();
            let e = per_gene.entry(p.0).or_default();
            e.0 += f64::from(u8::from(lo <= p.1 && p.1 <= hi));
            e.1 += 1.0;
        }
        per_gene.values().map(|(c, n)| c / n).collect()
    }

    #[test]
    fn conformal_quantiles_use_finite_sample_ranks() {
        // Residuals 1..=99: at 90 % the ranks are ⌊100·0.05⌋ = 5 and ⌈100·0.95⌉ = 95.
        let t = Table::new((1..=99).map(|r| (1.0, f64::from(r))).collect(), 10).unwrap();
        let (lo, hi) = t.quantiles(0.9);
        assert!((lo - 5.0).abs() < 1e-9, "{lo}");
        assert!((hi - 95.0).abs() < 1e-9, "{hi}");
        // At 99.5 % the upper rank exceeds n: unbounded above.
        assert_eq!(t.quantiles(0.995).1, f64::INFINITY);
    }

    #[test]
    fn an_interval_from_the_residual_quantiles_covers_as_promised() {
        // Counts drawn around μ with a known log-scale spread: the calibrated interval from one
        // half covers ~90 % of the other half.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut draw = |n: usize| -> Vec<Point> {
            (0..n)
                .map(|i| {
                    let mu: f64 = rng.random_range(0.5..50.0);
                    let noise: f64 = rng.random_range(-1.0..1.0) * 1.5;
                    let x = ((mu.ln_1p() + noise).exp_m1()).max(0.0).round();
                    (i % 20, x, mu, 0.2 * mu)
                })
                .collect()
        };
        let calib = DatasetCalibration::new(1, &draw(4000)).unwrap();
        let test = draw(4000);
        let covered = coverage(&calib, &test, 0.9);
        assert!((covered - 0.9).abs() < 0.03, "{covered}");
        // The raw normal interval of the same points is far too narrow for this spread.
        let raw = test
            .iter()
            .filter(|p| {
                let (lo, hi) = raw_interval(p.2, p.3, 0.9);
                lo <= p.1 && p.1 <= hi
            })
            .count() as f64
            / test.len() as f64;
        assert!(raw < 0.8, "{raw}");
    }

    #[test]
    fn mostly_zero_counts_are_covered_as_promised_at_every_level() {
        // Poisson counts with small means (~80 % zeros): the lower end clamped at 0 covers a
        // zero whatever the upper quantile, so equal-tailed residual quantiles over-cover at
        // low levels; the count-space quantiles must hit every level on fresh points.
        use rand::{Rng, SeedableRng};
        use rand_distr::{Distribution, Poisson};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut draw = |n: usize| -> Vec<Point> {
            (0..n)
                .map(|i| {
                    let mu: f64 = rng.random_range(0.02..0.6);
                    let x = Poisson::new(mu).unwrap().sample(&mut rng);
                    (i % 40, x, mu, 0.05 * mu)
                })
                .collect()
        };
        let calib = DatasetCalibration::new(1, &draw(20_000)).unwrap();
        let test = draw(20_000);
        let zeros = test.iter().filter(|p| p.1 == 0.0).count() as f64 / test.len() as f64;
        assert!(zeros > 0.7, "{zeros}");
        for level in [0.1, 0.3, 0.5, 0.8, 0.9, 0.95] {
            let covered = coverage(&calib, &test, level);
            assert!((covered - level).abs() < 0.03, "level {level}: {covered}");
        }
    }

    #[test]
    fn the_between_gene_variance_is_that_of_the_genes_mean_log_errors() {
        // Gene g's counts sit exactly at e^{δ_g}(1 + μ) − 1: its mean log error is δ_g.
        let shifts = [-0.6, -0.2, 0.0, 0.3, 0.5];
        let points: Vec<Point> = shifts
            .iter()
            .enumerate()
            .flat_map(|(g, d)| {
                (0..10).map(move |c| {
                    let mu = 1.0 + c as f64;
                    (g, (mu.ln_1p() + d).exp_m1(), mu, 0.1)
                })
            })
            .collect();
        let refs: Vec<&Point> = points.iter().collect();
        let mean = shifts.iter().sum::<f64>() / 5.0;
        let var = shifts.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 4.0;
        assert!((gene_shift_variance(&refs) - var).abs() < 1e-12);
        // One gene: no spread between genes.
        assert_eq!(gene_shift_variance(&refs[..10]), 0.0);
        // The raw posterior interval does not carry it.
        let z = normal_quantile(0.95);
        assert_eq!(
            raw_interval(4.0, 1.0, 0.9),
            interval_from(4.0, 1.0, 0.0, -z, z)
        );
    }

    #[test]
    fn genes_with_their_own_efficiency_are_covered_as_promised() {
        // Every gene has its own log-scale efficiency δ_g ~ N(0, 0.7²), which no posterior sees,
        // and Poisson noise on top: intervals calibrated on 60 genes cover fresh genes at the
        // nominal level on average, and σ²_G is found.
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal as Gauss};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut draw = |genes: usize| {
            efficiency_panel(&mut rng, genes, |rng| {
                (0.5, 30.0, Gauss::new(0.0, 0.7).unwrap().sample(rng))
            })
        };
        let calib = DatasetCalibration::new(1, &draw(60)).unwrap();
        assert!((0.25..0.75).contains(&calib.gene_var), "{}", calib.gene_var);
        let test = draw(200);
        for level in [0.5, 0.8, 0.9] {
            let covered = coverage(&calib, &test, level);
            assert!((covered - level).abs() < 0.05, "level {level}: {covered}");
        }
    }

    #[test]
    fn a_panel_that_regresses_to_the_mean_is_centred_by_its_gene_bias() {
        // A targeted panel: the assay measures gene g at e^{δ_g} times its imputation, with
        // δ_g = 0.8 − 0.6·ln(level_g) + N(0, 0.3²) (a gene imputed low is measured relatively
        // more), then Poisson noise. The line is found, and the genes whose efficiency the
        // line predicts are covered gene by gene, not only on average over genes.
        use rand::{Rng, SeedableRng};
        use rand_distr::{Distribution, Normal as Gauss};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let mut draw = |genes: usize| {
            efficiency_panel(&mut rng, genes, |rng| {
                let level: f64 = rng.random_range(-1.0_f64..3.5).exp();
                let shift = 0.8 - 0.6 * level.ln() + Gauss::new(0.0, 0.3).unwrap().sample(rng);
                (0.5 * level, 1.5 * level, shift)
            })
        };
        let points = draw(60);
        let calib = DatasetCalibration::new(1, &points).unwrap();
        let bias = calib.gene_bias.unwrap();
        assert!((bias.slope + 0.6).abs() < 0.15, "{bias:?}");
        // Without the line, the same points leave σ²_G to hold the whole trend.
        let recalibrated =
            DatasetCalibration::with_bias(1, &points, &gene_sums(&points), None).unwrap();
        assert!(calib.gene_var < recalibrated.gene_var / 2.0);
        let test = draw(200);
        let under = |c: &DatasetCalibration| {
            gene_coverages(c, &test, 0.9)
                .iter()
                .filter(|&&v| v < 0.8)
                .count()
        };
        let covered = coverage(&calib, &test, 0.9);
        assert!((covered - 0.9).abs() < 0.04, "{covered}");
        // Genes more than 10 points under nominal: fewer with the line than without.
        let (with, without) = (under(&calib), under(&recalibrated));
        assert!(with < without, "{with} vs {without}");
    }

    #[test]
    fn a_calibration_saved_before_the_gene_variance_loads_without_it() {
        // Two gene levels (1–3 and 4–6), so the gene-bias line is fitted too.
        let points: Vec<Point> = (0..600)
            .map(|i| {
                let g = i % 12;
                let mu = 1.0 + (i % 3) as f64 + if g < 6 { 0.0 } else { 3.0 };
                (g, ((i + g) % 7) as f64, mu, 0.3)
            })
            .collect();
        let d = DatasetCalibration::new(1, &points).unwrap();
        assert!(d.gene_var > 0.0);
        assert!(d.gene_bias.is_some());
        let cal = IntervalCalibration {
            datasets: vec![d],
            trainings: 5,
            points: 600,
            genes: 12,
            epochs: 40,
            classifier_second_pass: Some(false),
        };
        assert!(cal.method().contains("between-gene"));
        assert!(cal.method().contains("efficiency predicted"));
        let mut json: serde_json::Value = serde_json::to_value(&cal).unwrap();
        for key in ["gene_var", "gene_bias"] {
            json["datasets"][0]
                .as_object_mut()
                .unwrap()
                .remove(key)
                .unwrap();
        }
        let old: IntervalCalibration = serde_json::from_value(json).unwrap();
        assert_eq!(old.datasets[0].gene_var, 0.0);
        assert_eq!(old.datasets[0].gene_bias, None);
        assert!(!old.method().contains("between-gene"));
        assert!(!old.method().contains("efficiency predicted"));
        // Its interval uses neither σ²_G nor the line, whatever the gene's level.
        let (q_lo, q_hi) = old.datasets[0]
            .table(3.0, 0.3, false)
            .unwrap()
            .quantiles(0.9);
        for level in [0.5, 3.0, 40.0] {
            assert_eq!(
                old.interval(1, (3.0, 0.3), level, 0.9, false),
                Some(interval_from(3.0, 0.3, 0.0, q_lo, q_hi))
            );
        }
    }

    #[test]
    fn calibration_trainings_run_two_fifths_of_the_epochs_unless_told() {
        assert_eq!(calibration_epochs(100, None), 40);
        assert_eq!(calibration_epochs(200, None), 80);
        // Rounded up, never 0.
        assert_eq!(calibration_epochs(7, None), 3);
        assert_eq!(calibration_epochs(1, None), 1);
        assert_eq!(calibration_epochs(100, Some(100)), 100);
        assert_eq!(calibration_epochs(100, Some(0)), 0);
    }

    #[test]
    fn a_calibration_training_keeps_the_model_settings_but_the_classifier_pass_and_length() {
        let model = TrainConfig {
            epochs: 200,
            kappa: 1.0,
            seed: 11,
            classifier_second_pass: true,
            ..TrainConfig::default()
        };
        let calibration = calibration_train(&model, 5.0, None);
        assert_eq!(calibration.epochs, 80);
        assert_eq!(calibration.kappa, 5.0);
        assert!(!calibration.classifier_second_pass);
        // Everything else is the model's own.
        let back = TrainConfig {
            epochs: model.epochs,
            kappa: model.kappa,
            classifier_second_pass: model.classifier_second_pass,
            ..calibration
        };
        assert_eq!(back, model);
        assert_eq!(calibration_train(&model, 5.0, Some(120)).epochs, 120);
    }

    #[test]
    fn coverage_outside_zero_one_is_refused() {
        for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert!(check_coverage(bad).is_err(), "{bad}");
        }
        assert!(check_coverage(0.9).is_ok());
    }
}
