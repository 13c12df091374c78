//! The wgpu backend computes what the ndarray backend computes.
//!
//! Built only with `--features wgpu`; CI runs it on lavapipe (Mesa's Vulkan driver on the CPU):
//! `cargo test --release --features wgpu --test wgpu_backend -- --nocapture`.
//!
//! Tolerances. Both backends compute in f32, but with different kernels: Vulkan's SPIR-V
//! `exp`/`log` are only required to be within 3 ulp (absolute 2⁻²¹ for `log` near 1), and
//! reductions and matrix products sum in a different order. One f32 elementwise pass therefore
//! differs by a few 10⁻⁷ relative; the likelihoods chain ~30 transcendental operations (about
//! 30 × 3 ulp ≈ 1e-5 relative, plus cancellation in the saddle-point deviance at x ≈ μ), so
//! values are compared at 1e-4 relative with an absolute floor of 1e-4 nats. Gradients pass
//! through the same chain twice and divide by small quantities: 1e-3 relative with a floor of
//! 1e-3. A training step is one Adam update (lr 1e-3) from identical weights: the loss agrees to
//! 1e-4 relative and the latent means move by at most ~lr per step, so after one step they
//! agree to 1e-4 absolute. A short run (10 epochs, ~70 Adam steps) lets the differences
//! compound through a chaotic optimisation; there we compare what a user reads — losses to 1 %,
//! imputations to a Spearman correlation above 0.999 with the ndarray run — rather than bits.
#![cfg(feature = "wgpu")]

use std::time::Instant;

use gimvi::burn::tensor::{Device, Tensor, TensorData};
use gimvi::data::CsrMatrix;
use gimvi::likelihoods::{log_nb, log_poisson, log_zinb};
use gimvi::metrics::spearman;
use gimvi::BackendKind;
use gimvi_model::simulate::{simulate, Simulation, SimulationConfig};
use gimvi_model::{
    CountLikelihood, DatasetSpec, GimviModel, ImputeOptions, LibraryModel, ModelConfig,
};
use gimvi_trainer::{train, TrainConfig, TrainResult};

fn cpu() -> Device {
    BackendKind::NdArray.open().expect("ndarray backend")
}

fn gpu() -> Device {
    BackendKind::Wgpu
        .open()
        .expect("a wgpu adapter (in CI: lavapipe from mesa-vulkan-drivers)")
}

fn tensor(v: &[f64], device: &Device) -> Tensor<1> {
    let data: Vec<f32> = v.iter().map(|&a| a as f32).collect();
    Tensor::from_data(TensorData::new(data, [v.len()]), device)
}

