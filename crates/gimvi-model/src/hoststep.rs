//! The whole training step on the host, for models whose datasets are all narrow (CPU backends).
//!
//! At the paper's scale (33 to a few hundred genes, 128 + 128 cells per step, 64 hidden units)
//! a training step is a few MFLOP spread over ~600 tensor operations, and burn's per-operation
//! cost (dispatch, allocation, the autodiff graph) is most of its time (`docs/performance.md`,
//! round 7). [`GimviModule::host_step`] computes the same step — forward pass, ELBO terms
//! (Lopez et al. 2019, Eq. 8–9), the adversarial "fool" term and every parameter gradient — in
//! plain loops on the host, and [`Classifier::host_step`] the classifier's own step. Burn keeps
//! the parameters and runs the optimiser; the BatchNorm running statistics are written back
//! after each pass, as burn's `BatchNorm` does in training mode.
//!
//! The random draws (dropout masks, reparameterisation noise) come from the same generator in
//! the same order as on the tensor path, so both paths give the same step up to float
//! summation order: `host_step_matches_tensor_step` in this crate's tests compares the losses,
//! every parameter gradient and the running statistics. The draws are made first, so the
//! datasets' passes then run in parallel (rayon); their gradients and running statistics are
//! combined in dataset order, so a seeded run does not depend on the thread count.

use std::collections::HashMap;

use burn::module::ParamId;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use gimvi_data::CsrMatrix;
use gimvi_likelihoods::device::{host_kernels, host_vec};
use gimvi_likelihoods::kernels::softmax_value_and_grad;
use rayon::prelude::*;

use crate::batch::dense_rows;
use crate::config::{LibraryModel, ModelConfig};
use crate::host::{gemm, ln_1p_count, ln_1p_table, HOST_PATH_MIN_GENES};
use crate::module::{
    dropout_mask, normal_host, Classifier, FcBlock, GimviModule, ModelRng, MIN_OBSERVED_LIBRARY,
    VAR_EPS,
};

/// y = x W + b for `x` `rows × d_in` and `W` `d_in × d_out` (row-major).
fn affine(x: &[f32], w: &[f32], b: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut y = b.repeat(rows);
    gemm(
        (rows, d_in, d_out),
        (x, (d_in, 1)),
        (w, (d_out, 1)),
        1.0,
        &mut y,
    );
    y
}

/// ∂x = ∂y Wᵀ for `∂y` `rows × d_out` and `W` `d_in × d_out`.
fn times_t(dy: &[f32], w: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; rows * d_in];
    gemm(
        (rows, d_out, d_in),
        (dy, (d_out, 1)),
        (w, (1, d_out)),
        0.0,
        &mut dx,
    );
    dx
}

/// ∂W = xᵀ ∂y for `x` `rows × d_in` and `∂y` `rows × d_out`.
fn t_times(x: &[f32], dy: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut dw = vec![0.0f32; d_in * d_out];
    gemm(
        (d_in, rows, d_out),
        (x, (1, d_in)),
        (dy, (d_out, 1)),
        0.0,
        &mut dw,
    );
    dw
}

/// One parameter's gradient from the host step, on burn's gradient device.
#[derive(Debug, Clone)]
pub(crate) enum ParamGrad {
    /// A matrix parameter (a weight, ln θ).
    Matrix(ParamId, Tensor<2>),
    /// A vector parameter (a bias, a BatchNorm scale or shift).
    Vector(ParamId, Tensor<1>),
}

/// Parameter gradients accumulated on the host, by parameter.
#[derive(Default)]
struct HostGrads {
    order: Vec<ParamId>,
    grads: HashMap<ParamId, (Vec<f32>, Vec<usize>)>,
}

impl HostGrads {
    fn add(&mut self, id: ParamId, g: Vec<f32>, dims: Vec<usize>) {
        match self.grads.get_mut(&id) {
            Some((acc, _)) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            None => {
                self.order.push(id);
                self.grads.insert(id, (g, dims));
            }
        }
    }

    /// Adds every gradient of `other` (in its order of registration).
    fn merge(&mut self, mut other: HostGrads) {
        for id in std::mem::take(&mut other.order) {
            let (g, dims) = other.grads.remove(&id).expect("registered");
            self.add(id, g, dims);
        }
    }

    /// The gradients as tensors on `device` (burn's gradient device: the inner backend).
    fn into_param_grads(mut self, device: &Device) -> Vec<ParamGrad> {
        self.order
            .iter()
            .map(|id| {
                let (g, dims) = self.grads.remove(id).expect("registered above");
                if dims.len() == 1 {
                    ParamGrad::Vector(*id, Tensor::from_data(TensorData::new(g, dims), device))
                } else {
                    ParamGrad::Matrix(*id, Tensor::from_data(TensorData::new(g, dims), device))
                }
            })
            .collect()
    }
}

/// A linear layer's parameters on the host: `w` is `d_in × d_out` row-major (burn's layout).
struct HostLinear {
    w: Vec<f32>,
    b: Vec<f32>,
    d_in: usize,
    d_out: usize,
    w_id: ParamId,
    b_id: Option<ParamId>,
}

impl HostLinear {
    fn of(l: &Linear) -> Self {
        let [d_in, d_out] = l.weight.dims();
        Self {
            w: host_vec(l.weight.val()),
            b: l.bias
                .as_ref()
                .map_or_else(|| vec![0.0; d_out], |b| host_vec(b.val())),
            d_in,
            d_out,
            w_id: l.weight.id,
            b_id: l.bias.as_ref().map(|b| b.id),
        }
    }

    fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        affine(x, &self.w, &self.b, rows, self.d_in, self.d_out)
    }

    /// ∂W = xᵀ ∂y and ∂b = Σ_n ∂y_n into `grads`; ∂x = ∂y Wᵀ when `need_dx`.
    fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        rows: usize,
        need_dx: bool,
        grads: Option<&mut HostGrads>,
    ) -> Option<Vec<f32>> {
        if let Some(grads) = grads {
            let dw = t_times(x, dy, rows, self.d_in, self.d_out);
            grads.add(self.w_id, dw, vec![self.d_in, self.d_out]);
            if let Some(b_id) = self.b_id {
                let mut db = vec![0.0f32; self.d_out];
                for r in dy.chunks_exact(self.d_out) {
                    db.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                }
                grads.add(b_id, db, vec![self.d_out]);
            }
        }
        need_dx.then(|| times_t(dy, &self.w, rows, self.d_in, self.d_out))
    }
}

