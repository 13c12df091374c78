//! Accuracy of the f32 tensor likelihoods against independent f64 references.
//!
//! References: statrs (`ln_gamma`, `digamma`, `Poisson::ln_pmf`, `NegativeBinomial::ln_pmf`) and
//! closed forms evaluated in f64 in the naive textbook parameterisation (ln Γ differences), i.e.
//! a formula independent of the saddle-point form the crate uses. Gradients are checked against
//! central finite differences of the f64 references.
//!
//! Every check goes through [`Report`], which counts the points outside tolerance; the
//! `checker_*` tests show that the same checks fail on a wrong sign or a missing term.

use burn::tensor::{Device, Tensor, TensorData};
use gimvi_likelihoods::{
    kl_normal, kl_normal_standard, lgamma, log1p, log1p_series, log_nb, log_poisson, log_zinb,
    CountLikelihood,
};
use statrs::distribution::{Discrete, NegativeBinomial, Poisson};
use statrs::function::gamma::{digamma, ln_gamma};

#[allow(deprecated)] // burn-ndarray is the project's default CPU backend (see README).
fn cpu() -> Device {
    Device::ndarray()
}

fn tensor(v: &[f64], device: &Device) -> Tensor<1> {
    let data: Vec<f32> = v.iter().map(|&a| a as f32).collect();
    Tensor::from_data(TensorData::new(data, [v.len()]), device)
}

fn values(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Values rounded to f32 and back: the references are evaluated at exactly the inputs the f32
/// code sees.
fn f32_round(v: f64) -> f64 {
    v as f32 as f64
}

fn logspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t = i as f64 / (n - 1) as f64;
            f32_round((lo.ln() + t * (hi.ln() - lo.ln())).exp())
        })
        .collect()
}

/// Collects relative errors |got − want| / max(|want|, floor) and the worst offenders.
struct Report {
    name: &'static str,
    tol: f64,
    checked: usize,
    worst: f64,
    failures: Vec<String>,
}

impl Report {
    fn new(name: &'static str, tol: f64) -> Self {
        Self {
            name,
            tol,
            checked: 0,
            worst: 0.0,
            failures: Vec::new(),
        }
    }

    fn check(&mut self, got: f64, want: f64, floor: f64, context: impl FnOnce() -> String) {
        self.checked += 1;
        let err = if got.is_finite() {
            (got - want).abs() / want.abs().max(floor)
        } else {
            f64::INFINITY
        };
        if err > self.worst {
            self.worst = err;
        }
        if err.is_nan() || err > self.tol {
            self.failures.push(format!(
                "{}: got {got:e}, want {want:e}, rel err {err:e}",
                context()
            ));
        }
    }

    fn passed(&self) -> bool {
        self.failures.is_empty() && self.checked > 0
    }

    fn assert_ok(&self) {
        println!(
            "{}: {} points, worst relative error {:.3e} (tolerance {:e})",
            self.name, self.checked, self.worst, self.tol
        );
        assert!(self.checked > 0, "{}: nothing was checked", self.name);
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} points outside tolerance {:e}; first ones:\n{}",
            self.name,
            self.failures.len(),
            self.checked,
            self.tol,
            self.failures[..self.failures.len().min(15)].join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// f64 references (textbook parameterisation, independent of the crate's saddle-point form)
// ---------------------------------------------------------------------------------------------

fn ref_log_nb(x: f64, mu: f64, theta: f64) -> f64 {
    ln_gamma(x + theta)
        - ln_gamma(theta)
        - ln_gamma(x + 1.0)
        - theta * (mu / theta).ln_1p()
        - x * (theta / mu).ln_1p()
}

fn ref_log_zinb(x: f64, mu: f64, theta: f64, logit: f64) -> f64 {
    if x == 0.0 {
        // ln(σ(π) + σ(−π) e^L) as a log-sum-exp of ln σ(π) and ln σ(−π) + L, in f64: the
        // cancellations that f32 must avoid (result ≈ 0) cost at most 10⁻¹⁰ relative here.
        let log_nb0 = -theta * (mu / theta).ln_1p();
        let a = -(-logit).exp().ln_1p();
        let b = -(logit.exp().ln_1p()) + log_nb0;
        let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
        hi + (lo - hi).exp().ln_1p()
    } else {
        -(logit.exp().ln_1p()) + ref_log_nb(x, mu, theta)
    }
}

fn ref_log_poisson(x: f64, rate: f64) -> f64 {
    Poisson::new(rate).expect("rate > 0").ln_pmf(x as u64)
}

// ---------------------------------------------------------------------------------------------
// Grids
// ---------------------------------------------------------------------------------------------

fn grid_mu() -> Vec<f64> {
    let mut v = logspace(1e-6, 1e5, 23);
    v.extend([0.5, 1.0, 2.0, 3.0, 7.0, 99.5, 1234.5]);
    v
}

fn grid_theta() -> Vec<f64> {
    logspace(1e-3, 1e4, 15)
}

fn grid_x() -> Vec<f64> {
    let mut v: Vec<f64> = (0..=12).map(f64::from).collect();
    v.extend([
        15.0, 20.0, 31.0, 50.0, 99.0, 100.0, 101.0, 316.0, 1000.0, 1234.0, 3162.0, 1e4, 31623.0,
        99_999.0, 1e5,
    ]);
    v
}

fn grid_logits() -> Vec<f64> {
    vec![-20.0, -8.0, -2.0, -0.5, 0.0, 0.5, 2.0, 8.0, 20.0]
}

/// All (x, μ, θ) combinations as flat vectors.
fn nb_points() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut xs, mut mus, mut thetas) = (Vec::new(), Vec::new(), Vec::new());
    for &x in &grid_x() {
        for &mu in &grid_mu() {
            for &theta in &grid_theta() {
                xs.push(x);
                mus.push(mu);
                thetas.push(theta);
            }
        }
    }
    (xs, mus, thetas)
}

