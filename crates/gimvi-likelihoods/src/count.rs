//! Log-probabilities of the count distributions of gimVI's two ELBOs.
//!
//! All three are written in the saddle-point ("deviance") form of Loader (2000), *Fast and
//! accurate computation of binomial probabilities*: the large terms x ln μ, ln Γ(x + θ),
//! ln Γ(x + 1), … that cancel against each other for large counts are combined analytically
//! before any rounding happens. In `f32` the naive form loses every significant digit at
//! x ≈ 10⁵ (ln Γ(10⁵) ≈ 10⁶ while the log-probability is ≈ −7); this form stays within 10⁻⁴
//! relative of an `f64` reference over the whole grid the tests check (μ ∈ [10⁻⁶, 10⁵],
//! θ ∈ [10⁻³, 10⁴], x ∈ [0, 10⁵], dropout logits ∈ [−20, 20]).
//!
//! Shapes: `x` and `mu` have the same shape; `theta` and `dropout_logits` either have that shape
//! or broadcast to it (e.g. `[1, G]` against `[N, G]`).

use burn::tensor::activation::softplus;
use burn::tensor::Tensor;

use crate::special::{expm1, log1p, stirling_correction, HALF_LN_2PI};

/// ε added to the mean μ (and to θ) before any logarithm or division, so that a mean or an
/// inverse dispersion that underflowed to 0 gives a finite log-probability and a finite, non-zero
/// gradient (at most x/ε, finite in `f32`). It is six orders of magnitude below the smallest
/// mean the accuracy tests use (10⁻⁶), where it changes the log-probability by about 10⁻⁶
/// relative, and still representable next to it in `f32` (ulp(10⁻⁶) ≈ 10⁻¹³). (scvi-tools adds
/// 10⁻⁸ inside each logarithm, which at μ = 10⁻⁶ already moves ln μ by 10⁻².)
pub const EPS: f64 = 1e-12;

/// Below this |r| the function h(r) = (1 + r) ln(1 + r) − r is summed as a series.
const H_SERIES_MAX: f64 = 0.1;

/// h(t) = t ln t − t + 1 for t = 1 + r > 0, given both t and r = t − 1 computed without
/// cancellation by the caller. This is the rate function of the deviance:
/// x ln(x/m) + m − x = m · h(x/m).
///
/// Near t = 1 the direct form cancels, so for |r| < 0.1 the Taylor series
/// Σ_{k≥2} (−1)^k r^k / (k (k − 1)) is used (9 terms, truncation < 10⁻¹⁰ relative).
fn deviance_rate<const D: usize>(t: Tensor<D>, r: Tensor<D>) -> Tensor<D> {
    let near_one = r.clone().abs().lower_elem(H_SERIES_MAX);

    let rs = r.clone().clamp(-H_SERIES_MAX, H_SERIES_MAX);
    // r² · Σ_{k=2}^{10} (−1)^k r^{k−2} / (k (k − 1)), Horner in r.
    let coef = |k: usize| -> f64 {
        let sign = if k.is_multiple_of(2) { 1.0 } else { -1.0 };
        sign / (k * (k - 1)) as f64
    };
    let mut acc = rs.clone().mul_scalar(coef(10));
    for k in (3..10).rev() {
        acc = acc.add_scalar(coef(k)).mul(rs.clone());
    }
    let series = acc.add_scalar(coef(2)).mul(rs.square());

    // Direct form on t bounded away from 0 (t ln t → 0 as t → 0, so the floor changes nothing
    // that f32 can represent while keeping ln finite).
    let tc = t.clamp_min(1e-30);
    let direct = tc.clone().mul(tc.log()).sub(r);

    direct.mask_where(near_one, series)
}

/// ln NB(0; μ, θ) = θ ln(θ / (θ + μ)) = −θ ln(1 + μ/θ), without cancellation when μ ≪ θ.
fn nb_log_zero<const D: usize>(mu: Tensor<D>, theta: Tensor<D>) -> Tensor<D> {
    log1p(mu.div(theta.clone())).mul(theta).neg()
}

/// ln NB(x; μ, θ) for x > 0 in saddle-point form.
///
/// With a = x + θ, s = θ + μ, the binomial-like split n p = a μ / s, n q = a θ / s gives
///
/// ln NB = −n p · h(x / (n p)) − n q · h(θ / (n q)) + ½ ln(θ / (2π x a)) + δ(a) − δ(θ) − δ(x),
///
/// where h is [`deviance_rate`] and δ the Stirling correction. The ratios and their differences
/// from 1 are formed from the inputs directly:
/// x/(np) = x s/(a μ), x/(np) − 1 = θ (x − μ)/(a μ); θ/(nq) = s/a, θ/(nq) − 1 = (μ − x)/a.
fn nb_log_positive<const D: usize>(x: Tensor<D>, mu: Tensor<D>, theta: Tensor<D>) -> Tensor<D> {
    let a = x.clone().add(theta.clone());
    let s = theta.clone().add(mu.clone());
    let a_mu = a.clone().mul(mu.clone());

    let np = a_mu.clone().div(s.clone());
    let nq = a.clone().mul(theta.clone()).div(s.clone());

    let t1 = x.clone().mul(s.clone()).div(a_mu.clone());
    let r1 = theta.clone().mul(x.clone().sub(mu.clone())).div(a_mu);
    let t2 = s.div(a.clone());
    let r2 = mu.sub(x.clone()).div(a.clone());

    let deviance = np
        .mul(deviance_rate(t1, r1))
        .add(nq.mul(deviance_rate(t2, r2)));

    let half_log = theta
        .clone()
        .log()
        .sub(x.clone().log())
        .sub(a.clone().log())
        .sub_scalar(2.0 * HALF_LN_2PI)
        .mul_scalar(0.5);

    let corrections = stirling_correction(a)
        .sub(stirling_correction(theta))
        .sub(stirling_correction(x));

    half_log.add(corrections).sub(deviance)
}

