//! Training of a [`GimviModel`]: maximise the ELBOs of all datasets jointly with Adam on
//! minibatches drawn from every dataset at each step, while an adversarial classifier on z,
//! weighted by κ, pushes the datasets' latent distributions together (Lopez et al. 2019,
//! Eq. 8–9 and the adversarial term; scvi-tools' `GIMVITrainingPlan` as coded).
//!
//! Per step, with minibatches B_m of every dataset m:
//!
//! L_gen = Σ_m Σ_{i∈B_m} (rec_i + β_t KL_i) / Σ_m |B_m| + κ · L_fool(z),
//!
//! then the classifier takes a step on κ · CE(classifier(stop_grad(z′)), dataset), z′ from a
//! second stochastic pass of the updated encoders (`classifier_second_pass`). β_t rises
//! linearly from 0 over `kl_warmup_epochs` epochs; gimvi's default is 0 (β = 1 from the first
//! step), scvi-tools' is 400 with 200 epochs, so that β never reaches 1 there (see
//! [`TrainConfig::kl_warmup_epochs`]). An epoch is one pass
//! over the largest dataset; the others repeat that epoch's shuffled minibatches until it ends
//! ([`TrainConfig::cycling`], as scvi-tools).
//!
//! Differences from scvi-tools, each fixing a known defect: validation is computed every epoch
//! (scvi-tools never runs it with defaults); minibatches are near-equal splits of the shuffled
//! cells, so there is never a batch of one cell (which crashes BatchNorm there); a non-finite
//! loss stops training with
//! [`TrainError::Diverged`] naming epoch and term; early stopping restores the best weights.
//! One more difference: [`TrainConfig::decoder_learning_rate_factor`] steps the decoder's
//! parameters at twice the learning rate by default (scvi-tools: one rate; set 1 to match it),
//! which reaches a given accuracy in fewer epochs.
#![warn(missing_docs)]

use std::time::Instant;

mod adam;
mod average;