// ---------------------------------------------------------------------------------------------
// lgamma
// ---------------------------------------------------------------------------------------------

fn lgamma_points() -> Vec<f64> {
    let mut xs = logspace(1e-3, 1e6, 4001);
    // Next to the roots x = 1 and x = 2, where only an exact reduction keeps relative accuracy.
    for root in [1.0_f64, 2.0] {
        for d in [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1, 0.3, 0.49, 0.5, 0.51] {
            xs.push(f32_round(root - d));
            xs.push(f32_round(root + d));
        }
    }
    // Branch boundaries of the implementation.
    xs.extend([0.5, 1.5, 2.5, 3.5, 4.5, 7.5, 3.0, 4.0, 5.0, 10.0]);
    xs.retain(|x| *x > 0.0);
    xs
}

fn check_lgamma(f: impl Fn(Tensor<1>) -> Tensor<1>) -> Report {
    let device = cpu();
    let xs = lgamma_points();
    let got = values(f(tensor(&xs, &device)));
    let mut report = Report::new("lgamma", 1e-5);
    for (x, g) in xs.iter().zip(got) {
        let want = ln_gamma(*x);
        // ln Γ(1) = ln Γ(2) = 0 exactly: relative error is undefined there, demand |err| ≤ 1e-7.
        let floor = if want == 0.0 { 1e-2 } else { 0.0 };
        report.check(g, want, floor, || format!("x = {x:e}"));
    }
    report
}

#[test]
fn lgamma_relative_error_below_1e5_on_1e_3_to_1e6() {
    check_lgamma(lgamma).assert_ok();
}

#[test]
fn log1p_relative_error_below_1e6_without_the_backends_log1p() {
    // Tiny arguments of both signs (where log(1 + v) in f32 has no correct digit), both sides
    // of the ±½ switch, and up to 1e6 and down to −0.999.
    let mut vs = logspace(1e-12, 1e6, 601);
    vs.extend(logspace(1e-12, 0.999, 401).into_iter().map(|v| -v));
    vs.extend([0.0, 0.5, -0.5, f32_round(0.5000001), f32_round(-0.5000001)]);
    // The series (what the GPU backends run) and the dispatching function (the backend's own
    // log1p on this CPU backend).
    for (name, f) in [
        (
            "log1p_series",
            log1p_series::<1> as fn(Tensor<1>) -> Tensor<1>,
        ),
        ("log1p", log1p::<1>),
    ] {
        let got = values(f(tensor(&vs, &cpu())));
        let mut report = Report::new(name, 1e-6);
        for (&v, &g) in vs.iter().zip(&got) {
            report.check(g, v.ln_1p(), 1e-30, || format!("v={v:e}"));
        }
        report.assert_ok();
    }
}