/// An [`FcBlock`] on the host: Linear → BatchNorm (batch statistics) → ReLU → dropout.
struct HostBlock {
    linear: HostLinear,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    gamma_id: ParamId,
    beta_id: ParamId,
    epsilon: f64,
    momentum: f64,
    dropout: f64,
    /// The running statistics, moved by `record` and written back by `finish`.
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

/// What a block's backward pass needs from its forward pass.
struct BlockCache {
    input: Vec<f32>,
    normalized: Vec<f32>,
    inv_std: Vec<f32>,
    /// ReLU's output before dropout (its sign selects the gradient).
    active: Vec<f32>,
    mask: Option<Vec<f32>>,
    rows: usize,
}

/// A minibatch's mean and biased variance per feature (burn's `batch_norm_train`).
struct BatchStats {
    mean: Vec<f64>,
    var: Vec<f64>,
}

impl HostBlock {
    fn of(block: &FcBlock) -> Self {
        let norm = &block.norm;
        Self {
            linear: HostLinear::of(&block.linear),
            gamma: host_vec(norm.gamma.val()),
            beta: host_vec(norm.beta.val()),
            gamma_id: norm.gamma.id,
            beta_id: norm.beta.id,
            epsilon: norm.epsilon,
            momentum: norm.momentum,
            dropout: block.dropout,
            running_mean: host_vec(norm.running_mean.value_sync()),
            running_var: host_vec(norm.running_var.value_sync()),
        }
    }

    fn width(&self) -> usize {
        self.linear.d_out
    }

    /// The dropout mask of a pass over `rows` rows (none without dropout).
    fn draw_mask(&self, rows: usize, rng: &mut ModelRng) -> Option<Vec<f32>> {
        (self.dropout > 0.0).then(|| dropout_mask(rows * self.width(), self.dropout, rng))
    }

    /// The block's training-mode output on `x` (`rows × d_in`) with the dropout `mask`, its
    /// cache and the batch statistics (for `record`).
    fn forward(
        &self,
        x: Vec<f32>,
        rows: usize,
        mask: Option<Vec<f32>>,
    ) -> (Vec<f32>, BlockCache, BatchStats) {
        let d = self.width();
        let pre = self.linear.forward(&x, rows);
        let mut mean = vec![0.0f64; d];
        for r in pre.chunks_exact(d) {
            mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let mut var = vec![0.0f64; d];
        for r in pre.chunks_exact(d) {
            for ((s, &v), m) in var.iter_mut().zip(r).zip(&mean) {
                let c = v as f64 - m;
                *s += c * c;
            }
        }
        var.iter_mut().for_each(|v| *v /= rows as f64);
        let inv_std: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v + self.epsilon).sqrt()) as f32)
            .collect();
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let mut normalized = pre;
        for r in normalized.chunks_exact_mut(d) {
            for (j, v) in r.iter_mut().enumerate() {
                *v = (*v - mean32[j]) * inv_std[j];
            }
        }
        let mut active = vec![0.0f32; rows * d];
        for (a, n) in active.chunks_exact_mut(d).zip(normalized.chunks_exact(d)) {
            for j in 0..d {
                a[j] = (n[j] * self.gamma[j] + self.beta[j]).max(0.0);
            }
        }
        let out = match &mask {
            Some(m) => active.iter().zip(m).map(|(a, m)| a * m).collect(),
            None => active.clone(),
        };
        let cache = BlockCache {
            input: x,
            normalized,
            inv_std,
            active,
            mask,
            rows,
        };
        (out, cache, BatchStats { mean, var })
    }

    /// Moves the running statistics towards a pass's batch statistics (burn's `BatchNorm`:
    /// running ← (1 − momentum) running + momentum batch).
    fn record(&mut self, stats: &BatchStats) {
        let momentum = self.momentum;
        for j in 0..self.width() {
            self.running_mean[j] =
                (self.running_mean[j] as f64 * (1.0 - momentum) + stats.mean[j] * momentum) as f32;
            self.running_var[j] =
                (self.running_var[j] as f64 * (1.0 - momentum) + stats.var[j] * momentum) as f32;
        }
    }

    /// Backward through dropout, ReLU, BatchNorm (burn's batch_norm_train_backward) and the
    /// linear layer; parameter gradients into `grads` (none: inputs only), ∂x when `need_dx`.
    fn backward(
        &self,
        cache: &BlockCache,
        mut dh: Vec<f32>,
        need_dx: bool,
        mut grads: Option<&mut HostGrads>,
    ) -> Option<Vec<f32>> {
        let (d, rows) = (self.width(), cache.rows);
        if let Some(m) = &cache.mask {
            dh.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
        }
        dh.iter_mut()
            .zip(&cache.active)
            .for_each(|(g, &a)| *g = if a > 0.0 { *g } else { 0.0 });
        let mut d_beta = vec![0.0f64; d];
        let mut d_gamma = vec![0.0f64; d];
        for (g, n) in dh.chunks_exact(d).zip(cache.normalized.chunks_exact(d)) {
            for j in 0..d {
                d_beta[j] += g[j] as f64;
                d_gamma[j] += (g[j] * n[j]) as f64;
            }
        }
        let mut dy = dh;
        for (g, n) in dy.chunks_exact_mut(d).zip(cache.normalized.chunks_exact(d)) {
            for j in 0..d {
                let mean_g = (d_beta[j] / rows as f64) as f32;
                let mean_gn = (d_gamma[j] / rows as f64) as f32;
                g[j] = self.gamma[j] * cache.inv_std[j] * (g[j] - mean_g - n[j] * mean_gn);
            }
        }
        if let Some(grads) = grads.as_deref_mut() {
            grads.add(
                self.gamma_id,
                d_gamma.iter().map(|&v| v as f32).collect(),
                vec![d],
            );
            grads.add(
                self.beta_id,
                d_beta.iter().map(|&v| v as f32).collect(),
                vec![d],
            );
        }
        self.linear
            .backward(&cache.input, &dy, rows, need_dx, grads)
    }

    /// Writes the running statistics back into the burn module's `norm`, as tensors of the
    /// inner (non-autodiff) backend: `RunningState` averages its updates with tensor ops, and
    /// on an autodiff device those would register graph nodes that only a backward pass (which
    /// the host step never runs) frees — a leak of ~0.8 MiB per epoch at paper scale.
    fn finish(self, norm: &BatchNorm) {
        let device = norm.gamma.val().device().inner();
        let d = self.width();
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [d]), &device);
        norm.running_mean.update(t(self.running_mean));
        norm.running_var.update(t(self.running_var));
    }
}

