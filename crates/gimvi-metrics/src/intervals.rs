//! How honest prediction intervals are on held-out genes: empirical coverage against the
//! nominal level, the calibration error of TISSUE (Sun et al. 2024: the area between the
//! coverage curve and the diagonal over nominal levels 0.01–0.99), the genes left badly
//! under-covered, and the widths.
//!
//! An entry (cell, gene) is covered when lower ≤ measured ≤ upper (closed interval: a user
//! reading "between 0 and 3" counts 0 and 3 as inside; TISSUE's own bookkeeping uses strict
//! inequalities). Coverage is reported over all entries and over entries with a nonzero
//! measurement (TISSUE's rule drops zeros, which an interval starting at 0 covers trivially).
//! As in TISSUE, a fold's coverage is the mean over its entries and the folds are averaged
//! with weights = their number of genes.

use ndarray::ArrayView2;
use serde::Serialize;

use crate::correlation::median;

/// The intervals of one method on one fold's held-out genes.
pub struct FoldIntervals<'a> {
    /// Measured counts, the fold's cells × held-out genes.
    pub truth: ArrayView2<'a, f64>,
    /// The interval (lower, upper) of entry (cell, gene) at a nominal coverage.
    pub interval: &'a dyn Fn(usize, usize, f64) -> (f64, f64),
}

/// One headline level of an [`IntervalReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelSummary {
    /// Nominal coverage.
    pub nominal: f64,
    /// Mean over genes of each gene's coverage (over its cells), all entries.
    pub mean_gene_coverage: f64,
    /// The same over nonzero measurements only (genes without any: left out).
    pub mean_gene_coverage_nonzero: f64,
    /// Fraction of genes whose coverage is more than 10 points under nominal.
    pub genes_under_by_10: f64,
    /// Median interval width over entries, in counts (infinite widths count as the largest).
    pub median_width: f64,
    /// Median over entries of the width divided by the gene's standard deviation across
    /// cells (genes with no spread left out).
    pub median_relative_width: f64,
}

/// Coverage and widths of one method's intervals (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalReport {
    /// The method.
    pub name: String,
    /// Nominal levels of the coverage curve.
    pub levels: Vec<f64>,
    /// Empirical coverage at each level, all entries.
    pub coverage: Vec<f64>,
    /// Empirical coverage at each level, entries with a nonzero measurement.
    pub coverage_nonzero: Vec<f64>,
    /// Calibration error (area between `coverage` and the diagonal), all entries.
    pub calibration_error: f64,
    /// The same for nonzero measurements.
    pub calibration_error_nonzero: f64,
    /// The headline levels.
    pub headline: Vec<LevelSummary>,
    /// Genes scored.
    pub genes: usize,
}

/// The nominal levels of TISSUE's calibration curve: 0.01, 0.02, …, 0.99.
pub fn tissue_levels() -> Vec<f64> {
    (1..=99).map(|k| k as f64 / 100.0).collect()
}

/// The trapezoid area of |empirical − nominal| over the levels (TISSUE's calibration error).
pub fn calibration_error(levels: &[f64], empirical: &[f64]) -> f64 {
    levels
        .windows(2)
        .zip(empirical.windows(2))
        .map(|(l, e)| {
            let (d0, d1) = ((e[0] - l[0]).abs(), (e[1] - l[1]).abs());
            0.5 * (d0 + d1) * (l[1] - l[0])
        })
        .sum()
}