use adam::HostAdam;
use average::WeightAverage;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use gimvi_data::CsrMatrix;
use gimvi_model::module::{Classifier, GimviModule, ModelRng, ParamIds};
use gimvi_model::step::{self, GeneratorStep, Minibatch};
use gimvi_model::{GimviModel, ModelError};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Training settings. Defaults are scvi-tools' `GIMVI.train` defaults (1.4, as coded).
///
/// With the `clap` feature it is also a set of command-line options (`#[command(flatten)]`),
/// whose defaults are these: the `gimvi` tool and the examples take their training options
/// from here rather than listing them again. κ is the exception: the tool's `--kappa` also
/// takes `auto`, so it has its own option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the largest dataset (default 200; the paper's evaluation used 100).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().epochs, help = "Training epochs (passes over the largest dataset)"))]
    pub epochs: usize,
    /// Cells per dataset per step (default 128, i.e. 256 cells per step for two datasets).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().batch_size, help = "Cells per dataset per step"))]
    pub batch_size: usize,
    /// Adam learning rate (default 10⁻³).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().learning_rate, help = "Adam learning rate"))]
    pub learning_rate: f64,
    /// Factor on the learning rate of the generative network — the decoder's hidden blocks,
    /// the ρ and dropout heads and ln θ ([`GimviModule::decoder_param_ids`]); the encoders
    /// and the classifier keep `learning_rate`. Default **2** (scvi-tools has one rate, i.e.
    /// 1; set 1 to train exactly as it does). Measured with the paper's protocol, 3 seeds ×
    /// 5 folds (`docs/performance.md`, attempt 27): 2 lifts the median ρ̃ on the synthetic
    /// paper-scale pair from 0.238 to 0.338 after 10 epochs and from 0.729 to 0.807 after 100
    /// (scvi-tools: 0.301 and 0.711) — there the decoder's weights must grow several-fold and
    /// Adam moves each by at most about the learning rate per step. On the real pairs the two
    /// pull apart by pair (`docs/results.md`, "The adversarial step and scvi-tools' training
    /// schedule", κ = 5, the anchor's folds): on mSMS 1 is ahead (10 seeds, +0.009 ± 0.004 per
    /// held-out gene; +0.012 ± 0.004 with `classifier_second_pass`), on mPFC 2 (3 seeds,
    /// +0.006 ± 0.002) — together about level, so the synthetic gain decides.
    #[cfg_attr(feature = "clap", arg(long = "decoder-lr-factor", default_value_t = TrainConfig::default().decoder_learning_rate_factor, help = "Factor on the decoder's learning rate (1 trains as scvi-tools does)"))]
    pub decoder_learning_rate_factor: f64,
    /// Adam ε (default 0.01 — scvi-tools' value, much larger than Adam's usual 10⁻⁸).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().adam_epsilon, help = "Adam epsilon (scvi-tools: 0.01)"))]
    pub adam_epsilon: f64,
    /// L2 weight decay coupled into the gradient (default 10⁻⁶).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().weight_decay, help = "L2 weight decay"))]
    pub weight_decay: f64,
    /// Weight κ of the adversarial terms (default 5; 0 switches the classifier off; a model of
    /// one dataset needs 0).
    #[cfg_attr(feature = "clap", arg(skip = TrainConfig::default().kappa))]
    pub kappa: f64,
    /// Epochs of linear KL warm-up, β = epoch / warm-up (0 = no warm-up, the default).
    /// scvi-tools uses 400 with 200 training epochs, so β stays below 1 and the posterior is
    /// under-regularised; on the real pairs the full KL term from the start raised the paper
    /// Spearman by 0.015–0.086 and Pearson by up to 0.16 (docs/notes/results-2026-12.md). Set
    /// 400 to train as scvi-tools does.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().kl_warmup_epochs, help = "Epochs of linear KL warm-up (0: none)"))]
    pub kl_warmup_epochs: usize,
    /// Fraction of each dataset's cells used for training; the rest is the validation set
    /// (default 0.9). 1.0 trains on everything and skips validation.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().train_fraction, help = "Fraction of each dataset's cells trained on; the rest is the validation set"))]
    pub train_fraction: f64,
    /// Stop when the validation ELBO has not improved for this many epochs, and restore the
    /// best weights (default off, as scvi-tools; patience 45 there when switched on).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Stop when the validation ELBO has not improved for this many epochs (restores the best weights)"
        )
    )]
    pub early_stopping_patience: Option<usize>,
    /// Train the classifier on a second, fresh stochastic pass of the updated encoders (new
    /// dropout masks and ε, BatchNorm statistics updated a second time), as scvi-tools does.
    /// Default **`true`**; `false` reuses the generator step's z (one encoder pass fewer).
    /// Measured with the paper's protocol, κ = 5, the anchor's folds (`docs/results.md`,
    /// "The adversarial step and scvi-tools' training schedule"), per held-out gene over
    /// reusing z: mSMS (10 seeds) +0.002 ± 0.002 with the default decoder rate, +0.006 ± 0.002
    /// with one rate; mPFC (3 seeds) −0.002 ± 0.002 and +0.002 ± 0.001, over 10 seeds at the
    /// default rate −0.0005 ± 0.0008 — neutral; kept on because scvi-tools and the paper's
    /// code train the classifier on its own pass. Cost per epoch (idle,
    /// `docs/performance.md`): paper scale 0.069 vs 0.057 s, 10× cells 0.476 vs 0.416 s,
    /// transcriptome 1.251 vs 1.159 s. `false` was the default until 2026-11-28.
    #[cfg_attr(feature = "clap", arg(long, action = clap::ArgAction::Set, default_value_t = TrainConfig::default().classifier_second_pass, help = "Train the adversarial classifier on a second encoder pass, as scvi-tools does (true/false)"))]
    pub classifier_second_pass: bool,
    /// How a dataset with fewer minibatches than the largest is cycled within an epoch
    /// (the largest sets the epoch's length). Default [`Cycling::RepeatEpoch`], as
    /// scvi-tools; [`Cycling::Reshuffle`] was the default until 2026-11-28. Measured with the
    /// paper's protocol, κ = 5, the anchor's folds (`docs/results.md`, "scvi-tools' minibatch
    /// cycling"), per held-out gene against `Reshuffle`: mSMS +0.005 ± 0.003 (20 seeds),
    /// mPFC −0.0002 ± 0.0004 (10 seeds), synthetic pair level at 10 and 100 epochs.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().cycling, help = "How the smaller dataset is cycled within an epoch: repeat-epoch (scvi-tools) or reshuffle"))]
    pub cycling: Cycling,
    /// Run each training step on the host when the model allows it (default `true`): on CPU
    /// backends, with every dataset narrower than 1,024 genes, the forward pass, the loss and
    /// every gradient are computed by [`GimviModule::host_step`] and [`Classifier::host_step`]
    /// (and the classifier's second pass by [`GimviModule::host_encode_sample`]) instead of
    /// burn's autodiff graph — the same step up to float summation order, ~2× faster at the
    /// paper's scale (`docs/performance.md`, round 7). `false` always uses the graph.
    #[cfg_attr(feature = "clap", arg(long, action = clap::ArgAction::Set, default_value_t = TrainConfig::default().host_step, help = "Run whole steps on the host on CPU backends when every dataset is narrow (true/false; same results, faster)"))]
    pub host_step: bool,
    /// Average the model's weights over the ends of the last this-many epochs and return the
    /// average instead of the last weights (stochastic weight
    /// averaging, Izmailov et al. 2018). Default 0: the last weights, as scvi-tools. Ignored
    /// when early stopping restores the best epoch's weights. The adversarial classifier is
    /// not averaged (it is not used after training).
    #[cfg_attr(feature = "clap", arg(long = "average-epochs", default_value_t = TrainConfig::default().weight_average_epochs, help = "Average the weights over the last N epochs (0: the last weights)"))]
    pub weight_average_epochs: usize,
    /// Seed of the split, the minibatch order and every random draw on the device.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().seed, help = "Seed of the split, the minibatches and every random draw (seeded runs are identical on the CPU)"))]
    pub seed: u64,
}