/// A reparameterised Gaussian head pair: mean m = h W_m + b_m, variance v = exp(h W_v + b_v)
/// + [`VAR_EPS`], draw s = m + √v ε.
struct GaussianDraw {
    mean: Vec<f32>,
    var: Vec<f32>,
    /// exp(h W_v + b_v), the variance without its floor.
    exp: Vec<f32>,
    eps: Vec<f32>,
    draw: Vec<f32>,
}

/// The Gaussian heads on `h` with the standard-normal draws `eps`.
fn gaussian_draw(
    mean_l: &HostLinear,
    var_l: &HostLinear,
    h: &[f32],
    rows: usize,
    eps: Vec<f32>,
) -> GaussianDraw {
    let mean = mean_l.forward(h, rows);
    let exp: Vec<f32> = var_l.forward(h, rows).iter().map(|a| a.exp()).collect();
    let var: Vec<f32> = exp.iter().map(|e| e + VAR_EPS as f32).collect();
    let draw = mean
        .iter()
        .zip(&var)
        .zip(&eps)
        .map(|((m, v), e)| m + v.sqrt() * e)
        .collect();
    GaussianDraw {
        mean,
        var,
        exp,
        eps,
        draw,
    }
}

impl GaussianDraw {
    /// ∂h of the two heads, given ∂ of the draw (`d_draw`) and of the mean and variance
    /// directly (`d_mean`, `d_var`, the KL terms); head gradients into `grads`.
    fn backward(
        &self,
        (mean_l, var_l): (&HostLinear, &HostLinear),
        h: &[f32],
        rows: usize,
        d_draw: &[f32],
        (mut d_mean, d_var): (Vec<f32>, Vec<f32>),
        grads: &mut HostGrads,
    ) -> Vec<f32> {
        // s = m + √v ε: ∂m += ∂s, ∂v += ∂s ε / (2 √v); v = exp(a) + floor: ∂a = ∂v exp(a).
        let mut d_a = d_var;
        for i in 0..d_a.len() {
            d_mean[i] += d_draw[i];
            let dv = d_a[i] + d_draw[i] * self.eps[i] * 0.5 / self.var[i].sqrt();
            d_a[i] = dv * self.exp[i];
        }
        let dh_m = mean_l
            .backward(h, &d_mean, rows, true, Some(grads))
            .expect("dx requested");
        let dh_v = var_l
            .backward(h, &d_a, rows, true, Some(grads))
            .expect("dx requested");
        dh_m.iter().zip(&dh_v).map(|(a, b)| a + b).collect()
    }
}

/// The result of [`GimviModule::host_step`].
#[derive(Debug)]
pub(crate) struct HostStep {
    /// Mean over the step's cells of −ln p(x | z, ℓ) (the trainer's reconstruction term).
    pub(crate) reconstruction: f64,
    /// Mean over the step's cells of the KL terms (unweighted by β).
    pub(crate) kl: f64,
    /// The classifier's "fool" loss (unweighted by κ), when a classifier took part.
    pub(crate) fool: Option<f64>,
    /// Gradients of rec + β kl + κ fool with respect to the module's parameters, on burn's
    /// gradient device.
    pub(crate) grads: Vec<ParamGrad>,
    /// The sampled z of every cell, datasets in order (`[cells, n_latent]` row-major), for the
    /// classifier's own step.
    pub(crate) z: Vec<f32>,
    /// The dataset of each row of `z`.
    pub(crate) labels: Vec<usize>,
}

/// Which cross-entropy [`HostClassifier::loss`] computes.
#[derive(Debug, Clone, Copy)]
struct LossKind {
    /// The encoders' "fool" target (uniform over the other datasets) instead of the true one.
    fool: bool,
    /// The factor on the loss and its gradients (κ).
    weight: f64,
    /// Whether ∂z is wanted.
    need_dz: bool,
}

/// A classifier on the host.
struct HostClassifier {
    blocks: Vec<HostBlock>,
    out: HostLinear,
}

impl HostClassifier {
    fn of(c: &Classifier) -> Self {
        Self {
            blocks: c.blocks.iter().map(HostBlock::of).collect(),
            out: HostLinear::of(&c.out),
        }
    }

    /// Cross-entropy of `z` against per-row target distributions over the datasets (one-hot
    /// of the label, or uniform over the other datasets when `kind.fool`), averaged over rows
    /// and scaled by `kind.weight`; its value (unscaled), ∂z (scaled) when `kind.need_dz`, and
    /// the classifier's parameter gradients into `grads` when given.
    fn loss(
        &mut self,
        z: &[f32],
        labels: &[usize],
        kind: LossKind,
        mut grads: Option<&mut HostGrads>,
        rng: &mut ModelRng,
    ) -> (f64, Option<Vec<f32>>) {
        let LossKind {
            fool,
            weight,
            need_dz,
        } = kind;
        let rows = labels.len();
        let mut h = z.to_vec();
        let mut caches = Vec::with_capacity(self.blocks.len());
        for b in &mut self.blocks {
            let mask = b.draw_mask(rows, rng);
            let (out, cache, stats) = b.forward(h, rows, mask);
            b.record(&stats);
            caches.push(cache);
            h = out;
        }
        let logits = self.out.forward(&h, rows);
        let c = self.out.d_out;
        let mut total = 0.0f64;
        let mut d_logits = vec![0.0f32; rows * c];
        for (n, (l, dl)) in logits
            .chunks_exact(c)
            .zip(d_logits.chunks_exact_mut(c))
            .enumerate()
        {
            let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            for k in 0..c {
                let target = match (fool, k == labels[n]) {
                    (true, true) => 0.0,
                    (true, false) => 1.0 / (c - 1) as f64,
                    (false, true) => 1.0,
                    (false, false) => 0.0,
                };
                let logp = l[k] as f64 - lse;
                total -= target * logp;
                // ∂(−Σ_k t_k log p_k)/∂l_k = p_k − t_k (Σ_k t_k = 1).
                dl[k] = ((logp.exp() - target) * weight / rows as f64) as f32;
            }
        }
        let value = total / rows as f64;
        if !need_dz && grads.is_none() {
            return (value, None);
        }
        let mut dh = self
            .out
            .backward(&h, &d_logits, rows, true, grads.as_deref_mut())
            .expect("dx requested");
        for (i, (b, cache)) in self.blocks.iter().zip(&caches).enumerate().rev() {
            let need = i > 0 || need_dz;
            match b.backward(cache, dh, need, grads.as_deref_mut()) {
                Some(d) => dh = d,
                None => return (value, None),
            }
        }
        (value, Some(dh))
    }

