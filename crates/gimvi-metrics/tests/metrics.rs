//! Hand-computed and constructed checks of every metric, and the protocol end to end on
//! synthetic data.

use approx::assert_abs_diff_eq;
use gimvi_metrics::correlation::{
    average_ranks, median, pearson, per_gene_spearman, quantile, relative_change, spearman, Summary,
};
use gimvi_metrics::integration::{entropy_of_mixing, knn_purity};
use gimvi_metrics::knn::{knn, knn_self};
use gimvi_metrics::protocol::{
    evaluate, evaluate_with_folds, gene_folds, FoldTask, Imputer, ImputerError,
    KnnExpressionImputer, MeanImputer, OracleImputer, ProtocolConfig, ProtocolReport,
};
use gimvi_metrics::regression::{default_k, knn_regress};
use gimvi_metrics::MetricsError;
use ndarray::{array, Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ------------------------------------------------------------------ correlation

#[test]
fn average_ranks_share_ties() {
    // Values 0,0,0,1,5: the three zeros take ranks 1,2,3 → 2 each; then 4, 5.
    assert_eq!(
        average_ranks(&[0.0, 5.0, 0.0, 1.0, 0.0]),
        vec![2.0, 5.0, 2.0, 4.0, 2.0]
    );
}

#[test]
fn spearman_with_ties_matches_hand_computation() {
    // a = [0,0,0,1,5], b = [0,1,0,0,3] (spatial-like, many zeros).
    // Ranks a = [2,2,2,4,5], ranks b = [2,4,2,2,5]; both means 3.
    // Deviations a = [-1,-1,-1,1,2], b = [-1,1,-1,-1,2];
    // Σ da·db = 1 - 1 + 1 - 1 + 4 = 4; Σ da² = Σ db² = 1+1+1+1+4 = 8; ρ = 4 / 8 = 0.5.
    let rho = spearman(&[0.0, 0.0, 0.0, 1.0, 5.0], &[0.0, 1.0, 0.0, 0.0, 3.0])
        .unwrap()
        .unwrap();
    assert_abs_diff_eq!(rho, 0.5, epsilon = 1e-12);

    // Without ties the classic formula applies: ranks b = [2,1,4,3,5], d = [-1,1,-1,1,0],
    // ρ = 1 − 6 Σd² / (n (n² − 1)) = 1 − 6·4 / (5·24) = 0.8.
    let rho = spearman(&[10.0, 20.0, 30.0, 40.0, 50.0], &[2.0, 1.0, 4.0, 3.0, 5.0])
        .unwrap()
        .unwrap();
    assert_abs_diff_eq!(rho, 0.8, epsilon = 1e-12);

    // A monotone but non-linear relation has Spearman 1 and Pearson < 1.
    let x = [1.0, 2.0, 3.0, 4.0, 10.0];
    let y: Vec<f64> = x.iter().map(|v: &f64| v.powi(3)).collect();
    assert_abs_diff_eq!(spearman(&x, &y).unwrap().unwrap(), 1.0, epsilon = 1e-12);
    assert!(pearson(&x, &y).unwrap().unwrap() < 0.99);
}

#[test]
fn pearson_matches_hand_computation_and_handles_constants() {
    // x = [1,2,3], y = [1,3,2]: deviations [-1,0,1], [-1,1,0]; Σ = 1; Σx² = Σy² = 2; r = 0.5.
    assert_abs_diff_eq!(
        pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0])
            .unwrap()
            .unwrap(),
        0.5,
        epsilon = 1e-12
    );
    assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap(), None);
    assert_eq!(spearman(&[0.0, 0.0, 0.0], &[1.0, 2.0, 3.0]).unwrap(), None);
    assert!(matches!(
        pearson(&[1.0, 2.0], &[1.0]),
        Err(MetricsError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        spearman(&[1.0, f64::NAN], &[1.0, 2.0]),
        Err(MetricsError::NonFinite(_))
    ));
}