/// How minibatches of a dataset with fewer cells than the largest are drawn within an epoch
/// ([`TrainConfig::cycling`]). Every step takes one minibatch from every dataset; the largest
/// dataset is passed over once per epoch, so the others run out before the epoch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cycling {
    /// Every epoch each dataset starts a fresh shuffle; a shorter dataset repeats that epoch's
    /// minibatches — the same cells, in the same order — until the epoch ends (scvi-tools'
    /// `CyclicMultiDataLoader`, whose `itertools.cycle` caches the first pass). Within an
    /// epoch some cells of the shorter dataset are therefore seen once more than others.
    RepeatEpoch,
    /// Every pass over a shorter dataset is a fresh shuffle, and its minibatches run on
    /// across epoch boundaries: every cell is seen equally often over time.
    Reshuffle,
}

impl std::fmt::Display for Cycling {
    /// The command-line name ([`std::str::FromStr`] reads it back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RepeatEpoch => "repeat-epoch",
            Self::Reshuffle => "reshuffle",
        })
    }
}

impl std::str::FromStr for Cycling {
    type Err = String;

    /// `repeat-epoch` or `reshuffle` (the names the command-line tools take).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "repeat-epoch" => Ok(Self::RepeatEpoch),
            "reshuffle" => Ok(Self::Reshuffle),
            other => Err(format!(
                "unknown cycling '{other}' (expected repeat-epoch or reshuffle)"
            )),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            batch_size: 128,
            learning_rate: 1e-3,
            decoder_learning_rate_factor: 2.0,
            adam_epsilon: 0.01,
            weight_decay: 1e-6,
            kappa: 5.0,
            kl_warmup_epochs: 0,
            train_fraction: 0.9,
            early_stopping_patience: None,
            classifier_second_pass: true,
            cycling: Cycling::RepeatEpoch,
            host_step: true,
            weight_average_epochs: 0,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every setting before any work: epochs ≥ 1, batch size ≥ 2, a training fraction
    /// in (0, 1], κ finite and ≥ 0, learning rate and decoder factor finite and > 0, Adam ε
    /// finite and > 0, weight decay finite and ≥ 0, early-stopping patience ≥ 1 when set. The
    /// error names the first bad setting and its value.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |what: &str, value: String, need: &str| {
            Err(TrainError::Config(format!(
                "{what} is {value}; it must be {need}"
            )))
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.epochs == 0 {
            return bad("epochs", "0".into(), "at least 1");
        }
        if self.batch_size < 2 {
            return bad(
                "the batch size",
                self.batch_size.to_string(),
                "at least 2 (BatchNorm needs two cells)",
            );
        }
        if !(self.train_fraction > 0.0 && self.train_fraction <= 1.0) {
            return bad(
                "the training fraction",
                self.train_fraction.to_string(),
                "in (0, 1]",
            );
        }
        if !(self.kappa.is_finite() && self.kappa >= 0.0) {
            return bad("κ", self.kappa.to_string(), "a finite number ≥ 0");
        }
        if !positive(self.learning_rate) {
            return bad(
                "the learning rate",
                self.learning_rate.to_string(),
                "a finite number > 0",
            );
        }
        if !positive(self.decoder_learning_rate_factor) {
            return bad(
                "the decoder learning-rate factor",
                self.decoder_learning_rate_factor.to_string(),
                "a finite number > 0",
            );
        }
        if !positive(self.adam_epsilon) {
            return bad(
                "Adam's ε",
                self.adam_epsilon.to_string(),
                "a finite number > 0",
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "the weight decay",
                self.weight_decay.to_string(),
                "a finite number ≥ 0",
            );
        }
        if self.early_stopping_patience == Some(0) {
            return bad("the early-stopping patience", "0".into(), "at least 1");
        }
        Ok(())
    }
}

