//! One training step of a gimVI model, behind one trait with two implementations.
//!
//! A step takes one minibatch of every dataset and computes the generator objective of the
//! trainer (Lopez et al. 2019, Eq. 8–9 summed over the datasets, plus κ times the adversarial
//! "fool" term),
//!
//! L_gen = Σ_m Σ_{i∈B_m} (rec_i + β KL_i) / Σ_m |B_m| + κ · L_fool(z),
//!
//! with its gradient with respect to every parameter of the [`GimviModule`], and then the
//! classifier's own objective κ · CE(classifier(z′), dataset) with its gradient. The optimiser
//! lives in the trainer; a step only computes.
//!
//! [`TrainStep`] has two implementations, chosen in one place ([`select`]):
//!
//! * the **graph step**: the module's forward pass ([`GimviModule::forward_rows`]) and the
//!   classifier's losses as burn tensors, differentiated by burn's autodiff — every backend,
//!   every configuration (on CPU backends its slow pieces are custom operations,
//!   `crate::ops`);
//! * the **host step**: the same step computed in plain loops on the host, forward and
//!   backward (`crate::hoststep`), for CPU backends when every dataset is narrower than
//!   [`crate::HOST_PATH_MIN_GENES`] genes: at the paper's scale a step is a few MFLOP over
//!   ~600 tensor operations and burn's per-operation cost dominates, so this is about twice as
//!   fast (`docs/performance.md`). It draws its random numbers in the graph step's order and
//!   gives the same step up to float summation order (`host_step_matches_tensor_step`); the
//!   graph step is the definition.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use gimvi_data::CsrMatrix;
use gimvi_likelihoods::device::host_vec;

use crate::config::ModelConfig;
use crate::hoststep::ParamGrad;
use crate::module::{reparameterise, Classifier, GimviModule, ModelRng};

/// One dataset's minibatch: rows of its count matrix.
#[derive(Debug, Clone, Copy)]
pub struct Minibatch<'a> {
    /// The dataset's counts (cells × its genes).
    pub counts: &'a CsrMatrix,
    /// The rows of this minibatch.
    pub rows: &'a [usize],
}

/// Sampled latent codes of a step's cells, datasets in order, for the classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentSample {
    /// z, row-major `[cells, n_latent]`.
    pub z: Vec<f32>,
    /// The dataset of each row.
    pub labels: Vec<usize>,
}

/// The generator part of a step.
#[derive(Debug)]
pub struct GeneratorStep {
    /// Mean over the step's cells of −ln p(x | z, ℓ).
    pub reconstruction: f64,
    /// Mean over the step's cells of the KL terms (unweighted by β).
    pub kl: f64,
    /// The "fool" loss (unweighted by κ) when a classifier took part.
    pub fool: Option<f64>,
    /// Gradients of rec + β kl + κ fool with respect to the module's parameters.
    pub grads: GradientsParams,
    /// The z the objective used, for the classifier's step.
    pub latent: LatentSample,
}

/// The classifier part of a step.
#[derive(Debug)]
pub struct ClassifierStep {
    /// Cross-entropy of the true datasets (unweighted by κ).
    pub loss: f64,
    /// Gradients of κ times it with respect to the classifier's parameters.
    pub grads: GradientsParams,
}

/// One training step's computations (see the module docs). Implementations update the
/// BatchNorm running statistics as a training-mode pass does, and draw every random number
/// (dropout, reparameterisation) from the `rng` given, in the same order.
pub trait TrainStep {
    /// A short name for logs ("graph" or "host").
    fn name(&self) -> &'static str;

    /// Whether the module's parameters must track gradients (burn's autodiff); the host step
    /// computes its own and runs faster without the graph registration.
    fn uses_autodiff(&self) -> bool;

