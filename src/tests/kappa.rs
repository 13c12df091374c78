//! The automatic κ (inner cross-validation on the training genes) and the fit sharing that
//! lets κ* reuse a fixed-κ fit of the same fold, on data simulated from the gimVI model.

use super::common::{device, model_config};
use crate::error::Error;
use crate::imputers::{GimviImputer, SharedFits};
use crate::kappa::{choose_kappa_with, KappaChoice};
use gimvi_data::CsrMatrix;
use gimvi_likelihoods::CountLikelihood;
use gimvi_metrics::protocol::{FoldTask, Imputer};
use gimvi_model::simulate::{simulate, Simulation, SimulationConfig};
use gimvi_trainer::TrainConfig;

fn small() -> Simulation {
    simulate(&SimulationConfig {
        n_sc: 200,
        n_spatial: 150,
        n_genes: 24,
        n_spatial_genes: 12,
        seed: 3,
        ..SimulationConfig::default()
    })
}

fn train(epochs: usize, kappa: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        kappa,
        seed: 5,
        ..TrainConfig::default()
    }
}

#[test]
fn inner_validation_pools_the_hidden_genes_of_every_split() {
    let sim = small();
    let config = model_config(&sim, 4);
    let data: [&CsrMatrix; 2] = [&sim.sc_counts, &sim.spatial_counts];
    // 12 spatial genes in 5 groups of 2 or 3 (12·k/5 cut points: 2, 2, 3, 2, 3).
    let choice = choose_kappa_with(&config, &data, &[0.0, 5.0], &train(3, 0.0), 2, &device())
        .expect("κ is chosen");
    assert_eq!(choice.inner_genes, 4);
    assert_eq!(choice.scores.len(), 2);
    assert!(choice.scores.iter().all(|(_, r)| r.is_finite()));
    assert!(choice.kappa == 0.0 || choice.kappa == 5.0);
    // The average of the two candidates is scored too, from the same models.
    assert!(choice.average_score.is_some_and(f64::is_finite));
    // Per-gene inner scores: one per scored pair, for every candidate and the average; the
    // medians reported are theirs.
    assert_eq!(choice.gene_scores.len(), 2);
    assert!(choice.gene_scores.iter().all(|g| g.len() == 4));
    assert_eq!(choice.average_gene_scores.len(), 4);
    for ((_, m), g) in choice.scores.iter().zip(&choice.gene_scores) {
        assert_eq!(Some(*m), gimvi_metrics::correlation::median(g));
    }
    let all = choose_kappa_with(&config, &data, &[0.0], &train(2, 0.0), 5, &device())
        .expect("κ is chosen");
    assert_eq!(all.inner_genes, 12, "5 splits hide every spatial gene once");
    assert_eq!(all.average_score, None, "one candidate: no average");
    assert!(!all.prefers_average());

    for splits in [0, 6] {
        match choose_kappa_with(&config, &data, &[0.0], &train(1, 0.0), splits, &device()) {
            Err(Error::Input(msg)) => assert!(msg.contains("splits"), "{msg}"),
            other => panic!("{splits} splits: expected an input error, got {other:?}"),
        }
    }
}

#[test]
fn the_average_is_kept_unless_a_single_kappa_wins_by_more_than_one_se() {
    let choice = |best: Vec<f64>, average: Vec<f64>| KappaChoice {
        kappa: 1.0,
        scores: vec![(0.0, 0.1), (1.0, 0.5)],
        average_score: Some(0.3),
        inner_genes: best.len(),
        gene_scores: vec![vec![0.1; best.len()], best],
        average_gene_scores: average,
    };
    // κ = 1 above the average on every gene by 0.05 ± 0.01: a clear win.
    let clear = choice(vec![0.45, 0.35, 0.55, 0.25], vec![0.39, 0.30, 0.51, 0.20]);
    assert!(!clear.prefers_average());
    assert_eq!(clear.label_with_average(), "1");
    // Mean difference +0.025 with an SE of ~0.09: noise, the average stays.
    let noisy = choice(vec![0.6, 0.1, 0.5, 0.0], vec![0.3, 0.3, 0.3, 0.2]);
    assert!(noisy.prefers_average());
    assert_eq!(noisy.label_with_average(), "avg");
    // The average better on every gene, and too few genes to tell: the average.
    assert!(choice(vec![0.1, 0.2], vec![0.3, 0.4]).prefers_average());
    assert!(choice(vec![0.9], vec![0.1]).prefers_average());
    // One candidate, no average scored: the single κ.
    let single = KappaChoice {
        average_score: None,
        average_gene_scores: Vec::new(),
        ..clear
    };
    assert!(!single.prefers_average());
}

