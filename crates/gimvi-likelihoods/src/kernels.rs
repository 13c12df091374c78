//! Value and gradient of the count likelihoods in one pass on the host, for CPU backends.
//!
//! The tensor forms in [`crate::count`] chain ~50 elementwise operations forward and ~100
//! backward; on a CPU backend each one is a pass over memory plus framework overhead, so the
//! ZINB over a 128 × 20,000 minibatch took 2 s forward + backward (`docs/performance.md`). Here
//! one pass over the minibatch computes, per element, ln p and its derivatives with respect to
//! μ, θ and the dropout logit π, threaded over cells: zero counts (most entries at
//! transcriptome scale) by a branch-free f32 pass that vectorises (AVX2 + FMA where the CPU
//! has it), non-zero counts in f64. The model crate wraps these kernels in burn custom
//! operations with a hand-written backward (its private `ops` module), so autodiff sees one
//! operation whose gradient is the one computed here.
//!
//! This module is an internal interface between gimvi's crates (hidden from the docs): its
//! functions may change without notice. The tensor forms are the definition; these kernels
//! are checked against them (`tests/kernels.rs`).
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

use rayon::prelude::*;
use statrs::function::gamma::{digamma, ln_gamma};

use crate::count::EPS;
use crate::fastmath;
use crate::CountLikelihood;

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

/// ln k! for the integer counts below this, from a table built once.
const FACTORIAL_TABLE: usize = 4096;

fn ln_factorial_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..FACTORIAL_TABLE)
            .map(|k| if k < 2 { 0.0 } else { ln_gamma(k as f64 + 1.0) })
            .collect()
    })
}

