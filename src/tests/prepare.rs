//! Pipeline helpers outside the κ machinery: the single-dataset model behind Fig. 2's purity.

use crate::error::Error;
use crate::prepare::single_dataset_latent;
use crate::{BackendKind, Device};
use gimvi_likelihoods::CountLikelihood;
use gimvi_model::simulate::{simulate, SimulationConfig};
use gimvi_trainer::TrainConfig;

fn device() -> Device {
    BackendKind::default()
        .open()
        .expect("the default CPU backend opens")
        .autodiff()
}

#[test]
fn a_single_dataset_latent_is_seeded_and_refuses_mismatched_genes() {
    let sim = simulate(&SimulationConfig {
        n_sc: 120,
        n_spatial: 100,
        n_genes: 20,
        n_spatial_genes: 10,
        seed: 2,
        ..SimulationConfig::default()
    });
    let train = TrainConfig {
        epochs: 5,
        // Ignored: a model of one dataset has no adversary.
        kappa: 5.0,
        seed: 9,
        ..TrainConfig::default()
    };
    let spatial_genes: Vec<String> = sim
        .spatial_genes
        .iter()
        .map(|&g| sim.genes[g].clone())
        .collect();
    let run = |seed: u64| {
        single_dataset_latent(
            &sim.spatial_counts,
            &spatial_genes,
            CountLikelihood::Poisson,
            false,
            4,
            &TrainConfig {
                seed,
                ..train.clone()
            },
            &device(),
        )
        .expect("a spatial-only model trains")
    };
    let (a, b, c) = (run(9), run(9), run(10));
    assert_eq!(a.dim(), (sim.spatial_counts.n_rows(), 4));
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, b, "the same seed gives the same latent space");
    assert_ne!(a, c, "another seed gives another latent space");

    // The scRNA-seq side, with a modelled library.
    let z = single_dataset_latent(
        &sim.sc_counts,
        &sim.genes,
        CountLikelihood::Zinb,
        true,
        4,
        &train,
        &device(),
    )
    .expect("an scRNA-seq-only model trains");
    assert_eq!(z.dim(), (sim.sc_counts.n_rows(), 4));

    // One gene name too few for the matrix.
    let err = single_dataset_latent(
        &sim.spatial_counts,
        &spatial_genes[1..],
        CountLikelihood::Poisson,
        false,
        4,
        &train,
        &device(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    assert!(err.to_string().contains("gene names"), "{err}");
}

#[test]
fn method_names_are_the_reports_row_names() {
    use crate::imputers::method_name;
    assert_eq!(method_name(5.0, false, &[], 1), "gimVI κ=5");
    assert_eq!(method_name(0.5, false, &[], 3), "gimVI κ=0.5 ×3");
    assert_eq!(method_name(5.0, true, &[], 1), "gimVI κ* (automatic)");
    assert_eq!(method_name(5.0, true, &[], 3), "gimVI κ* ×3");
    assert_eq!(
        method_name(5.0, false, &[0.0, 1.0, 5.0], 1),
        "gimVI avg κ=0,1,5"
    );
    assert_eq!(
        method_name(1.0, false, &[0.0, 5.0], 2),
        "gimVI avg κ=0,5 ×2"
    );
}
