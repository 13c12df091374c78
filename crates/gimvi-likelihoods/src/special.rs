//! Special functions built from burn's elementwise tensor operations.
//!
//! burn 0.22 has no `lgamma`, `digamma` or `expm1` tensor operation. The functions here are
//! composed only of elementwise operations that burn's autodiff differentiates (`log`, `log1p`,
//! `exp`, products, clamps and `mask_where`), so gradients come for free and equal the
//! derivative of the approximation — for [`lgamma`], digamma to within the accuracy the tests
//! check (`tests/accuracy.rs`).
//!
//! Every branch is evaluated on clamped inputs that keep it finite, and the branches are then
//! selected with `mask_where`: a discarded branch must not produce `inf` or `NaN`, otherwise its
//! zero gradient times an infinite local derivative would poison the backward pass.

use burn::tensor::Tensor;

/// ½ ln(2π).
pub(crate) const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// Euler–Mascheroni constant γ.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// ζ(k) − 1 for k = 2..=15 (Riemann zeta; values from standard tables, e.g. Abramowitz & Stegun
/// Table 23.3). Used in the Taylor series of ln Γ around 2.
const ZETA_MINUS_ONE: [f64; 14] = [
    0.644_934_066_848_226_4,  // ζ(2) − 1 = π²/6 − 1
    0.202_056_903_159_594_3,  // ζ(3) − 1
    0.082_323_233_711_138_19, // ζ(4) − 1 = π⁴/90 − 1
    0.036_927_755_143_369_93, // ζ(5) − 1
    0.017_343_061_984_449_14, // ζ(6) − 1
    0.008_349_277_381_922_827,
    0.004_077_356_197_944_339,
    0.002_008_392_826_082_214,
    0.000_994_575_127_818_085_3,
    0.000_494_188_604_119_464_6,
    0.000_246_086_553_308_048_3,
    0.000_122_713_347_578_489_1,
    0.000_061_248_135_058_704_61,
    0.000_030_588_236_307_020_49, // ζ(15) − 1
];

/// Below this argument [`stirling_correction`] shifts its argument up by [`SHIFT`] before using
/// the asymptotic series; at 7.5 the first omitted series term is below 5·10⁻¹³.
const STIRLING_MIN: f64 = 7.5;
/// Shift used by [`stirling_correction`] for small arguments.
const SHIFT: usize = 8;

/// Leading Stirling terms (z − ½) ln z − z + ½ ln 2π.
pub(crate) fn stirling_lead<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    z.clone()
        .sub_scalar(0.5)
        .mul(z.clone().log())
        .sub(z)
        .add_scalar(HALF_LN_2PI)
}

/// Asymptotic Stirling series for δ(z) = ln Γ(z) − stirling_lead(z), valid for z ≥ 7.5:
/// 1/(12z) − 1/(360z³) + 1/(1260z⁵) − 1/(1680z⁷) + 1/(1188z⁹) (Bernoulli-number series).
fn stirling_tail<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    let w = z.recip();
    let w2 = w.clone().square();
    w2.clone()
        .mul_scalar(1.0 / 1188.0)
        .sub_scalar(1.0 / 1680.0)
        .mul(w2.clone())
        .add_scalar(1.0 / 1260.0)
        .mul(w2.clone())
        .sub_scalar(1.0 / 360.0)
        .mul(w2)
        .add_scalar(1.0 / 12.0)
        .mul(w)
}

/// Stirling correction δ(z) = ln Γ(z) − [(z − ½) ln z − z + ½ ln 2π] for z > 0.
///
/// For z ≥ 7.5 the asymptotic series is used directly; below, the recurrence
/// ln Γ(z) = ln Γ(z + 8) − ln[z (z+1) ⋯ (z+7)] moves the argument into the series' range.
/// The absolute error is a few 10⁻⁶ in `f32` for small z and shrinks like 1/z above.
/// δ is what is left of ln Γ after the large terms that cancel in count log-likelihoods have
/// been taken out analytically, which is why the likelihoods use it rather than [`lgamma`].
pub fn stirling_correction<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    let small = z.clone().lower_elem(STIRLING_MIN);
    let large_branch = stirling_tail(z.clone().clamp_min(STIRLING_MIN));

    let zs = z.clamp_max(STIRLING_MIN);
    let mut prod = zs.clone();
    for i in 1..SHIFT {
        prod = prod.mul(zs.clone().add_scalar(i as f64));
    }
    let shifted = zs.clone().add_scalar(SHIFT as f64);
    let small_branch = stirling_tail(shifted.clone())
        .add(stirling_lead(shifted))
        .sub(stirling_lead(zs))
        .sub(prod.log());

    large_branch.mask_where(small, small_branch)
}

/// ln Γ(2 + y) for |y| ≤ ½ by its Taylor series
/// (1 − γ) y + Σ_{k≥2} (−1)^k (ζ(k) − 1) y^k / k (Abramowitz & Stegun 6.1.33), 15 terms:
/// the truncation error is below 10⁻⁹ on |y| ≤ ½.
fn lgamma_two_plus<const D: usize>(y: Tensor<D>) -> Tensor<D> {
    let n = ZETA_MINUS_ONE.len();
    let coef = |k: usize| -> f64 {
        // k ≥ 2
        let sign = if k.is_multiple_of(2) { 1.0 } else { -1.0 };
        sign * ZETA_MINUS_ONE[k - 2] / k as f64
    };
    let mut acc = y.clone().mul_scalar(coef(n + 1));
    for k in (2..=n).rev() {
        acc = acc.add_scalar(coef(k)).mul(y.clone());
    }
    acc.add_scalar(1.0 - EULER_GAMMA).mul(y)
}

