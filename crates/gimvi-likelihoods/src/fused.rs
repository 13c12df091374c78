//! Fused value-and-gradient of the count likelihoods on the host, for CPU backends.
//!
//! The tensor forms in [`crate::count`] chain ~50 elementwise operations forward and ~100
//! backward; on a CPU backend each one is a pass over memory plus framework overhead, so the
//! ZINB over a 128 × 20,000 minibatch took 2 s forward + backward (`docs/performance.md`). Here
//! one pass over the minibatch computes, per element, ln p and its derivatives with respect to
//! μ, θ and the dropout logit π in f64, threaded over cells. [`fused_log_prob_rows`] then
//! hands the result back to autodiff as a *surrogate*: for each cell
//!
//! r_n = V_n + Σ_g (μ_ng − sg(μ_ng)) ∂_μ + (θ_g − sg(θ_g)) ∂_θ + (π_ng − sg(π_ng)) ∂_π,
//!
//! with sg = stop-gradient. Its value is exactly V_n (the perturbations are x − x = 0) and its
//! gradient is exactly the host-computed one, so training sees the same objective as with the
//! tensor form, at 9 elementwise passes instead of ~150.
//!
//! Formulas (Lopez et al. 2019 Eq. 3 and 6; μ and θ get [`EPS`] added as in the tensor form):
//!
//! * NB: ln p = ln Γ(x+θ) − ln Γ(θ) − ln Γ(x+1) − θ ln(1 + μ/θ) + x ln(μ/(θ+μ));
//!   ∂μ = x/μ − (x+θ)/(θ+μ); ∂θ = ψ(x+θ) − ψ(θ) − ln(1 + μ/θ) + (μ − x)/(θ+μ).
//! * ZINB, x > 0: −softplus(π) + ln NB, ∂π = −σ(π). x = 0: logaddexp(ln σ(π), ln σ(−π) + L)
//!   with L = ln NB(0) = −θ ln(1 + μ/θ); the derivatives weight those of L by the posterior
//!   probability that the zero came from the NB component.
//! * Poisson: ln p = x ln λ − λ − ln Γ(x+1); ∂λ = x/λ − 1.
//!
//! ln Γ(x+θ) − ln Γ(θ) and ψ(x+θ) − ψ(θ) are computed as a log of a product and a sum of
//! reciprocals for x < 16 (most counts), which is exact where the difference of two large ln Γ
//! values would cancel; statrs' Lanczos ln Γ and its ψ are used beyond.

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use statrs::function::gamma::{digamma, ln_gamma};

use crate::count::EPS;
use crate::CountLikelihood;

/// Whether `device` (with or without autodiff) is a CPU backend for which the host path is the
/// faster one (burn-ndarray or burn-flex).
pub fn is_host_device(device: &Device) -> bool {
    let d = format!("{device:?}");
    d.contains("NdArray(") || d.contains("Flex(")
}

/// ln p and its derivatives for a `rows × cols` minibatch, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueAndGrad {
    /// Σ_g ln p per row.
    pub row_values: Vec<f64>,
    /// ∂ ln p / ∂μ per element.
    pub d_mu: Vec<f32>,
    /// ∂ ln p / ∂θ per element (empty for Poisson).
    pub d_theta: Vec<f32>,
    /// ∂ ln p / ∂π per element (empty unless ZINB).
    pub d_logit: Vec<f32>,
}

const SMALL_COUNT: f64 = 16.0;

/// ln Γ(x+θ) − ln Γ(θ) and ψ(x+θ) − ψ(θ) for a count x ≥ 1; `lg_theta`, `psi_theta` are
/// ln Γ(θ) and ψ(θ).
#[inline]
fn gamma_ratio(x: f64, theta: f64, lg_theta: f64, psi_theta: f64) -> (f64, f64) {
    if x < SMALL_COUNT {
        let (mut prod, mut recip) = (1.0f64, 0.0f64);
        let mut k = 0.0;
        while k < x {
            prod *= theta + k;
            recip += 1.0 / (theta + k);
            k += 1.0;
        }
        (prod.ln(), recip)
    } else {
        (
            ln_gamma(x + theta) - lg_theta,
            digamma(x + theta) - psi_theta,
        )
    }
}