    fn finish(self, c: &Classifier) {
        for (b, block) in self.blocks.into_iter().zip(&c.blocks) {
            b.finish(&block.norm);
        }
    }
}

impl Classifier {
    /// The classifier's own training step on the host ([`crate::hoststep`]): κ times the
    /// cross-entropy of the true dataset labels of `z` (`[cells, n_latent]`, detached), its
    /// value (unweighted) and gradients with respect to the classifier's parameters on burn's
    /// gradient device. Dropout draws from `rng`; BatchNorm running statistics are updated.
    pub(crate) fn host_step(
        &self,
        z: &[f32],
        labels: &[usize],
        kappa: f64,
        rng: &mut ModelRng,
        device: &Device,
    ) -> (f64, Vec<ParamGrad>) {
        let mut host = HostClassifier::of(self);
        let mut grads = HostGrads::default();
        let kind = LossKind {
            fool: false,
            weight: kappa,
            need_dz: false,
        };
        let (value, _) = host.loss(z, labels, kind, Some(&mut grads), rng);
        host.finish(self);
        (
            value,
            grads.into_param_grads(&device.clone().without_autodiff()),
        )
    }
}

/// The networks of a [`GimviModule`] on the host, read-only during the datasets' passes.
struct HostNets {
    private: Vec<HostBlock>,
    shared: HostBlock,
    z_mean: HostLinear,
    z_log_var: HostLinear,
    /// Library encoders: block, mean head, log-variance head.
    library: Vec<Option<(HostBlock, HostLinear, HostLinear)>>,
    decoder: Vec<HostBlock>,
    px_scale: HostLinear,
    px_dropout: HostLinear,
    log_theta: Vec<f32>,
    log_theta_id: ParamId,
}

/// The random draws of one dataset's pass, in the tensor path's order (private block, shared
/// block, z, library block, ln ℓ, decoder blocks).
struct Draws {
    private: Option<Vec<f32>>,
    shared: Option<Vec<f32>>,
    z: Vec<f32>,
    library: Option<(Option<Vec<f32>>, Vec<f32>)>,
    decoder: Vec<Option<Vec<f32>>>,
}

/// One dataset's forward pass, with the decoder side already differentiated.
struct DatasetPass {
    rows: usize,
    c_private: BlockCache,
    c_shared: BlockCache,
    h_shared: Vec<f32>,
    zq: GaussianDraw,
    /// ∂loss/∂z so far (decoder); the classifier's share is added before `encoder_backward`.
    d_z: Vec<f32>,
    /// Gradients of the decoder, θ and the library encoder.
    grads: HostGrads,
    /// Batch statistics: private, shared, library (if any), decoder blocks.
    stats: Vec<BatchStats>,
    /// Σ over cells of −ln p and of the KL terms.
    rec: f64,
    kl: f64,
}

impl HostNets {
    fn draws(&self, config: &ModelConfig, m: usize, rows: usize, rng: &mut ModelRng) -> Draws {
        let private = self.private[m].draw_mask(rows, rng);
        let shared = self.shared.draw_mask(rows, rng);
        let z = normal_host(rows * config.n_latent, rng);
        let library = self.library[m].as_ref().map(|(block, ..)| {
            let mask = block.draw_mask(rows, rng);
            (mask, normal_host(rows, rng))
        });
        let decoder = self
            .decoder
            .iter()
            .map(|b| b.draw_mask(rows, rng))
            .collect();
        Draws {
            private,
            shared,
            z,
            library,
            decoder,
        }
    }