fn values(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Worst relative difference |a − b| / max(|b|, floor), and the index where it occurs.
fn worst(a: &[f64], b: &[f64], floor: f64) -> (f64, usize) {
    assert_eq!(a.len(), b.len());
    let mut w = (0.0, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let e = if x.is_finite() && y.is_finite() {
            (x - y).abs() / y.abs().max(floor)
        } else {
            f64::INFINITY
        };
        if e > w.0 {
            w = (e, i);
        }
    }
    w
}

/// A grid over the regimes gimVI meets: zeros, small and huge counts, μ from 1e-3 to 1e5,
/// θ from 1e-2 to 1e4, dropout logits of both signs.
struct Grid {
    x: Vec<f64>,
    mu: Vec<f64>,
    theta: Vec<f64>,
    logit: Vec<f64>,
}

fn grid() -> Grid {
    let mut g = Grid {
        x: vec![],
        mu: vec![],
        theta: vec![],
        logit: vec![],
    };
    for &x in &[0.0, 1.0, 3.0, 17.0, 250.0, 1.0e4] {
        for &mu in &[1e-3, 0.4, 2.5, 30.0, 900.0, 1.0e5] {
            for &theta in &[1e-2, 0.7, 8.0, 1.0e4] {
                for &logit in &[-4.0, 0.0, 2.5] {
                    g.x.push(x);
                    g.mu.push(mu);
                    g.theta.push(theta);
                    g.logit.push(logit);
                }
            }
        }
    }
    g
}

/// Values and gradients (w.r.t. μ, θ, logits) of Σ ln p for one likelihood on one device.
fn likelihood_on(kind: &str, g: &Grid, device: &Device) -> [Vec<f64>; 4] {
    let device = device.clone().autodiff();
    let x = tensor(&g.x, &device);
    let mu = tensor(&g.mu, &device).require_grad();
    let theta = tensor(&g.theta, &device).require_grad();
    let logit = tensor(&g.logit, &device).require_grad();
    let lp = match kind {
        "nb" => log_nb(x, mu.clone(), theta.clone()),
        // θ and the logits do not enter; add 0 × them so every gradient exists.
        "poisson" => log_poisson(x, mu.clone())
            .add(theta.clone().mul_scalar(0.0))
            .add(logit.clone().mul_scalar(0.0)),
        _ => log_zinb(x, mu.clone(), theta.clone(), logit.clone()),
    };
    let lp = if kind == "nb" {
        lp.add(logit.clone().mul_scalar(0.0))
    } else {
        lp
    };
    let grads = lp.clone().sum().backward();
    [
        values(lp),
        values(mu.grad(&grads).expect("dμ")),
        values(theta.grad(&grads).expect("dθ")),
        values(logit.grad(&grads).expect("dπ")),
    ]
}

#[test]
fn likelihood_values_and_gradients_match_ndarray() {
    let g = grid();
    let start = Instant::now();
    for kind in ["nb", "zinb", "poisson"] {
        let want = likelihood_on(kind, &g, &cpu());
        let got = likelihood_on(kind, &g, &gpu());
        let (ev, iv) = worst(&got[0], &want[0], 1e-4);
        let grad_err: Vec<(f64, usize)> = (1..4).map(|k| worst(&got[k], &want[k], 1e-3)).collect();
        println!(
            "{kind:>7}: {} points; worst rel. diff value {ev:.2e}, dμ {:.2e}, dθ {:.2e}, dπ {:.2e}",
            g.x.len(),
            grad_err[0].0,
            grad_err[1].0,
            grad_err[2].0
        );
        assert!(
            ev <= 1e-4,
            "{kind} value at x={} μ={} θ={} π={}: wgpu {} vs ndarray {}",
            g.x[iv],
            g.mu[iv],
            g.theta[iv],
            g.logit[iv],
            got[0][iv],
            want[0][iv]
        );
        for (k, (e, i)) in grad_err.iter().enumerate() {
            assert!(
                *e <= 1e-3,
                "{kind} gradient {k} at x={} μ={} θ={} π={}: wgpu {} vs ndarray {}",
                g.x[*i],
                g.mu[*i],
                g.theta[*i],
                g.logit[*i],
                got[k + 1][*i],
                want[k + 1][*i]
            );
        }
    }
    println!(
        "likelihoods on both backends: {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

fn model_for(sim: &Simulation, device: &Device) -> GimviModel {
    let (log_mean, log_var) = gimvi_data::prepare::log_library_moments(&sim.sc_counts);
    let sc = DatasetSpec {
        name: "scRNA-seq".into(),
        genes: sim.genes.clone(),
        gene_index: (0..sim.genes.len()).collect(),
        likelihood: CountLikelihood::Zinb,
        library: LibraryModel::Latent { log_mean, log_var },
    };
    let spatial = DatasetSpec {
        name: "spatial".into(),
        genes: sim
            .spatial_genes
            .iter()
            .map(|&g| sim.genes[g].clone())
            .collect(),
        gene_index: sim.spatial_genes.clone(),
        likelihood: CountLikelihood::Poisson,
        library: LibraryModel::Observed,
    };
    let config = ModelConfig::new(sim.genes.clone(), vec![sc, spatial]).with_latent(6);
    GimviModel::new(config, &device.clone().autodiff(), 7).expect("valid configuration")
}

fn fit(sim: &Simulation, device: &Device, epochs: usize, batch_size: usize) -> TrainResult {
    let cfg = TrainConfig {
        epochs,
        batch_size,
        kappa: 5.0,
        seed: 3,
        ..TrainConfig::default()
    };
    let counts: [&CsrMatrix; 2] = [&sim.sc_counts, &sim.spatial_counts];
    train(model_for(sim, device), &counts, &cfg, |_| {}).expect("training runs")
}

fn max_abs_diff(a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn one_training_step_matches_ndarray() {
    // 120 + 100 cells, 90 % for training, batch 128: exactly one Adam step (generator and
    // classifier) per epoch.
    let sim = simulate(&SimulationConfig {
        n_sc: 120,
        n_spatial: 100,
        seed: 4,
        ..SimulationConfig::default()
    });
    let start = Instant::now();
    let cpu_run = fit(&sim, &cpu(), 1, 128);
    let gpu_run = fit(&sim, &gpu(), 1, 128);
    let (a, b) = (&gpu_run.history[0], &cpu_run.history[0]);
    let loss_rel = (a.loss - b.loss).abs() / b.loss.abs();
    let cls_rel = (a.classifier_loss - b.classifier_loss).abs() / b.classifier_loss.abs();
    let z_diff = max_abs_diff(
        &gpu_run.model.latent(0, &sim.sc_counts).unwrap(),
        &cpu_run.model.latent(0, &sim.sc_counts).unwrap(),
    );
    println!(
        "one step: loss {:.6} (wgpu) vs {:.6} (ndarray), rel. diff {loss_rel:.2e}; classifier \
         rel. diff {cls_rel:.2e}; latent max abs diff after the step {z_diff:.2e}; {:.1} s",
        a.loss,
        b.loss,
        start.elapsed().as_secs_f64()
    );
    assert!(loss_rel <= 1e-4, "loss {} vs {}", a.loss, b.loss);
    assert!(
        cls_rel <= 1e-4,
        "classifier loss {} vs {}",
        a.classifier_loss,
        b.classifier_loss
    );
    assert!(z_diff <= 1e-4, "latent means differ by {z_diff}");
}

#[test]
fn short_training_run_matches_ndarray() {
    let sim = simulate(&SimulationConfig {
        n_sc: 500,
        n_spatial: 400,
        seed: 5,
        ..SimulationConfig::default()
    });
    let start = Instant::now();
    let cpu_run = fit(&sim, &cpu(), 10, 64);
    let cpu_s = start.elapsed().as_secs_f64();
    let gpu_run = fit(&sim, &gpu(), 10, 64);
    let gpu_s = start.elapsed().as_secs_f64() - cpu_s;
    let worst_loss = gpu_run
        .history
        .iter()
        .zip(&cpu_run.history)
        .map(|(a, b)| (a.loss - b.loss).abs() / b.loss.abs())
        .fold(0.0, f64::max);

    let opts = ImputeOptions {
        samples: 0,
        normalized: false,
        seed: 1,
    };
    let imp = |r: &TrainResult| {
        r.model
            .impute(1, &sim.spatial_counts, &sim.held_out_genes, opts)
            .expect("imputation")
            .mean
    };
    let (ig, ic) = (imp(&gpu_run), imp(&cpu_run));
    let mut worst_gene_rho: f64 = 1.0;
    for j in 0..ig.ncols() {
        let a: Vec<f64> = ig.column(j).iter().map(|&v| f64::from(v)).collect();
        let b: Vec<f64> = ic.column(j).iter().map(|&v| f64::from(v)).collect();
        let rho = spearman(&a, &b).unwrap().unwrap_or(1.0);
        worst_gene_rho = worst_gene_rho.min(rho);
    }
    println!(
        "10 epochs: worst per-epoch loss rel. diff {worst_loss:.2e}; lowest \
         per-gene Spearman(wgpu imputation, ndarray imputation) {worst_gene_rho:.5}; \
         ndarray {cpu_s:.1} s, wgpu {gpu_s:.1} s"
    );
    assert!(worst_loss <= 0.01, "losses diverge by {worst_loss}");
    assert!(
        worst_gene_rho >= 0.999,
        "imputations differ: lowest per-gene Spearman {worst_gene_rho}"
    );
}

#[test]
fn a_machine_without_an_adapter_gets_a_typed_error() {
    // Hide every Vulkan driver and EGL vendor: wgpu then finds no adapter at all.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gimvi"))
        .args([
            "fit",
            "--sc",
            "none.h5ad",
            "--spatial",
            "none.h5ad",
            "--out",
        ])
        .arg(std::env::temp_dir().join("gimvi-no-adapter"))
        .args(["--backend", "wgpu", "--quiet"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl.json")
        .output()
        .expect("the gimvi binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "without an adapter: exit {:?}, stderr: {}",
        out.status.code(),
        stderr.trim()
    );
    assert!(!out.status.success());
    assert!(
        stderr.contains("backend 'wgpu' is compiled in but unusable on this machine"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