/// Scores `folds` at every level of `levels` and summarises the `headline` levels.
pub fn score_intervals(
    name: &str,
    folds: &[FoldIntervals<'_>],
    levels: &[f64],
    headline: &[f64],
) -> IntervalReport {
    let (curve, curve_nonzero) = coverage_curve(folds, levels);
    let genes = folds.iter().map(|f| f.truth.ncols()).sum();
    IntervalReport {
        name: name.to_string(),
        levels: levels.to_vec(),
        calibration_error: calibration_error(levels, &curve),
        calibration_error_nonzero: calibration_error(levels, &curve_nonzero),
        coverage: curve,
        coverage_nonzero: curve_nonzero,
        headline: headline.iter().map(|&l| summarise(folds, l)).collect(),
        genes,
    }
}

/// Pooled coverage at each level: per fold the mean over entries, folds weighted by genes.
fn coverage_curve(folds: &[FoldIntervals<'_>], levels: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut all = vec![0.0; levels.len()];
    let mut nonzero = vec![0.0; levels.len()];
    let (mut weight, mut weight_nonzero) = (0.0, 0.0);
    for fold in folds {
        let (n_cells, n_genes) = fold.truth.dim();
        let n_nonzero = fold.truth.iter().filter(|&&x| x != 0.0).count();
        if n_cells == 0 || n_genes == 0 {
            continue;
        }
        let w = n_genes as f64;
        for (k, &level) in levels.iter().enumerate() {
            let (mut hit, mut hit_nonzero) = (0usize, 0usize);
            for ((c, g), &x) in fold.truth.indexed_iter() {
                let (lo, hi) = (fold.interval)(c, g, level);
                if lo <= x && x <= hi {
                    hit += 1;
                    if x != 0.0 {
                        hit_nonzero += 1;
                    }
                }
            }
            all[k] += w * hit as f64 / (n_cells * n_genes) as f64;
            if n_nonzero > 0 {
                nonzero[k] += w * hit_nonzero as f64 / n_nonzero as f64;
            }
        }
        weight += w;
        if n_nonzero > 0 {
            weight_nonzero += w;
        }
    }
    let scale = |v: Vec<f64>, w: f64| {
        v.into_iter()
            .map(|x| if w > 0.0 { x / w } else { f64::NAN })
            .collect()
    };
    (scale(all, weight), scale(nonzero, weight_nonzero))
}

/// Per-gene coverage and widths at one level.
fn summarise(folds: &[FoldIntervals<'_>], level: f64) -> LevelSummary {
    let mut gene_cov = Vec::new();
    let mut gene_cov_nonzero = Vec::new();
    let mut widths = Vec::new();
    let mut relative = Vec::new();
    for fold in folds {
        for (g, column) in fold.truth.columns().into_iter().enumerate() {
            let n = column.len();
            if n == 0 {
                continue;
            }
            let mean = column.sum() / n as f64;
            let sd = (column.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
            let (mut hit, mut hit_nz, mut nz) = (0usize, 0usize, 0usize);
            for (c, &x) in column.iter().enumerate() {
                let (lo, hi) = (fold.interval)(c, g, level);
                let inside = lo <= x && x <= hi;
                hit += usize::from(inside);
                if x != 0.0 {
                    nz += 1;
                    hit_nz += usize::from(inside);
                }
                let w = if (hi - lo).is_finite() {
                    hi - lo
                } else {
                    f64::MAX
                };
                widths.push(w);
                if sd > 0.0 {
                    relative.push(w / sd);
                }
            }
            gene_cov.push(hit as f64 / n as f64);
            if nz > 0 {
                gene_cov_nonzero.push(hit_nz as f64 / nz as f64);
            }
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    LevelSummary {
        nominal: level,
        mean_gene_coverage: mean(&gene_cov),
        mean_gene_coverage_nonzero: mean(&gene_cov_nonzero),
        genes_under_by_10: if gene_cov.is_empty() {
            f64::NAN
        } else {
            gene_cov.iter().filter(|&&c| c < level - 0.10).count() as f64 / gene_cov.len() as f64
        },
        median_width: median(&widths).unwrap_or(f64::NAN),
        median_relative_width: median(&relative).unwrap_or(f64::NAN),
    }
}

/// A markdown table of interval reports: one row per method and headline level.
pub fn intervals_markdown(reports: &[IntervalReport]) -> String {
    let mut out = String::from(
        "| intervals | nominal | coverage (mean over genes) | nonzero only | genes > 10 pts under | \
         median width (counts) | width / gene sd | calibration error (all / nonzero) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        for h in &r.headline {
            out.push_str(&format!(
                "| {} | {:.2} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.3} / {:.3} |\n",
                r.name,
                h.nominal,
                h.mean_gene_coverage,
                h.mean_gene_coverage_nonzero,
                h.genes_under_by_10,
                h.median_width,
                h.median_relative_width,
                r.calibration_error,
                r.calibration_error_nonzero
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_perfect_curve_has_no_calibration_error_and_a_flat_one_has_the_triangle() {
        let levels = tissue_levels();
        assert!(calibration_error(&levels, &levels).abs() < 1e-12);
        // Coverage 1 everywhere: area of (1 − p) over 0.01..0.99 = 0.98 · 0.5 = 0.49.
        let ones = vec![1.0; levels.len()];
        assert!((calibration_error(&levels, &ones) - 0.49).abs() < 1e-9);
    }

    #[test]
    fn coverage_counts_closed_intervals_and_reports_nonzero_entries_apart() {
        // Two cells × two genes; the interval is [0, 2] at every level.
        let truth = array![[0.0, 2.0], [3.0, 1.0]];
        let interval = |_: usize, _: usize, _: f64| (0.0, 2.0);
        let folds = [FoldIntervals {
            truth: truth.view(),
            interval: &interval,
        }];
        let r = score_intervals("fixed", &folds, &[0.5, 0.9], &[0.9]);
        // 3 of 4 entries inside; nonzero: 2 of 3.
        assert!((r.coverage[0] - 0.75).abs() < 1e-12);
        assert!((r.coverage_nonzero[1] - 2.0 / 3.0).abs() < 1e-12);
        let h = &r.headline[0];
        // Gene 0 covers 1 of 2 cells, gene 1 both: mean 0.75; gene 0 is 40 points under 90 %.
        assert!((h.mean_gene_coverage - 0.75).abs() < 1e-12);
        assert!((h.genes_under_by_10 - 0.5).abs() < 1e-12);
        assert!((h.median_width - 2.0).abs() < 1e-12);
        assert_eq!(r.genes, 2);
    }
}
