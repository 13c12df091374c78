//! The tempered point imputation: how much of the model's cell-to-cell variation of a gene's
//! share of the library to keep, chosen on measured spatial genes.
//!
//! gimVI imputes an unmeasured gene g in a spatial cell n as the expected count
//! μ_ng = ℓ′_n ρ′_ng (Eq. 6 with the observed library ℓ′_n; the share ρ′ the decoder's softmax
//! renormalised over the panel, Eq. 4–5). How a held-out gene's counts vary across cells is
//! then the cell's library times the model's share r_ng = μ_ng / ℓ′_n. On a panel whose
//! measured genes say little about an unmeasured one, the share's variation across cells is
//! partly noise of the latent space, and the per-gene mean × library (the share held constant)
//! ranks the cells better. The tempered imputation lies between the two:
//!
//! μ̃_ng = k_g · ℓ′_n · r_ng^w,  0 ≤ w ≤ 1,
//!
//! w = 1 the model's imputation, w = 0 the library alone; k_g keeps the gene's total over the
//! cells imputed together (Σ_n μ̃_ng = Σ_n μ_ng), so its level, and the calibration's gene-bias
//! line built on it, do not move. The ratio μ̃/ℓ′ is monotone in r for every w > 0, so the
//! normalised ranking of cells is that of the model. The posterior variance v is left as it
//! is: tempering moves the point toward the library but removes none of the model's
//! uncertainty about the cell (carrying v by the delta method, v·(w·μ̃/μ)², was tried: the
//! calibrated intervals built on it were worse, `docs/notes/results-2026-12.md`).
//!
//! w is chosen where the intervals are calibrated ([`crate::calibration`]), on measured
//! spatial genes hidden from extra trainings (never the genes an evaluation scores): the w of
//! a grid 0.05, 0.10, …, 1 whose tempered imputation of the hidden genes has the highest
//! Poisson log-likelihood of their counts, each gene's scale free (its maximum-likelihood
//! value Σx / Σμ̃), so that w is judged on how the counts vary across cells and not on the
//! gene's efficiency, which the gene-bias line handles. Ties go to the larger w (the model).
//! w = 0 is not on the grid: it would give every cell the same share of its library, throwing
//! away the model's ranking of the cells (the normalised values would be constant); in the
//! mSMS example one fold chose it when it was, and κ = 5's normalised Spearman fell from
//! 0.098 (untempered) to 0.047.

use std::collections::BTreeMap;

/// Steps of the grid of w (1/STEPS, 2/STEPS, …, 1: w = 0 excluded, module docs).
const STEPS: usize = 20;
/// Fewer hidden genes than this choose no w (the model's imputation is kept).
const MIN_GENES: usize = 3;
/// Floor of a Poisson rate in the log-likelihood (a zero imputation of a counted gene).
const RATE_FLOOR: f64 = 1e-12;

/// One gene's imputations `mu` over cells with libraries `libs`, tempered with `w` (module
/// docs): k·ℓ′·(μ/ℓ′)^w, k keeping Σμ. Negative or non-finite imputations count as 0.
pub(crate) fn temper_gene(mu: &[f64], libs: &[f64], w: f64) -> Vec<f64> {
    let clean = |m: f64| if m.is_finite() { m.max(0.0) } else { 0.0 };
    let raw: Vec<f64> = mu
        .iter()
        .zip(libs)
        .map(|(&m, &l)| l * (clean(m) / l).powf(w))
        .collect();
    let total: f64 = mu.iter().map(|&m| clean(m)).sum();
    let raw_total: f64 = raw.iter().sum();
    let k = if raw_total > 0.0 {
        total / raw_total
    } else {
        1.0
    };
    raw.into_iter().map(|t| t * k).collect()
}

/// Tempers, with exponent `w`, every column (gene) of the imputed `mean` (cells × genes,
/// expected counts, or with `shares` normalised values: fractions of the cell's library,
/// tempered as the counts ℓ′·r they stand for), the cells having observed libraries `libs`
/// (module docs).
pub(crate) fn temper_columns<T>(mean: &mut ndarray::Array2<T>, libs: &[f64], w: f64, shares: bool)
where
    T: Copy + Into<f64> + FromF64,
{
    let scale = |c: usize| if shares { libs[c] } else { 1.0 };
    for mut column in mean.columns_mut() {
        let mu: Vec<f64> = column
            .iter()
            .enumerate()
            .map(|(c, &m)| m.into() * scale(c))
            .collect();
        let tempered = temper_gene(&mu, libs, w);
        for (c, (m, t)) in column.iter_mut().zip(tempered).enumerate() {
            *m = T::from_f64(t / scale(c));
        }
    }
}

/// Conversion back from the f64 arithmetic of [`temper_columns`] (f32 for the user-facing
/// imputation, f64 for the evaluation's).
pub(crate) trait FromF64 {
    /// The value nearest `v`.
    fn from_f64(v: f64) -> Self;
}

impl FromF64 for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl FromF64 for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

/// The observed libraries ℓ′ of a spatial dataset's cells as the model uses them (row sums,
/// at least the model's floor).
pub(crate) fn libraries(counts: &gimvi_data::CsrMatrix) -> Vec<f64> {
    counts
        .row_sums()
        .into_iter()
        .map(|l| l.max(gimvi_model::module::MIN_OBSERVED_LIBRARY))
        .collect()
}

/// The positions of each gene's points, in gene order (deterministic sums): `genes` gives the
/// gene of every point.
pub(crate) fn rows_by_gene(genes: impl IntoIterator<Item = usize>) -> BTreeMap<usize, Vec<usize>> {
    let mut rows: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, g) in genes.into_iter().enumerate() {
        rows.entry(g).or_default().push(i);
    }
    rows
}