    /// The generator objective of one minibatch per dataset (in the model's dataset order),
    /// with the adversary `(classifier, κ)` when there is one, and its gradients.
    fn generator(
        &mut self,
        module: &GimviModule,
        adversary: Option<(&Classifier, f64)>,
        batches: &[Minibatch<'_>],
        beta: f64,
        rng: &mut ModelRng,
    ) -> GeneratorStep;

    /// A fresh training-mode pass of the (updated) encoders over the same minibatches and one
    /// reparameterised draw of z: the classifier's input when it trains on a second pass, as
    /// scvi-tools does. No gradient.
    fn encode_sample(
        &mut self,
        module: &GimviModule,
        batches: &[Minibatch<'_>],
        rng: &mut ModelRng,
    ) -> LatentSample;

    /// The classifier's objective κ · CE(classifier(z), dataset) on `latent` (a constant) and
    /// its gradients.
    fn classifier(
        &mut self,
        classifier: &Classifier,
        latent: &LatentSample,
        kappa: f64,
        rng: &mut ModelRng,
    ) -> ClassifierStep;
}

/// The step implementation for `config` on `device` — the one place that chooses: the host
/// step when `allow_host` is set, the device is a CPU backend and every dataset is narrow
/// enough; the graph step otherwise.
pub fn select(config: &ModelConfig, device: &Device, allow_host: bool) -> Box<dyn TrainStep> {
    if allow_host && GimviModule::host_step_supported(config, device) {
        Box::new(HostStep {
            config: config.clone(),
            device: device.clone(),
        })
    } else {
        Box::new(GraphStep {
            config: config.clone(),
            device: device.clone(),
        })
    }
}

/// A `[cells, d]` tensor from a host sample.
fn latent_tensor(latent: &LatentSample, device: &Device) -> Tensor<2> {
    let rows = latent.labels.len();
    let d = latent.z.len() / rows.max(1);
    Tensor::from_data(TensorData::new(latent.z.clone(), [rows, d]), device)
}

/// The value of a one-element tensor.
fn scalar(t: Tensor<1>) -> f64 {
    f64::from(host_vec(t)[0])
}

/// The step as burn tensors and autodiff.
struct GraphStep {
    config: ModelConfig,
    device: Device,
}

impl TrainStep for GraphStep {
    fn name(&self) -> &'static str {
        "graph"
    }

    fn uses_autodiff(&self) -> bool {
        true
    }

    fn generator(
        &mut self,
        module: &GimviModule,
        adversary: Option<(&Classifier, f64)>,
        batches: &[Minibatch<'_>],
        beta: f64,
        rng: &mut ModelRng,
    ) -> GeneratorStep {
        let mut rec_total: Option<Tensor<1>> = None;
        let mut kl_total: Option<Tensor<1>> = None;
        let mut zs = Vec::with_capacity(batches.len());
        let mut labels = Vec::new();
        for (m, batch) in batches.iter().enumerate() {
            let out = module.forward_rows(
                &self.config,
                m,
                batch.counts,
                batch.rows,
                &self.device,
                Some(&mut *rng),
            );
            labels.extend(std::iter::repeat_n(m, batch.rows.len()));
            zs.push(out.z);
            let rec = out.reconstruction.sum().reshape([1]);
            let kl = out.kl.sum().reshape([1]);
            rec_total = Some(match rec_total {
                Some(t) => t.add(rec),
                None => rec,
            });
            kl_total = Some(match kl_total {
                Some(t) => t.add(kl),
                None => kl,
            });
        }
        let n_cells = labels.len() as f64;
        let rec = rec_total.expect("at least one dataset").div_scalar(n_cells);
        let kl = kl_total.expect("at least one dataset").div_scalar(n_cells);
        let (reconstruction, kl_value) = (scalar(rec.clone()), scalar(kl.clone()));
        let mut loss = rec.add(kl.mul_scalar(beta));
        let z_all = Tensor::cat(zs, 0);
        let latent = LatentSample {
            z: host_vec(z_all.clone().detach()),
            labels,
        };
        let mut fool_value = None;
        if let Some((classifier, kappa)) = adversary {
            let fool = classifier.loss_fool(z_all, &latent.labels, Some(rng));
            fool_value = Some(scalar(fool.clone()));
            loss = loss.add(fool.mul_scalar(kappa));
        }
        let grads = GradientsParams::from_grads(loss.backward(), module);
        GeneratorStep {
            reconstruction,
            kl: kl_value,
            fool: fool_value,
            grads,
            latent,
        }
    }

    fn encode_sample(
        &mut self,
        module: &GimviModule,
        batches: &[Minibatch<'_>],
        rng: &mut ModelRng,
    ) -> LatentSample {
        let mut z = Vec::new();
        let mut labels = Vec::new();
        for (m, batch) in batches.iter().enumerate() {
            let (mean, var) = module.encode_rows(
                &self.config,
                m,
                batch.counts,
                batch.rows,
                &self.device,
                Some(&mut *rng),
            );
            z.extend(host_vec(reparameterise(mean, var, rng).detach()));
            labels.extend(std::iter::repeat_n(m, batch.rows.len()));
        }
        LatentSample { z, labels }
    }

    fn classifier(
        &mut self,
        classifier: &Classifier,
        latent: &LatentSample,
        kappa: f64,
        rng: &mut ModelRng,
    ) -> ClassifierStep {
        let z = latent_tensor(latent, &self.device);
        let loss = classifier
            .loss_true(z, &latent.labels, Some(rng))
            .mul_scalar(kappa);
        let value = scalar(loss.clone()) / kappa;
        ClassifierStep {
            loss: value,
            grads: GradientsParams::from_grads(loss.backward(), classifier),
        }
    }
}

/// The step on the host (`crate::hoststep`).
struct HostStep {
    config: ModelConfig,
    device: Device,
}

/// Host gradients as burn's parameter gradients.
fn gradients(grads: Vec<ParamGrad>) -> GradientsParams {
    let mut out = GradientsParams::new();
    for g in grads {
        match g {
            ParamGrad::Matrix(id, t) => out.register(id, t),
            ParamGrad::Vector(id, t) => out.register(id, t),
        }
    }
    out
}

/// A step's minibatches in the host step's form.
fn host_batches<'a>(batches: &[Minibatch<'a>]) -> Vec<(&'a CsrMatrix, &'a [usize])> {
    batches.iter().map(|b| (b.counts, b.rows)).collect()
}

impl TrainStep for HostStep {
    fn name(&self) -> &'static str {
        "host"
    }