#[test]
fn lgamma_gradient_is_digamma() {
    let device = cpu().autodiff();
    let xs = lgamma_points();
    let x = tensor(&xs, &device).require_grad();
    let grads = lgamma(x.clone()).sum().backward();
    let got = values(x.grad(&grads).expect("gradient"));
    let mut report = Report::new("d lgamma / dx vs digamma", 1e-4);
    for (x, g) in xs.iter().zip(got) {
        // Relative error, with an absolute floor of 1 near digamma's root (x ≈ 1.4616) and for
        // large x where ψ(x) ≈ ln x.
        report.check(g, digamma(*x), 1.0, || format!("x = {x:e}"));
    }
    report.assert_ok();
}

// ---------------------------------------------------------------------------------------------
// log-probabilities
// ---------------------------------------------------------------------------------------------

fn check_nb(f: impl Fn(Tensor<1>, Tensor<1>, Tensor<1>) -> Tensor<1>) -> Report {
    let device = cpu();
    let (xs, mus, thetas) = nb_points();
    let got = values(f(
        tensor(&xs, &device),
        tensor(&mus, &device),
        tensor(&thetas, &device),
    ));
    let mut report = Report::new("log NB", 1e-4);
    for i in 0..xs.len() {
        let want = ref_log_nb(xs[i], mus[i], thetas[i]);
        report.check(got[i], want, 0.0, || {
            format!("x = {}, mu = {:e}, theta = {:e}", xs[i], mus[i], thetas[i])
        });
    }
    report
}

#[test]
fn nb_log_prob_matches_f64_reference() {
    check_nb(log_nb).assert_ok();
}

#[test]
fn zinb_log_prob_matches_f64_reference() {
    let device = cpu();
    let (mut xs, mut mus, mut thetas, mut logits) = (vec![], vec![], vec![], vec![]);
    let (bx, bm, bt) = nb_points();
    for &l in &grid_logits() {
        xs.extend(&bx);
        mus.extend(&bm);
        thetas.extend(&bt);
        logits.extend(std::iter::repeat_n(l, bx.len()));
    }
    let got = values(log_zinb(
        tensor(&xs, &device),
        tensor(&mus, &device),
        tensor(&thetas, &device),
        tensor(&logits, &device),
    ));
    let mut report = Report::new("log ZINB", 1e-4);
    for i in 0..xs.len() {
        let want = ref_log_zinb(xs[i], mus[i], thetas[i], logits[i]);
        report.check(got[i], want, 0.0, || {
            format!(
                "x = {}, mu = {:e}, theta = {:e}, logit = {}",
                xs[i], mus[i], thetas[i], logits[i]
            )
        });
    }
    report.assert_ok();
}

#[test]
fn poisson_log_prob_matches_statrs() {
    let device = cpu();
    let (mut xs, mut rates) = (vec![], vec![]);
    for &x in &grid_x() {
        for &r in &grid_mu() {
            xs.push(x);
            rates.push(r);
        }
    }
    let got = values(log_poisson(tensor(&xs, &device), tensor(&rates, &device)));
    let mut report = Report::new("log Poisson", 1e-4);
    for i in 0..xs.len() {
        report.check(got[i], ref_log_poisson(xs[i], rates[i]), 0.0, || {
            format!("x = {}, rate = {:e}", xs[i], rates[i])
        });
    }
    report.assert_ok();
}

#[test]
fn f64_nb_reference_agrees_with_statrs() {
    // The hand-written f64 NB reference is itself checked against statrs' NegativeBinomial
    // (r = θ successes, success probability θ / (θ + μ), counting failures).
    for &x in &[0u64, 1, 5, 40, 1000] {
        for &(mu, theta) in &[(0.3, 0.5), (5.0, 2.0), (40.0, 100.0), (1000.0, 0.1)] {
            let nb = NegativeBinomial::new(theta, theta / (theta + mu)).expect("valid NB");
            let a = nb.ln_pmf(x);
            let b = ref_log_nb(x as f64, mu, theta);
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "x={x} mu={mu} theta={theta}: statrs {a} vs reference {b}"
            );
        }
    }
}