/// One gene's counts x, imputations μ and cell libraries ℓ′, cell by cell.
type GenePoints = (Vec<f64>, Vec<f64>, Vec<f64>);

/// The w of the grid (module docs) that best predicts the counts of the hidden genes: `points`
/// are (gene, x, μ) with the cell's library in `libs`, each gene's points being all the cells
/// of the training that hid it. `None` with fewer than [`MIN_GENES`] genes.
pub(crate) fn choose(points: &[(usize, f64, f64)], libs: &[f64]) -> Option<f64> {
    let genes: Vec<GenePoints> = rows_by_gene(points.iter().map(|p| p.0))
        .into_values()
        .map(|rows| {
            let mut g = GenePoints::default();
            for i in rows {
                let (p, l) = (points[i], libs[i]);
                if p.1.is_finite() && p.2.is_finite() && l.is_finite() && l > 0.0 {
                    g.0.push(p.1.max(0.0));
                    g.1.push(p.2.max(0.0));
                    g.2.push(l);
                }
            }
            g
        })
        .filter(|g| !g.0.is_empty())
        .collect();
    if genes.len() < MIN_GENES {
        return None;
    }
    let log_likelihood = |w: f64| -> f64 {
        genes
            .iter()
            .map(|(x, mu, libs)| {
                let tempered = temper_gene(mu, libs, w);
                let (sx, st): (f64, f64) = (x.iter().sum(), tempered.iter().sum());
                if sx <= 0.0 || st <= 0.0 {
                    return 0.0;
                }
                x.iter()
                    .zip(&tempered)
                    .map(|(&x, &t)| {
                        let rate = (t * sx / st).max(RATE_FLOOR);
                        x * rate.ln() - rate
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    let mut best = (1.0, log_likelihood(1.0));
    // From the model down: a smaller w must be strictly better to be chosen.
    for step in (1..STEPS).rev() {
        let w = step as f64 / STEPS as f64;
        let ll = log_likelihood(w);
        if ll > best.1 {
            best = (w, ll);
        }
    }
    best.1.is_finite().then_some(best.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Poisson};

    #[test]
    fn tempering_keeps_the_gene_total_and_the_cells_order() {
        let mu = [1.0, 4.0, 0.0, 9.0];
        let libs = [10.0, 20.0, 10.0, 30.0];
        for w in [0.0, 0.3, 1.0] {
            let t = temper_gene(&mu, &libs, w);
            approx::assert_relative_eq!(t.iter().sum::<f64>(), 14.0, max_relative = 1e-12);
            if w > 0.0 {
                // Normalised by the library, the order of the cells is the model's.
                let share = |v: &[f64], i: usize| v[i] / libs[i];
                assert!(share(&t, 2) < share(&t, 0) && share(&t, 0) < share(&t, 1));
                assert!(share(&t, 1) < share(&t, 3));
            }
        }
        // w = 1 is the model, w = 0 the library alone (scaled to the gene's total).
        let one = temper_gene(&mu, &libs, 1.0);
        mu.iter()
            .zip(&one)
            .for_each(|(a, b)| approx::assert_relative_eq!(a, b, max_relative = 1e-12));
        let zero = temper_gene(&mu, &libs, 0.0);
        libs.iter()
            .zip(&zero)
            .for_each(|(l, t)| approx::assert_relative_eq!(*t, l * 14.0 / 70.0));
    }

    /// Genes whose true share of the library varies across cells with a latent factor
    /// (log-scale standard deviation 0.5); the imputation sees the factor (`sees_factor`) with
    /// noise of standard deviation `noise` (log scale), or sees only the noise.
    fn panel(noise: f64, sees_factor: bool, seed: u64) -> (Vec<(usize, f64, f64)>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = rand_distr::Normal::new(0.0, 1.0).unwrap();
        let cells = 300;
        let libs: Vec<f64> = (0..cells).map(|_| rng.random_range(50.0..400.0)).collect();
        let factor: Vec<f64> = (0..cells).map(|_| normal.sample(&mut rng)).collect();
        let (mut points, mut point_libs) = (Vec::new(), Vec::new());
        for g in 0..20 {
            let base = 0.01 * (1.0 + g as f64 / 4.0);
            for c in 0..cells {
                let share = base * (0.5 * factor[c]).exp();
                let x = Poisson::new(libs[c] * share).unwrap().sample(&mut rng);
                let seen = if sees_factor { share } else { base };
                let seen = seen * (noise * normal.sample(&mut rng)).exp();
                points.push((g, x, libs[c] * seen));
                point_libs.push(libs[c]);
            }
        }
        (points, point_libs)
    }

    #[test]
    fn the_chosen_exponent_follows_how_much_the_imputed_shares_are_worth() {
        // Shares seen exactly: the model's imputation is kept (or nearly: a grid step).
        let (points, libs) = panel(0.0, true, 1);
        let w = choose(&points, &libs).unwrap();
        assert!(w >= 0.9, "w = {w}");
        // Shares seen through noise twice their spread (a signal share of 0.2 of the
        // log-scale variance): tempered well below 1, not to 0.
        let (points, libs) = panel(1.0, true, 2);
        let w = choose(&points, &libs).unwrap();
        assert!(w > 0.0 && w < 0.6, "w = {w}");
        // Imputed shares that are pure noise: the smallest w of the grid, or nearly.
        let (points, libs) = panel(0.5, false, 3);
        let w = choose(&points, &libs).unwrap();
        assert!(w <= 0.1, "w = {w}");
        // Too few genes: no choice.
        assert_eq!(choose(&points[..600], &libs[..600]), None);
    }
}
