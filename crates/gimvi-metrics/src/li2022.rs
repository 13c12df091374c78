//! The per-gene metrics of Li et al. 2022 (*Benchmarking spatial and single-cell
//! transcriptomics integration methods for transcript distribution prediction and cell type
//! deconvolution*, Nature Methods) and their accuracy score across methods.
//!
//! Each metric compares one gene's measured column (raw counts over the spatial cells) with
//! the imputed column:
//! * **PCC** — Pearson's correlation ([`crate::correlation::pearson`]); higher is better;
//! * **SSIM** — both columns scaled to a maximum of 1, then the global (not windowed)
//!   structural similarity with C1 = (0.01)², C2 = (0.03)², C3 = C2 / 2 ([`ssim`]); higher is
//!   better;
//! * **RMSE** — root mean squared difference of the z-scored columns (population standard
//!   deviation) ([`rmse_zscored`]); lower is better;
//! * **JS** — Jensen–Shannon divergence (natural logarithm) of the columns normalised to sum 1
//!   ([`js_divergence`]); lower is better.
//!
//! The **accuracy score** ([`accuracy_scores`]) ranks the methods of one dataset on each
//! metric's mean over genes, maps rank r of n methods to (n − r + 1) / n and averages the four:
//! 1 is best on every metric.

use crate::correlation::{average_ranks, pearson};
use crate::MetricsError;
use serde::{Deserialize, Serialize};

fn check(a: &[f64], b: &[f64]) -> Result<(), MetricsError> {
    if a.len() != b.len() {
        return Err(MetricsError::ShapeMismatch {
            what: "measured vs imputed column",
            expected: a.len(),
            got: b.len(),
        });
    }
    if a.is_empty() {
        return Err(MetricsError::Empty("column"));
    }
    if a.iter().chain(b).any(|x| !x.is_finite()) {
        return Err(MetricsError::NonFinite("metric input"));
    }
    Ok(())
}

/// Global SSIM of two columns after scaling each to a maximum of 1 (Li et al. 2022). `Ok(None)`
/// when either column has no positive maximum (nothing to scale).
pub fn ssim(measured: &[f64], imputed: &[f64]) -> Result<Option<f64>, MetricsError> {
    check(measured, imputed)?;
    let scale = |v: &[f64]| -> Option<Vec<f64>> {
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (max > 0.0).then(|| v.iter().map(|x| x / max).collect())
    };
    let (Some(x), Some(y)) = (scale(measured), scale(imputed)) else {
        return Ok(None);
    };
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut vx, mut vy, mut cxy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(&y) {
        vx += (a - mx) * (a - mx);
        vy += (b - my) * (b - my);
        cxy += (a - mx) * (b - my);
    }
    let (sx, sy, sxy) = ((vx / n).sqrt(), (vy / n).sqrt(), cxy / n);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let c3 = c2 / 2.0;
    let luminance = (2.0 * mx * my + c1) / (mx * mx + my * my + c1);
    let contrast = (2.0 * sx * sy + c2) / (sx * sx + sy * sy + c2);
    let structure = (sxy + c3) / (sx * sy + c3);
    Ok(Some(luminance * contrast * structure))
}

/// RMSE between the z-scored columns (each centred and divided by its population standard
/// deviation). `Ok(None)` when either column is constant.
pub fn rmse_zscored(measured: &[f64], imputed: &[f64]) -> Result<Option<f64>, MetricsError> {
    check(measured, imputed)?;
    let z = |v: &[f64]| -> Option<Vec<f64>> {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt();
        (sd > 0.0).then(|| v.iter().map(|x| (x - m) / sd).collect())
    };
    let (Some(a), Some(b)) = (z(measured), z(imputed)) else {
        return Ok(None);
    };
    let mse = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        / a.len() as f64;
    Ok(Some(mse.sqrt()))
}

