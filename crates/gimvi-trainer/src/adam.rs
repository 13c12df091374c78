//! Adam with the update of large parameters fused into one pass on the host (CPU backends).
//!
//! burn's Adam updates a parameter with ~15 tensor operations (weight decay, two moments, bias
//! corrections, the step), each a pass over memory with a fresh buffer. At transcriptome scale
//! the encoders' first layers hold 3.8 million weights and those passes were ~10 % of a training
//! step (`docs/performance.md`). [`HostAdam`] computes the same update, in the same f32
//! arithmetic and order, in one threaded pass on the host for parameters of at least
//! [`HOST_ADAM_MIN_ELEMENTS`] elements on a CPU backend, and defers to burn's [`Adam`]
//! otherwise. Its state is burn's [`AdamState`], so either path can continue the other's.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::tensor::{Device, Tensor, TensorData};
use gimvi_likelihoods::device::{host_kernels, host_vec};
use rayon::prelude::*;

/// Parameters with at least this many elements take the host path.
pub const HOST_ADAM_MIN_ELEMENTS: usize = 65_536;

/// Adam (Kingma & Ba 2015) with coupled L2 weight decay — burn's [`Adam`] update rule
/// (PyTorch's: ε added to √v̂ after the bias correction) — fused on the host for large
/// parameters on CPU backends.
#[derive(Clone)]
pub struct HostAdam {
    inner: Adam,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl HostAdam {
    /// Adam with β = (0.9, 0.999), the given ε and weight-decay penalty (0 for none).
    pub fn new(epsilon: f32, weight_decay: f32) -> Self {
        let mut config = AdamConfig::new().with_epsilon(epsilon);
        if weight_decay != 0.0 {
            config = config.with_weight_decay(Some(WeightDecayConfig::new(weight_decay)));
        }
        Self {
            inner: config.build(),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon,
            weight_decay,
        }
    }

    /// The module optimiser that applies this rule to every parameter.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

impl Optimizer for HostAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let device = tensor.device();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        if n < HOST_ADAM_MIN_ELEMENTS || !host_kernels(&device) {
            return self.inner.step(lr, tensor, grad, state);
        }
        let mut p = host_vec(tensor);
        let g = host_vec(grad);
        let (mut m, mut v, time) = match state {
            Some(s) => (
                host_vec(s.momentum.moment_1),
                host_vec(s.momentum.moment_2),
                s.momentum.time + 1,
            ),
            None => (vec![0.0f32; n], vec![0.0f32; n], 1),
        };
        let (b1, b2, wd) = (self.beta_1, self.beta_2, self.weight_decay);
        // burn's AdaptiveMomentum, in its f32 order of operations.
        let bias_correction2_sqrt = (1.0 - b2.powi(time as i32)).sqrt();
        let combined = bias_correction2_sqrt / (1.0 - b1.powi(time as i32));
        let eps = self.epsilon * bias_correction2_sqrt;
        let lr = lr as f32;
        let chunk = 16_384;
        p.par_chunks_mut(chunk)
            .zip(m.par_chunks_mut(chunk))
            .zip(v.par_chunks_mut(chunk))
            .zip(g.par_chunks(chunk))
            .for_each(|(((p, m), v), g)| {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    let g = if wd != 0.0 { *p * wd + g } else { g };
                    *m = *m * b1 + g * (1.0 - b1);
                    *v = *v * b2 + g * g * (1.0 - b2);
                    let step = (*m * combined) / (v.sqrt() + eps);
                    *p -= step * lr;
                }
            });
        let t = |x: Vec<f32>| Tensor::<D>::from_data(TensorData::new(x, dims), &device);
        let momentum = AdaptiveMomentumState::new(time, t(m), t(v));
        (t(p), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three steps of the host update equal burn's Adam on the same parameter and gradients
    /// (weight decay on), to f32 round-off.
    #[test]
    #[allow(deprecated)] // burn-ndarray is the reference CPU backend of the tests.
    fn host_update_matches_burns_adam() {
        let device = Device::ndarray();
        let n = HOST_ADAM_MIN_ELEMENTS + 17;
        let ours = HostAdam::new(0.01, 1e-3);
        let reference = AdamConfig::new()
            .with_epsilon(0.01)
            .with_weight_decay(Some(WeightDecayConfig::new(1e-3)))
            .build();
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut a = Tensor::<1>::from_data(TensorData::new(init.clone(), [n]), &device);
        let mut b = a.clone();
        let (mut sa, mut sb) = (None, None);
        for step in 0..3 {
            let g: Vec<f32> = (0..n)
                .map(|i| ((i * (step + 2)) as f32 * 0.11).cos() * 0.5)
                .collect();
            let g = Tensor::<1>::from_data(TensorData::new(g, [n]), &device);
            (a, sa) = ours.step(1e-3, a, g.clone(), sa);
            (b, sb) = reference.step(1e-3, b, g, sb);
        }
        let (a, b) = (host_vec(a), host_vec(b));
        let moved = a.iter().zip(&init).any(|(x, y)| (x - y).abs() > 1e-4);
        assert!(moved, "three steps move the parameters");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
        }
        let (ma, mb) = (sa.unwrap().momentum, sb.unwrap().momentum);
        assert_eq!(ma.time, mb.time);
        for (x, y) in host_vec(ma.moment_2).iter().zip(&host_vec(mb.moment_2)) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-6), "{x} vs {y}");
        }
    }
}
