//! Closed-form KL divergences between diagonal Gaussians, the regularisers of gimVI's ELBOs.

use burn::tensor::Tensor;

use crate::special::log1p;

/// r − 1 − ln r for a variance ratio r > 0, the variance part of a Gaussian KL.
///
/// Computed as u − ln(1 + u) with u = r − 1 through `log1p`, so it stays accurate (and ≥ 0)
/// when r is close to 1.
fn ratio_penalty<const D: usize>(ratio: Tensor<D>) -> Tensor<D> {
    let u = ratio.sub_scalar(1.0);
    u.clone().sub(log1p(u))
}

/// KL(N(m, v) ‖ N(0, 1)) elementwise = ½ (v + m² − 1 − ln v).
///
/// The latent term of both ELBOs (Lopez et al. 2019 Eq. 8–9, prior z ~ N(0, I)); sum over the
/// latent dimension for the per-cell value. `var` is the variance (not the standard deviation).
pub fn kl_normal_standard<const D: usize>(mean: Tensor<D>, var: Tensor<D>) -> Tensor<D> {
    mean.square().add(ratio_penalty(var)).mul_scalar(0.5)
}

/// KL(N(m_q, v_q) ‖ N(m_p, v_p)) elementwise = ½ (v_q/v_p + (m_q − m_p)²/v_p − 1 − ln(v_q/v_p)).
///
/// The library-size term of the scRNA-seq ELBO (Lopez et al. 2019 Eq. 8): q(log ℓ | x) against
/// the LogNormal prior with the empirical mean and variance of the log library size. The prior
/// parameters broadcast (e.g. scalars of shape `[1, 1]`).
pub fn kl_normal<const D: usize>(
    mean_q: Tensor<D>,
    var_q: Tensor<D>,
    mean_p: Tensor<D>,
    var_p: Tensor<D>,
) -> Tensor<D> {
    let ratio = var_q.div(var_p.clone());
    let shift = mean_q.sub(mean_p).square().div(var_p);
    shift.add(ratio_penalty(ratio)).mul_scalar(0.5)
}