#[inline]
fn ln_factorial(x: f64) -> f64 {
    if x >= 0.0 && x < FACTORIAL_TABLE as f64 && x.fract() == 0.0 {
        return ln_factorial_table()[x as usize];
    }
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

/// `v` cut into chunks of `chunk` elements, or, for an output the likelihood does not have
/// (`used` false, `v` empty), as many empty slices as `n` elements make chunks — so that the
/// per-chunk outputs can be zipped together whatever the likelihood.
fn split(v: &mut [f32], used: bool, chunk: usize, n: usize) -> Vec<&mut [f32]> {
    if used {
        v.chunks_mut(chunk).collect()
    } else {
        (0..n.div_ceil(chunk))
            .map(|_| <&mut [f32]>::default())
            .collect()
    }
}

/// Per-gene constants of θ: θ (+ EPS) in f32 for the zero pass, and θ, ln Γ(θ), ψ(θ) in f64
/// for the non-zero entries.
struct ThetaConsts {
    theta32: Vec<f32>,
    /// 1 / (θ + EPS) in f32, so that the zero pass multiplies instead of dividing.
    inv_theta32: Vec<f32>,
    per_gene: Vec<(f64, f64, f64)>,
}

impl ThetaConsts {
    fn new(theta: &[f32]) -> Self {
        Self {
            theta32: theta.iter().map(|&t| (f64::from(t) + EPS) as f32).collect(),
            inv_theta32: theta
                .iter()
                .map(|&t| (1.0 / (f64::from(t) + EPS)) as f32)
                .collect(),
            per_gene: theta
                .iter()
                .map(|&t| {
                    let t = f64::from(t) + EPS;
                    (t, ln_gamma(t), digamma(t))
                })
                .collect(),
        }
    }
}

/// Columns per block of [`row_value_and_grad`]: the zero pass writes its per-block values here
/// (4 KiB), so they are summed and patched while in L1 rather than streamed through a
/// row-long buffer.
const BLOCK: usize = 1024;

/// The positions `g` in `xr` with a non-zero count, written to `idx` (branch-free, so that a
/// sparse row costs a compare and a store per entry rather than a mispredicted branch);
/// returns how many.
#[inline]
fn nonzero_positions(xr: &[f32], idx: &mut [u32]) -> usize {
    let mut n = 0usize;
    for (g, &x) in xr.iter().enumerate() {
        idx[n] = g as u32;
        n += usize::from(x != 0.0);
    }
    n
}

/// One row (cell) of [`value_and_grad`]: returns Σ_g ln p and writes ∂μ, ∂θ (if used) and
/// ∂π (if used) of its genes; `scratch` holds [`BLOCK`] floats and `idx` [`BLOCK`] indices.
///
/// Block by block: the branch-free zero pass over every gene, its values summed (eight f64
/// partial sums), then the non-zero entries recomputed in f64, their zero-pass value taken
/// back out of the sum and theirs added.
#[allow(clippy::too_many_arguments)]
fn row_value_and_grad(
    likelihood: CountLikelihood,
    xr: &[f32],
    mr: &[f32],
    tc: &ThetaConsts,
    lr: &[f32],
    dmr: &mut [f32],
    dtr: &mut [f32],
    dlr: &mut [f32],
    scratch: &mut [f32],
    idx: &mut [u32],
) -> f64 {
    let cols = xr.len();
    let mut acc = 0.0f64;
    let mut start = 0;
    while start < cols {
        let end = (start + BLOCK).min(cols);
        let b = start..end;
        let value = &mut scratch[..end - start];
        // Outputs and per-gene inputs a likelihood does not use are empty slices: their
        // block is empty too.
        zero_pass(
            likelihood,
            &mr[b.clone()],
            tc.theta32.get(b.clone()).unwrap_or_default(),
            tc.inv_theta32.get(b.clone()).unwrap_or_default(),
            lr.get(b.clone()).unwrap_or_default(),
            &mut dmr[b.clone()],
            dtr.get_mut(b.clone()).unwrap_or_default(),
            dlr.get_mut(b.clone()).unwrap_or_default(),
            value,
        );
        acc += dot_f64(value, None);
        let n_nz = nonzero_positions(&xr[b.clone()], idx);
        for &i in &idx[..n_nz] {
            let g = start + i as usize;
            let xv = f64::from(xr[g]);
            let m = f64::from(mr[g]) + EPS;
            acc -= f64::from(value[i as usize]);
            match likelihood {
                CountLikelihood::Poisson => {
                    acc += xv * m.ln() - m - ln_factorial(xv);
                    dmr[g] = (xv / m - 1.0) as f32;
                }
                CountLikelihood::Nb => {
                    let (t, lgt, pst) = tc.per_gene[g];
                    let (v, a, bt) = nb_terms(xv, m, t, lgt, pst);
                    acc += v;
                    dmr[g] = a as f32;
                    dtr[g] = bt as f32;
                }
                CountLikelihood::Zinb => {
                    let (t, lgt, pst) = tc.per_gene[g];
                    let pi = f64::from(lr[g]);
                    // softplus(π) and σ(π) from one exp and one log1p.
                    let e = (-pi.abs()).exp();
                    let sp_pos = pi.max(0.0) + e.ln_1p();
                    let s = if pi >= 0.0 {
                        1.0 / (1.0 + e)
                    } else {
                        e / (1.0 + e)
                    };
                    let (l, a, bt) = nb_terms(xv, m, t, lgt, pst);
                    acc += l - sp_pos;
                    dmr[g] = a as f32;
                    dtr[g] = bt as f32;
                    dlr[g] = (-s) as f32;
                }
            }
        }
        start = end;
    }
    acc
}

/// Value and gradient of `likelihood` on a row-major `rows × cols` minibatch. `theta` holds one
/// value per column (θ of each gene); `logits` is per element (ZINB only). Inputs are the raw
/// parameters: [`EPS`] is added to μ and θ here, as the tensor forms do.
///
/// Each row is done in two passes: a branch-free f32 pass over all genes evaluates the
/// zero-count branch with vectorisable f32 exp / ln / ln(1 + x) (zero counts are
/// most entries at transcriptome scale), then the non-zero entries are recomputed in f64
/// (ln Γ / ψ differences and the count terms need it) and overwrite their slots.
///
/// # Panics
/// If the slice lengths do not match `rows × cols` (an internal contract of the model crate).
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
    let tc = ThetaConsts::new(theta);
    let rows = n / cols;
    let mut d_mu = vec![0.0f32; n];
    let mut d_theta = if has_theta { vec![0.0f32; n] } else { vec![] };
    let mut d_logit = if has_logit { vec![0.0f32; n] } else { vec![] };
    let mut row_values = vec![0.0f64; rows];

    // Split every output into row chunks and process them in parallel.
    let chunk_rows = (rows / (4 * rayon::current_num_threads()).max(1)).clamp(1, 64);
    let chunk = chunk_rows * cols;
    let mut dt_chunks = split(&mut d_theta, has_theta, chunk, n);
    let mut dl_chunks = split(&mut d_logit, has_logit, chunk, n);
    d_mu.par_chunks_mut(chunk)
        .zip(row_values.par_chunks_mut(chunk_rows))
        .zip(dt_chunks.par_iter_mut())
        .zip(dl_chunks.par_iter_mut())
        .enumerate()
        .for_each(|(c, (((dm, rv), dt), dl))| {
            let base = c * chunk;
            let mut scratch = vec![0.0f32; BLOCK];
            let mut idx = vec![0u32; BLOCK];
            for (r, value) in rv.iter_mut().enumerate() {
                let row = r * cols..(r + 1) * cols;
                let at = base + r * cols..base + (r + 1) * cols;
                let (xr, mr) = (&x[at.clone()], &mu[at.clone()]);
                let lr = if has_logit { &logits[at] } else { &[][..] };
                let dmr = &mut dm[row.clone()];
                let dtr = if has_theta {
                    &mut dt[row.clone()]
                } else {
                    &mut [][..]
                };
                let dlr = if has_logit { &mut dl[row] } else { &mut [][..] };
                *value = row_value_and_grad(
                    likelihood,
                    xr,
                    mr,
                    &tc,
                    lr,
                    dmr,
                    dtr,
                    dlr,
                    &mut scratch,
                    &mut idx,
                );
            }
        });
    ValueAndGrad {
        row_values,
        d_mu,
        d_theta,
        d_logit,
    }
}

