//! k-NN regression: impute values for query cells as the average over their nearest reference
//! cells in a shared space — the baseline the paper applies to scVI and LIGER latents
//! (Lopez et al. 2019, Table 1), with k = 5 % of the reference cells by default.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::knn::KdTree;
use crate::MetricsError;

/// The paper's default neighbourhood: 5 % of the reference cells (at least 1).
pub fn default_k(n_reference: usize) -> usize {
    ((n_reference as f64 * 0.05).round() as usize).max(1)
}

/// For every query row, the unweighted mean of `reference_values` over its `k` nearest
/// reference rows in the shared space (`reference_space`, `query_space`: cells × dimensions;
/// `reference_values`: reference cells × outputs). Returns query cells × outputs.
pub fn knn_regress(
    reference_space: ArrayView2<'_, f32>,
    reference_values: ArrayView2<'_, f64>,
    query_space: ArrayView2<'_, f32>,
    k: usize,
) -> Result<Array2<f64>, MetricsError> {
    if reference_values.nrows() != reference_space.nrows() {
        return Err(MetricsError::ShapeMismatch {
            what: "reference values vs reference points (rows)",
            expected: reference_space.nrows(),
            got: reference_values.nrows(),
        });
    }
    if query_space.ncols() != reference_space.ncols() {
        return Err(MetricsError::ShapeMismatch {
            what: "query vs reference dimension",
            expected: reference_space.ncols(),
            got: query_space.ncols(),
        });
    }
    if k == 0 || k > reference_space.nrows() {
        return Err(MetricsError::InvalidK {
            k,
            available: reference_space.nrows(),
        });
    }
    if query_space.iter().any(|x| !x.is_finite()) {
        return Err(MetricsError::NonFinite("k-NN regression query points"));
    }
    let tree = KdTree::new(reference_space)?;
    let outputs = reference_values.ncols();
    let rows: Vec<Vec<f64>> = (0..query_space.nrows())
        .into_par_iter()
        .map(|r| {
            let q = query_space.row(r).to_vec();
            let mut acc = vec![0.0; outputs];
            for (i, _) in tree.nearest(&q, k, None) {
                for (a, v) in acc.iter_mut().zip(reference_values.row(i)) {
                    *a += v;
                }
            }
            acc.iter_mut().for_each(|a| *a /= k as f64);
            acc
        })
        .collect();
    let flat: Vec<f64> = rows.into_iter().flatten().collect();
    Array2::from_shape_vec((query_space.nrows(), outputs), flat).map_err(|_| {
        MetricsError::ShapeMismatch {
            what: "k-NN regression output",
            expected: query_space.nrows() * outputs,
            got: 0,
        }
    })
}