#[inline]
fn ln_factorial(x: f64) -> f64 {
    if x < SMALL_COUNT {
        let mut p = 1.0f64;
        let mut k = 2.0;
        while k <= x {
            p *= k;
            k += 1.0;
        }
        p.ln()
    } else {
        ln_gamma(x + 1.0)
    }
}

/// (ln p, ∂μ, ∂θ) of NB(x; μ, θ), μ and θ already offset by EPS.
#[inline]
fn nb_terms(x: f64, mu: f64, theta: f64, lg_theta: f64, psi_theta: f64) -> (f64, f64, f64) {
    let log1p_ratio = (mu / theta).ln_1p();
    let tm = theta + mu;
    if x == 0.0 {
        return (-theta * log1p_ratio, -theta / tm, -log1p_ratio + mu / tm);
    }
    let (lg, psi) = gamma_ratio(x, theta, lg_theta, psi_theta);
    let value = lg - ln_factorial(x) - theta * log1p_ratio + x * (mu / tm).ln();
    let d_mu = x / mu - (x + theta) / tm;
    let d_theta = psi - log1p_ratio + (mu - x) / tm;
    (value, d_mu, d_theta)
}

/// Value and gradient of `likelihood` on a row-major `rows × cols` minibatch. `theta` holds one
/// value per column (θ of each gene); `logits` is per element (ZINB only). Inputs are the raw
/// parameters: [`EPS`] is added to μ and θ here, as the tensor forms do.
///
/// # Panics
/// If the slice lengths do not match `rows × cols` (an internal contract of the model crate).
// The gene index g addresses four arrays of different layouts at once.
#[allow(clippy::needless_range_loop)]
pub fn value_and_grad(
    likelihood: CountLikelihood,
    cols: usize,
    x: &[f32],
    mu: &[f32],
    theta: &[f32],
    logits: &[f32],
) -> ValueAndGrad {
    let n = x.len();
    assert_eq!(mu.len(), n, "mu has the shape of x");
    assert!(cols > 0 && n.is_multiple_of(cols), "x is rows × cols");
    let has_theta = likelihood.has_dispersion();
    let has_logit = likelihood.has_dropout();
    if has_theta {
        assert_eq!(theta.len(), cols, "one theta per column");
    }
    if has_logit {
        assert_eq!(logits.len(), n, "logits have the shape of x");
    }
    // Per-gene ln Γ(θ), ψ(θ).
    let per_gene: Vec<(f64, f64, f64)> = if has_theta {
        theta
            .iter()
            .map(|&t| {
                let t = f64::from(t) + EPS;
                (t, ln_gamma(t), digamma(t))
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows = n / cols;
    let mut d_mu = vec![0.0f32; n];
    let mut d_theta = if has_theta { vec![0.0f32; n] } else { vec![] };
    let mut d_logit = if has_logit { vec![0.0f32; n] } else { vec![] };
    let mut row_values = vec![0.0f64; rows];

    // Split every output into row chunks and process them in parallel.
    let chunk_rows = (rows / (4 * rayon::current_num_threads()).max(1)).clamp(1, 64);
    let chunk = chunk_rows * cols;
    let mut dt_chunks: Vec<&mut [f32]> = if has_theta {
        d_theta.chunks_mut(chunk).collect()
    } else {
        (0..n.div_ceil(chunk))
            .map(|_| <&mut [f32]>::default())
            .collect()
    };
    let mut dl_chunks: Vec<&mut [f32]> = if has_logit {
        d_logit.chunks_mut(chunk).collect()
    } else {
        (0..n.div_ceil(chunk))
            .map(|_| <&mut [f32]>::default())
            .collect()
    };
    d_mu.par_chunks_mut(chunk)
        .zip(row_values.par_chunks_mut(chunk_rows))
        .zip(dt_chunks.par_iter_mut())
        .zip(dl_chunks.par_iter_mut())
        .enumerate()
        .for_each(|(c, (((dm, rv), dt), dl))| {
            let base = c * chunk;
            for (r, value) in rv.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for g in 0..cols {
                    let i = r * cols + g;
                    let k = base + i;
                    let xv = f64::from(x[k]);
                    let m = f64::from(mu[k]) + EPS;
                    match likelihood {
                        CountLikelihood::Poisson => {
                            let v = if xv == 0.0 {
                                -m
                            } else {
                                xv * m.ln() - m - ln_factorial(xv)
                            };
                            acc += v;
                            dm[i] = (xv / m - 1.0) as f32;
                        }
                        CountLikelihood::Nb => {
                            let (t, lgt, pst) = per_gene[g];
                            let (v, a, b) = nb_terms(xv, m, t, lgt, pst);
                            acc += v;
                            dm[i] = a as f32;
                            dt[i] = b as f32;
                        }
                        CountLikelihood::Zinb => {
                            let (t, lgt, pst) = per_gene[g];
                            let pi = f64::from(logits[k]);
                            // One exp and one log1p give softplus(±π) and σ(π).
                            let e = (-pi.abs()).exp();
                            let sp_pos = pi.max(0.0) + e.ln_1p(); // softplus(π)
                            let s = if pi >= 0.0 {
                                1.0 / (1.0 + e)
                            } else {
                                e / (1.0 + e)
                            };
                            let (l, a, b) = nb_terms(xv, m, t, lgt, pst);
                            if xv > 0.0 {
                                acc += l - sp_pos;
                                dm[i] = a as f32;
                                dt[i] = b as f32;
                                dl[i] = (-s) as f32;
                            } else {
                                // logaddexp(ln σ(π), ln σ(−π) + L) with ln σ(π) = π − softplus(π).
                                let la = pi - sp_pos;
                                let lb = l - sp_pos;
                                let (hi, lo) = if la >= lb { (la, lb) } else { (lb, la) };
                                let r = (lo - hi).exp();
                                let v = hi + r.ln_1p();
                                // Posterior weights of the two components.
                                let (wa, wb) = if la >= lb {
                                    (1.0 / (1.0 + r), r / (1.0 + r))
                                } else {
                                    (r / (1.0 + r), 1.0 / (1.0 + r))
                                };
                                acc += v;
                                dm[i] = (wb * a) as f32;
                                dt[i] = (wb * b) as f32;
                                dl[i] = (wa * (1.0 - s) - wb * s) as f32;
                            }
                        }
                    }
                }
                *value = acc;
            }
        });
    ValueAndGrad {
        row_values,
        d_mu,
        d_theta,
        d_logit,
    }
}

fn host_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("an f32 tensor")
}

/// Per-row Σ_g ln p as a `[rows, 1]` tensor whose value and gradients (w.r.t. `mu`, `theta`,
/// `logits`) are those of the likelihood, computed on the host by [`value_and_grad`] and
/// re-attached by the surrogate of the module docs. `x` is the host copy of the counts
/// (row-major, `rows × cols`); `mu` and `logits` are `[rows, cols]`, `theta` is `[1, cols]`.
/// Arguments the likelihood does not use may be `None`.
///
/// # Panics
/// If a parameter the likelihood needs is missing or shapes disagree (the model crate's
/// contract; the public tensor forms return typed errors instead).
pub fn fused_log_prob_rows(
    likelihood: CountLikelihood,
    x: &[f32],
    mu: Tensor<2>,
    theta: Option<Tensor<2>>,
    logits: Option<Tensor<2>>,
) -> Tensor<2> {
    let [rows, cols] = mu.dims();
    let device = mu.device();
    let mu_h = host_vec(mu.clone());
    let theta_h = theta
        .as_ref()
        .map(|t| host_vec(t.clone()))
        .unwrap_or_default();
    let logits_h = logits
        .as_ref()
        .map(|t| host_vec(t.clone()))
        .unwrap_or_default();
    let vg = value_and_grad(likelihood, cols, x, &mu_h, &theta_h, &logits_h);

    let grad = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [rows, cols]), &device);
    let values: Vec<f32> = vg.row_values.iter().map(|&v| v as f32).collect();
    let mut out = Tensor::<2>::from_data(TensorData::new(values, [rows, 1]), &device);
    // (p − sg(p)) is exactly zero; multiplying by the host gradient re-attaches it.
    let perturb = |p: Tensor<2>| p.clone().sub(p.detach());
    out = out.add(perturb(mu).mul(grad(vg.d_mu)).sum_dim(1));
    if likelihood.has_dispersion() {
        let theta = theta.expect("θ for a likelihood with dispersion");
        out = out.add(perturb(theta).mul(grad(vg.d_theta)).sum_dim(1));
    }
    if likelihood.has_dropout() {
        let logits = logits.expect("dropout logits for ZINB");
        out = out.add(perturb(logits).mul(grad(vg.d_logit)).sum_dim(1));
    }
    out
}

