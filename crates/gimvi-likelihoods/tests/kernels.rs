//! The host kernels give the values and gradients of the tensor forms (which are checked
//! against f64 references in `accuracy.rs`).

use burn::tensor::{Device, Tensor, TensorData};
use gimvi_likelihoods::kernels::value_and_grad;
use gimvi_likelihoods::CountLikelihood;

#[allow(deprecated)] // burn-ndarray is the project's default CPU backend.
fn cpu() -> Device {
    Device::ndarray().autodiff()
}

fn t2(v: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [rows, cols]), device)
}

fn host(t: Tensor<2>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Rows = cells, columns = genes; every (x, μ, θ, π) regime of `accuracy.rs`'s grids.
fn batch() -> Batch {
    let xs = [0.0f32, 1.0, 2.0, 7.0, 15.0, 16.0, 40.0, 1000.0, 1.0e5];
    let mus = [1e-6f32, 1e-3, 0.3, 3.0, 50.0, 2000.0, 1.0e5];
    let thetas = [1e-3f32, 0.05, 1.0, 12.0, 500.0, 1.0e6];
    let logits = [-20.0f32, -3.0, 0.0, 2.0, 20.0];
    let cols = thetas.len();
    let mut x = vec![];
    let mut mu = vec![];
    let mut pi = vec![];
    for &xv in &xs {
        for &m in &mus {
            for &l in &logits {
                for _ in 0..cols {
                    x.push(xv);
                    mu.push(m);
                    pi.push(l);
                }
            }
        }
    }
    let rows = x.len() / cols;
    (rows, cols, x, mu, thetas.to_vec(), pi)
}

/// A wide batch (3 rows × 2,600 columns, wider than the fused path's column blocks) cycling
/// through the same grids, each column with its own θ, so that block edges, rows of mixed zero
/// and non-zero counts and the per-block sums are exercised.
fn wide_batch() -> Batch {
    let xs = [
        0.0f32, 0.0, 0.0, 1.0, 2.0, 0.0, 7.0, 16.0, 0.0, 40.0, 1000.0,
    ];
    let mus = [1e-6f32, 1e-3, 0.3, 3.0, 50.0, 2000.0, 1.0e5];
    let thetas = [1e-3f32, 0.05, 1.0, 12.0, 500.0, 1.0e6];
    let logits = [-20.0f32, -3.0, 0.0, 2.0, 20.0];
    let (rows, cols) = (3, 2_600);
    let n = rows * cols;
    let x = (0..n).map(|i| xs[i % xs.len()]).collect();
    let mu = (0..n).map(|i| mus[(i / 3) % mus.len()]).collect();
    let pi = (0..n).map(|i| logits[(i / 5) % logits.len()]).collect();
    let theta = (0..cols).map(|g| thetas[(g / 2) % thetas.len()]).collect();
    (rows, cols, x, mu, theta, pi)
}

type Batch = (usize, usize, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn compare(likelihood: CountLikelihood) {
    compare_on(likelihood, batch());
    compare_on(likelihood, wide_batch());
}

fn compare_on(likelihood: CountLikelihood, batch: Batch) {
    let device = cpu();
    let (rows, cols, x, mu, theta, pi) = batch;
    // The tensor form, differentiated by burn's autodiff: the reference.
    let tensor_form = || {
        let xt = t2(&x, rows, cols, &device);
        let mut_ = t2(&mu, rows, cols, &device).require_grad();
        let tt = t2(&theta, 1, cols, &device).require_grad();
        let pt = t2(&pi, rows, cols, &device).require_grad();
        let theta_full = tt.clone().repeat_dim(0, rows);
        let rows_lp = likelihood
            .log_prob(xt, mut_.clone(), Some(theta_full), Some(pt.clone()))
            .unwrap()
            .sum_dim(1);
        let grads = rows_lp.clone().sum().backward();
        let g = |t: &Tensor<2>| t.grad(&grads).map(host).unwrap_or_default();
        (host(rows_lp), g(&mut_), g(&tt), g(&pt))
    };
    // The host kernel: per-element derivatives; θ's summed over rows as autodiff sums them.
    let kernel = || {
        let theta_in = if likelihood.has_dispersion() {
            &theta[..]
        } else {
            &[][..]
        };
        let pi_in = if likelihood.has_dropout() {
            &pi[..]
        } else {
            &[][..]
        };
        let vg = value_and_grad(likelihood, cols, &x, &mu, theta_in, pi_in);
        let mut d_theta = vec![0.0f64; if vg.d_theta.is_empty() { 0 } else { cols }];
        for row in vg.d_theta.chunks(cols) {
            for (s, &d) in d_theta.iter_mut().zip(row) {
                *s += f64::from(d);
            }
        }
        let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        (vg.row_values, f(&vg.d_mu), d_theta, f(&vg.d_logit))
    };
    let (v0, m0, t0, p0) = tensor_form();
    let (v1, m1, t1, p1) = kernel();
    let worst = |a: &[f64], b: &[f64], floor: f64| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
            .fold(0.0, f64::max)
    };
    let (ev, em, et, ep) = (
        worst(&v1, &v0, 1.0),
        worst(&m1, &m0, 1e-3),
        worst(&t1, &t0, 1e-3),
        worst(&p1, &p0, 1e-3),
    );
    println!(
        "{likelihood:?}: {} elements; host kernel vs tensor form, worst rel. diff: value {ev:.1e}, \
         dμ {em:.1e}, dθ {et:.1e}, dπ {ep:.1e}",
        rows * cols
    );
    // The tensor forms are within 1e-5 (values) / 2e-4 (gradients) of f64 references; the host
    // kernel computes in f64. The θ gradient sums many rows, so it gets a wider margin.
    assert!(ev < 2e-5, "values differ by {ev}");
    assert!(em < 1e-3, "dμ differs by {em}");
    if likelihood.has_dispersion() {
        assert!(et < 1e-3, "dθ differs by {et}");
    }
    if likelihood.has_dropout() {
        assert!(ep < 1e-3, "dπ differs by {ep}");
    }
}

#[test]
fn host_zinb_kernel_matches_the_tensor_form() {
    compare(CountLikelihood::Zinb);
}

#[test]
fn host_nb_kernel_matches_the_tensor_form() {
    compare(CountLikelihood::Nb);
}

#[test]
fn host_poisson_kernel_matches_the_tensor_form() {
    compare(CountLikelihood::Poisson);
}