/// One epoch's numbers (per-cell averages over the epoch's steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch number, from 0.
    pub epoch: usize,
    /// KL weight β used.
    pub beta: f64,
    /// Generator objective L_gen.
    pub loss: f64,
    /// Reconstruction part (−ln p(x | z, ℓ)) per cell.
    pub reconstruction: f64,
    /// KL part per cell (unweighted).
    pub kl: f64,
    /// Classifier cross-entropy (0 when κ = 0).
    pub classifier_loss: f64,
    /// Negative ELBO per validation cell (KL unweighted), when there is a validation set.
    pub validation_loss: Option<f64>,
    /// Wall-clock seconds of the epoch.
    pub seconds: f64,
}

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model or the input is unusable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training settings are unusable.
    #[error("invalid training settings: {0}")]
    Config(String),
    /// A loss became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}, step {step}: the {term} became {value}; lower the \
         learning rate, check the input counts, or use a likelihood that fits the data"
    )]
    Diverged {
        /// Epoch.
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// Which term.
        term: &'static str,
        /// Its value.
        value: f64,
    },
}

/// The outcome of training.
#[derive(Debug)]
pub struct TrainResult {
    /// The trained model (on the training device).
    pub model: GimviModel,
    /// The trained adversarial classifier (`None` when κ = 0).
    pub classifier: Option<Classifier>,
    /// One entry per epoch run.
    pub history: Vec<EpochLog>,
    /// Training cells of each dataset (row indices).
    pub train_cells: Vec<Vec<usize>>,
    /// Validation cells of each dataset.
    pub validation_cells: Vec<Vec<usize>>,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
}