#[test]
fn per_gene_spearman_is_columnwise() {
    let pred = array![[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]];
    let truth = array![[10.0, 1.0], [20.0, 2.0], [30.0, 3.0]];
    let r = per_gene_spearman(pred.view(), truth.view()).unwrap();
    assert_abs_diff_eq!(r[0].unwrap(), 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r[1].unwrap(), -1.0, epsilon = 1e-12);
}

#[test]
fn medians_quantiles_and_relative_change() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    // Type-7 quantile of 1..=5 at 0.25: position 1 → 2.
    assert_eq!(quantile(&[5.0, 4.0, 3.0, 2.0, 1.0], 0.25), Some(2.0));
    let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 5.0, f64::NAN]).unwrap();
    assert_eq!((s.n, s.q1, s.median, s.q3, s.mean), (5, 2.0, 3.0, 4.0, 3.0));
    // δρ = (ρ − ρ_ref) / |ρ_ref|: (0.3 − 0.2)/0.2 = 0.5; (0.1 − (−0.2))/0.2 = 1.5.
    let d = relative_change(
        &[Some(0.3), Some(0.1), None],
        &[Some(0.2), Some(-0.2), Some(0.4)],
    );
    assert_abs_diff_eq!(d[0].unwrap(), 0.5, epsilon = 1e-12);
    assert_abs_diff_eq!(d[1].unwrap(), 1.5, epsilon = 1e-12);
    assert_eq!(d[2], None);
}

// ------------------------------------------------------------------ k-NN

fn random_points(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Coarse values so that exact duplicates and distance ties occur.
    Array2::from_shape_fn((n, d), |_| (rng.random_range(0..20) as f32) * 0.5)
}

#[test]
fn kd_tree_agrees_with_brute_force() {
    let pts = random_points(1500, 4, 3);
    let queries = random_points(200, 4, 4);
    let k = 9;
    let got = knn(pts.view(), queries.view(), k).unwrap();
    for (qi, nb) in got.iter().enumerate() {
        let q = queries.row(qi);
        let mut all: Vec<f32> = pts
            .outer_iter()
            .map(|p| p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum())
            .collect();
        all.sort_by(f32::total_cmp);
        let mut mine: Vec<f32> = nb
            .iter()
            .map(|&i| {
                pts.row(i)
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum()
            })
            .collect();
        mine.sort_by(f32::total_cmp);
        assert_eq!(mine, all[..k].to_vec(), "query {qi}");
    }
    // Self-search never returns the point itself.
    let selfnb = knn_self(pts.view(), k).unwrap();
    assert!(selfnb.iter().enumerate().all(|(i, nb)| !nb.contains(&i)));
    assert!(matches!(
        knn_self(pts.view(), 1500),
        Err(MetricsError::InvalidK { .. })
    ));
}

// ------------------------------------------------------------------ integration

/// Two datasets drawn from the same 2-D distribution (mixed) or placed far apart (separated).
fn two_datasets(n0: usize, n1: usize, separated: bool, seed: u64) -> (Array2<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = n0 + n1;
    let labels: Vec<usize> = (0..n).map(|i| usize::from(i >= n0)).collect();
    let pts = Array2::from_shape_fn((n, 2), |(i, _)| {
        let offset = if separated && labels[i] == 1 {
            1000.0
        } else {
            0.0
        };
        offset + rng.random::<f32>()
    });
    (pts, labels)
}

#[test]
fn entropy_of_mixing_is_zero_when_mixed_and_negative_when_separated() {
    let ks = [10, 50, 100];
    // Mixed: neighbourhood proportions scatter binomially around q, E ≈ −(1/q0 + 1/q1)/(2k) ≈ 0.
    let (pts, labels) = two_datasets(2000, 2000, false, 1);
    let e = entropy_of_mixing(pts.view(), &labels, &ks).unwrap();
    let med100 = median(&e[2]).unwrap();
    assert!(
        med100 <= 0.0 && med100 > -0.03,
        "mixed median at k=100: {med100}"
    );

    // Separated, unbalanced (1000 vs 3000 cells, q = 0.25 / 0.75): every neighbourhood is pure,
    // so E = ln q_c exactly: ln 0.25 for dataset 0, ln 0.75 for dataset 1.
    let (pts, labels) = two_datasets(1000, 3000, true, 2);
    let e = entropy_of_mixing(pts.view(), &labels, &ks).unwrap();
    for per_k in &e {
        for (i, v) in per_k.iter().enumerate() {
            let want = if labels[i] == 0 {
                0.25f64.ln()
            } else {
                0.75f64.ln()
            };
            assert_abs_diff_eq!(*v, want, epsilon = 1e-12);
        }
    }
}