    /// Dataset `m`'s forward pass (Eq. 8–9) and the backward of everything after z except
    /// the classifier: decoder heads, θ, ln ℓ and the library encoder. `inv_n` is 1/N for the
    /// step's N cells, `beta` the KL weight.
    fn dataset_pass(
        &self,
        config: &ModelConfig,
        m: usize,
        (counts, rows_idx): (&CsrMatrix, &[usize]),
        draws: Draws,
        beta: f64,
        inv_n: f64,
    ) -> DatasetPass {
        let spec = &config.datasets[m];
        let d_lat = config.n_latent;
        let n_sets = config.datasets.len();
        let n_genes = config.n_genes();
        let rows = rows_idx.len();
        let cols = counts.n_cols();
        let mut grads = HostGrads::default();
        let mut stats = Vec::new();
        let x = dense_rows(counts, rows_idx);
        let table = ln_1p_table();
        let input: Vec<f32> = x.iter().map(|&c| ln_1p_count(table, c)).collect();
        // Encoder: private block, shared block, Gaussian heads (q(z | x, s)).
        let (h1, c_private, s) = self.private[m].forward(input.clone(), rows, draws.private);
        stats.push(s);
        let (h2, c_shared, s) = self.shared.forward(h1, rows, draws.shared);
        stats.push(s);
        let zq = gaussian_draw(&self.z_mean, &self.z_log_var, &h2, rows, draws.z);
        let mut kl_rows = vec![0.0f64; rows];
        // Library: latent (q(ln ℓ | x) against the LogNormal prior) or the observed total.
        let mut latent = None;
        let log_library: Vec<f32> = match (&self.library[m], spec.library, draws.library) {
            (
                Some((block, ml, vl)),
                LibraryModel::Latent { log_mean, log_var },
                Some((mask, eps)),
            ) => {
                let (hl, cl, s) = block.forward(input, rows, mask);
                stats.push(s);
                let lq = gaussian_draw(ml, vl, &hl, rows, eps);
                let (pm, pv) = (log_mean as f32 as f64, log_var.max(VAR_EPS) as f32 as f64);
                let mut d_mean = vec![0.0f32; rows];
                let mut d_var = vec![0.0f32; rows];
                for i in 0..rows {
                    let (mq, vq) = (lq.mean[i] as f64, lq.var[i] as f64);
                    let r = vq / pv;
                    // KL(q ‖ prior) = ½ ((m_q − m_p)²/v_p + r − 1 − ln r), r = v_q / v_p.
                    kl_rows[i] += 0.5 * ((mq - pm).powi(2) / pv + (r - 1.0) - (r - 1.0).ln_1p());
                    d_mean[i] = (beta * inv_n * (mq - pm) / pv) as f32;
                    d_var[i] = (beta * inv_n * 0.5 * (1.0 / pv - 1.0 / vq)) as f32;
                }
                let log_l = lq.draw.clone();
                latent = Some((block, ml, vl, cl, hl, lq, d_mean, d_var));
                log_l
            }
            // Eq. 9: ℓ′ is the observed total (floored so that an empty cell gives ln 1).
            _ if cols == 0 => vec![0.0; rows],
            _ => x
                .chunks_exact(cols)
                .map(|r| r.iter().sum::<f32>().max(MIN_OBSERVED_LIBRARY as f32).ln())
                .collect(),
        };
        // Decoder features of z (and of the one-hot dataset when conditioned).
        let k0 = d_lat + if config.condition_decoder { n_sets } else { 0 };
        let mut hd = Vec::with_capacity(rows * k0);
        for r in zq.draw.chunks_exact(d_lat) {
            hd.extend_from_slice(r);
            if config.condition_decoder {
                hd.extend((0..n_sets).map(|s| if s == m { 1.0f32 } else { 0.0 }));
            }
        }
        let mut dec_caches = Vec::with_capacity(self.decoder.len());
        for (b, mask) in self.decoder.iter().zip(draws.decoder) {
            let (out, cache, s) = b.forward(hd, rows, mask);
            stats.push(s);
            dec_caches.push(cache);
            hd = out;
        }
        let k = self.px_scale.d_in;
        // The heads over the dataset's genes G′ (Eq. 5: the softmax restricted to G′).
        let genes = &spec.gene_index;
        let cols_g = genes.len();
        let gather = |l: &HostLinear| -> (Vec<f32>, Vec<f32>) {
            let mut w = Vec::with_capacity(k * cols_g);
            for j in 0..k {
                w.extend(genes.iter().map(|&g| l.w[j * n_genes + g]));
            }
            (w, genes.iter().map(|&g| l.b[g]).collect())
        };
        let likelihood = spec.likelihood;
        let scale = gather(&self.px_scale);
        let drop = likelihood.has_dropout().then(|| gather(&self.px_dropout));
        let scale_logits = affine(&hd, &scale.0, &scale.1, rows, k, cols_g);
        let drop_logits = drop
            .as_ref()
            .map(|(w, b)| affine(&hd, w, b, rows, k, cols_g))
            .unwrap_or_default();
        let theta: Vec<f32> = if likelihood.has_dispersion() {
            let t = &self.log_theta[m * n_genes..(m + 1) * n_genes];
            genes.iter().map(|&g| t[g].exp()).collect()
        } else {
            Vec::new()
        };
        // Eq. 3 / Eq. 6 with μ = ℓ softmax(l): value and gradients in one fused pass.
        let sg = softmax_value_and_grad(
            likelihood,
            cols_g,
            &x,
            &scale_logits,
            &log_library,
            &theta,
            &drop_logits,
        );
        let rec = -sg.row_values.iter().sum::<f64>();
        // The loss weight of each cell's Σ_g ln p is −1/N.
        let w_rec = -inv_n as f32;
        let mut d_hd = vec![0.0f32; rows * k];
        let mut head = |l: &HostLinear, (w, _): &(Vec<f32>, Vec<f32>), d: &[f32]| {
            let d_l: Vec<f32> = d.iter().map(|v| v * w_rec).collect();
            let dx = times_t(&d_l, w, rows, k, cols_g);
            d_hd.iter_mut().zip(dx).for_each(|(a, b)| *a += b);
            // ∂W and ∂b on the dataset's columns of the full [k, G] head.
            let dw = t_times(&hd, &d_l, rows, k, cols_g);
            let mut full_w = vec![0.0f32; k * n_genes];
            for j in 0..k {
                for (c, &g) in genes.iter().enumerate() {
                    full_w[j * n_genes + g] = dw[j * cols_g + c];
                }
            }
            grads.add(l.w_id, full_w, vec![k, n_genes]);
            if let Some(b_id) = l.b_id {
                let mut full_b = vec![0.0f32; n_genes];
                for r in d_l.chunks_exact(cols_g) {
                    for (c, &g) in genes.iter().enumerate() {
                        full_b[g] += r[c];
                    }
                }
                grads.add(b_id, full_b, vec![n_genes]);
            }
        };
        head(&self.px_scale, &scale, &sg.d_logits);
        if let Some(drop) = &drop {
            head(&self.px_dropout, drop, &sg.d_dropout);
        }
        if likelihood.has_dispersion() {
            let mut d_log_theta = vec![0.0f32; n_sets * n_genes];
            for (c, &g) in genes.iter().enumerate() {
                // θ = exp(ln θ): ∂ ln θ = ∂θ θ.
                d_log_theta[m * n_genes + g] =
                    (-inv_n * sg.d_theta_sum[c] * theta[c] as f64) as f32;
            }
            grads.add(self.log_theta_id, d_log_theta, vec![n_sets, n_genes]);
        }
        // Back through the decoder's hidden blocks to z.
        for (b, cache) in self.decoder.iter().zip(&dec_caches).rev() {
            d_hd = b
                .backward(cache, d_hd, true, Some(&mut grads))
                .expect("dx requested");
        }
        let mut d_z: Vec<f32> = Vec::with_capacity(rows * d_lat);
        for r in d_hd.chunks_exact(k0) {
            d_z.extend_from_slice(&r[..d_lat]);
        }
        // The library encoder, from the likelihood's ∂ ln ℓ and its KL term.
        if let Some((block, ml, vl, cl, hl, lq, d_mean, d_var)) = latent {
            let d_draw: Vec<f32> = sg.d_log_library.iter().map(|v| v * w_rec).collect();
            let dh = lq.backward((ml, vl), &hl, rows, &d_draw, (d_mean, d_var), &mut grads);
            block.backward(&cl, dh, false, Some(&mut grads));
        }
        // KL(q(z) ‖ N(0, I)) = ½ Σ_j (m² + v − 1 − ln v).
        for (i, (mr, vr)) in zq
            .mean
            .chunks_exact(d_lat)
            .zip(zq.var.chunks_exact(d_lat))
            .enumerate()
        {
            for (&mq, &vq) in mr.iter().zip(vr) {
                let (mq, vq) = (mq as f64, vq as f64);
                kl_rows[i] += 0.5 * (mq * mq + (vq - 1.0) - (vq - 1.0).ln_1p());
            }
        }
        DatasetPass {
            rows,
            c_private,
            c_shared,
            h_shared: h2,
            zq,
            d_z,
            grads,
            stats,
            rec,
            kl: kl_rows.iter().sum(),
        }
    }

