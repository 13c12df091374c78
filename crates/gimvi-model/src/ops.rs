//! The CPU fast paths of the forward pass as burn operations with hand-written backward passes
//! (burn's backend-extension mechanism).
//!
//! [`crate::module`] is the one definition of the networks and the ELBO. Three of its pieces
//! are slow as chains of burn operations on a CPU backend, so on CPU devices
//! ([`gimvi_likelihoods::device::host_kernels`]) each runs as one custom operation whose
//! forward is a host kernel and whose backward is written by hand:
//!
//! * [`softmax_log_prob`]: Σ_g ln p(x_ng | μ_ng = ℓ_n softmax(l_n)_g, θ_g, π_ng) per cell
//!   (Lopez et al. 2019, Eq. 3/6 with the renormalised ρ′ of Eq. 5), from the decoder's logits;
//!   the kernel ([`gimvi_likelihoods::kernels::softmax_value_and_grad`]) computes the value and
//!   every derivative in one pass;
//! * [`head_log_prob`]: the same from the last decoder features h, with the ρ and dropout heads
//!   l = h W + b evaluated on the host over the dataset's genes only — at transcriptome scale a
//!   `[128, 20,000]` product forward and two backward that burn would run as separate tensors;
//! * [`sparse_matmul`]: an encoder input layer's X W on the non-zero entries of ln(1 + x)
//!   ([`SparseRows`]; ~95 % of a UMI minibatch is zero), with ∂W = Xᵀ ∂Y backward.
//!
//! Autodiff sees each as one node: the gradients reach the parameters through burn's own
//! graph, so a trainer needs nothing but `backward()`. Off the CPU backends [`crate::module`]
//! runs its tensor forms instead; both are checked against each other
//! (`host_path_matches_tensor_path` in `module.rs`).

// burn-ndarray is deprecated upstream in favour of burn-flex but remains a supported (and the
// tests' reference) CPU backend of gimvi.
#![allow(deprecated)]

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
#[cfg(feature = "flex")]
use burn::backend::Flex;
#[cfg(feature = "ndarray")]
use burn::backend::NdArray;
use burn::backend::{
    backend_extension, Autodiff, Backend, Dispatch, ExtensionType, TensorMetadata,
};
use burn::nn::Linear;
use burn::tensor::{read_sync, Tensor, TensorData};
use gimvi_likelihoods::kernels::{softmax_value_and_grad, SoftmaxValueAndGrad};
use gimvi_likelihoods::CountLikelihood;

use crate::host::{dense_matmul, head_param_grads, matmul_t, HeadGrad, SparseRows};

/// The observed side of a likelihood operation: the observation model and the minibatch's
/// counts on the host (row-major `rows × cols`, the dataset's genes).
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// The dataset's likelihood.
    pub likelihood: CountLikelihood,
    /// The counts.
    pub x: Arc<Vec<f32>>,
}

/// The columns of the decoder heads a dataset decodes: `genes` of the model's `n_genes`
/// (`None`: all of them, in order).
#[derive(Debug, Clone)]
pub(crate) struct HeadColumns {
    /// Indices into the model's genes.
    pub genes: Option<Arc<Vec<usize>>>,
    /// The model's gene count (the heads' width).
    pub n_genes: usize,
}

impl HeadColumns {
    fn width(&self) -> usize {
        self.genes.as_ref().map_or(self.n_genes, |g| g.len())
    }
}