/// Log-probability of the negative binomial NB(x; mean μ, inverse dispersion θ):
///
/// ln NB = ln Γ(x + θ) − ln Γ(θ) − ln Γ(x + 1) + θ ln(θ / (θ + μ)) + x ln(μ / (θ + μ))
///
/// (gimVI's scRNA-seq likelihood without zero inflation, and its starMAP likelihood,
/// Lopez et al. 2019 Eq. 3 and Eq. 6). Elementwise; see the module docs for shapes and accuracy.
/// μ and θ get [`EPS`] added first.
pub fn log_nb<const D: usize>(x: Tensor<D>, mu: Tensor<D>, theta: Tensor<D>) -> Tensor<D> {
    let mu = mu.add_scalar(EPS);
    let theta = theta.add_scalar(EPS);
    let is_zero = x.clone().lower_equal_elem(0.0);
    let log_p0 = nb_log_zero(mu.clone(), theta.clone());
    let x_pos = x.mask_fill(is_zero.clone(), 1.0);
    nb_log_positive(x_pos, mu, theta).mask_where(is_zero, log_p0)
}

/// Log-probability of the zero-inflated negative binomial with dropout **logits** π
/// (dropout probability σ(π)), gimVI's default scRNA-seq likelihood (Lopez et al. 2019 Eq. 3):
///
/// * x = 0: ln(σ(π) + σ(−π) · NB(0; μ, θ));
/// * x > 0: ln σ(−π) + ln NB(x; μ, θ) = −softplus(π) + ln NB(x; μ, θ).
///
/// The zero branch never takes the logarithm of a probability. With L = ln NB(0) and
/// w = −σ(−π) (1 − e^L) it is evaluated as log1p(w) while w > −½ (accurate when the result is
/// close to 0: strong dropout, or μ ≪ 1), and otherwise in log-sum-exp form
/// softplus(L − π) − softplus(−π) (accurate when the result is far from 0).
pub fn log_zinb<const D: usize>(
    x: Tensor<D>,
    mu: Tensor<D>,
    theta: Tensor<D>,
    dropout_logits: Tensor<D>,
) -> Tensor<D> {
    let mu = mu.add_scalar(EPS);
    let theta = theta.add_scalar(EPS);
    let is_zero = x.clone().lower_equal_elem(0.0);

    let log_p0 = nb_log_zero(mu.clone(), theta.clone());
    // σ(−π) = exp(−softplus(π)); 1 − e^L = −expm1(L).
    let log_keep = softplus(dropout_logits.clone(), 1.0).neg();
    let w = log_keep.clone().exp().mul(expm1(log_p0.clone()));
    let use_log1p = w.clone().greater_elem(-0.5);
    let via_log1p = log1p(w.clamp_min(-0.5));
    let via_lse =
        softplus(log_p0.sub(dropout_logits.clone()), 1.0).sub(softplus(dropout_logits.neg(), 1.0));
    let zero_branch = via_lse.mask_where(use_log1p, via_log1p);

    let x_pos = x.mask_fill(is_zero.clone(), 1.0);
    let positive_branch = nb_log_positive(x_pos, mu, theta).add(log_keep);

    positive_branch.mask_where(is_zero, zero_branch)
}

/// Log-probability of the Poisson distribution with rate λ, the osmFISH / smFISH likelihood of
/// gimVI (Lopez et al. 2019 Eq. 6 with λ = ℓ′ ρ′):
///
/// ln P(x; λ) = x ln λ − λ − ln Γ(x + 1) = −λ h(x/λ) − ½ ln(2π x) − δ(x) for x > 0, −λ for x = 0,
///
/// with h the deviance rate and δ the Stirling correction (saddle-point form). λ gets [`EPS`]
/// added first.
pub fn log_poisson<const D: usize>(x: Tensor<D>, rate: Tensor<D>) -> Tensor<D> {
    let rate = rate.add_scalar(EPS);
    let is_zero = x.clone().lower_equal_elem(0.0);
    let x_pos = x.mask_fill(is_zero.clone(), 1.0);

    let t = x_pos.clone().div(rate.clone());
    let r = x_pos.clone().sub(rate.clone()).div(rate.clone());
    let deviance = rate.clone().mul(deviance_rate(t, r));
    let positive = x_pos
        .clone()
        .log()
        .add_scalar(2.0 * HALF_LN_2PI)
        .mul_scalar(-0.5)
        .sub(stirling_correction(x_pos))
        .sub(deviance);
    positive.mask_where(is_zero, rate.neg())
}