fn imputer(kappa: f64, auto: bool, shared: Option<SharedFits>) -> GimviImputer {
    GimviImputer {
        name: format!("κ={kappa}"),
        train: train(3, kappa),
        n_latent: 4,
        sc_likelihood: CountLikelihood::Zinb,
        spatial_likelihood: CountLikelihood::Poisson,
        device: device(),
        auto_kappa: auto,
        chosen_kappas: Vec::new(),
        posterior_samples: 0,
        posterior: Vec::new(),
        record_latent: false,
        latents: Vec::new(),
        shared,
        ensemble: 1,
        kappa_average: Vec::new(),
        extra_reference: None,
        calibration_splits: 0,
        calibration_epochs: None,
    }
}

#[test]
fn a_shared_fit_is_the_fit_itself() {
    let sim = small();
    let genes: Vec<String> = sim
        .spatial_genes
        .iter()
        .map(|&g| sim.genes[g].clone())
        .collect();
    let sc = sim.sc_counts.select_cols(&sim.spatial_genes).to_dense_f64();
    let sp = sim.spatial_counts.to_dense_f64();
    let test: Vec<usize> = vec![1, 7];
    let train_genes: Vec<usize> = (0..genes.len()).filter(|g| !test.contains(g)).collect();
    let sp_train = sp.select(ndarray::Axis(1), &train_genes);
    let (sc_cells, sp_cells): (Vec<usize>, Vec<usize>) =
        ((0..sc.nrows()).collect(), (0..sp.nrows()).collect());
    let task = FoldTask {
        fold: 0,
        gene_names: &genes,
        sc_counts: sc.view(),
        sc_cells: &sc_cells,
        spatial_train: sp_train.view(),
        spatial_cells: &sp_cells,
        train_genes: &train_genes,
        test_genes: &test,
        seed: 0,
    };

    let shared = SharedFits::default();
    let first = imputer(1.0, false, Some(shared.clone()))
        .impute(&task)
        .expect("imputes");
    assert_eq!(shared.len(), 1);
    // Trained again from scratch with the same settings: the same numbers (seeded CPU run),
    // which is what makes reusing a stored fit sound.
    let fresh = imputer(1.0, false, None).impute(&task).expect("imputes");
    assert_eq!(first, fresh);
    // Another imputer with the same settings gets the stored fit; a different κ trains.
    let reused = imputer(1.0, false, Some(shared.clone()))
        .impute(&task)
        .expect("imputes");
    assert_eq!(reused, first);
    assert_eq!(shared.len(), 1);
    let other = imputer(5.0, false, Some(shared.clone()))
        .impute(&task)
        .expect("imputes");
    assert_eq!(shared.len(), 2);
    assert_ne!(other, first);

    // κ*: whatever it chooses among 0, 1, 5, its prediction equals a fresh fit with that κ.
    let mut auto = imputer(5.0, true, Some(shared.clone()));
    let chosen = auto.impute(&task).expect("imputes");
    let kappa = auto.chosen_kappas[0].kappa;
    let direct = imputer(kappa, false, None).impute(&task).expect("imputes");
    assert_eq!(chosen, direct, "κ* = {kappa}");

    // Other counts, same fold and settings: a new fit, not the stored one.
    let before = shared.len();
    let doubled = sp_train.mapv(|v| 2.0 * v);
    let other_data = FoldTask {
        spatial_train: doubled.view(),
        ..task
    };
    let refit = imputer(1.0, false, Some(shared.clone()))
        .impute(&other_data)
        .expect("imputes");
    assert_eq!(shared.len(), before + 1);
    assert_ne!(refit, first);
}