/// Per-dataset minibatch schedule: shuffled near-equal chunks, cycled as [`Cycling`] says.
struct Batcher {
    cells: Vec<usize>,
    chunks: usize,
    cycling: Cycling,
    /// The current pass's minibatches (empty: none drawn yet this epoch or ever).
    pass: Vec<Vec<usize>>,
    /// Minibatches of `pass` already handed out.
    used: usize,
}

impl Batcher {
    fn new(cells: Vec<usize>, batch_size: usize, cycling: Cycling) -> Self {
        let chunks = cells.len().div_ceil(batch_size).max(1);
        Self {
            cells,
            chunks,
            cycling,
            pass: Vec::new(),
            used: 0,
        }
    }

    /// Called before every epoch: with [`Cycling::RepeatEpoch`] the next minibatch starts a
    /// fresh shuffle, which the rest of the epoch repeats.
    fn start_epoch(&mut self) {
        if self.cycling == Cycling::RepeatEpoch {
            self.pass.clear();
            self.used = 0;
        }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        if self.used == self.pass.len() {
            // A pass is used up: RepeatEpoch replays it (until the epoch ends), Reshuffle
            // draws a new one; both draw one when there is none yet.
            if self.pass.is_empty() || self.cycling == Cycling::Reshuffle {
                let mut perm = self.cells.clone();
                perm.shuffle(rng);
                let n = perm.len();
                // Near-equal sizes: no tiny last batch.
                self.pass = (0..self.chunks)
                    .map(|k| perm[k * n / self.chunks..(k + 1) * n / self.chunks].to_vec())
                    .collect();
            }
            self.used = 0;
        }
        self.used += 1;
        self.pass[self.used - 1].clone()
    }
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

fn split_cells(n: usize, train_fraction: f64, rng: &mut ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(rng);
    let mut n_val = ((1.0 - train_fraction) * n as f64).round() as usize;
    // Keep at least two training cells (BatchNorm needs two) and no one-cell validation set.
    n_val = n_val.min(n.saturating_sub(2));
    if n_val == 1 {
        n_val = 0;
    }
    let val = perm[..n_val].to_vec();
    let train = perm[n_val..].to_vec();
    (train, val)
}

/// Trains `model` on `data` (one count matrix per dataset, in the order of the model's
/// datasets; cells × that dataset's genes). `on_epoch` is called after every epoch (e.g. to
/// draw a progress bar or log metrics). The settings ([`TrainConfig::validate`]) and the
/// input are checked first: NaN, negative counts or a shape mismatch are refused before any
/// training step.
pub fn train(
    model: GimviModel,
    data: &[&CsrMatrix],
    config: &TrainConfig,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<TrainResult, TrainError> {
    config.validate()?;
    let n_sets = model.config.datasets.len();
    if data.len() != n_sets {
        return Err(TrainError::Config(format!(
            "the model has {n_sets} datasets but {} count matrices were given",
            data.len()
        )));
    }
    for (m, counts) in data.iter().enumerate() {
        model.check_input(m, counts)?;
        if counts.n_rows() < 2 {
            return Err(TrainError::Config(format!(
                "dataset '{}' has {} cell(s); training needs at least 2",
                model.config.datasets[m].name,
                counts.n_rows()
            )));
        }
    }
    if n_sets < 2 && config.kappa > 0.0 {
        return Err(TrainError::Config(format!(
            "κ = {} needs two datasets for the adversarial classifier; this model has {n_sets} \
             (set κ = 0 to train a single-dataset model)",
            config.kappa
        )));
    }

    let device = model.device.clone();
    let eval_device = device.clone().without_autodiff();
    // Host-side generators: `rng` for the split and minibatch order, `noise` for every draw
    // inside the networks (reparameterisation, dropout); the backend's own generator is unused.
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut noise = ModelRng::seed_from_u64(config.seed ^ 0x5eed_0f9e_1f00_0001);
    let (train_cells, validation_cells): (Vec<_>, Vec<_>) = data
        .iter()
        .map(|c| split_cells(c.n_rows(), config.train_fraction, &mut rng))
        .unzip();
    let mut batchers: Vec<Batcher> = train_cells
        .iter()
        .map(|c| Batcher::new(c.clone(), config.batch_size, config.cycling))
        .collect();
    let steps = batchers.iter().map(|b| b.chunks).max().unwrap_or(1);

    let GimviModel {
        config: model_config,
        module,
        device: model_device,
    } = model;
    let mut optim = Optimisers::new(config, &module);
    let mut classifier =
        (config.kappa > 0.0).then(|| Classifier::new(&model_config, &mut noise, &device));
    // The step implementation (graph or host), chosen in one place (gimvi_model::step).
    let mut stepper = step::select(&model_config, &device, config.host_step);
    let mut module = step::prepare(module, stepper.as_ref());
    classifier = classifier.map(|c| step::prepare(c, stepper.as_ref()));

    let mut history = Vec::with_capacity(config.epochs);
    let mut best: Option<(f64, usize, burn::store::ModuleRecord)> = None;
    let mut stopped_early = false;
    let mut average = WeightAverage::new();
    for epoch in 0..config.epochs {
        let start = Instant::now();
        let beta = if config.kl_warmup_epochs == 0 {
            1.0
        } else {
            (epoch as f64 / config.kl_warmup_epochs as f64).min(1.0)
        };
        let mut sums = EpochSums::default();
        batchers.iter_mut().for_each(Batcher::start_epoch);
        for step in 0..steps {
            let rows: Vec<Vec<usize>> = batchers.iter_mut().map(|b| b.next(&mut rng)).collect();
            let batches: Vec<Minibatch<'_>> = data
                .iter()
                .zip(&rows)
                .map(|(counts, rows)| Minibatch { counts, rows })
                .collect();
            let diverged = |term, value| TrainError::Diverged {
                epoch,
                step,
                term,
                value,
            };
            let adversary = classifier.as_ref().map(|c| (c, config.kappa));
            let out = stepper.generator(&module, adversary, &batches, beta, &mut noise);
            check_generator(&out).map_err(|(term, value)| diverged(term, value))?;
            let GeneratorStep {
                reconstruction,
                kl,
                fool,
                grads,
                latent,
            } = out;
            module = optim.step_module(module, grads);
            if let Some(c) = classifier.take() {
                // z for the classifier: a second pass of the updated encoders (scvi-tools), or
                // the generator step's z.
                let latent = if config.classifier_second_pass {
                    stepper.encode_sample(&module, &batches, &mut noise)
                } else {
                    latent
                };
                let cls = stepper.classifier(&c, &latent, config.kappa, &mut noise);
                if !cls.loss.is_finite() {
                    return Err(diverged("classifier loss", cls.loss * config.kappa));
                }
                sums.classifier += cls.loss * latent.labels.len() as f64;
                classifier = Some(optim.step_classifier(c, cls.grads));
            }
            let n_cells: usize = rows.iter().map(Vec::len).sum();
            let loss = reconstruction + beta * kl + config.kappa * fool.unwrap_or(0.0);
            sums.add(n_cells, loss, reconstruction, kl);
        }
        let validation_loss = validation_elbo(
            &module,
            &model_config,
            data,
            &validation_cells,
            &eval_device,
            config.seed.wrapping_add(epoch as u64 + 1),
        )
        .map_err(|value| TrainError::Diverged {
            epoch,
            step: steps,
            term: "validation ELBO",
            value,
        })?;
        let log = sums.log(epoch, beta, validation_loss, start.elapsed().as_secs_f64());
        on_epoch(&log);
        history.push(log);

        if let (Some(patience), Some(v)) = (config.early_stopping_patience, validation_loss) {
            let improved = best.as_ref().is_none_or(|(b, _, _)| v < *b);
            if improved {
                best = Some((v, epoch, module.valid().into_record()));
            } else if best.as_ref().is_some_and(|(_, e, _)| epoch - e >= patience) {
                stopped_early = true;
                break;
            }
        }
        if epoch + config.weight_average_epochs >= config.epochs {
            average.add(&module);
        }
    }

    if let Some((_, _, record)) = best.filter(|_| stopped_early) {
        module = module
            .try_load_record(record)
            .map_err(|e| TrainError::Model(ModelError::Internal(e.to_string())))?;
    } else if average.snapshots() > 1 {
        module = average.apply(module);
    }
    // Parameters require gradients again, as a freshly built module has them.
    let module = module.set_require_grad(true);
    let classifier = classifier.map(|c| c.set_require_grad(true));
    Ok(TrainResult {
        model: GimviModel {
            config: model_config,
            module,
            device: model_device,
        },
        classifier,
        history,
        train_cells,
        validation_cells,
        stopped_early,
    })
}

/// The first non-finite term of a generator step, as (name, value).
fn check_generator(out: &GeneratorStep) -> Result<(), (&'static str, f64)> {
    let terms = [
        ("reconstruction loss", Some(out.reconstruction)),
        ("KL divergence", Some(out.kl)),
        ("adversarial (fool) loss", out.fool),
    ];
    for (term, value) in terms {
        if let Some(value) = value.filter(|v| !v.is_finite()) {
            return Err((term, value));
        }
    }
    Ok(())
}

/// Per-cell sums over an epoch's steps.
#[derive(Debug, Default)]
struct EpochSums {
    cells: usize,
    loss: f64,
    reconstruction: f64,
    kl: f64,
    classifier: f64,
}

impl EpochSums {
    fn add(&mut self, cells: usize, loss: f64, reconstruction: f64, kl: f64) {
        let n = cells as f64;
        self.cells += cells;
        self.loss += loss * n;
        self.reconstruction += reconstruction * n;
        self.kl += kl * n;
    }

    fn log(&self, epoch: usize, beta: f64, validation_loss: Option<f64>, seconds: f64) -> EpochLog {
        let n = self.cells as f64;
        EpochLog {
            epoch,
            beta,
            loss: self.loss / n,
            reconstruction: self.reconstruction / n,
            kl: self.kl / n,
            classifier_loss: self.classifier / n,
            validation_loss,
            seconds,
        }
    }
}

/// The negative ELBO per validation cell (KL unweighted), networks in evaluation mode; `None`
/// without validation cells, `Err(value)` when it is not finite.
/// `noise_seed` seeds the posterior draws of the pass.
fn validation_elbo(
    module: &GimviModule,
    model_config: &gimvi_model::ModelConfig,
    data: &[&CsrMatrix],
    validation_cells: &[Vec<usize>],
    eval_device: &burn::tensor::Device,
    noise_seed: u64,
) -> Result<Option<f64>, f64> {
    if validation_cells.iter().all(|v| v.is_empty()) {
        return Ok(None);
    }
    let eval = module.valid();
    let mut eval_noise = ModelRng::seed_from_u64(noise_seed);
    let (mut total, mut n) = (0.0, 0usize);
    for (m, cells) in validation_cells.iter().enumerate() {
        for chunk in cells.chunks(1024) {
            let out = eval.forward_rows(
                model_config,
                m,
                data[m],
                chunk,
                eval_device,
                Some(&mut eval_noise),
            );
            total += scalar(out.reconstruction.add(out.kl).sum().reshape([1]));
            n += chunk.len();
        }
    }
    let v = total / n.max(1) as f64;
    if v.is_finite() {
        Ok(Some(v))
    } else {
        Err(v)
    }
}

/// The optimisers of a training: Adam for the module (the generative network's parameters
/// with their own instance and rate when `TrainConfig::decoder_learning_rate_factor` ≠ 1;
/// Adam's state is per parameter, so the split changes nothing but the rate) and for the
/// classifier.
struct Optimisers {
    module: ModuleOptimizer,
    classifier: ModuleOptimizer,
    decoder: Option<(ModuleOptimizer, ParamIds, f64)>,
    lr: f64,
}

impl Optimisers {
    fn new(config: &TrainConfig, module: &GimviModule) -> Self {
        let adam = || HostAdam::new(config.adam_epsilon as f32, config.weight_decay as f32).init();
        Self {
            module: adam(),
            classifier: adam(),
            decoder: (config.decoder_learning_rate_factor != 1.0).then(|| {
                (
                    adam(),
                    module.decoder_param_ids(),
                    config.learning_rate * config.decoder_learning_rate_factor,
                )
            }),
            lr: config.learning_rate,
        }
    }

    /// One step of the module with `grads`.
    fn step_module(&mut self, module: GimviModule, mut grads: GradientsParams) -> GimviModule {
        let Some((decoder_optim, ids, decoder_lr)) = &mut self.decoder else {
            return self.module.step(self.lr, module, grads);
        };
        let mut decoder_grads = GradientsParams::new();
        for &id in &ids.matrices {
            if let Some(g) = grads.remove::<2>(id) {
                decoder_grads.register(id, g);
            }
        }
        for &id in &ids.vectors {
            if let Some(g) = grads.remove::<1>(id) {
                decoder_grads.register(id, g);
            }
        }
        let module = self.module.step(self.lr, module, grads);
        decoder_optim.step(*decoder_lr, module, decoder_grads)
    }

    /// One step of the classifier with `grads`.
    fn step_classifier(&mut self, classifier: Classifier, grads: GradientsParams) -> Classifier {
        self.classifier.step(self.lr, classifier, grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One epoch of `steps` minibatches from a batcher.
    fn epoch(b: &mut Batcher, steps: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
        b.start_epoch();
        (0..steps).map(|_| b.next(rng)).collect()
    }

    /// 10 cells in batches of 4 → 3 near-equal minibatches per pass; epochs of 7 steps.
    #[test]
    fn repeat_epoch_cycles_this_epochs_pass_and_reshuffles_between_epochs() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut b = Batcher::new((0..10).collect(), 4, Cycling::RepeatEpoch);
        let first = epoch(&mut b, 7, &mut rng);
        // Each pass covers every cell once, in near-equal minibatches.
        let mut pass: Vec<usize> = first[..3].concat();
        pass.sort_unstable();
        assert_eq!(pass, (0..10).collect::<Vec<_>>());
        assert!(first[..3].iter().all(|m| m.len() == 3 || m.len() == 4));
        // The rest of the epoch repeats the first pass, same cells in the same order.
        assert_eq!(first[3..6], first[..3]);
        assert_eq!(first[6], first[0]);
        // The next epoch starts a fresh shuffle (and repeats it in turn).
        let second = epoch(&mut b, 7, &mut rng);
        assert_ne!(second[..3], first[..3]);
        assert_eq!(second[3..6], second[..3]);
    }

    #[test]
    fn reshuffle_draws_a_fresh_pass_and_runs_on_across_epochs() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut b = Batcher::new((0..10).collect(), 4, Cycling::Reshuffle);
        let first = epoch(&mut b, 7, &mut rng);
        assert_ne!(first[3..6], first[..3]);
        // Step 7 opened a third pass; the next epoch finishes it before shuffling again.
        let second = epoch(&mut b, 2, &mut rng);
        let mut third_pass: Vec<usize> = [&first[6..], &second[..]].concat().concat();
        third_pass.sort_unstable();
        assert_eq!(third_pass, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn cycling_parses_the_command_line_names() {
        assert_eq!("repeat-epoch".parse(), Ok(Cycling::RepeatEpoch));
        assert_eq!("reshuffle".parse(), Ok(Cycling::Reshuffle));
        let err = "cyclic".parse::<Cycling>().unwrap_err();
        assert!(err.contains("cyclic"), "{err}");
    }
}