#[test]
fn knn_purity_is_one_for_identical_latents_and_low_for_scrambled() {
    let (pts, _) = two_datasets(1500, 0, false, 5);
    let ks = [10, 30];
    let p = knn_purity(pts.view(), pts.view(), &ks).unwrap();
    assert!(p.iter().flatten().all(|&v| v == 1.0));
    // Scramble: the "own" latent of cell i is the point of another cell.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut perm: Vec<usize> = (0..1500).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    let scrambled = pts.select(ndarray::Axis(0), &perm);
    let p = knn_purity(pts.view(), scrambled.view(), &ks).unwrap();
    let m = median(&p[1]).unwrap();
    assert!(m < 0.05, "scrambled purity median {m}");
}

// ------------------------------------------------------------------ k-NN regression

#[test]
fn knn_regression_reproduces_a_smooth_function_on_a_grid() {
    let f = |x: f64, y: f64| {
        (2.0 * std::f64::consts::PI * x).sin() * (std::f64::consts::PI * y).cos() + x * x
    };
    let side = 101;
    let grid = Array2::from_shape_fn((side * side, 2), |(i, j)| {
        let (a, b) = (i / side, i % side);
        (if j == 0 { a } else { b }) as f32 / (side - 1) as f32
    });
    let values = Array2::from_shape_fn((side * side, 1), |(i, _)| {
        f(grid[[i, 0]] as f64, grid[[i, 1]] as f64)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let queries = Array2::from_shape_fn((500, 2), |_| 0.1 + 0.8 * rng.random::<f32>());
    // k = 9: the 3 × 3 grid block around a query (spacing 0.01).
    let pred = knn_regress(grid.view(), values.view(), queries.view(), 9).unwrap();
    let errs: Vec<f64> = (0..500)
        .map(|i| (pred[[i, 0]] - f(queries[[i, 0]] as f64, queries[[i, 1]] as f64)).abs())
        .collect();
    let max = errs.iter().cloned().fold(0.0, f64::max);
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    // |∇f| ≤ 2π + 2 ≈ 8.3 and neighbours lie within ~0.015: error ≤ ~0.12 worst case; on
    // average the symmetric neighbourhood cancels the first-order term.
    assert!(max < 0.06, "max error {max}");
    assert!(mean < 0.015, "mean error {mean}");
    assert_eq!(default_k(3005), 150);
    assert_eq!(default_k(10), 1);
}

// ------------------------------------------------------------------ protocol

#[test]
fn gene_folds_partition_the_genes_reproducibly() {
    let folds = gene_folds(33, 5, 7).unwrap();
    let mut all: Vec<usize> = folds.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..33).collect::<Vec<_>>());
    let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|&s| s == 6 || s == 7), "{sizes:?}");
    assert_eq!(folds, gene_folds(33, 5, 7).unwrap());
    assert_ne!(folds, gene_folds(33, 5, 8).unwrap());
    assert!(matches!(
        gene_folds(3, 5, 0),
        Err(MetricsError::TooFewGenes { .. })
    ));
}