/// [`fused_log_prob_rows`] with the mean given as μ = ℓ · softmax(logits) (Lopez et al. 2019,
/// Eq. 5 with the observed or sampled library ℓ = exp(`log_library`), `[rows, 1]`): the softmax
/// and the scaling are evaluated on the host too, and the gradient reaches the logits and ln ℓ
/// through ∂/∂l_g = μ_g ∂_μg − ρ_g Σ_k μ_k ∂_μk and ∂/∂ln ℓ = Σ_k μ_k ∂_μk.
///
/// # Panics
/// As [`fused_log_prob_rows`].
pub fn fused_log_prob_rows_softmax(
    likelihood: CountLikelihood,
    x: &[f32],
    logits: Tensor<2>,
    log_library: Tensor<2>,
    theta: Option<Tensor<2>>,
    dropout_logits: Option<Tensor<2>>,
) -> Tensor<2> {
    let [rows, cols] = logits.dims();
    let device = logits.device();
    let l_h = host_vec(logits.clone());
    let lib_h = host_vec(log_library.clone());
    // ρ and μ per row, in f64 for the normaliser, stored in f32 as the tensor path would.
    let mut rho = vec![0.0f32; rows * cols];
    let mut mu = vec![0.0f32; rows * cols];
    rho.par_chunks_mut(cols)
        .zip(mu.par_chunks_mut(cols))
        .enumerate()
        .for_each(|(r, (rho_r, mu_r))| {
            let lr = &l_h[r * cols..(r + 1) * cols];
            let max = lr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for (p, &l) in rho_r.iter_mut().zip(lr) {
                let e = (l - max).exp();
                *p = e;
                sum += f64::from(e);
            }
            let ell = f64::from(lib_h[r]).exp();
            let inv = 1.0 / sum;
            for (p, m) in rho_r.iter_mut().zip(mu_r.iter_mut()) {
                let rp = f64::from(*p) * inv;
                *p = rp as f32;
                *m = (ell * rp) as f32;
            }
        });
    let theta_h = theta
        .as_ref()
        .map(|t| host_vec(t.clone()))
        .unwrap_or_default();
    let logits_h = dropout_logits
        .as_ref()
        .map(|t| host_vec(t.clone()))
        .unwrap_or_default();
    let vg = value_and_grad(likelihood, cols, x, &mu, &theta_h, &logits_h);

    // Chain rule through μ = ℓ softmax(l).
    let mut d_l = vg.d_mu;
    let mut d_lib = vec![0.0f32; rows];
    d_l.par_chunks_mut(cols)
        .zip(d_lib.par_iter_mut())
        .enumerate()
        .for_each(|(r, (d_r, d_lib_r))| {
            let mu_r = &mu[r * cols..(r + 1) * cols];
            let rho_r = &rho[r * cols..(r + 1) * cols];
            let s: f64 = mu_r
                .iter()
                .zip(d_r.iter())
                .map(|(&m, &d)| f64::from(m) * f64::from(d))
                .sum();
            for ((d, &m), &p) in d_r.iter_mut().zip(mu_r).zip(rho_r) {
                *d = (f64::from(m) * f64::from(*d) - f64::from(p) * s) as f32;
            }
            *d_lib_r = s as f32;
        });

    let grad =
        |v: Vec<f32>, c: usize| Tensor::<2>::from_data(TensorData::new(v, [rows, c]), &device);
    let values: Vec<f32> = vg.row_values.iter().map(|&v| v as f32).collect();
    let perturb = |p: Tensor<2>| p.clone().sub(p.detach());
    let mut out = grad(values, 1);
    out = out.add(perturb(logits).mul(grad(d_l, cols)).sum_dim(1));
    out = out.add(perturb(log_library).mul(grad(d_lib, 1)));
    if likelihood.has_dispersion() {
        let theta = theta.expect("θ for a likelihood with dispersion");
        out = out.add(perturb(theta).mul(grad(vg.d_theta, cols)).sum_dim(1));
    }
    if likelihood.has_dropout() {
        let logits = dropout_logits.expect("dropout logits for ZINB");
        out = out.add(perturb(logits).mul(grad(vg.d_logit, cols)).sum_dim(1));
    }
    out
}
