//! Exact k-NN in a 10-dimensional latent space: 100,000 points, k = 50, every point queried
//! against all others (what entropy of mixing and k-NN purity need at 100k cells).
//!
//! ```text
//! cargo bench --bench knn
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use gimvi_metrics::knn::knn_self;
use ndarray::Array2;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

const N: usize = 100_000;
const D: usize = 10;
const K: usize = 50;

/// Standard normal points (the hard case for a k-d tree: no cluster structure), and a mixture
/// of 20 well-separated Gaussian clusters (closer to a trained latent space).
fn data(clustered: bool) -> Array2<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let normal = Normal::new(0.0f32, 1.0).expect("valid normal");
    let centres: Vec<f32> = (0..20 * D).map(|_| 4.0 * normal.sample(&mut rng)).collect();
    Array2::from_shape_fn((N, D), |(i, j)| {
        let c = if clustered {
            centres[(i % 20) * D + j]
        } else {
            0.0
        };
        c + normal.sample(&mut rng)
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("knn_100000x10_k50");
    group.sample_size(10);
    for (name, clustered) in [("gaussian", false), ("20_clusters", true)] {
        let points = data(clustered);
        group.bench_function(name, |b| {
            b.iter(|| knn_self(points.view(), K).expect("valid input").len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