/// The tensors of [`HostOps::head_log_prob`]. θ and the dropout head are unused placeholders
/// (`[1, 1]` zeros) for likelihoods without them.
#[derive(ExtensionType)]
pub(crate) struct HeadInputs<B: Backend> {
    /// Last decoder features h, `[rows, k]`.
    pub h: FloatTensor<B>,
    /// ρ head weight W, `[k, n_genes]`.
    pub weight: FloatTensor<B>,
    /// ρ head bias b, `[n_genes]`.
    pub bias: FloatTensor<B>,
    /// Dropout head weight, `[k, n_genes]`.
    pub dropout_weight: FloatTensor<B>,
    /// Dropout head bias, `[n_genes]`.
    pub dropout_bias: FloatTensor<B>,
    /// ln ℓ per cell, `[rows, 1]`.
    pub log_library: FloatTensor<B>,
    /// θ over the dataset's genes, `[1, cols]`.
    pub theta: FloatTensor<B>,
}

/// The custom operations (see the module docs); implemented for the CPU backends and for
/// autodiff over them. Never called on other backends.
#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub(crate) trait HostOps: Backend {
    /// Σ_g ln p per cell, `[rows, 1]`, with μ = ℓ softmax(`logits`) (`[rows, cols]`),
    /// ln ℓ = `log_library` (`[rows, 1]`), θ = `theta` (`[1, cols]`) and dropout logits
    /// `dropout` (`[rows, cols]`); θ and `dropout` are ignored where the likelihood has none.
    fn softmax_log_prob(
        logits: FloatTensor<Self>,
        log_library: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        dropout: FloatTensor<Self>,
        observed: Observed,
    ) -> FloatTensor<Self>;

    /// [`HostOps::softmax_log_prob`] with the logits l = h W + b (and dropout logits
    /// h W_π + b_π) over the columns `columns` computed here.
    fn head_log_prob(
        #[extension_type] inputs: HeadInputs<Self>,
        observed: Observed,
        columns: HeadColumns,
    ) -> FloatTensor<Self>;

    /// X W for the sparse rows `x` (a constant) and the weight `weight` (`[x.cols(), d_out]`):
    /// `[x.rows(), d_out]`.
    fn sparse_matmul(weight: FloatTensor<Self>, x: Arc<SparseRows>) -> FloatTensor<Self>;
}

/// A primitive's values on the host, f32 row-major.
fn to_host<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    read_sync(B::float_into_data(t))
        .expect("a CPU tensor is readable")
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("an f32 tensor")
}

/// Host values as a primitive of shape `dims` on `device`.
fn from_host<B: Backend>(v: Vec<f32>, dims: &[usize], device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(v, dims.to_vec()), device)
}

/// The forward kernel of [`HostOps::softmax_log_prob`]: the per-cell values and every
/// derivative.
fn softmax_forward<B: Backend>(
    logits: FloatTensor<B>,
    log_library: FloatTensor<B>,
    theta: FloatTensor<B>,
    dropout: FloatTensor<B>,
    observed: &Observed,
) -> SoftmaxValueAndGrad {
    let cols = logits.shape().dims::<2>()[1];
    let likelihood = observed.likelihood;
    let theta = if likelihood.has_dispersion() {
        to_host::<B>(theta)
    } else {
        Vec::new()
    };
    let dropout = if likelihood.has_dropout() {
        to_host::<B>(dropout)
    } else {
        Vec::new()
    };
    softmax_value_and_grad(
        likelihood,
        cols,
        &observed.x,
        &to_host::<B>(logits),
        &to_host::<B>(log_library),
        &theta,
        &dropout,
    )
}

/// What the backward pass of a head operation needs, computed by its forward kernel.
#[derive(Debug)]
struct HeadState {
    /// The likelihood's value and derivatives with respect to the logits.
    sg: SoftmaxValueAndGrad,
    /// h on the host, `[rows, k]`.
    h: Vec<f32>,
    /// ∂ Σ_g ln p / ∂h, `[rows, k]`.
    d_h: Vec<f32>,
    k: usize,
    columns: HeadColumns,
}