crate::simd_dispatch!(
    /// The zero-count branch for one row, for every gene (non-zero entries are overwritten by
    /// the caller): ln p into `value`, derivatives into `dm`, `dt`, `dl`. Runtime dispatch to
    /// an AVX2 + FMA build of the same code where the CPU has it.
    fn zero_pass(
        likelihood: CountLikelihood,
        mu: &[f32],
        theta: &[f32],
        inv_theta: &[f32],
        logits: &[f32],
        dm: &mut [f32],
        dt: &mut [f32],
        dl: &mut [f32],
        value: &mut [f32]
    ) = zero_pass_body, zero_pass_body;
);

/// ∂/∂θ of ln NB(0) = −θ ln(1 + q), q = μ/θ: μ/(θ+μ) − ln(1 + q), which cancels for small q;
/// there its series −q²/2 + 2q³/3 − 3q⁴/4 + 4q⁵/5 − 5q⁶/6 is used (truncation < 2e−8 rel.).
#[inline(always)]
fn d_theta_nb0(q: f32, ln1p_q: f32, mu_over_tm: f32) -> f32 {
    let series = -q * q * (0.5 - q * (2.0 / 3.0 - q * (0.75 - q * (0.8 - q * (5.0 / 6.0)))));
    let direct = mu_over_tm - ln1p_q;
    if q < 0.01 {
        series
    } else {
        direct
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn zero_pass_body(
    likelihood: CountLikelihood,
    mu: &[f32],
    theta: &[f32],
    inv_theta: &[f32],
    logits: &[f32],
    dm: &mut [f32],
    dt: &mut [f32],
    dl: &mut [f32],
    value: &mut [f32],
) {
    let n = mu.len();
    let eps = EPS as f32;
    let (dm, value) = (&mut dm[..n], &mut value[..n]);
    match likelihood {
        CountLikelihood::Poisson => {
            for g in 0..n {
                value[g] = -(mu[g] + eps);
                dm[g] = -1.0;
            }
        }
        CountLikelihood::Nb => {
            let (theta, inv_theta, dt) = (&theta[..n], &inv_theta[..n], &mut dt[..n]);
            for g in 0..n {
                let (m, t) = (mu[g] + eps, theta[g]);
                let q = m * inv_theta[g];
                let l1 = fastmath::ln_1p(q);
                let inv_tm = 1.0 / (t + m);
                value[g] = -t * l1;
                dm[g] = -t * inv_tm;
                dt[g] = d_theta_nb0(q, l1, m * inv_tm);
            }
        }
        CountLikelihood::Zinb => {
            let (theta, inv_theta, dt) = (&theta[..n], &inv_theta[..n], &mut dt[..n]);
            let (logits, dl) = (&logits[..n], &mut dl[..n]);
            for g in 0..n {
                let (m, t, pi) = (mu[g] + eps, theta[g], logits[g]);
                // ln NB(0) and its derivatives (one division for both).
                let q = m * inv_theta[g];
                let l1 = fastmath::ln_1p(q);
                let inv_tm = 1.0 / (t + m);
                let l0 = -t * l1;
                let a = -t * inv_tm;
                let b = d_theta_nb0(q, l1, m * inv_tm);
                // σ(π) from e = exp(−|π|) and one reciprocal.
                let e = fastmath::exp(-pi.abs());
                let inv_1pe = 1.0 / (1.0 + e);
                let s = if pi >= 0.0 { inv_1pe } else { e * inv_1pe };
                // ln(σ(π) + σ(−π) NB(0)) = logaddexp(π, l0) − softplus(π)
                //   = max(π, l0) − max(π, 0) + ln((1 + r) / (1 + e)), r = exp(−|π − l0|);
                // both ratios' terms lie in (1, 2], so one ln of their quotient is accurate.
                // wa, wb: posterior weights of the dropout and NB components.
                let r = fastmath::exp(-(pi - l0).abs());
                let hi = pi.max(l0);
                value[g] = hi - pi.max(0.0) + fastmath::ln((1.0 + r) * inv_1pe);
                let inv = 1.0 / (1.0 + r);
                let (wa, wb) = if pi >= l0 {
                    (inv, r * inv)
                } else {
                    (r * inv, inv)
                };
                dm[g] = wb * a;
                dt[g] = wb * b;
                dl[g] = wa * (1.0 - s) - wb * s;
            }
        }
    }
}

/// Host value and gradients of the likelihood with μ = ℓ · softmax(logits), per row: the
/// model crate's decoder operations return to autodiff.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxValueAndGrad {
    /// Σ_g ln p per row.
    pub row_values: Vec<f64>,
    /// ∂ Σ_g ln p / ∂ logit per element (through the softmax and the library scaling).
    pub d_logits: Vec<f32>,
    /// ∂ Σ_g ln p / ∂ ln ℓ per row.
    pub d_log_library: Vec<f32>,
    /// Σ_n ∂ ln p_ng / ∂θ_g, summed over the rows, per column (empty for Poisson).
    pub d_theta_sum: Vec<f64>,
    /// ∂ ln p / ∂π per element (empty unless ZINB).
    pub d_dropout: Vec<f32>,
}

/// [`value_and_grad`] with μ = ℓ · softmax(`logits`) row by row (Lopez et al. 2019, Eq. 5,
/// ℓ = exp(`log_library`), one value per row), the chain rule through the softmax and the
/// scaling done on the host: ∂/∂l_g = μ_g ∂_μg − ρ_g Σ_k μ_k ∂_μk and ∂/∂ln ℓ = Σ_k μ_k ∂_μk.
/// All slices are row-major `rows × cols` except `log_library` (`rows`) and `theta` (`cols`).
///
/// # Panics
/// As [`value_and_grad`], and if `log_library` does not have one value per row.
pub fn softmax_value_and_grad(
    likelihood: CountLikelihood,
    cols: usize,
    x: &[f32],
    logits: &[f32],
    log_library: &[f32],
    theta: &[f32],
    dropout_logits: &[f32],
) -> SoftmaxValueAndGrad {
    assert!(
        cols > 0 && logits.len().is_multiple_of(cols),
        "logits are rows × cols"
    );
    let rows = logits.len() / cols;
    assert_eq!(log_library.len(), rows, "one library per row");
    let n = rows * cols;
    assert_eq!(x.len(), n, "x has the shape of the logits");
    let has_theta = likelihood.has_dispersion();
    let has_logit = likelihood.has_dropout();
    if has_theta {
        assert_eq!(theta.len(), cols, "one theta per column");
    }
    if has_logit {
        assert_eq!(
            dropout_logits.len(),
            n,
            "dropout logits have the shape of x"
        );
    }
    let tc = ThetaConsts::new(theta);
    let mut d_logits = vec![0.0f32; n];
    let mut d_dropout = if has_logit { vec![0.0f32; n] } else { vec![] };
    let mut row_values = vec![0.0f64; rows];
    let mut d_lib = vec![0.0f32; rows];
    // Row by row, every stage on one row while it is in cache: ρ and μ (the normaliser in
    // f64, stored in f32 as the tensor path would), ln p and ∂/∂μ, ∂/∂θ, ∂/∂π, then the chain
    // rule through μ = ℓ softmax(l); ∂/∂θ is summed over the chunk's rows on the way.
    let chunk_rows = (rows / (4 * rayon::current_num_threads()).max(1)).clamp(1, 64);
    let chunk = chunk_rows * cols;
    let mut dl_chunks = split(&mut d_dropout, has_logit, chunk, n);
    let theta_sums: Vec<Vec<f64>> = d_logits
        .par_chunks_mut(chunk)
        .zip(row_values.par_chunks_mut(chunk_rows))
        .zip(d_lib.par_chunks_mut(chunk_rows))
        .zip(dl_chunks.par_iter_mut())
        .enumerate()
        .map(|(c, (((d_l, rv), d_lib), d_pi))| {
            let mut rho = vec![0.0f32; cols];
            let mut mu = vec![0.0f32; cols];
            let mut scratch = vec![0.0f32; BLOCK];
            let mut idx = vec![0u32; BLOCK];
            let mut dt = vec![0.0f32; if has_theta { cols } else { 0 }];
            let mut theta_sum = vec![0.0f64; if has_theta { cols } else { 0 }];
            for (r, value) in rv.iter_mut().enumerate() {
                let at = (c * chunk_rows + r) * cols..(c * chunk_rows + r + 1) * cols;
                let row = r * cols..(r + 1) * cols;
                softmax_row(
                    &logits[at.clone()],
                    log_library[at.start / cols],
                    &mut rho,
                    &mut mu,
                );
                let d_r = &mut d_l[row.clone()];
                let (lr, dlr) = if has_logit {
                    (&dropout_logits[at.clone()], &mut d_pi[row])
                } else {
                    (&[][..], &mut [][..])
                };
                *value = row_value_and_grad(
                    likelihood,
                    &x[at],
                    &mu,
                    &tc,
                    lr,
                    d_r,
                    &mut dt,
                    dlr,
                    &mut scratch,
                    &mut idx,
                );
                d_lib[r] = softmax_chain_row(&mu, &rho, d_r);
                for (s, &d) in theta_sum.iter_mut().zip(&dt) {
                    *s += f64::from(d);
                }
            }
            theta_sum
        })
        .collect();
    // Chunk sums added in chunk order (reproducible whatever the thread scheduling).
    let mut d_theta_sum = vec![0.0f64; if has_theta { cols } else { 0 }];
    for part in &theta_sums {
        for (s, p) in d_theta_sum.iter_mut().zip(part) {
            *s += p;
        }
    }
    SoftmaxValueAndGrad {
        row_values,
        d_logits,
        d_log_library: d_lib,
        d_theta_sum,
        d_dropout,
    }
}

/// Σ_i a_i b_i of f32 values in f64 (b = 1 when `b` is `None`), with eight partial sums so
/// that it vectorises.
#[inline(always)]
fn dot_f64(a: &[f32], b: Option<&[f32]>) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut ac = a.chunks_exact(8);
    let mut tail = 0.0f64;
    match b {
        None => {
            for x in &mut ac {
                for l in 0..8 {
                    acc[l] += f64::from(x[l]);
                }
            }
            tail += ac.remainder().iter().map(|&x| f64::from(x)).sum::<f64>();
        }
        Some(b) => {
            let mut bc = b.chunks_exact(8);
            for (x, y) in (&mut ac).zip(&mut bc) {
                for l in 0..8 {
                    acc[l] += f64::from(x[l]) * f64::from(y[l]);
                }
            }
            tail += ac
                .remainder()
                .iter()
                .zip(bc.remainder())
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum::<f64>();
        }
    }
    acc.iter().sum::<f64>() + tail
}

