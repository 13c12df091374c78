//! How well a joint latent space mixes datasets without erasing their own structure
//! (Lopez et al. 2019, Fig. 2): entropy of mixing and k-NN purity, over a range of k.

use std::collections::HashSet;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::correlation::Summary;
use crate::knn::knn_self;
use crate::MetricsError;

/// A metric's distribution over cells at one neighbourhood size k.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AtK {
    /// Neighbourhood size.
    pub k: usize,
    /// Median, quartiles and mean over cells.
    pub summary: Summary,
}

/// The default range of k the paper's Fig. 2 sweeps: 10, 20, …, 100.
pub fn default_ks() -> Vec<usize> {
    (1..=10).map(|i| i * 10).collect()
}

fn check_ks(ks: &[usize], n: usize) -> Result<usize, MetricsError> {
    let kmax = ks
        .iter()
        .copied()
        .max()
        .ok_or(MetricsError::Empty("list of k"))?;
    if ks.contains(&0) || kmax >= n {
        return Err(MetricsError::InvalidK {
            k: if ks.contains(&0) { 0 } else { kmax },
            available: n.saturating_sub(1),
        });
    }
    Ok(kmax)
}

/// Per-cell entropy of mixing for the unbalanced case, in the paper's form: the negative
/// KL divergence between the dataset-label distribution among a cell's k nearest neighbours
/// (itself excluded) and the global label distribution,
/// E_i = −Σ_c p_ic ln(p_ic / q_c). It is 0 where a neighbourhood has exactly the global label
/// proportions and becomes strongly negative where a neighbourhood holds one dataset only
/// (−ln(1/q_c) for a pure neighbourhood of label c).
///
/// Returns one value per cell for every k in `ks` (computed from one neighbour search at the
/// largest k), in the order of `ks`.
pub fn entropy_of_mixing(
    latent: ArrayView2<'_, f32>,
    labels: &[usize],
    ks: &[usize],
) -> Result<Vec<Vec<f64>>, MetricsError> {
    let n = latent.nrows();
    if labels.len() != n {
        return Err(MetricsError::ShapeMismatch {
            what: "dataset labels vs latent rows",
            expected: n,
            got: labels.len(),
        });
    }
    let kmax = check_ks(ks, n)?;
    let n_labels = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut q = vec![0.0f64; n_labels];
    for &l in labels {
        q[l] += 1.0 / n as f64;
    }
    let neighbours = knn_self(latent, kmax)?;
    Ok(ks
        .iter()
        .map(|&k| {
            neighbours
                .iter()
                .map(|nb| {
                    let mut counts = vec![0usize; n_labels];
                    for &j in &nb[..k] {
                        counts[labels[j]] += 1;
                    }
                    -counts
                        .iter()
                        .zip(&q)
                        .filter(|(c, _)| **c > 0)
                        .map(|(&c, &qc)| {
                            let p = c as f64 / k as f64;
                            p * (p / qc).ln()
                        })
                        .sum::<f64>()
                })
                .collect()
        })
        .collect())
}

/// Per-cell k-NN purity: the Jaccard index |A ∩ B| / |A ∪ B| between a cell's k nearest
/// neighbours in the joint latent space (`joint`, restricted by the caller to this dataset's
/// cells) and in a latent space fitted on this dataset alone (`own`, same cells in the same
/// order). 1 when the joint space preserves every neighbourhood, near 0 when it scrambles them.
/// One value per cell for every k in `ks`.
pub fn knn_purity(
    joint: ArrayView2<'_, f32>,
    own: ArrayView2<'_, f32>,
    ks: &[usize],
) -> Result<Vec<Vec<f64>>, MetricsError> {
    let n = joint.nrows();
    if own.nrows() != n {
        return Err(MetricsError::ShapeMismatch {
            what: "cells in own-dataset latent vs joint latent",
            expected: n,
            got: own.nrows(),
        });
    }
    let kmax = check_ks(ks, n)?;
    let a = knn_self(joint, kmax)?;
    let b = knn_self(own, kmax)?;
    Ok(ks
        .iter()
        .map(|&k| {
            a.iter()
                .zip(&b)
                .map(|(na, nb)| {
                    let sa: HashSet<usize> = na[..k].iter().copied().collect();
                    let inter = nb[..k].iter().filter(|j| sa.contains(j)).count();
                    inter as f64 / (2 * k - inter) as f64
                })
                .collect()
        })
        .collect())
}

/// Summaries (median, quartiles) of per-cell values for each k.
pub fn summarise_over_k(ks: &[usize], per_k: &[Vec<f64>]) -> Vec<AtK> {
    ks.iter()
        .zip(per_k)
        .filter_map(|(&k, v)| Summary::of(v).map(|summary| AtK { k, summary }))
        .collect()
}