/// Jensen–Shannon divergence (natural log, so ≤ ln 2) of the two columns normalised to sum 1.
/// `Ok(None)` when either column sums to 0; negative imputed values are an error.
pub fn js_divergence(measured: &[f64], imputed: &[f64]) -> Result<Option<f64>, MetricsError> {
    check(measured, imputed)?;
    if measured.iter().chain(imputed).any(|&x| x < 0.0) {
        return Err(MetricsError::Negative("Jensen–Shannon input"));
    }
    let (sp, sq) = (measured.iter().sum::<f64>(), imputed.iter().sum::<f64>());
    if sp <= 0.0 || sq <= 0.0 {
        return Ok(None);
    }
    let mut js = 0.0;
    for (a, b) in measured.iter().zip(imputed) {
        let (p, q) = (a / sp, b / sq);
        let m = 0.5 * (p + q);
        if p > 0.0 {
            js += 0.5 * p * (p / m).ln();
        }
        if q > 0.0 {
            js += 0.5 * q * (q / m).ln();
        }
    }
    Ok(Some(js.max(0.0)))
}

/// One method's four metrics, each the mean over the genes where it is defined (NaN where
/// none is; JSON writes NaN as `null` and reads it back as NaN).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricMeans {
    /// Mean PCC (higher is better).
    #[serde(deserialize_with = "null_as_nan")]
    pub pcc: f64,
    /// Mean SSIM (higher is better).
    #[serde(deserialize_with = "null_as_nan")]
    pub ssim: f64,
    /// Mean RMSE of z-scored columns (lower is better).
    #[serde(deserialize_with = "null_as_nan")]
    pub rmse: f64,
    /// Mean JS divergence (lower is better).
    #[serde(deserialize_with = "null_as_nan")]
    pub js: f64,
}

