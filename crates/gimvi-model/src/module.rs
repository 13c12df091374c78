//! The networks of gimVI as burn modules, and the per-dataset ELBO terms.

use std::sync::Arc;

use burn::module::{Module, Param, ParamId};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Device, Int, Shape, Tensor, TensorData};
use gimvi_likelihoods::device::{host_kernels, host_vec};
use gimvi_likelihoods::{kl_normal, kl_normal_standard};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};

use crate::batch::{dense_batch, dense_rows};
use crate::config::{LibraryModel, ModelConfig};
use crate::host::{SparseRows, HOST_PATH_MIN_GENES};
use crate::ops::{self, HeadColumns, Observed};
use crate::ModelError;
use gimvi_data::CsrMatrix;

/// Variance floor added to the encoders' variances. scvi-tools adds 10⁻⁴ to the library
/// variance only; the z variance there has no floor, so exp(·) can underflow to 0 and make the
/// KL infinite. The floor is applied to both here.
pub const VAR_EPS: f64 = 1e-4;

/// Floor of the observed library of a spatial cell, so a cell with zero counts on its genes
/// gives ln ℓ′ = 0 instead of −∞ (scvi-tools NaNs there; data preparation drops such cells).
pub const MIN_OBSERVED_LIBRARY: f64 = 1.0;

/// Every random draw of the model — weight initialisation, reparameterisation noise, dropout
/// masks — comes from this host-side generator, so that a seeded run is reproducible whatever
/// else uses the backend's own generator (which is global, and shared by parallel threads).
pub type ModelRng = ChaCha8Rng;

/// Standard-normal noise of `shape` drawn from `rng`, on `device`.
pub fn normal_noise(shape: Shape, rng: &mut ModelRng, device: &Device) -> Tensor<2> {
    let dims = shape.dims::<2>();
    let v = normal_host(dims[0] * dims[1], rng);
    Tensor::from_data(TensorData::new(v, dims), device)
}

/// `n` standard-normal draws from `rng`, in order (the host side of [`normal_noise`]).
pub(crate) fn normal_host(n: usize, rng: &mut ModelRng) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// An inverted-dropout mask of `n` entries for rate `dropout`: 1/(1 − rate) where an entry is
/// kept, 0 where dropped. An entry is kept when a uniform 32-bit draw falls below
/// (1 − rate) · 2³², filled in bulk from the block cipher (one word per entry).
pub(crate) fn dropout_mask(n: usize, dropout: f64, rng: &mut ModelRng) -> Vec<f32> {
    let keep = 1.0 - dropout;
    let threshold = (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32;
    let scale = (1.0 / keep) as f32;
    let mut bits = vec![0u32; n];
    rng.fill(&mut bits[..]);
    bits.iter()
        .map(|&b| if b < threshold { scale } else { 0.0 })
        .collect()
}

/// A reparameterised draw mean + √var · ε with ε ~ N(0, I) from `rng`: the z and ℓ samples of
/// the ELBOs (Lopez et al. 2019, Eq. 8–9).
pub fn reparameterise(mean: Tensor<2>, var: Tensor<2>, rng: &mut ModelRng) -> Tensor<2> {
    let eps = normal_noise(mean.shape(), rng, &mean.device());
    mean.add(var.sqrt().mul(eps))
}

/// Which fast paths a dataset's minibatches take on a device — the one place that decides
/// ([`crate::ops`]): on a CPU backend ([`host_kernels`]) the likelihood runs as a host kernel
/// (`host`), and a dataset with at least [`HOST_PATH_MIN_GENES`] genes also reaches its
/// encoders as sparse rows and decodes through host heads (`wide`). Elsewhere every piece is
/// burn's tensor operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paths {
    /// The likelihood as a host kernel.
    pub host: bool,
    /// Sparse encoder input and host decoder heads (implies `host`).
    pub wide: bool,
}

impl Paths {
    /// The paths of dataset `m` of `config` on `device`.
    pub(crate) fn of(config: &ModelConfig, m: usize, device: &Device) -> Self {
        let host = host_kernels(device);
        Self {
            host,
            wide: host && config.datasets[m].gene_index.len() >= HOST_PATH_MIN_GENES,
        }
    }
}

/// A linear layer initialised as PyTorch does (weights and bias uniform on ±1/√fan_in),
/// from `rng`.
fn linear(d_in: usize, d_out: usize, rng: &mut ModelRng, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f64).sqrt();
    let mut uniform = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect()
    };
    let mut layer = LinearConfig::new(d_in, d_out).init(device);
    layer.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(d_in * d_out), [d_in, d_out]),
        device,
    ));
    layer.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(d_out), [d_out]),
        device,
    )));
    layer
}

