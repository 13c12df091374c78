//! Branch-free f32 `exp`, `ln` and `ln(1 + q)` written so that loops over slices vectorise.
//!
//! libm's scalar calls cannot be vectorised and were ~45 % of a transcriptome-scale training
//! step (perf profile, `docs/performance.md`). These are the textbook constructions — range
//! reduction by powers of two, then a short polynomial — with errors of a few f32 ulp on the
//! ranges the fused likelihood uses (tested below against f64 `std`).

const LN2_HI: f32 = 0.693_145_75; // ln 2 rounded to 16 significant bits, so k·LN2_HI is exact
const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 · 2²³: adding and subtracting it rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x for x ∈ [−87.3, 88.7] (arguments outside are clamped: e^−87.3 ≈ 1.2e−38 stands in for
/// smaller results, which only ever enter sums here). Max relative error ~2e−7.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // x = n ln 2 + r, |r| ≤ ln 2 / 2. `shifted` holds n in the low bits of its mantissa, read
    // back with integer operations (`n as i32` is a saturating conversion that the compiler
    // emits as scalar code per lane, which kept loops calling this from vectorising).
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor polynomial of e^r to degree 7: truncation < 0.347⁸/8! ≈ 5e−9.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// ln x for a positive, finite, normal x. Max absolute error ~1e−7 + ~1 ulp of the result.
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut k = ((bits >> 23) & 0xff) as i32 - 127;
    // Mantissa in [1, 2), folded to [√½, √2).
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    k += big as i32;
    // ln m = 2 atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.1716: series to s⁹ (truncation < 3e−9).
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 1.0 / 9.0;
    let p = p * s2 + 1.0 / 7.0;
    let p = p * s2 + 1.0 / 5.0;
    let p = p * s2 + 1.0 / 3.0;
    let p = p * s2 + 1.0;
    let kf = k as f32;
    kf * LN2_HI + (2.0 * s * p + kf * LN2_LO)
}

/// ln(1 + q) for q > −1, accurate for small q too: ln(u) · q / (u − 1) with u = 1 + q rounded
/// corrects the rounding of u (and is q itself where u rounds to 1).
#[inline(always)]
pub(crate) fn ln_1p(q: f32) -> f32 {
    let u = 1.0 + q;
    let d = u - 1.0;
    let v = ln(u) * (q / d);
    if d == 0.0 {
        q
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f64, hi: f64, n: usize, log: bool) -> Vec<f32> {
        (0..=n)
            .map(|i| {
                let t = i as f64 / n as f64;
                if log {
                    (lo.ln() + t * (hi.ln() - lo.ln())).exp() as f32
                } else {
                    (lo + t * (hi - lo)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0.0f64;
        for x in grid(-87.0, 88.0, 200_000, false) {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "exp worst relative error {worst:e}");
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 2e-38);
    }

    #[test]
    fn ln_is_within_a_few_ulp() {
        let mut worst = 0.0f64;
        for x in grid(1e-30, 1e30, 200_000, true)
            .into_iter()
            .chain(grid(0.5, 2.0, 100_000, false))
        {
            let want = f64::from(x).ln();
            let got = f64::from(ln(x));
            worst = worst.max((got - want).abs() / want.abs().max(1.0));
        }
        assert!(worst < 3e-7, "ln worst error {worst:e}");
    }

    #[test]
    fn ln_1p_is_accurate_for_small_and_large_arguments() {
        let mut worst = 0.0f64;
        for q in grid(1e-30, 1e30, 200_000, true)
            .into_iter()
            .chain(grid(-0.999, 1.0, 100_000, false))
        {
            let want = f64::from(q).ln_1p();
            let got = f64::from(ln_1p(q));
            let err = if want.abs() < 1.0 {
                (got - want).abs() / want.abs().max(1e-38)
            } else {
                (got - want).abs() / want.abs()
            };
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "ln_1p worst relative error {worst:e}");
    }
}