pub(crate) fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Li et al. 2022's accuracy score of each method of one dataset: on each metric the methods
/// are ranked (1 = best; ties share their average rank), rank r of n methods scores
/// (n − r + 1) / n, and the four scores are averaged. A non-finite mean ranks last.
pub fn accuracy_scores(methods: &[MetricMeans]) -> Vec<f64> {
    let n = methods.len();
    if n == 0 {
        return Vec::new();
    }
    let mut score = vec![0.0; n];
    // Each metric, with larger-is-better as the sign +1 (PCC, SSIM) or −1 (RMSE, JS).
    let signed: [(f64, Vec<f64>); 4] = [
        (1.0, methods.iter().map(|m| m.pcc).collect()),
        (1.0, methods.iter().map(|m| m.ssim).collect()),
        (-1.0, methods.iter().map(|m| m.rmse).collect()),
        (-1.0, methods.iter().map(|m| m.js).collect()),
    ];
    for (sign, values) in signed {
        // Transform so that larger is better and non-finite is worst, then rank descending.
        let keyed: Vec<f64> = values
            .into_iter()
            .map(|v| {
                if v.is_finite() {
                    sign * v
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        // average_ranks ranks ascending (1 = smallest): rank from the best = n + 1 − that.
        let ascending = average_ranks(&keyed);
        for (s, r) in score.iter_mut().zip(ascending) {
            let rank = n as f64 + 1.0 - r;
            *s += (n as f64 - rank + 1.0) / n as f64 / 4.0;
        }
    }
    score
}

/// The four metrics of one gene: (PCC, SSIM, RMSE, JS), each `None` where undefined.
pub fn gene_metrics(measured: &[f64], imputed: &[f64]) -> Result<[Option<f64>; 4], MetricsError> {
    Ok([
        pearson(measured, imputed)?,
        ssim(measured, imputed)?,
        rmse_zscored(measured, imputed)?,
        js_divergence(measured, imputed)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn identical_columns_are_perfect() {
        let x = [0.0, 3.0, 1.0, 7.0, 2.0];
        let [pcc, s, r, js] = gene_metrics(&x, &x).unwrap();
        assert_abs_diff_eq!(pcc.unwrap(), 1.0, epsilon = 1e-12);
        assert_abs_diff_eq!(s.unwrap(), 1.0, epsilon = 1e-12);
        assert_abs_diff_eq!(r.unwrap(), 0.0, epsilon = 1e-12);
        assert_abs_diff_eq!(js.unwrap(), 0.0, epsilon = 1e-12);
        // Scale-free: a column times 5 scores the same on all four.
        let y: Vec<f64> = x.iter().map(|v| 5.0 * v).collect();
        let [_, s, r, js] = gene_metrics(&x, &y).unwrap();
        assert_abs_diff_eq!(s.unwrap(), 1.0, epsilon = 1e-12);
        assert_abs_diff_eq!(r.unwrap(), 0.0, epsilon = 1e-12);
        assert_abs_diff_eq!(js.unwrap(), 0.0, epsilon = 1e-12);
    }

    #[test]
    fn hand_computed_values() {
        // Disjoint supports: JS = ln 2.
        let js = js_divergence(&[1.0, 0.0], &[0.0, 3.0]).unwrap().unwrap();
        assert_abs_diff_eq!(js, std::f64::consts::LN_2, epsilon = 1e-12);
        // z-scores of [1, 2, 3] and [3, 2, 1] are ±√1.5 and 0: RMSE = √(2 · 6 / 3) = 2.
        let r = rmse_zscored(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0])
            .unwrap()
            .unwrap();
        assert_abs_diff_eq!(r, 2.0, epsilon = 1e-12);
        // SSIM of x = [0, 1] and y = [1, 0.5] (already max-scaled): μ 0.5 / 0.75, σ 0.5 /
        // 0.25, σxy = −0.125.
        let (c1, c2) = (1e-4, 9e-4);
        let l = (2.0 * 0.5 * 0.75 + c1) / (0.25 + 0.5625 + c1);
        let c = (2.0 * 0.5 * 0.25 + c2) / (0.25 + 0.0625 + c2);
        let s = (-0.125 + c2 / 2.0) / (0.125 + c2 / 2.0);
        let got = ssim(&[0.0, 1.0], &[1.0, 0.5]).unwrap().unwrap();
        assert_abs_diff_eq!(got, l * c * s, epsilon = 1e-12);
    }

    #[test]
    fn undefined_and_invalid_inputs() {
        assert_eq!(ssim(&[0.0, 0.0], &[1.0, 2.0]).unwrap(), None);
        assert_eq!(rmse_zscored(&[2.0, 2.0], &[1.0, 2.0]).unwrap(), None);
        assert_eq!(js_divergence(&[0.0, 0.0], &[1.0, 2.0]).unwrap(), None);
        assert!(js_divergence(&[1.0, 2.0], &[-1.0, 2.0]).is_err());
        assert!(ssim(&[1.0], &[1.0, 2.0]).is_err());
        assert!(rmse_zscored(&[f64::NAN, 1.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn accuracy_score_ranks_each_metric() {
        let best = MetricMeans {
            pcc: 0.5,
            ssim: 0.4,
            rmse: 0.9,
            js: 0.2,
        };
        let worst = MetricMeans {
            pcc: 0.1,
            ssim: 0.1,
            rmse: 1.3,
            js: 0.5,
        };
        let mixed = MetricMeans {
            pcc: 0.6,
            ssim: 0.1,
            rmse: 1.0,
            js: f64::NAN,
        };
        let s = accuracy_scores(&[best, worst, mixed]);
        // best: ranks 2, 1, 1, 1 → (2/3 + 1 + 1 + 1) / 4.
        assert_abs_diff_eq!(s[0], (2.0 / 3.0 + 3.0) / 4.0, epsilon = 1e-12);
        // worst: ranks 3, 2.5 (tie), 3, 2 → (1/3 + 0.5 + 1/3 + 2/3) / 4.
        assert_abs_diff_eq!(
            s[1],
            (1.0 / 3.0 + 0.5 + 1.0 / 3.0 + 2.0 / 3.0) / 4.0,
            epsilon = 1e-12
        );
        // mixed: ranks 1, 2.5, 2, 3 (NaN last) → (1 + 0.5 + 2/3 + 1/3) / 4.
        assert_abs_diff_eq!(
            s[2],
            (1.0 + 0.5 + 2.0 / 3.0 + 1.0 / 3.0) / 4.0,
            epsilon = 1e-12
        );
        assert!(accuracy_scores(&[]).is_empty());
    }
}