    /// The encoder's backward for a dataset pass whose ∂z is complete: the Gaussian heads
    /// (with the KL gradients), the shared block and the private block.
    fn encoder_backward(&self, m: usize, mut p: DatasetPass, beta: f64, inv_n: f64) -> HostGrads {
        let w = beta * inv_n;
        let d_mean: Vec<f32> = p.zq.mean.iter().map(|&v| w as f32 * v).collect();
        let d_var: Vec<f32> =
            p.zq.var
                .iter()
                .map(|&v| (w * 0.5 * (1.0 - 1.0 / v as f64)) as f32)
                .collect();
        let dh2 = p.zq.backward(
            (&self.z_mean, &self.z_log_var),
            &p.h_shared,
            p.rows,
            &p.d_z,
            (d_mean, d_var),
            &mut p.grads,
        );
        let dh1 = self
            .shared
            .backward(&p.c_shared, dh2, true, Some(&mut p.grads))
            .expect("dx requested");
        self.private[m].backward(&p.c_private, dh1, false, Some(&mut p.grads));
        p.grads
    }
}

impl GimviModule {
    /// Whether [`GimviModule::host_step`] can run this model on `device`: a CPU backend and
    /// datasets all narrower than [`HOST_PATH_MIN_GENES`] (wider ones take the sparse host
    /// path of [`crate::host`] inside burn's graph).
    pub(crate) fn host_step_supported(config: &ModelConfig, device: &Device) -> bool {
        host_kernels(device)
            && config
                .datasets
                .iter()
                .all(|d| d.gene_index.len() < HOST_PATH_MIN_GENES)
    }

    /// One training step's forward pass and gradients on the host ([`crate::hoststep`]): for
    /// each dataset m the rows `batches[m].1` of the counts `batches[m].0`, the loss
    /// rec + β kl (+ κ fool with a classifier) exactly as the trainer builds it from
    /// [`GimviModule::forward_rows`] and [`Classifier::loss_fool`]. Dropout and the
    /// reparameterisation draw from `rng` in the tensor path's order; BatchNorm running
    /// statistics (the module's and the classifier's) are updated. Gradients are returned on
    /// burn's gradient device (the inner backend of `device`).
    ///
    /// # Panics
    /// If the batches do not match the model's datasets (the trainer checks them first).
    pub(crate) fn host_step(
        &self,
        config: &ModelConfig,
        batches: &[(&CsrMatrix, &[usize])],
        classifier: Option<(&Classifier, f64)>,
        beta: f64,
        rng: &mut ModelRng,
        device: &Device,
    ) -> HostStep {
        assert_eq!(
            batches.len(),
            config.datasets.len(),
            "one batch per dataset"
        );
        let n_total: usize = batches.iter().map(|(_, r)| r.len()).sum();
        let inv_n = 1.0 / n_total as f64;
        let mut nets = HostNets {
            private: self.private.iter().map(HostBlock::of).collect(),
            shared: HostBlock::of(&self.shared),
            z_mean: HostLinear::of(&self.z_mean),
            z_log_var: HostLinear::of(&self.z_log_var),
            library: self
                .library
                .iter()
                .map(|l| {
                    l.as_ref().map(|e| {
                        (
                            HostBlock::of(&e.block),
                            HostLinear::of(&e.mean),
                            HostLinear::of(&e.log_var),
                        )
                    })
                })
                .collect(),
            decoder: self.decoder_hidden.iter().map(HostBlock::of).collect(),
            px_scale: HostLinear::of(&self.px_scale),
            px_dropout: HostLinear::of(&self.px_dropout),
            log_theta: host_vec(self.log_theta.val()),
            log_theta_id: self.log_theta.id,
        };
        // Every draw first, in the tensor path's order; then the datasets in parallel.
        let draws: Vec<Draws> = batches
            .iter()
            .enumerate()
            .map(|(m, (_, rows))| nets.draws(config, m, rows.len(), rng))
            .collect();
        let mut passes: Vec<DatasetPass> = batches
            .par_iter()
            .zip(draws)
            .enumerate()
            .map(|(m, (&(counts, rows), draws))| {
                nets.dataset_pass(config, m, (counts, rows), draws, beta, inv_n)
            })
            .collect();
        let mut z_all = Vec::with_capacity(n_total * config.n_latent);
        let mut labels = Vec::with_capacity(n_total);
        for (m, p) in passes.iter().enumerate() {
            z_all.extend_from_slice(&p.zq.draw);
            labels.extend(std::iter::repeat_n(m, p.rows));
        }
        // The adversarial term κ · fool(z): its gradient joins the decoder's on z.
        let fool = classifier.map(|(c, kappa)| {
            let mut host = HostClassifier::of(c);
            let kind = LossKind {
                fool: true,
                weight: kappa,
                need_dz: true,
            };
            let (value, dz) = host.loss(&z_all, &labels, kind, None, rng);
            host.finish(c);
            let dz = dz.expect("dz requested");
            let mut offset = 0;
            for p in &mut passes {
                let n = p.d_z.len();
                p.d_z
                    .iter_mut()
                    .zip(&dz[offset..offset + n])
                    .for_each(|(a, b)| *a += b);
                offset += n;
            }
            value
        });
        let (rec, kl) = passes
            .iter()
            .fold((0.0, 0.0), |(r, k), p| (r + p.rec, k + p.kl));
        // Running statistics in dataset order (the shared and decoder blocks see each dataset).
        for (m, p) in passes.iter().enumerate() {
            let mut stats = p.stats.iter();
            let mut next = || stats.next().expect("one statistic per block pass");
            nets.private[m].record(next());
            nets.shared.record(next());
            if let Some((block, ..)) = &mut nets.library[m] {
                block.record(next());
            }
            for b in &mut nets.decoder {
                b.record(next());
            }
        }
        let per_dataset: Vec<HostGrads> = passes
            .into_par_iter()
            .enumerate()
            .map(|(m, p)| nets.encoder_backward(m, p, beta, inv_n))
            .collect();
        let mut grads = HostGrads::default();
        for g in per_dataset {
            grads.merge(g);
        }
        let HostNets {
            private,
            shared,
            library,
            decoder,
            ..
        } = nets;
        for (b, block) in private.into_iter().zip(&self.private) {
            b.finish(&block.norm);
        }
        shared.finish(&self.shared.norm);
        for (l, enc) in library.into_iter().zip(&self.library) {
            if let (Some((b, ..)), Some(enc)) = (l, enc) {
                b.finish(&enc.block.norm);
            }
        }
        for (b, block) in decoder.into_iter().zip(&self.decoder_hidden) {
            b.finish(&block.norm);
        }
        HostStep {
            reconstruction: rec * inv_n,
            kl: kl * inv_n,
            fool,
            grads: grads.into_param_grads(&device.clone().without_autodiff()),
            z: z_all,
            labels,
        }
    }