/// The forward kernel of [`HostOps::head_log_prob`].
fn head_forward<B: Backend>(
    inputs: HeadInputs<B>,
    observed: &Observed,
    columns: HeadColumns,
) -> HeadState {
    let [rows, k] = inputs.h.shape().dims::<2>();
    let cols = columns.width();
    let n_genes = columns.n_genes;
    let likelihood = observed.likelihood;
    // A head's weights (k × cols) and bias over the decoded columns.
    let head = |w: FloatTensor<B>, b: FloatTensor<B>| -> (Vec<f32>, Vec<f32>) {
        let (w, b) = (to_host::<B>(w), to_host::<B>(b));
        match &columns.genes {
            None => (w, b),
            Some(genes) => {
                let mut ws = Vec::with_capacity(k * cols);
                for j in 0..k {
                    ws.extend(genes.iter().map(|&g| w[j * n_genes + g]));
                }
                (ws, genes.iter().map(|&g| b[g]).collect())
            }
        }
    };
    let h = to_host::<B>(inputs.h);
    let scale = head(inputs.weight, inputs.bias);
    let dropout = likelihood
        .has_dropout()
        .then(|| head(inputs.dropout_weight, inputs.dropout_bias));
    let logits_of = |(w, b): &(Vec<f32>, Vec<f32>)| dense_matmul(&h, w, b, rows, k, cols);
    let scale_logits = logits_of(&scale);
    let dropout_logits = dropout.as_ref().map(&logits_of).unwrap_or_default();
    let theta = if likelihood.has_dispersion() {
        to_host::<B>(inputs.theta)
    } else {
        Vec::new()
    };
    let sg = softmax_value_and_grad(
        likelihood,
        cols,
        &observed.x,
        &scale_logits,
        &to_host::<B>(inputs.log_library),
        &theta,
        &dropout_logits,
    );
    // ∂ Σ_g ln p / ∂h = ∂l Wᵀ (+ ∂π W_πᵀ).
    let mut d_h = matmul_t(&sg.d_logits, &scale.0, rows, k, cols);
    if let Some((w, _)) = &dropout {
        let d = matmul_t(&sg.d_dropout, w, rows, k, cols);
        for (a, b) in d_h.iter_mut().zip(d) {
            *a += b;
        }
    }
    HeadState {
        sg,
        h,
        d_h,
        k,
        columns,
    }
}

/// The per-cell values of a kernel as a `[rows, 1]` primitive.
fn row_values<B: Backend>(sg: &SoftmaxValueAndGrad, device: &B::Device) -> FloatTensor<B> {
    let v: Vec<f32> = sg.row_values.iter().map(|&v| v as f32).collect();
    let rows = v.len();
    from_host::<B>(v, &[rows, 1], device)
}

/// Each row of the row-major `rows × width` `d` scaled by the upstream gradient of its cell.
fn scale_rows(d: &[f32], g: &[f32], width: usize) -> Vec<f32> {
    let mut out = d.to_vec();
    for (row, &s) in out.chunks_mut(width.max(1)).zip(g) {
        row.iter_mut().for_each(|v| *v *= s);
    }
    out
}

/// θ's gradient from the kernel's column sums Σ_n ∂_θ ln p_ng: θ is one value per gene shared
/// by every cell, and the loss weighs every cell alike (a mean over the minibatch), so the
/// upstream gradient g_n is the same for all rows and ∂θ_g = Σ_n g_n · (Σ_n ∂_θ,ng / rows) —
/// evaluated in that order, as autodiff evaluated it when θ's term was broadcast over the
/// rows.
fn theta_grad(column_sums: &[f64], g: &[f32]) -> Vec<f32> {
    let rows = g.len().max(1);
    debug_assert!(
        g.iter()
            .all(|&v| (v - g[0]).abs() <= 1e-6 * g[0].abs().max(1e-30)),
        "the likelihood operations assume the same upstream gradient for every cell"
    );
    let total: f32 = g.iter().sum();
    column_sums
        .iter()
        .map(|&v| total * (v / rows as f64) as f32)
        .collect()
}