/// Linear → BatchNorm (momentum 0.01, ε 10⁻³, as scvi-tools) → ReLU → Dropout. Dropout and
/// batch statistics are active only on an autodiff (training) device.
#[derive(Module, Debug)]
pub struct FcBlock {
    pub(crate) linear: Linear,
    pub(crate) norm: BatchNorm,
    pub(crate) dropout: f64,
}

impl FcBlock {
    fn new(d_in: usize, d_out: usize, dropout: f64, rng: &mut ModelRng, device: &Device) -> Self {
        Self {
            linear: linear(d_in, d_out, rng, device),
            norm: BatchNormConfig::new(d_out)
                .with_momentum(0.01)
                .with_epsilon(1e-3)
                .init(device),
            dropout,
        }
    }

    fn forward(&self, x: Tensor<2>, rng: Option<&mut ModelRng>) -> Tensor<2> {
        self.activate(self.linear.forward(x), rng)
    }

    /// [`FcBlock::forward`] of a first layer on sparse host input (CPU backends): X W on the
    /// non-zeros as one custom operation ([`ops::sparse_matmul`]), then the bias and the
    /// activation.
    fn forward_sparse(&self, x: &Arc<SparseRows>, rng: Option<&mut ModelRng>) -> Tensor<2> {
        let y = ops::sparse_matmul(self.linear.weight.val(), x.clone());
        let pre = match &self.linear.bias {
            Some(b) => y.add(b.val().unsqueeze_dim(0)),
            None => y,
        };
        self.activate(pre, rng)
    }

    /// [`FcBlock::forward`] of a first layer on either form of the encoders' input.
    fn forward_input(&self, input: &EncoderInput, rng: Option<&mut ModelRng>) -> Tensor<2> {
        match input {
            EncoderInput::Dense(x) => self.forward(x.clone(), rng),
            EncoderInput::Sparse(x, _) => self.forward_sparse(x, rng),
        }
    }

    /// BatchNorm → ReLU → dropout of the linear layer's output.
    fn activate(&self, pre: Tensor<2>, rng: Option<&mut ModelRng>) -> Tensor<2> {
        let h = relu(self.norm.forward(pre));
        match rng {
            Some(rng) if self.dropout > 0.0 && h.device().is_autodiff() => {
                let [n, d] = h.dims();
                let mask = dropout_mask(n * d, self.dropout, rng);
                let device = h.device();
                h.mul(Tensor::from_data(TensorData::new(mask, [n, d]), &device))
            }
            _ => h,
        }
    }
}

/// q(ln ℓ | x): one hidden block, then mean and log-variance heads.
#[derive(Module, Debug)]
pub struct LibraryEncoder {
    pub(crate) block: FcBlock,
    pub(crate) mean: Linear,
    pub(crate) log_var: Linear,
}

impl LibraryEncoder {
    fn forward_input(
        &self,
        input: &EncoderInput,
        rng: Option<&mut ModelRng>,
    ) -> (Tensor<2>, Tensor<2>) {
        let h = self.block.forward_input(input, rng);
        let var = self.log_var.forward(h.clone()).exp().add_scalar(VAR_EPS);
        (self.mean.forward(h), var)
    }
}

/// The adversarial dataset classifier on z.
#[derive(Module, Debug)]
pub struct Classifier {
    pub(crate) blocks: Vec<FcBlock>,
    pub(crate) out: Linear,
}

impl Classifier {
    /// Builds the classifier from the configuration (hidden layers, units, dropout).
    pub fn new(config: &ModelConfig, rng: &mut ModelRng, device: &Device) -> Self {
        let mut blocks = Vec::new();
        let mut d_in = config.n_latent;
        for _ in 0..config.classifier_layers {
            blocks.push(FcBlock::new(
                d_in,
                config.classifier_hidden,
                config.classifier_dropout,
                rng,
                device,
            ));
            d_in = config.classifier_hidden;
        }
        Self {
            blocks,
            out: linear(d_in, config.datasets.len(), rng, device),
        }
    }

    /// Logits over datasets, `[cells, datasets]`; dropout draws from `rng` when training.
    pub fn forward(&self, z: Tensor<2>, mut rng: Option<&mut ModelRng>) -> Tensor<2> {
        let mut h = z;
        for b in &self.blocks {
            h = b.forward(h, rng.as_deref_mut());
        }
        self.out.forward(h)
    }

