//! Rank and linear correlation, per gene, and the summaries of Table 1 of the paper.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::MetricsError;

/// Ranks 1..=n of `v`, ties sharing the average of the ranks they span (the "fractional" ranking
/// Spearman's coefficient needs when spatial counts have many zeros). NaN is not allowed.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && v[order[j]] == v[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) hold equal values: ranks i+1..=j, average (i + 1 + j) / 2.
        let avg = (i + 1 + j) as f64 / 2.0;
        for &o in &order[i..j] {
            ranks[o] = avg;
        }
        i = j;
    }
    ranks
}

fn check_pair(a: &[f64], b: &[f64]) -> Result<(), MetricsError> {
    if a.len() != b.len() {
        return Err(MetricsError::ShapeMismatch {
            what: "correlation inputs",
            expected: a.len(),
            got: b.len(),
        });
    }
    if a.len() < 2 {
        return Err(MetricsError::Empty("correlation needs at least two values"));
    }
    if a.iter().chain(b).any(|x| !x.is_finite()) {
        return Err(MetricsError::NonFinite("correlation input"));
    }
    Ok(())
}

/// Pearson's correlation of two equally long vectors. `Ok(None)` when either is constant (the
/// coefficient is undefined); an error for different lengths, fewer than two values or
/// non-finite values.
pub fn pearson(a: &[f64], b: &[f64]) -> Result<Option<f64>, MetricsError> {
    check_pair(a, b)?;
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return Ok(None);
    }
    Ok(Some((sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0)))
}

/// Spearman's rank correlation: Pearson's correlation of the average ranks. `Ok(None)` when
/// either vector is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Result<Option<f64>, MetricsError> {
    check_pair(a, b)?;
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Spearman's correlation across cells for every column (gene) of `predicted` against the same
/// column of `truth` (both cells × genes). `None` for a gene where either column is constant.
pub fn per_gene_spearman(
    predicted: ArrayView2<'_, f64>,
    truth: ArrayView2<'_, f64>,
) -> Result<Vec<Option<f64>>, MetricsError> {
    per_gene(predicted, truth, spearman)
}

/// Pearson's correlation across cells for every column, as [`per_gene_spearman`].
pub fn per_gene_pearson(
    predicted: ArrayView2<'_, f64>,
    truth: ArrayView2<'_, f64>,
) -> Result<Vec<Option<f64>>, MetricsError> {
    per_gene(predicted, truth, pearson)
}

type Correlation = fn(&[f64], &[f64]) -> Result<Option<f64>, MetricsError>;

fn per_gene(
    predicted: ArrayView2<'_, f64>,
    truth: ArrayView2<'_, f64>,
    f: Correlation,
) -> Result<Vec<Option<f64>>, MetricsError> {
    if predicted.dim() != truth.dim() {
        return Err(MetricsError::ShapeMismatch {
            what: "predicted vs true matrix (cells × genes, as cells·genes)",
            expected: truth.len(),
            got: predicted.len(),
        });
    }
    (0..truth.ncols())
        .map(|g| {
            let p: Vec<f64> = predicted.column(g).to_vec();
            let t: Vec<f64> = truth.column(g).to_vec();
            f(&p, &t)
        })
        .collect()
}

/// Median of finite values (mean of the two middle ones for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// Quantile `q` ∈ [0, 1] by linear interpolation between order statistics (the default of
/// numpy and R, type 7); `None` if `values` is empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// Per-gene relative change of a method's correlation against a reference method's,
/// δρ_g = (ρ_g − ρ_ref,g) / |ρ_ref,g| (Lopez et al. 2019, Table 1). Genes where the reference is
/// 0 or either value is missing give `None`.
pub fn relative_change(rho: &[Option<f64>], rho_ref: &[Option<f64>]) -> Vec<Option<f64>> {
    rho.iter()
        .zip(rho_ref)
        .map(|(r, r0)| match (r, r0) {
            (Some(r), Some(r0)) if *r0 != 0.0 => Some((r - r0) / r0.abs()),
            _ => None,
        })
        .collect()
}

/// Median and quartiles of a distribution of per-cell or per-gene scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of finite values summarised.
    pub n: usize,
    /// First quartile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises the finite values of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        Some(Summary {
            n: finite.len(),
            q1: quantile(&finite, 0.25)?,
            median: quantile(&finite, 0.5)?,
            q3: quantile(&finite, 0.75)?,
            mean: finite.iter().sum::<f64>() / finite.len() as f64,
        })
    }
}