/// Synthetic pair: 6 cell types with distinct gene profiles; scRNA-seq and spatial cells are
/// Poisson draws from the same profiles with different library sizes and a per-gene detection
/// efficiency on the spatial side.
fn synthetic_pair(seed: u64) -> (Vec<String>, Array2<f64>, Array2<f64>) {
    use rand_distr::{Distribution, Poisson};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let genes = 20;
    let types = 6;
    let profile = Array2::from_shape_fn((types, genes), |_| (rng.random::<f64>() * 3.0).exp());
    let efficiency: Vec<f64> = (0..genes).map(|_| 0.3 + rng.random::<f64>()).collect();
    let draw = |n: usize, lib: f64, eff: bool, rng: &mut ChaCha8Rng| {
        Array2::from_shape_fn((n, genes), |(c, g)| {
            let t = c % types;
            let scale = lib * (0.5 + (c * 7919 % 100) as f64 / 100.0);
            let mean = profile[[t, g]] * scale * if eff { efficiency[g] } else { 1.0 };
            Poisson::new(mean.max(1e-9)).unwrap().sample(rng)
        })
    };
    let sc = draw(600, 1.0, false, &mut rng);
    let sp = draw(400, 0.5, true, &mut rng);
    let names = (0..genes).map(|g| format!("Gene{g}")).collect();
    (names, sc, sp)
}

struct WrongShape;
impl Imputer for WrongShape {
    fn name(&self) -> String {
        "wrong shape".into()
    }
    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        Ok(Array2::zeros((1, task.test_genes.len())))
    }
}