    /// Cross-entropy of the true dataset labels (the classifier's own objective).
    pub fn loss_true(
        &self,
        z: Tensor<2>,
        labels: &[usize],
        rng: Option<&mut ModelRng>,
    ) -> Tensor<1> {
        let logp = log_softmax(self.forward(z, rng), 1);
        let target = one_hot(labels, logp.dims()[1], &logp.device());
        logp.mul(target).sum_dim(1).mean().neg()
    }

    /// The encoders' "fool" objective: cross-entropy against the uniform distribution over the
    /// *other* datasets (label flipping; with two datasets, the wrong one).
    pub fn loss_fool(
        &self,
        z: Tensor<2>,
        labels: &[usize],
        rng: Option<&mut ModelRng>,
    ) -> Tensor<1> {
        let logp = log_softmax(self.forward(z, rng), 1);
        let c = logp.dims()[1];
        let target = one_hot(labels, c, &logp.device())
            .neg()
            .add_scalar(1.0)
            .div_scalar((c - 1) as f64);
        logp.mul(target).sum_dim(1).mean().neg()
    }

    /// Fraction of cells whose dataset the classifier predicts correctly.
    pub fn accuracy(&self, z: Tensor<2>, labels: &[usize]) -> f64 {
        let pred: Vec<i64> = self
            .forward(z, None)
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_default();
        let hits = pred
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p as usize == **l)
            .count();
        hits as f64 / labels.len().max(1) as f64
    }
}

fn one_hot(labels: &[usize], classes: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [labels.len(), classes]), device)
}

/// Ids of a group of parameters, by rank (what moving their gradients between
/// `GradientsParams` needs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamIds {
    /// Rank-2 parameters (weight matrices, ln θ).
    pub matrices: Vec<ParamId>,
    /// Rank-1 parameters (biases, BatchNorm scale and shift).
    pub vectors: Vec<ParamId>,
}

impl FcBlock {
    fn param_ids(&self, ids: &mut ParamIds) {
        linear_ids(&self.linear, ids);
        ids.vectors.push(self.norm.gamma.id);
        ids.vectors.push(self.norm.beta.id);
    }
}

fn linear_ids(l: &Linear, ids: &mut ParamIds) {
    ids.matrices.push(l.weight.id);
    ids.vectors.extend(l.bias.as_ref().map(|b| b.id));
}

/// The gimVI networks: per-dataset private encoder layers, a shared last encoder layer, the
/// Gaussian heads of q(z | x, s), library encoders, the decoder and θ.
#[derive(Module, Debug)]
pub struct GimviModule {
    pub(crate) private: Vec<FcBlock>,
    pub(crate) shared: FcBlock,
    pub(crate) z_mean: Linear,
    pub(crate) z_log_var: Linear,
    pub(crate) library: Vec<Option<LibraryEncoder>>,
    pub(crate) decoder_hidden: Vec<FcBlock>,
    pub(crate) px_scale: Linear,
    pub(crate) px_dropout: Linear,
    /// ln θ, one row per dataset, one column per gene of G ("gene-batch").
    pub(crate) log_theta: Param<Tensor<2>>,
}

/// Everything the forward pass of one dataset's minibatch produces.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// Mean of q(z | x, s), `[cells, d]`.
    pub qz_mean: Tensor<2>,
    /// Variance of q(z | x, s).
    pub qz_var: Tensor<2>,
    /// The sampled (or, deterministically, mean) z.
    pub z: Tensor<2>,
    /// Reconstruction term −ln p(x | z, ℓ) per cell, `[cells, 1]`.
    pub reconstruction: Tensor<2>,
    /// KL(q(z) ‖ N(0, I)) + KL(q(ln ℓ) ‖ prior) per cell, `[cells, 1]`.
    pub kl: Tensor<2>,
}

/// The encoders' input: ln(1 + x) as a tensor, or (wide data on a CPU backend) as sparse rows
/// on the host.
enum EncoderInput {
    Dense(Tensor<2>),
    Sparse(Arc<SparseRows>, Device),
}

/// A minibatch ready for [`GimviModule::forward`]'s pass: the counts as a tensor (needed off
/// the host kernels), on the host (needed on them) and the encoders' input.
struct PreparedBatch {
    x: Option<Tensor<2>>,
    x_host: Vec<f32>,
    input: EncoderInput,
}