    fn uses_autodiff(&self) -> bool {
        false
    }

    fn generator(
        &mut self,
        module: &GimviModule,
        adversary: Option<(&Classifier, f64)>,
        batches: &[Minibatch<'_>],
        beta: f64,
        rng: &mut ModelRng,
    ) -> GeneratorStep {
        let out = module.host_step(
            &self.config,
            &host_batches(batches),
            adversary,
            beta,
            rng,
            &self.device,
        );
        GeneratorStep {
            reconstruction: out.reconstruction,
            kl: out.kl,
            fool: out.fool,
            grads: gradients(out.grads),
            latent: LatentSample {
                z: out.z,
                labels: out.labels,
            },
        }
    }

    fn encode_sample(
        &mut self,
        module: &GimviModule,
        batches: &[Minibatch<'_>],
        rng: &mut ModelRng,
    ) -> LatentSample {
        let labels = batches
            .iter()
            .enumerate()
            .flat_map(|(m, b)| std::iter::repeat_n(m, b.rows.len()))
            .collect();
        LatentSample {
            z: module.host_encode_sample(&self.config, &host_batches(batches), rng),
            labels,
        }
    }

    fn classifier(
        &mut self,
        classifier: &Classifier,
        latent: &LatentSample,
        kappa: f64,
        rng: &mut ModelRng,
    ) -> ClassifierStep {
        let (loss, grads) =
            classifier.host_step(&latent.z, &latent.labels, kappa, rng, &self.device);
        ClassifierStep {
            loss,
            grads: gradients(grads),
        }
    }
}

/// Sets whether the parameters of `module` track gradients as `step` needs (see
/// [`TrainStep::uses_autodiff`]); a module that is returned to the user tracks them again.
pub fn prepare<M: Module>(module: M, step: &dyn TrainStep) -> M {
    module.set_require_grad(step.uses_autodiff())
}
