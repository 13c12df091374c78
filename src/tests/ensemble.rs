//! `ModelEnsemble`: several trained models imputing as one (seeds and κ as documented, the
//! pooled posterior by the law of total variance), saved and loaded as a folder, and refusing
//! inconsistent input with typed errors.

use super::common::{device, model_config};
use crate::ensemble::{EnsembleMember, FitObserver, ModelEnsemble};
use crate::error::Error;
use crate::prepare::ENSEMBLE_SEED_STRIDE;
use gimvi_model::simulate::{simulate, Simulation, SimulationConfig};
use gimvi_model::{GimviModel, Imputation, ImputeOptions, ModelError};
use gimvi_trainer::TrainConfig;

fn small() -> Simulation {
    simulate(&SimulationConfig {
        n_sc: 120,
        n_spatial: 80,
        n_genes: 16,
        n_spatial_genes: 8,
        seed: 4,
        ..SimulationConfig::default()
    })
}

fn train() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        seed: 11,
        ..TrainConfig::default()
    }
}

#[test]
fn an_ensemble_averages_its_members_and_pools_their_posteriors() {
    let sim = small();
    let config = model_config(&sim, 4);
    let data = [&sim.sc_counts, &sim.spatial_counts];
    let mut seen = Vec::new();
    let ensemble = ModelEnsemble::fit(
        &config,
        &data,
        &train(),
        &[0.0, 5.0],
        2,
        &device(),
        &mut FitObserver {
            on_model: &mut |i, n, k, s| seen.push((i, n, k, s)),
            on_epoch: &mut |_| {},
        },
    )
    .expect("the ensemble trains");
    assert_eq!(ensemble.len(), 4);
    assert!(!ensemble.is_empty());
    // Models in κ order, member k of every κ from seed + k · stride.
    let s = ENSEMBLE_SEED_STRIDE;
    assert_eq!(
        seen,
        vec![
            (0, 4, 0.0, 11),
            (1, 4, 0.0, 11 + s),
            (2, 4, 5.0, 11),
            (3, 4, 5.0, 11 + s)
        ]
    );
    assert_eq!(ensemble.members()[3].kappa, Some(5.0));
    assert_eq!(ensemble.members()[0].history.len(), 3);

    let genes: Vec<usize> = (0..config.n_genes()).collect();
    let options = ImputeOptions {
        samples: 10,
        normalized: false,
        seed: 3,
    };
    let pooled = ensemble
        .impute(1, &sim.spatial_counts, &genes, options)
        .expect("the ensemble imputes");
    let variance = pooled.variance.as_ref().expect("a pooled variance");
    // The same by hand from each member's own imputation (its documented sample seed).
    let parts: Vec<Imputation> = ensemble
        .members()
        .iter()
        .enumerate()
        .map(|(k, m)| {
            m.model
                .impute(
                    1,
                    &sim.spatial_counts,
                    &genes,
                    ImputeOptions {
                        seed: 3 + k as u64 * s,
                        ..options
                    },
                )
                .expect("a member imputes")
        })
        .collect();
    let mut members_differ = false;
    let mut between_total = 0.0;
    for ((i, j), &mean) in pooled.mean.indexed_iter() {
        let means: Vec<f64> = parts.iter().map(|p| f64::from(p.mean[[i, j]])).collect();
        let vars: Vec<f64> = parts
            .iter()
            .map(|p| f64::from(p.variance.as_ref().expect("variance")[[i, j]]))
            .collect();
        let m = means.iter().sum::<f64>() / 4.0;
        let between = means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 4.0;
        let within = vars.iter().sum::<f64>() / 4.0;
        approx::assert_relative_eq!(f64::from(mean), m, max_relative = 1e-5, epsilon = 1e-6);
        approx::assert_relative_eq!(
            f64::from(variance[[i, j]]),
            within + between,
            max_relative = 1e-3,
            epsilon = 1e-5
        );
        members_differ |= (means[0] - means[1]).abs() > 1e-4;
        between_total += between;
    }
    assert!(
        members_differ,
        "members trained from different seeds differ"
    );
    assert!(
        between_total > 0.0,
        "the disagreement between members adds to the variance"
    );
    // Without samples: the average of the members' decoded means, and no variance.
    let plain = ensemble
        .impute(
            1,
            &sim.spatial_counts,
            &genes,
            ImputeOptions {
                samples: 0,
                ..options
            },
        )
        .expect("the ensemble imputes");
    assert!(plain.variance.is_none());
    assert!(plain.mean.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Latents are the first member's.
    assert_eq!(
        ensemble.latent(1, &sim.spatial_counts).expect("latent"),
        ensemble
            .first()
            .latent(1, &sim.spatial_counts)
            .expect("latent")
    );
}

#[test]
fn an_ensemble_round_trips_through_a_folder_and_reads_single_model_folders() {
    let sim = small();
    let config = model_config(&sim, 4);
    let data = [&sim.sc_counts, &sim.spatial_counts];
    let ensemble = ModelEnsemble::fit(
        &config,
        &data,
        &train(),
        &[1.0],
        3,
        &device(),
        &mut FitObserver::quiet_observer(),
    )
    .expect("the ensemble trains");
    let dir = tempfile::tempdir().expect("a temporary folder");
    ensemble.save(dir.path()).expect("the ensemble saves");
    assert!(dir.path().join("weights.bpk").exists());
    assert!(dir.path().join("member-2/weights.bpk").exists());
    assert!(dir.path().join("member-1/history.json").exists());
    let loaded = ModelEnsemble::load(dir.path(), &device()).expect("the ensemble loads");
    assert_eq!(loaded.len(), 3);
    assert_eq!(
        loaded.members()[2].seed,
        Some(11 + 2 * ENSEMBLE_SEED_STRIDE)
    );
    assert_eq!(loaded.members()[1].kappa, Some(1.0));
    let genes = vec![0, 1, 2, 9];
    let options = ImputeOptions {
        samples: 4,
        normalized: true,
        seed: 0,
    };
    let before = ensemble
        .impute(1, &sim.spatial_counts, &genes, options)
        .expect("imputes");
    let after = loaded
        .impute(1, &sim.spatial_counts, &genes, options)
        .expect("imputes");
    for (a, b) in before.mean.iter().zip(after.mean.iter()) {
        approx::assert_relative_eq!(*a, *b, max_relative = 1e-5);
    }
    // Member 0 is a plain model folder; a folder written by GimviModel::save alone loads as a
    // one-member ensemble that imputes exactly as the model does.
    let first = GimviModel::load(dir.path(), &device()).expect("member 0 is a plain model");
    assert_eq!(first.config, *ensemble.config());
    let single = tempfile::tempdir().expect("a temporary folder");
    ensemble.first().save(single.path()).expect("saves");
    let one = ModelEnsemble::load(single.path(), &device()).expect("loads");
    assert_eq!(one.len(), 1);
    assert_eq!(one.members()[0].kappa, None);
    let direct = ensemble
        .first()
        .impute(1, &sim.spatial_counts, &genes, options)
        .expect("imputes");
    let via = one
        .impute(1, &sim.spatial_counts, &genes, options)
        .expect("imputes");
    assert_eq!(direct, via);
}

#[test]
fn inconsistent_ensembles_get_typed_errors() {
    let sim = small();
    let config = model_config(&sim, 4);
    let data = [&sim.sc_counts, &sim.spatial_counts];
    let fit = |kappas: &[f64], members: usize| {
        ModelEnsemble::fit(
            &config,
            &data,
            &train(),
            kappas,
            members,
            &device(),
            &mut FitObserver::quiet_observer(),
        )
    };
    assert!(matches!(fit(&[], 2), Err(Error::Input(_))));
    assert!(matches!(fit(&[1.0], 0), Err(Error::Input(_))));
    let err = fit(&[0.0, f64::NAN], 1).expect_err("NaN κ");
    assert!(err.to_string().contains("κ"), "{err}");
    assert!(matches!(
        ModelEnsemble::new(Vec::new()),
        Err(ModelError::Config(_))
    ));
    let member = |model| EnsembleMember {
        model,
        kappa: None,
        seed: None,
        history: Vec::new(),
    };
    let a = GimviModel::new(config.clone(), &device(), 0).expect("a model");
    let b = GimviModel::new(model_config(&sim, 3), &device(), 0).expect("a model");
    let err = ModelEnsemble::new(vec![member(a), member(b)]).expect_err("two configurations");
    assert!(err.to_string().contains("member 1"), "{err}");

    // A corrupt index names the file.
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("ensemble.json"), "{ not json").expect("write");
    let err = ModelEnsemble::load(dir.path(), &device()).expect_err("a corrupt index");
    assert!(err.to_string().contains("ensemble.json"), "{err}");
    // A member folder that is missing is named.
    let ensemble = fit(&[0.0], 2).expect("trains");
    let dir = tempfile::tempdir().expect("a temporary folder");
    ensemble.save(dir.path()).expect("saves");
    std::fs::remove_dir_all(dir.path().join("member-1")).expect("remove");
    let err = ModelEnsemble::load(dir.path(), &device()).expect_err("a missing member");
    assert!(err.to_string().contains("member-1"), "{err}");
}