impl GimviModule {
    /// Builds freshly initialised networks for a validated configuration.
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let mut rng = <ModelRng as rand::SeedableRng>::seed_from_u64(seed);
        let rng = &mut rng;
        let h = config.n_hidden;
        let private = config
            .datasets
            .iter()
            .map(|d| FcBlock::new(d.gene_index.len(), h, config.dropout_encoder, rng, device))
            .collect();
        let library = config
            .datasets
            .iter()
            .map(|d| match d.library {
                LibraryModel::Latent { .. } => Some(LibraryEncoder {
                    block: FcBlock::new(
                        d.gene_index.len(),
                        config.n_hidden_library,
                        config.dropout_encoder,
                        rng,
                        device,
                    ),
                    mean: linear(config.n_hidden_library, 1, rng, device),
                    log_var: linear(config.n_hidden_library, 1, rng, device),
                }),
                LibraryModel::Observed => None,
            })
            .collect();
        let mut d_in = config.n_latent
            + if config.condition_decoder {
                config.datasets.len()
            } else {
                0
            };
        let mut decoder_hidden = Vec::new();
        for &w in &config.decoder_hidden {
            decoder_hidden.push(FcBlock::new(d_in, w, config.dropout_decoder, rng, device));
            d_in = w;
        }
        let g = config.n_genes();
        let shared = FcBlock::new(h, h, config.dropout_encoder, rng, device);
        let z_mean = linear(h, config.n_latent, rng, device);
        let z_log_var = linear(h, config.n_latent, rng, device);
        let px_scale = linear(d_in, g, rng, device);
        let px_dropout = linear(d_in, g, rng, device);
        // ln θ ~ N(0, 1), as scvi-tools' torch.randn initialisation.
        let log_theta = normal_noise(Shape::new([config.datasets.len(), g]), rng, device);
        Ok(Self {
            private,
            shared,
            z_mean,
            z_log_var,
            library,
            decoder_hidden,
            px_scale,
            px_dropout,
            log_theta: Param::from_tensor(log_theta),
        })
    }

    /// The parameters of the generative networks f_η and f_ν (Lopez et al. 2019): the
    /// decoder's hidden blocks, the ρ and dropout heads and ln θ — the group that
    /// `TrainConfig::decoder_learning_rate_factor` of gimvi-trainer steps with its own rate.
    pub fn decoder_param_ids(&self) -> ParamIds {
        let mut ids = ParamIds::default();
        for b in &self.decoder_hidden {
            b.param_ids(&mut ids);
        }
        linear_ids(&self.px_scale, &mut ids);
        linear_ids(&self.px_dropout, &mut ids);
        ids.matrices.push(self.log_theta.id);
        ids
    }

    /// q(z | x, s) for dataset `m`: mean and variance. The encoder input is ln(1 + x); the
    /// private layer is dataset `m`'s, the last layer is shared by all datasets.
    pub fn encode(
        &self,
        m: usize,
        x: Tensor<2>,
        rng: Option<&mut ModelRng>,
    ) -> (Tensor<2>, Tensor<2>) {
        self.encode_input(m, &EncoderInput::Dense(x.log1p()), rng)
    }

    /// q(ln ℓ | x) for dataset `m` when its library is latent.
    pub fn encode_library(
        &self,
        m: usize,
        x: Tensor<2>,
        rng: Option<&mut ModelRng>,
    ) -> Option<(Tensor<2>, Tensor<2>)> {
        let input = EncoderInput::Dense(x.log1p());
        self.library[m]
            .as_ref()
            .map(|enc| enc.forward_input(&input, rng))
    }

    /// Decoder up to the output layers: `[cells, hidden]` features of z (and of the dataset
    /// label when the decoder is conditioned on it).
    fn decoder_features(
        &self,
        config: &ModelConfig,
        m: usize,
        z: Tensor<2>,
        mut rng: Option<&mut ModelRng>,
    ) -> Tensor<2> {
        let mut h = if config.condition_decoder {
            let n = z.dims()[0];
            let labels = vec![m; n];
            Tensor::cat(
                vec![
                    z.clone(),
                    one_hot(&labels, config.datasets.len(), &z.device()),
                ],
                1,
            )
        } else {
            z
        };
        for b in &self.decoder_hidden {
            h = b.forward(h, rng.as_deref_mut());
        }
        h
    }

    /// ρ over the requested genes (indices into G), renormalised so that it sums to 1 over the
    /// genes `norm_genes` — Lopez et al. 2019, Eq. 5: ρ′_g = ρ_g / Σ_{g′ ∈ G′} ρ_g′. With
    /// `genes` = `norm_genes` this is the softmax over those genes; other requested genes are
    /// divided by the same sum (as scvi-tools does). `[cells, genes]`.
    pub fn rho(
        &self,
        config: &ModelConfig,
        m: usize,
        z: Tensor<2>,
        genes: &[usize],
        norm_genes: &[usize],
    ) -> Tensor<2> {
        let h = self.decoder_features(config, m, z, None);
        let logits = self.px_scale.forward(h);
        let device = logits.device();
        let norm = logits.clone().select(1, index_tensor(norm_genes, &device));
        // Eq. 5 in log space: log ρ′_g = l_g − logsumexp_{g′ ∈ G′} l_g′.
        let max = norm.clone().max_dim(1).detach();
        let lse = norm.sub(max.clone()).exp().sum_dim(1).log().add(max);
        logits
            .select(1, index_tensor(genes, &device))
            .sub(lse)
            .exp()
    }

    /// Forward pass and ELBO terms of one minibatch `x` (`[cells, G_m]` raw counts) of dataset
    /// `m` (Lopez et al. 2019, Eq. 8 for scRNA-seq, Eq. 9 for spatial data). With `rng`, z and
    /// ln ℓ are sampled from q (and dropout is applied on a training device); without, the
    /// posterior means are used. On CPU backends the pieces named in `Paths` run as the
    /// custom operations of the private `ops` module; the result and its gradients are those of the
    /// tensor forms.
    pub fn forward(
        &self,
        config: &ModelConfig,
        m: usize,
        x: Tensor<2>,
        rng: Option<&mut ModelRng>,
    ) -> ForwardOutput {
        let paths = Paths::of(config, m, &x.device());
        self.forward_with(config, m, x, rng, paths)
    }

    /// [`GimviModule::forward`] with the paths chosen by the caller (`wide` needs `host`, and
    /// both need a CPU backend).
    pub(crate) fn forward_with(
        &self,
        config: &ModelConfig,
        m: usize,
        x: Tensor<2>,
        rng: Option<&mut ModelRng>,
        paths: Paths,
    ) -> ForwardOutput {
        let device = x.device();
        // On CPU backends the counts come to the host once: ln(1 + x) is computed there (only
        // the non-zero entries need a logarithm) and the likelihood kernel reads them.
        let x_host: Vec<f32> = if paths.host {
            host_vec(x.clone())
        } else {
            Vec::new()
        };
        let input = if paths.wide {
            EncoderInput::Sparse(
                Arc::new(SparseRows::log1p_of_dense(&x_host, x.dims()[1])),
                device.clone(),
            )
        } else if paths.host {
            let v: Vec<f32> = x_host
                .iter()
                .map(|&c| if c == 0.0 { 0.0 } else { c.ln_1p() })
                .collect();
            EncoderInput::Dense(Tensor::<2>::from_data(
                TensorData::new(v, x.dims()),
                &device,
            ))
        } else {
            EncoderInput::Dense(x.clone().log1p())
        };
        let batch = PreparedBatch {
            x: Some(x),
            x_host,
            input,
        };
        self.forward_prepared(config, m, batch, rng, paths)
    }

    /// [`GimviModule::forward`] of the rows `rows` of a CSR count matrix of dataset `m`, on
    /// `device`. For wide data on a CPU backend the minibatch goes from the sparse rows to the
    /// host kernels without a dense tensor; elsewhere this is `forward` of the densified rows.
    pub fn forward_rows(
        &self,
        config: &ModelConfig,
        m: usize,
        counts: &CsrMatrix,
        rows: &[usize],
        device: &Device,
        rng: Option<&mut ModelRng>,
    ) -> ForwardOutput {
        let paths = Paths::of(config, m, device);
        if !paths.wide {
            return self.forward_with(config, m, dense_batch(counts, rows, device), rng, paths);
        }
        let batch = PreparedBatch {
            x: None,
            x_host: dense_rows(counts, rows),
            input: EncoderInput::Sparse(
                Arc::new(SparseRows::log1p_of_rows(counts, rows)),
                device.clone(),
            ),
        };
        self.forward_prepared(config, m, batch, rng, paths)
    }

    /// [`GimviModule::encode`] of the rows `rows` of a CSR count matrix of dataset `m`, on
    /// `device`: q(z | x, s) as (mean, variance). For wide data on a CPU backend the first
    /// layer reads the sparse rows without a dense tensor, as [`GimviModule::forward_rows`]
    /// does.
    pub fn encode_rows(
        &self,
        config: &ModelConfig,
        m: usize,
        counts: &CsrMatrix,
        rows: &[usize],
        device: &Device,
        rng: Option<&mut ModelRng>,
    ) -> (Tensor<2>, Tensor<2>) {
        if !Paths::of(config, m, device).wide {
            return self.encode(m, dense_batch(counts, rows, device), rng);
        }
        let input = EncoderInput::Sparse(
            Arc::new(SparseRows::log1p_of_rows(counts, rows)),
            device.clone(),
        );
        self.encode_input(m, &input, rng)
    }

    /// The forward pass from a prepared minibatch.
    fn forward_prepared(
        &self,
        config: &ModelConfig,
        m: usize,
        batch: PreparedBatch,
        mut rng: Option<&mut ModelRng>,
        paths: Paths,
    ) -> ForwardOutput {
        let PreparedBatch { x, x_host, input } = batch;
        let spec = &config.datasets[m];
        let device = match &input {
            EncoderInput::Dense(t) => t.device(),
            EncoderInput::Sparse(_, d) => d.clone(),
        };
        let (qz_mean, qz_var) = self.encode_input(m, &input, rng.as_deref_mut());
        let z = match rng.as_deref_mut() {
            Some(r) => reparameterise(qz_mean.clone(), qz_var.clone(), r),
            None => qz_mean.clone(),
        };
        // Library: latent (sampled from q) or observed (Eq. 9: ℓ′ = observed total).
        let library = self.library[m]
            .as_ref()
            .map(|enc| enc.forward_input(&input, rng.as_deref_mut()));
        let (log_library, kl_library) = match (library, spec.library) {
            (Some((ql_mean, ql_var)), LibraryModel::Latent { log_mean, log_var }) => {
                let log_l = match rng.as_deref_mut() {
                    Some(r) => reparameterise(ql_mean.clone(), ql_var.clone(), r),
                    None => ql_mean.clone(),
                };
                let prior_mean = ql_mean.zeros_like().add_scalar(log_mean);
                let prior_var = ql_mean.zeros_like().add_scalar(log_var.max(VAR_EPS));
                let kl = kl_normal(ql_mean, ql_var, prior_mean, prior_var);
                (log_l, Some(kl))
            }
            _ => {
                let totals = match &x {
                    Some(x) => x.clone().sum_dim(1),
                    None => {
                        let cols = spec.gene_index.len().max(1);
                        let t: Vec<f32> = x_host.chunks(cols).map(|r| r.iter().sum()).collect();
                        let n = t.len();
                        Tensor::<2>::from_data(TensorData::new(t, [n, 1]), &device)
                    }
                };
                (totals.clamp_min(MIN_OBSERVED_LIBRARY).log(), None)
            }
        };

        let h = self.decoder_features(config, m, z.clone(), rng);
        let decoded = Decoded {
            h,
            log_library,
            x,
            x_host,
        };
        let reconstruction = self.log_likelihood_rows(config, m, decoded, paths).neg();
        let mut kl = kl_normal_standard(qz_mean.clone(), qz_var.clone()).sum_dim(1);
        if let Some(kl_l) = kl_library {
            kl = kl.add(kl_l);
        }
        ForwardOutput {
            qz_mean,
            qz_var,
            z,
            reconstruction,
            kl,
        }
    }

    /// Σ_g ln p(x_ng | z_n, ℓ_n) per cell, `[cells, 1]` (Eq. 3 / Eq. 6 with ρ′ of Eq. 5), from
    /// the last decoder features. Only the dataset's own genes G′ are decoded: the softmax
    /// normaliser over G cancels in ρ′ (Eq. 5), so a 33-gene panel never pays for a
    /// 20,000-gene output layer, and the dropout head is evaluated only for zero-inflated
    /// likelihoods. On CPU backends the likelihood (and, for wide data, the heads) runs as one
    /// custom operation ([`crate::ops`]); elsewhere as tensor operations.
    fn log_likelihood_rows(
        &self,
        config: &ModelConfig,
        m: usize,
        decoded: Decoded,
        paths: Paths,
    ) -> Tensor<2> {
        let Decoded {
            h,
            log_library,
            x,
            x_host,
        } = decoded;
        let spec = &config.datasets[m];
        let device = h.device();
        let genes = &spec.gene_index;
        let all_genes =
            genes.len() == config.n_genes() && genes.iter().enumerate().all(|(i, &g)| i == g);
        let idx = (!all_genes).then(|| index_tensor(genes, &device));
        let likelihood = spec.likelihood;
        let theta = likelihood.has_dispersion().then(|| {
            let t = self.log_theta.val().narrow(0, m, 1);
            match &idx {
                None => t.exp(),
                Some(idx) => t.select(1, idx.clone()).exp(),
            }
        });
        let observed = || Observed {
            likelihood,
            x: Arc::new(x_host),
        };
        if paths.wide {
            let columns = HeadColumns {
                genes: (!all_genes).then(|| Arc::new(genes.clone())),
                n_genes: config.n_genes(),
            };
            let heads = (
                &self.px_scale,
                likelihood.has_dropout().then_some(&self.px_dropout),
            );
            return ops::head_log_prob(observed(), columns, h, heads, log_library, theta);
        }
        let columns = |layer: &Linear, h: Tensor<2>| match &idx {
            None => layer.forward(h),
            Some(idx) => {
                let w = layer.weight.val().select(1, idx.clone());
                let out = h.matmul(w);
                match &layer.bias {
                    Some(b) => out.add(b.val().select(0, idx.clone()).unsqueeze_dim(0)),
                    None => out,
                }
            }
        };
        // Eq. 5: softmax restricted to the dataset's genes = ρ_g / Σ_{g′ ∈ G′} ρ_g′.
        let scale_logits = columns(&self.px_scale, h.clone());
        let dropout = likelihood
            .has_dropout()
            .then(|| columns(&self.px_dropout, h));
        if paths.host {
            return ops::softmax_log_prob(observed(), scale_logits, log_library, theta, dropout);
        }
        let mu = softmax(scale_logits, 1).mul(log_library.exp());
        let x = x.expect("the counts as a tensor off the host kernels");
        likelihood
            .log_prob(x, mu, theta, dropout)
            .expect("theta and dropout logits are supplied where the likelihood needs them")
            .sum_dim(1)
    }

    /// q(z | x, s) of the forward pass, from either form of the input.
    fn encode_input(
        &self,
        m: usize,
        input: &EncoderInput,
        mut rng: Option<&mut ModelRng>,
    ) -> (Tensor<2>, Tensor<2>) {
        let h = self.private[m].forward_input(input, rng.as_deref_mut());
        let h = self.shared.forward(h, rng);
        let var = self.z_log_var.forward(h.clone()).exp().add_scalar(VAR_EPS);
        (self.z_mean.forward(h), var)
    }
}

