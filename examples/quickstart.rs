//! End-to-end demonstration of the likelihood layer on the CPU: simulate negative-binomial
//! counts for a few genes with known mean and dispersion, then recover both by maximising the
//! NB log-likelihood with burn's autodiff (plain gradient ascent on ln μ and ln θ).
//!
//! ```text
//! cargo run --release --example quickstart [-- --backend ndarray|flex|wgpu|cuda]
//! ```
//!
//! This is the smallest piece of gimVI that runs end to end; the mSMS / mPFC examples that
//! reproduce the paper replace it as the project grows.

use gimvi::burn::tensor::{Tensor, TensorData};
use gimvi::likelihoods::{log_nb, log_zinb};
use gimvi::BackendKind;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma, Poisson};

const CELLS: usize = 4000;

/// One descent step with a per-parameter normalised size, lr · sign(g) · sqrt(min(|g|, 1)):
/// genes differ by orders of magnitude in curvature, so a plain gradient step would be either
/// unstable for the large ones or stuck for the small ones. Returns a fresh leaf.
fn step_towards(param: Tensor<2>, grad: Tensor<2>, lr: f64) -> Tensor<2> {
    let step = grad.clone().sign().mul_scalar(lr) * grad.abs().clamp_max(1.0).sqrt();
    (param.detach() - step).detach().require_grad()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Faster CPU training: keep large freed blocks in the heap (process-wide; see its docs).
    gimvi::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let kind = match args.iter().position(|a| a == "--backend") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--backend needs a value")?
            .parse::<BackendKind>()?,
        None => BackendKind::default(),
    };
    let device = kind.open()?.autodiff();
    println!("backend: {kind}");

    // Ground truth: per-gene mean and inverse dispersion.
    let true_mu = [0.05_f64, 0.8, 4.0, 30.0, 250.0];
    let true_theta = [0.3_f64, 2.0, 5.0, 1.0, 20.0];
    let genes = true_mu.len();

    // NB(μ, θ) = Poisson(Gamma(shape θ, scale μ/θ)).
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut counts = vec![0f32; CELLS * genes];
    for c in 0..CELLS {
        for g in 0..genes {
            let rate = Gamma::new(true_theta[g], true_mu[g] / true_theta[g])?.sample(&mut rng);
            let k = if rate > 0.0 {
                Poisson::new(rate)?.sample(&mut rng)
            } else {
                0.0
            };
            counts[c * genes + g] = k as f32;
        }
    }
    let x = Tensor::<2>::from_data(TensorData::new(counts, [CELLS, genes]), &device);

    // Parameters on the log scale, started at ln μ = 0, ln θ = 0.
    let mut log_mu = Tensor::<2>::zeros([1, genes], &device).require_grad();
    let mut log_theta = Tensor::<2>::zeros([1, genes], &device).require_grad();
    let lr = 0.05;
    for step in 0..=1500 {
        let mu = log_mu.clone().exp().expand([CELLS, genes]);
        let theta = log_theta.clone().exp();
        let nll = log_nb(x.clone(), mu, theta).mean().neg();
        if step % 300 == 0 {
            println!(
                "step {step:4}: mean negative log-likelihood {:.5}",
                nll.clone().into_scalar::<f32>()
            );
        }
        let grads = nll.backward();
        let g_mu = log_mu.grad(&grads).ok_or("no gradient for ln mu")?;
        let g_theta = log_theta.grad(&grads).ok_or("no gradient for ln theta")?;
        log_mu = step_towards(log_mu, g_mu, lr);
        log_theta = step_towards(log_theta, g_theta, lr);
    }

    let mu_hat: Vec<f32> = log_mu.exp().into_data().try_into_vec()?;
    let theta_hat: Vec<f32> = log_theta.exp().into_data().try_into_vec()?;
    println!("\ngene   true mu  fitted mu   true theta  fitted theta");
    for g in 0..genes {
        println!(
            "{g:>4} {:>9.3} {:>10.3} {:>12.3} {:>13.3}",
            true_mu[g], mu_hat[g], true_theta[g], theta_hat[g]
        );
    }

    // The ZINB with strongly negative dropout logits reduces to the NB.
    let dev = kind.open()?;
    let x = Tensor::<2>::from_floats([[0.0, 3.0, 17.0]], &dev);
    let mu = Tensor::<2>::from_floats([[1.0, 2.5, 20.0]], &dev);
    let theta = Tensor::<2>::from_floats([[2.0, 2.0, 2.0]], &dev);
    let nb: Vec<f32> = log_nb(x.clone(), mu.clone(), theta.clone())
        .into_data()
        .try_into_vec()?;
    let zinb: Vec<f32> = log_zinb(x, mu, theta, Tensor::<2>::full([1, 3], -30.0, &dev))
        .into_data()
        .try_into_vec()?;
    println!("\nlog NB   {nb:?}\nlog ZINB {zinb:?} (dropout logit -30)");
    Ok(())
}