#[test]
fn an_ensemble_averages_its_members_and_shares_fits_and_choices() {
    use crate::prepare::ENSEMBLE_SEED_STRIDE;
    let sim = small();
    let genes: Vec<String> = sim
        .spatial_genes
        .iter()
        .map(|&g| sim.genes[g].clone())
        .collect();
    let sc = sim.sc_counts.select_cols(&sim.spatial_genes).to_dense_f64();
    let sp = sim.spatial_counts.to_dense_f64();
    let test: Vec<usize> = vec![2, 9];
    let train_genes: Vec<usize> = (0..genes.len()).filter(|g| !test.contains(g)).collect();
    let sp_train = sp.select(ndarray::Axis(1), &train_genes);
    let (sc_cells, sp_cells): (Vec<usize>, Vec<usize>) =
        ((0..sc.nrows()).collect(), (0..sp.nrows()).collect());
    let task = FoldTask {
        fold: 1,
        gene_names: &genes,
        sc_counts: sc.view(),
        sc_cells: &sc_cells,
        spatial_train: sp_train.view(),
        spatial_cells: &sp_cells,
        train_genes: &train_genes,
        test_genes: &test,
        seed: 0,
    };
    let shared = SharedFits::default();
    let single = imputer(1.0, false, Some(shared.clone()))
        .impute(&task)
        .expect("imputes");
    let mut pair = imputer(1.0, false, Some(shared.clone()));
    pair.ensemble = 2;
    let averaged = pair.impute(&task).expect("imputes");
    // Member 0 was the stored single fit; member 1 trained once more.
    assert_eq!(shared.len(), 2);
    // Member 1 is the fit from seed + stride (fresh, not shared).
    let mut second = imputer(1.0, false, None);
    second.train.seed += ENSEMBLE_SEED_STRIDE;
    let other = second.impute(&task).expect("imputes");
    assert_ne!(other, single, "the members differ");
    let expected = (&single + &other) / 2.0;
    let gap = (&averaged - &expected)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(gap < 1e-9, "ensemble = mean of its members (gap {gap})");

    // κ* ×2 reuses κ*'s inner choice: the inner validation runs once for both.
    let mut auto = imputer(5.0, true, Some(shared.clone()));
    auto.impute(&task).expect("imputes");
    assert_eq!(shared.choices(), 1);
    let mut auto_pair = imputer(5.0, true, Some(shared.clone()));
    auto_pair.ensemble = 2;
    auto_pair.impute(&task).expect("imputes");
    assert_eq!(shared.choices(), 1);
    assert_eq!(auto_pair.chosen_kappas, auto.chosen_kappas);

    // Pooled posterior = the mixture of the members' posteriors (law of total variance).
    let with_samples = |seed_offset: u64, ensemble: usize| {
        let mut m = imputer(1.0, false, None);
        m.train.seed += seed_offset;
        m.posterior_samples = 8;
        m.ensemble = ensemble;
        m.impute(&task).expect("imputes");
        m.posterior.remove(0)
    };
    let (a, b) = (with_samples(0, 1), with_samples(ENSEMBLE_SEED_STRIDE, 1));
    let pooled = with_samples(0, 2);
    let mean = (&a.mean + &b.mean) / 2.0;
    let second =
        (&a.variance + &a.mean.mapv(|m| m * m) + &b.variance + &b.mean.mapv(|m| m * m)) / 2.0;
    let variance = second - mean.mapv(|m| m * m);
    let close = |x: &ndarray::Array2<f64>, y: &ndarray::Array2<f64>| {
        x.iter()
            .zip(y)
            .all(|(u, v)| (u - v).abs() <= 1e-6 * (1.0 + v.abs()))
    };
    assert!(close(&pooled.mean, &mean));
    assert!(close(&pooled.variance, &variance.mapv(|v| v.max(0.0))));
    // The members disagree, so the pooled variance exceeds the members' average variance.
    assert!(pooled.variance.sum() > (&a.variance + &b.variance).sum() / 2.0);

    // With shared fits the one-model imputer stores its posterior with its fit and the
    // ensemble's member 0 takes both from the store: the same numbers as the fresh runs.
    let store = SharedFits::default();
    let shared_run = |ensemble: usize| {
        let mut m = imputer(1.0, false, Some(store.clone()));
        m.posterior_samples = 8;
        m.ensemble = ensemble;
        let prediction = m.impute(&task).expect("imputes");
        (prediction, m.posterior.remove(0))
    };
    let (_, one) = shared_run(1);
    assert_eq!(one, a);
    let (_, reused) = shared_run(2);
    assert_eq!(reused, pooled);
    assert_eq!(store.len(), 2, "member 0 stored once, member 1 added");
}

