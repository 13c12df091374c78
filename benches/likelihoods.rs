//! ZINB log-probability forward + backward on a 128 × 20,000 minibatch (one scRNA-seq
//! minibatch at transcriptome scale), on both CPU backends: the tensor forms and the fused host
//! path (`gimvi::likelihoods::fused`) that training uses on CPU backends.
//!
//! ```text
//! cargo bench --bench likelihoods
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use gimvi::burn::tensor::{Distribution, Tensor};
use gimvi::likelihoods::fused::fused_log_prob_rows;
use gimvi::likelihoods::{log_nb, log_zinb, CountLikelihood};
use gimvi::BackendKind;

const CELLS: usize = 128;
const GENES: usize = 20_000;

fn bench(c: &mut Criterion) {
    gimvi::tune_allocator();
    for kind in [BackendKind::NdArray, BackendKind::Flex] {
        bench_on(c, kind);
    }
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
    group.bench_function("fused_forward_backward", |b| {
        b.iter(|| {
            let mu = mu.clone().require_grad();
            let log_theta = log_theta.clone().require_grad();
            let logits = logits.clone().require_grad();
            let loss = fused_log_prob_rows(
                CountLikelihood::Zinb,
                &x_host,
                mu.clone(),
                Some(log_theta.clone().exp()),
                Some(logits.clone()),
            )
            .sum()
            .neg();
            let grads = loss.backward();
            mu.grad(&grads)
                .expect("gradient")
                .sum()
                .into_scalar::<f32>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