#[test]
fn protocol_scores_oracle_baselines_and_reports() {
    let (genes, sc, sp) = synthetic_pair(21);
    let mut oracle = OracleImputer {
        spatial_counts: sp.clone(),
    };
    let mut mean = MeanImputer;
    let mut knn = KnnExpressionImputer::default();
    let config = ProtocolConfig { folds: 5, seed: 3 };
    let report = evaluate(
        &genes,
        sc.view(),
        sp.view(),
        &mut [&mut mean, &mut knn, &mut oracle],
        config,
    )
    .unwrap();
    assert_eq!(report.methods.len(), 3);
    assert_eq!(report.folds.iter().map(Vec::len).sum::<usize>(), 20);
    let by = |name: &str| {
        report
            .methods
            .iter()
            .find(|m| m.name.starts_with(name))
            .unwrap()
    };
    let (m_mean, m_knn, m_oracle) = (by("per-gene"), by("k-NN"), by("oracle"));
    assert_abs_diff_eq!(m_oracle.median_spearman_paper, 1.0, epsilon = 1e-12);
    println!(
        "synthetic: mean {:.3}, kNN {:.3}, oracle {:.3} (paper protocol medians)",
        m_mean.median_spearman_paper, m_knn.median_spearman_paper, m_oracle.median_spearman_paper
    );
    // Cell types drive expression, so neighbours in training-gene space beat library size alone.
    assert!(m_knn.median_spearman_paper > m_mean.median_spearman_paper + 0.1);
    assert!(m_knn.median_spearman_tutorial > m_mean.median_spearman_tutorial);
    assert_eq!(report.reference_method.as_deref(), Some("per-gene mean"));
    assert!(m_mean.median_delta_vs_reference.is_none());
    assert!(m_knn.median_delta_vs_reference.unwrap() > 0.0);
    // Li et al. 2022: the oracle is perfect on all four metrics and first on the accuracy
    // score; k-NN is ahead of the per-gene mean on the correlation-type metrics.
    let l = m_oracle.li2022;
    assert_abs_diff_eq!(l.pcc, 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(l.ssim, 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(l.rmse, 0.0, epsilon = 1e-12);
    assert_abs_diff_eq!(l.js, 0.0, epsilon = 1e-12);
    assert_abs_diff_eq!(m_oracle.accuracy_score, 1.0, epsilon = 1e-12);
    assert!(m_knn.li2022.pcc > m_mean.li2022.pcc);
    assert!(m_knn.accuracy_score >= m_mean.accuracy_score);

    // JSON round trip and markdown.
    let back: ProtocolReport = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(back, report);
    let md = report.to_markdown();
    assert!(md.contains("| k-NN on shared genes |") && md.contains("20 shared genes"));

    // Same seed → same report (timings aside).
    let mut mean2 = MeanImputer;
    let again = evaluate(&genes, sc.view(), sp.view(), &mut [&mut mean2], config).unwrap();
    assert_eq!(again.methods[0].per_gene, report.methods[0].per_gene);

    // Explicit folds: the seeded split given by hand reproduces the seeded run.
    let folds = gene_folds(genes.len(), 5, 3).unwrap();
    let mut mean3 = MeanImputer;
    let given =
        evaluate_with_folds(&genes, sc.view(), sp.view(), &mut [&mut mean3], &folds, 3).unwrap();
    assert_eq!(given.methods[0].per_gene, report.methods[0].per_gene);
    assert_eq!(given.folds, report.folds);
}

#[test]
fn explicit_folds_must_partition_the_genes() {
    let (genes, sc, sp) = synthetic_pair(5);
    let mut mean = MeanImputer;
    let all: Vec<usize> = (0..genes.len()).collect();
    let bad: [Vec<Vec<usize>>; 4] = [
        vec![all.clone()],                                    // one fold
        vec![all[..10].to_vec(), all[9..].to_vec()],          // gene 9 twice
        vec![all[..10].to_vec(), all[11..].to_vec()],         // gene 10 missing
        vec![all[..10].to_vec(), vec![], all[10..].to_vec()], // empty fold
    ];
    for folds in bad {
        let e = evaluate_with_folds(&genes, sc.view(), sp.view(), &mut [&mut mean], &folds, 0)
            .unwrap_err();
        assert!(matches!(e, MetricsError::InvalidFolds(_)), "{e}");
    }
    let out_of_range = vec![all[..10].to_vec(), all[10..].to_vec(), vec![99]];
    let e = evaluate_with_folds(
        &genes,
        sc.view(),
        sp.view(),
        &mut [&mut mean],
        &out_of_range,
        0,
    )
    .unwrap_err();
    assert!(matches!(e, MetricsError::ShapeMismatch { .. }), "{e}");
}

#[test]
fn protocol_rejects_bad_input_with_typed_errors() {
    let (genes, sc, mut sp) = synthetic_pair(4);
    let mut mean = MeanImputer;
    let cfg = ProtocolConfig::default();
    let e = evaluate(&genes[..19], sc.view(), sp.view(), &mut [&mut mean], cfg).unwrap_err();
    assert!(matches!(e, MetricsError::ShapeMismatch { .. }), "{e}");
    let mut wrong = WrongShape;
    let e = evaluate(&genes, sc.view(), sp.view(), &mut [&mut wrong], cfg).unwrap_err();
    assert!(e.to_string().contains("imputer output"), "{e}");
    sp[[3, 3]] = f64::NAN;
    let e = evaluate(&genes, sc.view(), sp.view(), &mut [&mut mean], cfg).unwrap_err();
    assert!(matches!(e, MetricsError::NonFinite(_)), "{e}");
    sp[[3, 3]] = -1.0;
    let e = evaluate(&genes, sc.view(), sp.view(), &mut [&mut mean], cfg).unwrap_err();
    assert!(matches!(e, MetricsError::Negative(_)), "{e}");
}

/// Records which cells each fold hands over and predicts the measured values of those cells.
struct Recorder {
    spatial_counts: Array2<f64>,
    seen: Vec<(usize, Vec<usize>, Vec<usize>)>,
}

impl Imputer for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    fn impute(&mut self, task: &FoldTask<'_>) -> Result<Array2<f64>, ImputerError> {
        assert_eq!(task.sc_counts.nrows(), task.sc_cells.len());
        assert_eq!(task.spatial_train.nrows(), task.spatial_cells.len());
        // The rows handed over are the named rows' training-gene counts, all with a library.
        for (i, &c) in task.spatial_cells.iter().enumerate() {
            for (j, &g) in task.train_genes.iter().enumerate() {
                assert_eq!(task.spatial_train[[i, j]], self.spatial_counts[[c, g]]);
            }
        }
        assert!(task.spatial_library().iter().all(|&l| l > 0.0));
        self.seen.push((
            task.fold,
            task.sc_cells.to_vec(),
            task.spatial_cells.to_vec(),
        ));
        Ok(self
            .spatial_counts
            .select(Axis(0), task.spatial_cells)
            .select(Axis(1), task.test_genes))
    }
}

#[test]
fn cells_without_counts_on_a_folds_training_genes_are_left_out_of_that_fold() {
    let (genes, mut sc, mut sp) = synthetic_pair(9);
    let folds = vec![(0..10).collect::<Vec<_>>(), (10..20).collect::<Vec<_>>()];
    // Spatial cell 0 has counts only on fold 0's held-out genes: fold 0 leaves it out (it has
    // no library on the training genes 10..20), fold 1 keeps it. scRNA-seq cell 1 has counts
    // only on genes 10..20: fold 1 (training genes 0..10) leaves it out.
    for g in 10..20 {
        sp[[0, g]] = 0.0;
    }
    sp[[0, 0]] = 5.0;
    for g in 0..10 {
        sc[[1, g]] = 0.0;
    }
    sc[[1, 15]] = 3.0;
    let mut rec = Recorder {
        spatial_counts: sp.clone(),
        seen: Vec::new(),
    };
    let report =
        evaluate_with_folds(&genes, sc.view(), sp.view(), &mut [&mut rec], &folds, 0).unwrap();
    let (f0, f1) = (&rec.seen[0], &rec.seen[1]);
    assert_eq!((f0.0, f1.0), (0, 1));
    assert!(!f0.2.contains(&0) && f1.2.contains(&0));
    assert!(f0.1.contains(&1) && !f1.1.contains(&1));
    assert_eq!(report.fold_spatial_cells, vec![f0.2.len(), f1.2.len()]);
    assert_eq!(report.fold_sc_cells, vec![f0.1.len(), f1.1.len()]);
    assert_eq!(f0.2.len(), sp.nrows() - 1);
    // The measured values of the kept cells score 1 on every gene: the left-out cell's
    // count on gene 0 is not among the scored pairs.
    for s in &report.methods[0].per_gene {
        assert_abs_diff_eq!(s.spearman_paper.unwrap(), 1.0, epsilon = 1e-12);
    }
    assert!(report.to_markdown().contains("left out"));

    // A fold whose training genes no spatial cell expresses is a typed error.
    let mut empty = sp.clone();
    empty.slice_mut(ndarray::s![.., 10..]).fill(0.0);
    let mut mean = MeanImputer;
    let e = evaluate_with_folds(&genes, sc.view(), empty.view(), &mut [&mut mean], &folds, 0)
        .unwrap_err();
    assert!(matches!(e, MetricsError::Empty(_)), "{e}");
    assert!(e.to_string().contains("spatial cells"), "{e}");
}

#[test]
fn a_peer_gene_without_any_prediction_scores_as_undefined_a_partial_one_fails() {
    use gimvi_metrics::protocol::PrecomputedImputer;
    let (genes, sc, sp) = synthetic_pair(21);
    // The measured values as the peer's predictions, gene 0 missing everywhere.
    let mut predictions = sp.clone();
    predictions.column_mut(0).fill(f64::NAN);
    let mut peer = PrecomputedImputer {
        name: "peer".into(),
        predictions: predictions.clone(),
    };
    let config = ProtocolConfig { folds: 5, seed: 3 };
    let report = evaluate(&genes, sc.view(), sp.view(), &mut [&mut peer], config).unwrap();
    let m = &report.methods[0];
    assert_eq!(m.undefined_genes, 1);
    assert!(m.median_spearman_paper > 0.9, "{}", m.median_spearman_paper);
    // A prediction missing in one cell only: the tool dropped a cell, which is an error.
    predictions.column_mut(0).assign(&sp.column(0));
    predictions[[2, 1]] = f64::NAN;
    let mut partial = PrecomputedImputer {
        name: "peer".into(),
        predictions,
    };
    let err = evaluate(&genes, sc.view(), sp.view(), &mut [&mut partial], config).unwrap_err();
    assert!(err.to_string().contains("no finite prediction"), "{err}");
}
