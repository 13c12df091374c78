//! ZINB log-probability forward + backward on a 128 × 20,000 minibatch (one scRNA-seq
//! minibatch at transcriptome scale), on both CPU backends: the tensor forms and the fused host
//! kernels (`gimvi_likelihoods::kernels`, internal) that training's custom operations run on CPU
//! backends.
//!
//! ```text
//! cargo bench --bench likelihoods
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use gimvi::burn::tensor::{Distribution, Tensor};
use gimvi::likelihoods::{log_nb, log_zinb};
use gimvi::BackendKind;
use gimvi::CountLikelihood;
use gimvi_likelihoods::kernels::{softmax_value_and_grad, value_and_grad};

const CELLS: usize = 128;
const GENES: usize = 20_000;

fn bench(c: &mut Criterion) {
    gimvi::tune_allocator();
    bench_host(c);
    if std::env::var_os("GIMVI_BENCH_HOST_ONLY").is_none() {
        for kind in [BackendKind::NdArray, BackendKind::Flex] {
            bench_on(c, kind);
        }
    }
}

/// The host function training calls for the scRNA-seq decoder at transcriptome scale
/// ([`softmax_value_and_grad`]: softmax, ZINB value and gradients, chain rule), on counts with
/// the sparsity of the anchor's synthetic data (~6.6 % non-zero). `GIMVI_BENCH_HOST_ONLY=1`
/// runs only this group.
fn bench_host(c: &mut Criterion) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = CELLS * GENES;
    let x: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f32>() < 0.066 {
                rng.random_range(1..6) as f32
            } else {
                0.0
            }
        })
        .collect();
    let logits: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
    let dropout: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0..2.0)).collect();
    let theta: Vec<f32> = (0..GENES).map(|_| rng.random_range(0.2..20.0)).collect();
    let log_library: Vec<f32> = (0..CELLS).map(|_| rng.random_range(6.0..8.0)).collect();
    let mut group = c.benchmark_group("host_128x20000");
    group.sample_size(20);
    group.bench_function("softmax_zinb_value_and_grad", |b| {
        b.iter(|| {
            softmax_value_and_grad(
                CountLikelihood::Zinb,
                GENES,
                &x,
                &logits,
                &log_library,
                &theta,
                &dropout,
            )
            .row_values[0]
        })
    });
    group.finish();
}

fn bench_on(c: &mut Criterion, kind: BackendKind) {
    let device = kind.device().expect("compiled-in backend").autodiff();
    device.seed(0);
    // Counts: Poisson-ish small integers with ~60 % zeros, like a UMI minibatch.
    let x = Tensor::<2>::random([CELLS, GENES], Distribution::Uniform(-3.0, 2.5), &device)
        .clamp_min(0.0)
        .round();
    let mu = Tensor::<2>::random([CELLS, GENES], Distribution::Uniform(0.01, 5.0), &device);
    let log_theta = Tensor::<2>::random([1, GENES], Distribution::Normal(0.0, 1.0), &device);
    let logits = Tensor::<2>::random([CELLS, GENES], Distribution::Normal(-1.0, 1.0), &device);

    let mut group = c.benchmark_group(format!("zinb_128x20000/{kind}"));
    group.sample_size(10);
    group.bench_function("forward_backward", |b| {
        b.iter(|| {
            let mu = mu.clone().require_grad();
            let log_theta = log_theta.clone().require_grad();
            let logits = logits.clone().require_grad();
            let loss = log_zinb(
                x.clone(),
                mu.clone(),
                log_theta.clone().exp(),
                logits.clone(),
            )
            .sum()
            .neg();
            let grads = loss.backward();
            let g = mu.grad(&grads).expect("gradient");
            // Force the computation to finish.
            g.sum().into_scalar::<f32>()
        })
    });
    group.bench_function("forward_only", |b| {
        let x = x.clone().without_autodiff();
        let mu = mu.clone().without_autodiff();
        let theta = log_theta.clone().without_autodiff().exp();
        let logits = logits.clone().without_autodiff();
        b.iter(|| {
            log_zinb(x.clone(), mu.clone(), theta.clone(), logits.clone())
                .sum()
                .into_scalar::<f32>()
        })
    });
    group.bench_function("nb_forward_backward", |b| {
        b.iter(|| {
            let mu = mu.clone().require_grad();
            let loss = log_nb(x.clone(), mu.clone(), log_theta.clone().exp())
                .sum()
                .neg();
            let grads = loss.backward();
            mu.grad(&grads)
                .expect("gradient")
                .sum()
                .into_scalar::<f32>()
        })
    });
    let x_host: Vec<f32> = x
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    let host = |t: &Tensor<2>| -> Vec<f32> {
        t.clone()
            .without_autodiff()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32")
    };
    let (mu_h, logits_h) = (host(&mu), host(&logits));
    let theta_h = host(&log_theta.clone().exp());
    group.bench_function("host_kernel_value_and_grad", |b| {
        b.iter(|| {
            value_and_grad(
                CountLikelihood::Zinb,
                GENES,
                &x_host,
                &mu_h,
                &theta_h,
                &logits_h,
            )
            .row_values[0]
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