#[cfg(feature = "ndarray")]
impl HostOps for NdArray {
    fn softmax_log_prob(
        logits: FloatTensor<Self>,
        log_library: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        dropout: FloatTensor<Self>,
        observed: Observed,
    ) -> FloatTensor<Self> {
        plain_softmax::<Self>(logits, log_library, theta, dropout, &observed)
    }

    fn head_log_prob(
        inputs: HeadInputs<Self>,
        observed: Observed,
        columns: HeadColumns,
    ) -> FloatTensor<Self> {
        plain_head::<Self>(inputs, &observed, columns)
    }

    fn sparse_matmul(weight: FloatTensor<Self>, x: Arc<SparseRows>) -> FloatTensor<Self> {
        plain_sparse::<Self>(weight, &x)
    }
}

#[cfg(feature = "flex")]
impl HostOps for Flex {
    fn softmax_log_prob(
        logits: FloatTensor<Self>,
        log_library: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        dropout: FloatTensor<Self>,
        observed: Observed,
    ) -> FloatTensor<Self> {
        plain_softmax::<Self>(logits, log_library, theta, dropout, &observed)
    }

    fn head_log_prob(
        inputs: HeadInputs<Self>,
        observed: Observed,
        columns: HeadColumns,
    ) -> FloatTensor<Self> {
        plain_head::<Self>(inputs, &observed, columns)
    }

    fn sparse_matmul(weight: FloatTensor<Self>, x: Arc<SparseRows>) -> FloatTensor<Self> {
        plain_sparse::<Self>(weight, &x)
    }
}

/// [`HostOps::softmax_log_prob`] without autodiff.
fn plain_softmax<B: Backend>(
    logits: FloatTensor<B>,
    log_library: FloatTensor<B>,
    theta: FloatTensor<B>,
    dropout: FloatTensor<B>,
    observed: &Observed,
) -> FloatTensor<B> {
    let device = logits.device();
    let sg = softmax_forward::<B>(logits, log_library, theta, dropout, observed);
    row_values::<B>(&sg, &device)
}

/// [`HostOps::head_log_prob`] without autodiff.
fn plain_head<B: Backend>(
    inputs: HeadInputs<B>,
    observed: &Observed,
    columns: HeadColumns,
) -> FloatTensor<B> {
    let device = inputs.h.device();
    let state = head_forward::<B>(inputs, observed, columns);
    row_values::<B>(&state.sg, &device)
}

/// [`HostOps::sparse_matmul`] without autodiff.
fn plain_sparse<B: Backend>(weight: FloatTensor<B>, x: &SparseRows) -> FloatTensor<B> {
    let device = weight.device();
    let d_out = weight.shape().dims::<2>()[1];
    let y = x.matmul(&to_host::<B>(weight), d_out);
    from_host::<B>(y, &[x.rows(), d_out], &device)
}

/// Backward of [`HostOps::softmax_log_prob`]; parents: logits, ln ℓ, θ, dropout logits.
#[derive(Debug)]
struct SoftmaxBackward;

impl<B: Backend> Backward<B, 4> for SoftmaxBackward {
    type State = Arc<SoftmaxValueAndGrad>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits, log_library, theta, dropout] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let device = g.device();
        let g = to_host::<B>(g);
        let sg = &ops.state;
        let rows = g.len();
        let cols = sg.d_logits.len() / rows.max(1);
        if let Some(node) = logits {
            let d = scale_rows(&sg.d_logits, &g, cols);
            grads.register::<B>(node.id, from_host::<B>(d, &[rows, cols], &device));
        }
        if let Some(node) = log_library {
            let d = scale_rows(&sg.d_log_library, &g, 1);
            grads.register::<B>(node.id, from_host::<B>(d, &[rows, 1], &device));
        }
        if let (Some(node), false) = (theta, sg.d_theta_sum.is_empty()) {
            let d = theta_grad(&sg.d_theta_sum, &g);
            grads.register::<B>(node.id, from_host::<B>(d, &[1, cols], &device));
        }
        if let (Some(node), false) = (dropout, sg.d_dropout.is_empty()) {
            let d = scale_rows(&sg.d_dropout, &g, cols);
            grads.register::<B>(node.id, from_host::<B>(d, &[rows, cols], &device));
        }
    }
}