crate::simd_dispatch!(
    /// One row of μ = ℓ softmax(l): ρ into `rho_r`, μ into `mu_r` (Eq. 5), the normaliser in
    /// f64.
    fn softmax_row(lr: &[f32], log_l: f32, rho_r: &mut [f32], mu_r: &mut [f32])
        = softmax_row_body, softmax_row_body;
);

#[inline(always)]
fn softmax_row_body(lr: &[f32], log_l: f32, rho_r: &mut [f32], mu_r: &mut [f32]) {
    let max = lr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    for (p, &l) in rho_r.iter_mut().zip(lr) {
        *p = fastmath::exp(l - max);
    }
    let sum = dot_f64(rho_r, None);
    let ell = f64::from(log_l).exp();
    let inv = 1.0 / sum;
    for (p, m) in rho_r.iter_mut().zip(mu_r.iter_mut()) {
        let rp = f64::from(*p) * inv;
        *p = rp as f32;
        *m = (ell * rp) as f32;
    }
}

crate::simd_dispatch!(
    /// The chain rule of one row through μ = ℓ softmax(l): `d_r` holds ∂/∂μ on entry and ∂/∂l
    /// on return; returns ∂/∂ln ℓ = Σ_k μ_k ∂_μk.
    fn softmax_chain_row(mu_r: &[f32], rho_r: &[f32], d_r: &mut [f32]) -> f32
        = softmax_chain_row_body, softmax_chain_row_body;
);

#[inline(always)]
fn softmax_chain_row_body(mu_r: &[f32], rho_r: &[f32], d_r: &mut [f32]) -> f32 {
    let s = dot_f64(mu_r, Some(d_r));
    for ((d, &m), &p) in d_r.iter_mut().zip(mu_r).zip(rho_r) {
        *d = (f64::from(m) * f64::from(*d) - f64::from(p) * s) as f32;
    }
    s as f32
}