#[test]
fn nb_tends_to_poisson_and_stays_finite_at_extremes() {
    let device = cpu().autodiff();
    // θ → ∞: NB → Poisson. μ → 0, x = 0, huge counts: everything finite, gradients too.
    let mut xs = vec![];
    let mut mus = vec![];
    let mut thetas = vec![];
    for &x in &[0.0, 1.0, 7.0, 1e3, 1e5] {
        for &mu in &[0.0, 1e-30, 1e-12, 1e-6, 1.0, 1e3, 1e5] {
            for &theta in &[1e-8, 1e-3, 1.0, 1e4, 1e8, 1e12] {
                xs.push(x);
                mus.push(mu);
                thetas.push(theta);
            }
        }
    }
    let x = tensor(&xs, &device);
    let mu = tensor(&mus, &device).require_grad();
    let theta = tensor(&thetas, &device).require_grad();
    let logits = tensor(&vec![3.0; xs.len()], &device).require_grad();
    for lik in [
        CountLikelihood::Nb,
        CountLikelihood::Zinb,
        CountLikelihood::Poisson,
    ] {
        let lp = lik
            .log_prob(
                x.clone(),
                mu.clone(),
                Some(theta.clone()),
                Some(logits.clone()),
            )
            .expect("all parameters given");
        let grads = lp.clone().sum().backward();
        let lp = values(lp);
        assert!(
            lp.iter().all(|v| v.is_finite()),
            "{lik:?}: non-finite log-prob"
        );
        for (name, g) in [
            ("mu", mu.grad(&grads)),
            ("theta", theta.grad(&grads)),
            ("logits", logits.grad(&grads)),
        ] {
            if let Some(g) = g {
                let g = values(g);
                let bad: Vec<_> = (0..g.len())
                    .filter(|&i| !g[i].is_finite())
                    .map(|i| (xs[i], mus[i], thetas[i], g[i]))
                    .collect();
                assert!(bad.is_empty(), "{lik:?}: non-finite d/d{name} at {bad:?}");
            }
        }
    }
    // NB with θ = 1e8 against Poisson with the same mean.
    let dev = cpu();
    let xs: Vec<f64> = vec![0.0, 1.0, 3.0, 10.0, 100.0, 1000.0];
    let mus: Vec<f64> = vec![0.5, 2.0, 3.0, 12.0, 90.0, 1000.0];
    let nb = values(log_nb(
        tensor(&xs, &dev),
        tensor(&mus, &dev),
        tensor(&[1e8; 6], &dev),
    ));
    for i in 0..xs.len() {
        let p = ref_log_poisson(xs[i], mus[i]);
        assert!(
            (nb[i] - p).abs() <= 1e-4 * p.abs().max(1.0),
            "NB(θ=1e8) {} vs Poisson {} at x={} mu={}",
            nb[i],
            p,
            xs[i],
            mus[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Gradients against central finite differences in f64
// ---------------------------------------------------------------------------------------------

/// Central difference of `f` at `v` in f64 with step `h`.
fn central_diff_step(f: impl Fn(f64) -> f64, v: f64, h: f64) -> f64 {
    (f(v + h) - f(v - h)) / (2.0 * h)
}

/// Central difference with a step relative to a positive parameter v (μ, θ): truncation error
/// O(10⁻¹⁰) relative, round-off |f| · 10⁻¹¹ / v against gradients of scale 1/v.
fn central_diff(f: impl Fn(f64) -> f64, v: f64) -> f64 {
    central_diff_step(f, v, 1e-5 * v.abs())
}

/// Tolerance 1e-3 on the relative error of the gradient, with the floor
/// max(|∂/∂v|, 1/|v|, 1e-3) in the denominator: 1/|v| is the scale of a gradient with respect
/// to a positive parameter v (d/dv = (1/v) d/d ln v, and the model trains ln μ and ln θ), so
/// a gradient that is tiny compared with 1/v is checked in absolute terms at that scale.
fn grad_floor(v: f64) -> f64 {
    (1.0 / v.abs()).max(1e-3)
}

#[test]
fn nb_and_zinb_gradients_match_finite_differences() {
    let device = cpu().autodiff();
    let (bx, bm, bt) = nb_points();
    let (mut xs, mut mus, mut thetas, mut logits) = (vec![], vec![], vec![], vec![]);
    for &l in &[-20.0, -2.0, 0.0, 3.0, 20.0] {
        xs.extend(&bx);
        mus.extend(&bm);
        thetas.extend(&bt);
        logits.extend(std::iter::repeat_n(l, bx.len()));
    }
    let x = tensor(&xs, &device);
    let mu = tensor(&mus, &device).require_grad();
    let theta = tensor(&thetas, &device).require_grad();
    let logit = tensor(&logits, &device).require_grad();

    // ZINB
    let grads = log_zinb(x.clone(), mu.clone(), theta.clone(), logit.clone())
        .sum()
        .backward();
    let g_mu = values(mu.grad(&grads).expect("d/dmu"));
    let g_theta = values(theta.grad(&grads).expect("d/dtheta"));
    let g_logit = values(logit.grad(&grads).expect("d/dlogit"));
    let mut r_mu = Report::new("d log ZINB / d mu", 1e-3);
    let mut r_theta = Report::new("d log ZINB / d theta", 1e-3);
    let mut r_logit = Report::new("d log ZINB / d logit", 1e-3);
    for i in 0..xs.len() {
        let (x, m, t, l) = (xs[i], mus[i], thetas[i], logits[i]);
        let ctx = || format!("x = {x}, mu = {m:e}, theta = {t:e}, logit = {l}");
        let fd = central_diff(|v| ref_log_zinb(x, v, t, l), m);
        r_mu.check(g_mu[i], fd, fd.abs().max(grad_floor(m)), ctx);
        let fd = central_diff(|v| ref_log_zinb(x, m, v, l), t);
        r_theta.check(g_theta[i], fd, fd.abs().max(grad_floor(t)), ctx);
        // Logits live on an absolute scale: fixed step 10⁻⁴ (round-off |f| · 10⁻¹² is below
        // 10⁻⁶ for |f| ≤ 10⁶, truncation ~10⁻⁹).
        let fd = central_diff_step(|v| ref_log_zinb(x, m, t, v), l, 1e-4);
        r_logit.check(g_logit[i], fd, fd.abs().max(1e-3), ctx);
    }
    r_mu.assert_ok();
    r_theta.assert_ok();
    r_logit.assert_ok();

    // NB (one logit block is enough: NB has no logit)
    let n = bx.len();
    let x = tensor(&bx, &device);
    let mu = tensor(&bm, &device).require_grad();
    let theta = tensor(&bt, &device).require_grad();
    let grads = log_nb(x, mu.clone(), theta.clone()).sum().backward();
    let g_mu = values(mu.grad(&grads).expect("d/dmu"));
    let g_theta = values(theta.grad(&grads).expect("d/dtheta"));
    let mut r_mu = Report::new("d log NB / d mu", 1e-3);
    let mut r_theta = Report::new("d log NB / d theta", 1e-3);
    for i in 0..n {
        let (x, m, t) = (bx[i], bm[i], bt[i]);
        let ctx = || format!("x = {x}, mu = {m:e}, theta = {t:e}");
        let fd = central_diff(|v| ref_log_nb(x, v, t), m);
        r_mu.check(g_mu[i], fd, fd.abs().max(grad_floor(m)), ctx);
        let fd = central_diff(|v| ref_log_nb(x, m, v), t);
        r_theta.check(g_theta[i], fd, fd.abs().max(grad_floor(t)), ctx);
    }
    r_mu.assert_ok();
    r_theta.assert_ok();
}

#[test]
fn poisson_gradient_matches_finite_differences() {
    let device = cpu().autodiff();
    let (mut xs, mut rates) = (vec![], vec![]);
    for &x in &grid_x() {
        for &r in &grid_mu() {
            xs.push(x);
            rates.push(r);
        }
    }
    let rate = tensor(&rates, &device).require_grad();
    let grads = log_poisson(tensor(&xs, &device), rate.clone())
        .sum()
        .backward();
    let g = values(rate.grad(&grads).expect("d/drate"));
    let mut report = Report::new("d log Poisson / d rate", 1e-3);
    for i in 0..xs.len() {
        let (x, r) = (xs[i], rates[i]);
        // d/dλ [x ln λ − λ − ln x!] = x/λ − 1, a closed form.
        let want = x / r - 1.0;
        report.check(g[i], want, want.abs().max(grad_floor(r)), || {
            format!("x = {x}, rate = {r:e}")
        });
    }
    report.assert_ok();
}

// ---------------------------------------------------------------------------------------------
// KL divergences against numerical integration in f64
// ---------------------------------------------------------------------------------------------

fn normal_log_pdf(v: f64, mean: f64, var: f64) -> f64 {
    -0.5 * ((2.0 * std::f64::consts::PI * var).ln() + (v - mean).powi(2) / var)
}

/// ∫ q log(q/p) by composite Simpson over mean_q ± 12 sd_q.
fn kl_quadrature(mq: f64, vq: f64, mp: f64, vp: f64) -> f64 {
    let sd = vq.sqrt();
    let (a, b) = (mq - 12.0 * sd, mq + 12.0 * sd);
    let n = 20_000;
    let h = (b - a) / n as f64;
    let f = |v: f64| {
        let lq = normal_log_pdf(v, mq, vq);
        lq.exp() * (lq - normal_log_pdf(v, mp, vp))
    };
    let mut s = f(a) + f(b);
    for i in 1..n {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        s += w * f(a + i as f64 * h);
    }
    s * h / 3.0
}

#[test]
fn kl_divergences_match_quadrature() {
    let device = cpu();
    let cases = [
        (0.0, 1.0, 0.0, 1.0),
        (0.3, 0.5, 0.0, 1.0),
        (-2.0, 0.01, 0.0, 1.0),
        (1.5, 3.0, 0.0, 1.0),
        (7.2, 0.2, 7.0, 0.5),
        (5.0, 1e-3, 6.0, 0.3),
        (-1.0, 2.0, 1.0, 4.0),
    ];
    let col = |k: usize| {
        cases
            .iter()
            .map(|c| [c.0, c.1, c.2, c.3][k])
            .collect::<Vec<_>>()
    };
    let (mq, vq, mp, vp) = (col(0), col(1), col(2), col(3));
    let general = values(kl_normal(
        tensor(&mq, &device),
        tensor(&vq, &device),
        tensor(&mp, &device),
        tensor(&vp, &device),
    ));
    let standard = values(kl_normal_standard(
        tensor(&mq, &device),
        tensor(&vq, &device),
    ));
    let mut report = Report::new("KL", 1e-4);
    for i in 0..cases.len() {
        let want = kl_quadrature(mq[i], vq[i], mp[i], vp[i]);
        report.check(general[i], want, 1e-6, || format!("case {:?}", cases[i]));
        let want_std = kl_quadrature(mq[i], vq[i], 0.0, 1.0);
        report.check(standard[i], want_std, 1e-6, || {
            format!("standard, case {:?}", cases[i])
        });
    }
    report.assert_ok();
}

#[test]
fn broadcast_parameters_give_the_same_values() {
    // θ and dropout logits of shape [1, G] against x, μ of shape [N, G].
    let device = cpu();
    let x = Tensor::<2>::from_floats([[0.0, 3.0, 10.0], [1.0, 0.0, 250.0]], &device);
    let mu = Tensor::<2>::from_floats([[0.5, 2.0, 8.0], [1.5, 0.1, 300.0]], &device);
    let theta_row = Tensor::<2>::from_floats([[2.0, 0.5, 40.0]], &device);
    let logit_row = Tensor::<2>::from_floats([[-1.0, 0.5, 3.0]], &device);
    let theta_full = theta_row.clone().expand([2, 3]);
    let logit_full = logit_row.clone().expand([2, 3]);
    let a = log_zinb(x.clone(), mu.clone(), theta_row, logit_row).into_data();
    let b = log_zinb(x, mu, theta_full, logit_full).into_data();
    a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-6));
}

#[test]
fn missing_parameters_are_typed_errors() {
    let device = cpu();
    let x = tensor(&[1.0], &device);
    let mu = tensor(&[1.0], &device);
    let err = CountLikelihood::Zinb
        .log_prob(x.clone(), mu.clone(), Some(tensor(&[1.0], &device)), None)
        .unwrap_err();
    assert!(err.to_string().contains("dropout logits"), "{err}");
    let err = CountLikelihood::Nb.log_prob(x, mu, None, None).unwrap_err();
    assert!(err.to_string().contains("theta"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The checks can fail: a wrong sign or a missing term is caught.
// ---------------------------------------------------------------------------------------------

#[test]
fn checker_catches_a_missing_lgamma_term() {
    // ln Γ(x) without the −ln x of the recurrence is ln Γ(x + 1): must fail.
    let report = check_lgamma(|x| lgamma(x.add_scalar(1.0)));
    assert!(
        !report.passed(),
        "a shifted lgamma passed the accuracy check"
    );
}

#[test]
fn checker_catches_a_wrong_sign_in_nb() {
    // Flip the sign of the x ln(μ/(θ+μ)) term's effect by swapping μ and θ roles partially:
    // ln NB(x; μ, θ) + 2 x ln(μ/(θ+μ)) is the NB with the wrong sign on that term.
    let report = check_nb(|x, mu, theta| {
        let wrong = x
            .clone()
            .mul(mu.clone().div(theta.clone().add(mu.clone())).log())
            .mul_scalar(2.0);
        log_nb(x, mu, theta).add(wrong)
    });
    assert!(!report.passed(), "an NB with a flipped term passed");
    // A missing ln Γ(x + 1) normaliser must fail too.
    let report =
        check_nb(|x, mu, theta| log_nb(x.clone(), mu, theta).add(lgamma(x.add_scalar(1.0))));
    assert!(!report.passed(), "an unnormalised NB passed");
}