/// Natural log of the gamma function, ln Γ(x), elementwise, for x > 0.
///
/// Differentiable under autodiff; its gradient is digamma ψ(x). Accuracy in `f32`: relative
/// error below 10⁻⁵ on [10⁻³, 10⁶], including next to the roots x = 1 and x = 2, where the
/// argument is reduced exactly (x − 1 and x − 2 are exact in floating point there):
///
/// * x < 4.5: ln Γ(x) = ln Γ(2 + y) + c(x) with y = x − round(x) ∈ [−½, ½] and c from the
///   recurrence ln Γ(x + 1) = ln Γ(x) + ln x, and ln Γ(2 + y) from its Taylor series;
/// * x ≥ 4.5: Stirling, ln Γ(x) = (x − ½) ln x − x + ½ ln 2π + δ(x) ([`stirling_correction`]).
///
/// Returns +∞ at x = 0; negative x is outside the domain (NaN).
pub fn lgamma<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    // Integer part used for the reduction, k ∈ {0, …, 4}; it is data, not a differentiable value.
    let k = x.clone().detach().round().clamp(0.0, 4.0);
    let y = x.clone().sub(k.clone()).clamp(-0.5, 0.5);
    let series = lgamma_two_plus(y.clone());

    // k = 0 (x ≤ ½): ln Γ(x) = ln Γ(2 + x) − ln(1 + x) − ln x.
    let x0 = x.clone().clamp(f32::MIN_POSITIVE as f64, 0.5);
    let corr0 = x0.clone().log().add(log1p(x0)).neg();
    // k = 1: ln Γ(1 + y) = ln Γ(2 + y) − ln(1 + y).
    let corr1 = log1p(y).neg();
    // k = 3: ln Γ(x) = ln(x − 1) + ln Γ(x − 1).
    let x3 = x.clone().clamp(2.5, 3.5);
    let corr3 = x3.sub_scalar(1.0).log();
    // k = 4: ln Γ(x) = ln[(x − 1)(x − 2)] + ln Γ(x − 2).
    let x4 = x.clone().clamp(3.5, 4.5);
    let corr4 = x4.clone().sub_scalar(1.0).mul(x4.sub_scalar(2.0)).log();

    let zeros = corr1.zeros_like();
    let corr = zeros
        .mask_where(k.clone().equal_elem(0.0), corr0)
        .mask_where(k.clone().equal_elem(1.0), corr1)
        .mask_where(k.clone().equal_elem(3.0), corr3)
        .mask_where(k.equal_elem(4.0), corr4);
    let small_branch = series.add(corr);

    let xl = x.clone().clamp_min(4.5);
    let large_branch = stirling_lead(xl.clone()).add(stirling_correction(xl));

    large_branch.mask_where(x.lower_elem(4.5), small_branch)
}

/// exp(v) − 1 without cancellation for small |v| (Taylor series up to v¹¹ for |v| < ½, the
/// direct form beyond, where no cancellation occurs).
pub fn expm1<const D: usize>(v: Tensor<D>) -> Tensor<D> {
    let small = v.clone().abs().lower_elem(0.5);
    let vs = v.clone().clamp(-0.5, 0.5);
    // Horner for v + v²/2! + … + v¹¹/11!.
    let mut acc = vs.clone().mul_scalar(1.0 / 39_916_800.0);
    let mut fact = 39_916_800.0_f64;
    for n in (1..=10).rev() {
        fact /= (n + 1) as f64;
        acc = acc.add_scalar(1.0 / fact).mul(vs.clone());
    }
    let direct = v.clamp_max(80.0).exp().sub_scalar(1.0);
    direct.mask_where(small, acc)
}

/// ln(1 + v) without cancellation for small |v| on every backend: on the CPU backends (whose
/// `log1p` is the accurate libm one) that single op, elsewhere [`log1p_series`] (~25 ops).
/// Arguments below −1 give −∞.
pub fn log1p<const D: usize>(v: Tensor<D>) -> Tensor<D> {
    if crate::device::host_kernels(&v.device()) {
        v.clamp_min(-1.0).log1p()
    } else {
        log1p_series(v)
    }
}

/// ln(1 + v) without cancellation for small |v|, independent of the backend's own `log1p`
/// (burn-wgpu evaluates `log1p(v)` as `log(1 + v)`, which loses every digit below v ≈ 1e-7 in
/// f32). For |v| ≤ ½ it uses ln(1 + v) = 2 atanh(s), s = v / (2 + v), |s| ≤ ⅓, summed to s¹⁵
/// (truncation < 2e-9 relative); beyond, the direct form, where 1 + v loses nothing.
pub fn log1p_series<const D: usize>(v: Tensor<D>) -> Tensor<D> {
    let small = v.clone().abs().lower_equal_elem(0.5);
    let vs = v.clone().clamp(-0.5, 0.5);
    let s = vs.clone().div(vs.add_scalar(2.0));
    let s2 = s.clone().mul(s.clone());
    // Horner for 1 + s²/3 + s⁴/5 + … + s¹⁴/15.
    let mut acc = s2.clone().mul_scalar(1.0 / 15.0);
    for k in (1..=6).rev() {
        acc = acc.add_scalar(1.0 / (2 * k + 1) as f64).mul(s2.clone());
    }
    let series = acc.add_scalar(1.0).mul(s).mul_scalar(2.0);
    let direct = v.clamp_min(-1.0).add_scalar(1.0).log();
    direct.mask_where(small, series)
}