/// Backward of [`HostOps::head_log_prob`]; parents in the order of [`HeadInputs`].
#[derive(Debug)]
struct HeadBackward;

impl<B: Backend> Backward<B, 7> for HeadBackward {
    type State = Arc<HeadState>;

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [h, weight, bias, dropout_weight, dropout_bias, log_library, theta] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let device = g.device();
        let g = to_host::<B>(g);
        let s = &ops.state;
        let (rows, k, cols) = (g.len(), s.k, s.columns.width());
        let n_genes = s.columns.n_genes;
        if let Some(node) = h {
            let d = scale_rows(&s.d_h, &g, k);
            grads.register::<B>(node.id, from_host::<B>(d, &[rows, k], &device));
        }
        let heads = [
            (weight, bias, &s.sg.d_logits),
            (dropout_weight, dropout_bias, &s.sg.d_dropout),
        ];
        for (w_node, b_node, d) in heads {
            if d.is_empty() || (w_node.is_none() && b_node.is_none()) {
                continue;
            }
            let (dw, db) = head_param_grads(&HeadGrad {
                h: &s.h,
                d_o: &g,
                d,
                k,
                genes: s.columns.genes.as_deref().map(Vec::as_slice),
                n_genes,
            });
            if let Some(node) = w_node {
                grads.register::<B>(node.id, from_host::<B>(dw, &[k, n_genes], &device));
            }
            if let Some(node) = b_node {
                grads.register::<B>(node.id, from_host::<B>(db, &[n_genes], &device));
            }
        }
        if let Some(node) = log_library {
            let d = scale_rows(&s.sg.d_log_library, &g, 1);
            grads.register::<B>(node.id, from_host::<B>(d, &[rows, 1], &device));
        }
        if let (Some(node), false) = (theta, s.sg.d_theta_sum.is_empty()) {
            let d = theta_grad(&s.sg.d_theta_sum, &g);
            grads.register::<B>(node.id, from_host::<B>(d, &[1, cols], &device));
        }
    }
}

/// Backward of [`HostOps::sparse_matmul`]: ∂W = Xᵀ ∂Y.
#[derive(Debug)]
struct SparseBackward;

impl<B: Backend> Backward<B, 1> for SparseBackward {
    type State = Arc<SparseRows>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [weight] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let Some(node) = weight else {
            return;
        };
        let device = g.device();
        let d_out = g.shape().dims::<2>()[1];
        let x = &ops.state;
        let dw = x.t_matmul(&to_host::<B>(g), d_out);
        grads.register::<B>(node.id, from_host::<B>(dw, &[x.cols(), d_out], &device));
    }
}