    /// A training-mode pass of the encoders alone on the host: for each dataset m in turn,
    /// the rows `batches[m].1` of `batches[m].0` through the private and shared blocks (fresh
    /// dropout masks, batch statistics) and one reparameterised draw of z — the second
    /// stochastic pass on which scvi-tools trains its classifier after the generator step
    /// (`TrainConfig::classifier_second_pass` of gimvi-trainer). Draws come from `rng` in the
    /// order of [`GimviModule::encode`] followed by [`crate::module::reparameterise`]; the
    /// blocks' BatchNorm running statistics are updated as that tensor pass updates them.
    /// Returns z of every cell, datasets in order (`[cells, n_latent]` row-major); no
    /// gradient is computed.
    ///
    /// # Panics
    /// If the batches do not match the model's datasets (the trainer checks them first).
    pub(crate) fn host_encode_sample(
        &self,
        config: &ModelConfig,
        batches: &[(&CsrMatrix, &[usize])],
        rng: &mut ModelRng,
    ) -> Vec<f32> {
        assert_eq!(
            batches.len(),
            config.datasets.len(),
            "one batch per dataset"
        );
        let mut private: Vec<HostBlock> = self.private.iter().map(HostBlock::of).collect();
        let mut shared = HostBlock::of(&self.shared);
        let z_mean = HostLinear::of(&self.z_mean);
        let z_log_var = HostLinear::of(&self.z_log_var);
        let table = ln_1p_table();
        let mut z_all = Vec::new();
        for (m, &(counts, rows_idx)) in batches.iter().enumerate() {
            let rows = rows_idx.len();
            let input: Vec<f32> = dense_rows(counts, rows_idx)
                .iter()
                .map(|&c| ln_1p_count(table, c))
                .collect();
            let mask = private[m].draw_mask(rows, rng);
            let (h1, _, s1) = private[m].forward(input, rows, mask);
            private[m].record(&s1);
            let mask = shared.draw_mask(rows, rng);
            let (h2, _, s2) = shared.forward(h1, rows, mask);
            shared.record(&s2);
            let eps = normal_host(rows * config.n_latent, rng);
            z_all.extend(gaussian_draw(&z_mean, &z_log_var, &h2, rows, eps).draw);
        }
        for (b, block) in private.into_iter().zip(&self.private) {
            b.finish(&block.norm);
        }
        shared.finish(&self.shared.norm);
        z_all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatasetSpec;
    use crate::CountLikelihood;
    use burn::optim::GradientsParams;
    use rand::SeedableRng;

    fn norms<'a>(module: &'a GimviModule, classifier: &'a Classifier) -> Vec<&'a BatchNorm> {
        let mut v: Vec<&BatchNorm> = module.private.iter().map(|b| &b.norm).collect();
        v.push(&module.shared.norm);
        v.extend(module.library.iter().flatten().map(|l| &l.block.norm));
        v.extend(module.decoder_hidden.iter().map(|b| &b.norm));
        v.extend(classifier.blocks.iter().map(|b| &b.norm));
        v
    }

    fn snapshot(norms: &[&BatchNorm]) -> Vec<(Vec<f32>, Vec<f32>)> {
        norms
            .iter()
            .map(|n| {
                (
                    host_vec(n.running_mean.value_sync()),
                    host_vec(n.running_var.value_sync()),
                )
            })
            .collect()
    }

    fn restore(norms: &[&BatchNorm], values: &[(Vec<f32>, Vec<f32>)], device: &Device) {
        for (n, (m, v)) in norms.iter().zip(values) {
            let t = |x: &Vec<f32>| {
                Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), device)
            };
            n.running_mean.update(t(m));
            n.running_var.update(t(v));
        }
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(1e-3f32, |s, v| s.max(v.abs()));
        a.iter().zip(b).fold(0f32, |s, (x, y)| s.max((x - y).abs())) / scale
    }

    fn grads_of_id(grads: &GradientsParams, id: ParamId) -> Vec<f32> {
        grads.get::<2>(id).map(host_vec).expect("a weight gradient")
    }

    fn grad_of(grads: &GradientsParams, g: &ParamGrad) -> Option<Vec<f32>> {
        match g {
            ParamGrad::Matrix(id, _) => grads.get::<2>(*id).map(host_vec),
            ParamGrad::Vector(id, _) => grads.get::<1>(*id).map(host_vec),
        }
    }

    /// One step of the host path equals the tensor path's (the trainer's graph): losses, z,
    /// every parameter gradient of the module and of the classifier, and the BatchNorm running
    /// statistics after the step — for a ZINB / NB pair with a linear decoder and an NB /
    /// Poisson pair with a conditioned decoder with a hidden layer.
    #[test]
    #[allow(deprecated)] // burn-ndarray is the reference CPU backend of the tests.
    fn host_step_matches_tensor_step() {
        let device = Device::ndarray().autodiff();
        let g = 40;
        let genes: Vec<String> = (0..g).map(|i| format!("g{i}")).collect();
        let subset: Vec<usize> = (0..g).filter(|i| i % 3 == 1).collect();
        for (sc_lik, sp_lik, conditioned) in [
            (CountLikelihood::Zinb, CountLikelihood::Nb, false),
            (CountLikelihood::Nb, CountLikelihood::Poisson, true),
        ] {
            let sc = DatasetSpec {
                name: "sc".into(),
                genes: genes.clone(),
                gene_index: (0..g).collect(),
                likelihood: sc_lik,
                library: LibraryModel::Latent {
                    log_mean: 4.0,
                    log_var: 0.4,
                },
            };
            let sp = DatasetSpec {
                name: "sp".into(),
                genes: subset.iter().map(|&i| genes[i].clone()).collect(),
                gene_index: subset.clone(),
                likelihood: sp_lik,
                library: LibraryModel::Observed,
            };
            let mut config = ModelConfig::new(genes.clone(), vec![sc, sp]);
            if conditioned {
                config.condition_decoder = true;
                config.decoder_hidden = vec![12];
            }
            let module = GimviModule::new(&config, 3, &device).unwrap();
            let classifier = Classifier::new(&config, &mut ModelRng::seed_from_u64(4), &device);
            let counts: Vec<CsrMatrix> = [(30, g), (26, subset.len())]
                .iter()
                .enumerate()
                .map(|(m, &(rows, cols))| {
                    let mut t = Vec::new();
                    for r in 0..rows {
                        for c in 0..cols {
                            let h = (r * 131 + c * 71 + m * 17) % 23;
                            if h < 11 {
                                t.push((r, c, (h % 6 + (c % 4)) as f32));
                            }
                        }
                    }
                    CsrMatrix::from_triplets(rows, cols, &t).unwrap()
                })
                .collect();
            let rows: Vec<Vec<usize>> = vec![(2..26).collect(), (1..21).rev().collect()];
            let (beta, kappa) = (0.7, 2.5);
            let bn = norms(&module, &classifier);
            let before = snapshot(&bn);

            // Host path.
            let mut rng = ModelRng::seed_from_u64(9);
            let batches: Vec<(&CsrMatrix, &[usize])> = counts
                .iter()
                .zip(&rows)
                .map(|(c, r)| (c, r.as_slice()))
                .collect();
            let host = module.host_step(
                &config,
                &batches,
                Some((&classifier, kappa)),
                beta,
                &mut rng,
                &device,
            );
            let (cls_host, cls_grads_host) =
                classifier.host_step(&host.z, &host.labels, kappa, &mut rng, &device);
            let after_host = snapshot(&bn);
            restore(&bn, &before, &device);

            // Tensor path, as the trainer builds the loss.
            let mut rng = ModelRng::seed_from_u64(9);
            let n: usize = rows.iter().map(Vec::len).sum();
            let (mut rec, mut kl) = (None::<Tensor<1>>, None::<Tensor<1>>);
            let mut zs = Vec::new();
            for (m, r) in rows.iter().enumerate() {
                let out = module.forward_rows(&config, m, &counts[m], r, &device, Some(&mut rng));
                let (a, b) = (
                    out.reconstruction.sum().reshape([1]),
                    out.kl.sum().reshape([1]),
                );
                rec = Some(rec.map_or(a.clone(), |t| t.add(a)));
                kl = Some(kl.map_or(b.clone(), |t| t.add(b)));
                zs.push(out.z);
            }
            let rec = rec.unwrap().div_scalar(n as f64);
            let kl = kl.unwrap().div_scalar(n as f64);
            let z = Tensor::cat(zs, 0);
            let fool = classifier.loss_fool(z.clone(), &host.labels, Some(&mut rng));
            let values = [rec.clone(), kl.clone(), fool.clone()].map(|t| host_vec(t)[0] as f64);
            let loss = rec.add(kl.mul_scalar(beta)).add(fool.mul_scalar(kappa));
            let grads = GradientsParams::from_grads(loss.backward(), &module);
            let cls = classifier
                .loss_true(z.clone().detach(), &host.labels, Some(&mut rng))
                .mul_scalar(kappa);
            let cls_value = host_vec(cls.clone())[0] as f64 / kappa;
            let cls_grads = GradientsParams::from_grads(cls.backward(), &classifier);
            let after_tensor = snapshot(&bn);

            let label = format!("{sc_lik:?}/{sp_lik:?}");
            let pre_norm_bias: HashMap<ParamId, ParamId> = module
                .private
                .iter()
                .chain([&module.shared])
                .chain(module.library.iter().flatten().map(|l| &l.block))
                .chain(&module.decoder_hidden)
                .chain(&classifier.blocks)
                .map(|b| (b.linear.bias.as_ref().unwrap().id, b.linear.weight.id))
                .collect();
            for (name, a, b) in [
                ("reconstruction", values[0], host.reconstruction),
                ("kl", values[1], host.kl),
                ("fool", values[2], host.fool.unwrap()),
                ("classifier", cls_value, cls_host),
            ] {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{label} {name}: {a} vs {b}"
                );
            }
            let dz = max_rel_diff(&host_vec(z.detach()), &host.z);
            assert!(dz < 1e-5, "{label}: z differs by {dz}");
            for (what, reference, ours) in [
                ("module", &grads, &host.grads),
                ("classifier", &cls_grads, &cls_grads_host),
            ] {
                assert_eq!(
                    reference.len(),
                    ours.len(),
                    "{label}: {what} gradient count"
                );
                for g in ours.iter() {
                    let (id, mine) = match g {
                        ParamGrad::Matrix(id, t) => (id, host_vec(t.clone())),
                        ParamGrad::Vector(id, t) => (id, host_vec(t.clone())),
                    };
                    let theirs = grad_of(reference, g).unwrap_or_else(|| {
                        panic!("{label}: {what} parameter {id} has no tensor gradient")
                    });
                    let mut d = max_rel_diff(&theirs, &mine);
                    if let Some(w) = pre_norm_bias.get(id) {
                        // A bias that feeds BatchNorm has exact gradient 0 and both paths give
                        // round-off: measured against its layer's weight gradient.
                        let w = grads_of_id(reference, *w);
                        let scale = w.iter().fold(1e-3f32, |s, v| s.max(v.abs()));
                        let diff = theirs
                            .iter()
                            .zip(&mine)
                            .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
                        d = diff / scale;
                    }
                    assert!(d < 2e-4, "{label}: {what} parameter {id} differs by {d}");
                }
            }
            for (i, ((hm, hv), (tm, tv))) in after_host.iter().zip(&after_tensor).enumerate() {
                assert!(max_rel_diff(tm, hm) < 1e-5, "{label}: running mean {i}");
                assert!(max_rel_diff(tv, hv) < 1e-5, "{label}: running var {i}");
            }
            let moved = after_host.iter().zip(&before).any(|(a, b)| a.0 != b.0);
            assert!(moved, "{label}: the running statistics moved");
        }
    }
}