/// The decoder side of one minibatch's pass: the last decoder features, ln ℓ and the counts
/// (as a tensor off the host kernels, on the host on them).
struct Decoded {
    h: Tensor<2>,
    log_library: Tensor<2>,
    x: Option<Tensor<2>>,
    x_host: Vec<f32>,
}

/// Indices as an Int tensor on `device`.
pub(crate) fn index_tensor(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamId;
    use rand::SeedableRng;

    /// Inverted dropout on the training device: about (1 − p) of the entries survive, scaled by
    /// 1 / (1 − p), the rest are 0; on the inference device the block is deterministic.
    #[test]
    #[allow(deprecated)] // burn-ndarray is the reference CPU backend of the tests.
    fn dropout_keeps_the_expected_fraction_scaled() {
        let device = Device::ndarray().autodiff();
        let mut rng = ModelRng::seed_from_u64(3);
        let block = FcBlock::new(4, 64, 0.2, &mut rng, &device);
        let x = Tensor::<2>::from_data(
            TensorData::new(
                (0..512 * 4)
                    .map(|i| (i % 7) as f32 - 3.0)
                    .collect::<Vec<_>>(),
                [512, 4],
            ),
            &device,
        );
        let plain: Vec<f32> = relu(block.norm.forward(block.linear.forward(x.clone())))
            .into_data()
            .to_vec()
            .unwrap();
        let dropped: Vec<f32> = block
            .forward(x, Some(&mut rng))
            .into_data()
            .to_vec()
            .unwrap();
        let (mut kept, mut positive) = (0usize, 0usize);
        for (p, d) in plain.iter().zip(&dropped) {
            if *p > 0.0 {
                positive += 1;
                if *d != 0.0 {
                    kept += 1;
                    assert!(
                        (d / p - 1.25).abs() < 1e-5,
                        "kept entries are scaled by 1/0.8"
                    );
                }
            } else {
                assert_eq!(*d, 0.0);
            }
        }
        let fraction = kept as f64 / positive as f64;
        // ~16,000 positive entries: the kept fraction is 0.8 ± 0.01 (3 standard deviations).
        assert!((fraction - 0.8).abs() < 0.01, "kept fraction {fraction}");
    }

    /// The CPU operations of [`crate::ops`] — the likelihood kernel alone, and with the sparse
    /// encoder input layers and host decoder heads — give the loss and every parameter
    /// gradient of burn's tensor ops end to end (measured: ≤ 5e-6 relative): a ZINB dataset
    /// over all genes with a latent library, and an NB dataset on a gene subset with the
    /// observed library.
    #[test]
    #[allow(deprecated)] // burn-ndarray is the reference CPU backend of the tests.
    fn host_path_matches_tensor_path() {
        use crate::config::DatasetSpec;
        use gimvi_likelihoods::CountLikelihood;
        let device = Device::ndarray().autodiff();
        let g = 1500;
        let genes: Vec<String> = (0..g).map(|i| format!("g{i}")).collect();
        let subset: Vec<usize> = (0..g).filter(|i| i % 7 == 2).collect();
        let sc = DatasetSpec {
            name: "sc".into(),
            genes: genes.clone(),
            gene_index: (0..g).collect(),
            likelihood: CountLikelihood::Zinb,
            library: LibraryModel::Latent {
                log_mean: 5.0,
                log_var: 0.3,
            },
        };
        let sp = DatasetSpec {
            name: "sp".into(),
            genes: subset.iter().map(|&i| genes[i].clone()).collect(),
            gene_index: subset.clone(),
            likelihood: CountLikelihood::Nb,
            library: LibraryModel::Observed,
        };
        let config = ModelConfig::new(genes, vec![sc, sp]);
        let module = GimviModule::new(&config, 11, &device).unwrap();
        for (m, cols) in [(0usize, g), (1, subset.len())] {
            let rows = 24;
            let x: Vec<f32> = (0..rows * cols)
                .map(|i| {
                    if (i * 7919) % 10 < 7 {
                        0.0
                    } else {
                        ((i * 31) % 9) as f32
                    }
                })
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(x, [rows, cols]), &device);
            let run = |host: bool, wide: bool| {
                let mut rng = ModelRng::seed_from_u64(5);
                let paths = Paths { host, wide };
                let out = module.forward_with(&config, m, x.clone(), Some(&mut rng), paths);
                let loss = out
                    .reconstruction
                    .sum()
                    .add(out.kl.sum())
                    .div_scalar(rows as f64);
                let value: f32 = host_vec(loss.clone().reshape([1]))[0];
                let grads = loss.backward();
                let mut params: Vec<(ParamId, Vec<f32>)> = Vec::new();
                let mut matrix = |p: &Param<Tensor<2>>| {
                    let v = p.val().grad(&grads).map(host_vec);
                    params.push((p.id, v.expect("every weight has a gradient")));
                };
                matrix(&module.private[m].linear.weight);
                matrix(&module.shared.linear.weight);
                matrix(&module.z_mean.weight);
                matrix(&module.px_scale.weight);
                if m == 0 {
                    matrix(&module.px_dropout.weight);
                    matrix(&module.library[0].as_ref().unwrap().block.linear.weight);
                }
                matrix(&module.log_theta);
                let mut vector = |p: &Param<Tensor<1>>| {
                    let v = p.val().grad(&grads).map(host_vec);
                    params.push((p.id, v.expect("every bias has a gradient")));
                };
                vector(module.private[m].linear.bias.as_ref().unwrap());
                vector(module.px_scale.bias.as_ref().unwrap());
                if m == 0 {
                    vector(module.px_dropout.bias.as_ref().unwrap());
                }
                (value, params)
            };
            // The reference: burn's tensor ops end to end (no host kernel at all).
            let (v_tensor, g_tensor) = run(false, false);
            for (label, (v_host, g_host)) in [
                ("fused likelihood", run(true, false)),
                ("host path", run(true, true)),
            ] {
                assert!(
                    ((v_tensor - v_host) / v_tensor).abs() < 1e-5,
                    "dataset {m}, {label}: loss {v_tensor} vs {v_host}"
                );
                for ((id, a), (_, b)) in g_tensor.iter().zip(&g_host) {
                    assert_eq!(a.len(), b.len());
                    let mut scale = a.iter().fold(0f32, |s, v| s.max(v.abs()));
                    if *id == module.private[m].linear.bias.as_ref().unwrap().id {
                        // This bias feeds BatchNorm, so its exact gradient is 0 and every path
                        // gives round-off: measured against its layer's weight gradient.
                        scale = g_tensor[0].1.iter().fold(scale, |s, v| s.max(v.abs()));
                    }
                    let diff = a.iter().zip(b).fold(0f32, |s, (x, y)| s.max((x - y).abs()));
                    assert!(
                        diff / scale < 1e-4,
                        "dataset {m}, {label}, parameter {id}: max |Δ| {diff} vs max |g| {scale}"
                    );
                }
            }
        }
    }
}