#[test]
fn an_average_over_kappa_is_the_mean_of_the_fixed_kappa_fits_and_trains_nothing_new() {
    let sim = small();
    let genes: Vec<String> = sim
        .spatial_genes
        .iter()
        .map(|&g| sim.genes[g].clone())
        .collect();
    let sc = sim.sc_counts.select_cols(&sim.spatial_genes).to_dense_f64();
    let sp = sim.spatial_counts.to_dense_f64();
    let test: Vec<usize> = vec![3, 8];
    let train_genes: Vec<usize> = (0..genes.len()).filter(|g| !test.contains(g)).collect();
    let sp_train = sp.select(ndarray::Axis(1), &train_genes);
    let (sc_cells, sp_cells): (Vec<usize>, Vec<usize>) =
        ((0..sc.nrows()).collect(), (0..sp.nrows()).collect());
    let task = FoldTask {
        fold: 2,
        gene_names: &genes,
        sc_counts: sc.view(),
        sc_cells: &sc_cells,
        spatial_train: sp_train.view(),
        spatial_cells: &sp_cells,
        train_genes: &train_genes,
        test_genes: &test,
        seed: 0,
    };
    let shared = SharedFits::default();
    let fixed: Vec<_> = [0.0, 5.0]
        .iter()
        .map(|&k| {
            imputer(k, false, Some(shared.clone()))
                .impute(&task)
                .expect("imputes")
        })
        .collect();
    assert_eq!(shared.len(), 2);
    let mut average = imputer(1.0, false, Some(shared.clone()));
    average.kappa_average = vec![0.0, 5.0];
    let averaged = average.impute(&task).expect("imputes");
    // Both fits were reused: nothing was trained or stored anew.
    assert_eq!(shared.len(), 2);
    let expected = (&fixed[0] + &fixed[1]) / 2.0;
    let gap = (&averaged - &expected)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(gap < 1e-9, "average over κ = mean of the fits (gap {gap})");
    assert_ne!(fixed[0], fixed[1], "the two κ give different fits");

    // Combined with the automatic choice, the average is one more candidate and the default:
    // the fold imputes the average unless a single κ clearly beats it, else that κ's fit — both
    // reused from the fixed-κ imputers, and the inner validation is shared with a κ* imputer
    // over the same candidates.
    let mut both = imputer(1.0, true, Some(shared.clone()));
    both.kappa_average = vec![0.0, 5.0];
    let chosen = both.impute(&task).expect("imputes");
    assert_eq!(shared.len(), 2, "nothing trained for the final imputation");
    assert_eq!(shared.choices(), 1);
    let choice = &both.chosen_kappas[0];
    let best = choice.scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    let avg_score = choice
        .average_score
        .expect("two candidates: the average is scored");
    assert!(avg_score.is_finite());
    // The one-SE rule, recomputed here: the best single κ replaces the average only when its
    // per-gene inner Spearman beats the average's by more than one SE of the difference.
    assert!(choice
        .scores
        .iter()
        .any(|s| s.0 == choice.kappa && s.1 == best));
    let k = usize::from(choice.kappa != 0.0);
    let d: Vec<f64> = choice.gene_scores[k]
        .iter()
        .zip(&choice.average_gene_scores)
        .map(|(b, a)| b - a)
        .collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let se = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
    assert_eq!(choice.prefers_average(), mean <= se, "mean {mean}, se {se}");
    let expected = if choice.prefers_average() {
        averaged.clone()
    } else if choice.kappa == 0.0 {
        fixed[0].clone()
    } else {
        fixed[1].clone()
    };
    assert_eq!(chosen, expected, "choice {}", choice.label_with_average());
    let mut again = imputer(1.0, true, Some(shared.clone()));
    again.kappa_average = vec![0.0, 5.0];
    again.impute(&task).expect("imputes");
    assert_eq!(shared.choices(), 1, "the choice is computed once");
    assert_eq!(again.chosen_kappas, both.chosen_kappas);

    // A bad κ: a typed error, not a panic.
    let mut bad = imputer(1.0, false, None);
    bad.kappa_average = vec![0.0, f64::NAN];
    let err = bad.impute(&task).expect_err("NaN κ is refused");
    assert!(err.to_string().contains("finite number"), "{err}");
}