impl<B: HostOps, C: CheckpointStrategy> HostOps for Autodiff<B, C> {
    fn softmax_log_prob(
        logits: FloatTensor<Self>,
        log_library: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        dropout: FloatTensor<Self>,
        observed: Observed,
    ) -> FloatTensor<Self> {
        let (logits, n_logits) = logits.into_parts();
        let (log_library, n_library) = log_library.into_parts();
        let (theta, n_theta) = theta.into_parts();
        let (dropout, n_dropout) = dropout.into_parts();
        let device = logits.device();
        let sg = softmax_forward::<B>(logits, log_library, theta, dropout, &observed);
        let out = row_values::<B>(&sg, &device);
        match SoftmaxBackward
            .prepare::<C>([n_logits, n_library, n_theta, n_dropout])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(Arc::new(sg), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn head_log_prob(
        inputs: HeadInputs<Self>,
        observed: Observed,
        columns: HeadColumns,
    ) -> FloatTensor<Self> {
        let (h, n_h) = inputs.h.into_parts();
        let (weight, n_w) = inputs.weight.into_parts();
        let (bias, n_b) = inputs.bias.into_parts();
        let (dropout_weight, n_dw) = inputs.dropout_weight.into_parts();
        let (dropout_bias, n_db) = inputs.dropout_bias.into_parts();
        let (log_library, n_l) = inputs.log_library.into_parts();
        let (theta, n_t) = inputs.theta.into_parts();
        let device = h.device();
        let state = head_forward::<B>(
            HeadInputs {
                h,
                weight,
                bias,
                dropout_weight,
                dropout_bias,
                log_library,
                theta,
            },
            &observed,
            columns,
        );
        let out = row_values::<B>(&state.sg, &device);
        match HeadBackward
            .prepare::<C>([n_h, n_w, n_b, n_dw, n_db, n_l, n_t])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(Arc::new(state), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn sparse_matmul(weight: FloatTensor<Self>, x: Arc<SparseRows>) -> FloatTensor<Self> {
        let (weight, node) = weight.into_parts();
        let out = plain_sparse::<B>(weight, &x);
        match SparseBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(x, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// A `[1, 1]` zero placeholder for an input a likelihood does not have.
fn placeholder<const D: usize>(device: &burn::tensor::Device) -> Tensor<D> {
    Tensor::zeros([1; D], device)
}

/// [`HostOps::softmax_log_prob`] on high-level tensors (CPU devices only).
pub(crate) fn softmax_log_prob(
    observed: Observed,
    logits: Tensor<2>,
    log_library: Tensor<2>,
    theta: Option<Tensor<2>>,
    dropout: Option<Tensor<2>>,
) -> Tensor<2> {
    let device = logits.device();
    let out = <Dispatch as HostOps>::softmax_log_prob(
        logits.into_dispatch(),
        log_library.into_dispatch(),
        theta
            .unwrap_or_else(|| placeholder(&device))
            .into_dispatch(),
        dropout
            .unwrap_or_else(|| placeholder(&device))
            .into_dispatch(),
        observed,
    );
    Tensor::from_dispatch(out)
}

/// [`HostOps::head_log_prob`] on high-level tensors: the heads are `scale` (ρ) and, for
/// zero-inflated likelihoods, `dropout` (CPU devices only).
pub(crate) fn head_log_prob(
    observed: Observed,
    columns: HeadColumns,
    h: Tensor<2>,
    (scale, dropout): (&Linear, Option<&Linear>),
    log_library: Tensor<2>,
    theta: Option<Tensor<2>>,
) -> Tensor<2> {
    let device = h.device();
    let bias = |l: &Linear| match &l.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([columns.n_genes], &device),
    };
    let (dropout_weight, dropout_bias) = match dropout {
        Some(l) => (l.weight.val(), bias(l)),
        None => (placeholder::<2>(&device), placeholder::<1>(&device)),
    };
    let inputs = HeadInputs::<Dispatch> {
        h: h.into_dispatch(),
        weight: scale.weight.val().into_dispatch(),
        bias: bias(scale).into_dispatch(),
        dropout_weight: dropout_weight.into_dispatch(),
        dropout_bias: dropout_bias.into_dispatch(),
        log_library: log_library.into_dispatch(),
        theta: theta
            .unwrap_or_else(|| placeholder(&device))
            .into_dispatch(),
    };
    Tensor::from_dispatch(<Dispatch as HostOps>::head_log_prob(
        inputs, observed, columns,
    ))
}

/// [`HostOps::sparse_matmul`] on high-level tensors (CPU devices only).
pub(crate) fn sparse_matmul(weight: Tensor<2>, x: Arc<SparseRows>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as HostOps>::sparse_matmul(
        weight.into_dispatch(),
        x,
    ))
}
