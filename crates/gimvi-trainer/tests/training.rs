//! Training on data simulated from the gimVI generative model (CPU backend).

use burn::tensor::Device;
use gimvi_data::CsrMatrix;
use gimvi_metrics::correlation::{median, spearman};
use gimvi_metrics::knn::knn_self;
use gimvi_model::simulate::{simulate, Simulation, SimulationConfig};
use gimvi_model::{
    CountLikelihood, DatasetSpec, GimviModel, ImputeOptions, LibraryModel, ModelConfig, ModelError,
};
use gimvi_trainer::{train, TrainConfig, TrainError, TrainResult};
use ndarray::Array2;

#[allow(deprecated)] // burn-ndarray is the default CPU backend.
fn device() -> Device {
    Device::ndarray().autodiff()
}

fn log_library_prior(counts: &CsrMatrix) -> LibraryModel {
    let (log_mean, log_var) = gimvi_data::prepare::log_library_moments(counts);
    LibraryModel::Latent { log_mean, log_var }
}

fn model_for(sim: &Simulation, sc_likelihood: CountLikelihood) -> GimviModel {
    let sc = DatasetSpec {
        name: "scRNA-seq".into(),
        genes: sim.genes.clone(),
        gene_index: (0..sim.genes.len()).collect(),
        likelihood: sc_likelihood,
        library: log_library_prior(&sim.sc_counts),
    };
    let spatial = DatasetSpec {
        name: "spatial".into(),
        genes: sim
            .spatial_genes
            .iter()
            .map(|&g| sim.genes[g].clone())
            .collect(),
        gene_index: sim.spatial_genes.clone(),
        likelihood: CountLikelihood::Poisson,
        library: LibraryModel::Observed,
    };
    let config = ModelConfig::new(sim.genes.clone(), vec![sc, spatial]).with_latent(6);
    GimviModel::new(config, &device(), 7).expect("valid configuration")
}

fn fit(sim: &Simulation, cfg: &TrainConfig) -> TrainResult {
    let model = model_for(sim, CountLikelihood::Zinb);
    train(model, &[&sim.sc_counts, &sim.spatial_counts], cfg, |_| {}).expect("training runs")
}

fn quick(epochs: usize, kappa: f64, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        kappa,
        seed,
        ..TrainConfig::default()
    }
}

/// Median over held-out genes of the Spearman correlation across spatial cells.
fn median_spearman(pred: &Array2<f64>, sim: &Simulation) -> f64 {
    let rhos: Vec<f64> = sim
        .held_out_genes
        .iter()
        .enumerate()
        .map(|(j, &g)| {
            let p: Vec<f64> = pred.column(j).to_vec();
            let t: Vec<f64> = sim.spatial_all_counts.column(g).to_vec();
            spearman(&p, &t).unwrap().unwrap_or(0.0)
        })
        .collect();
    median(&rhos).unwrap()
}

#[test]
fn training_raises_the_elbo_and_imputes_better_than_the_mean() {
    let sim = simulate(&SimulationConfig {
        seed: 1,
        ..SimulationConfig::default()
    });
    let result = fit(&sim, &quick(60, 5.0, 1));
    let first = result.history[0].validation_loss.unwrap();
    let last = result.history.last().unwrap().validation_loss.unwrap();
    println!("validation −ELBO per cell: epoch 0 {first:.2} → epoch 59 {last:.2}");
    assert!(
        last < first,
        "validation loss did not fall: {first} → {last}"
    );

    // gimVI: expected counts of the held-out genes (ρ′ scaled by the observed library).
    let imputed = result
        .model
        .impute(
            1,
            &sim.spatial_counts,
            &sim.held_out_genes,
            ImputeOptions {
                normalized: false,
                ..ImputeOptions::default()
            },
        )
        .unwrap();
    let gimvi = median_spearman(&imputed.mean.mapv(f64::from), &sim);

    // Baseline: each gene's scRNA-seq mean (as a fraction of the measured-gene library) times
    // the spatial cell's library.
    let sc_lib: Vec<f64> = sim.sc_counts.select_cols(&sim.spatial_genes).row_sums();
    let sc = sim.sc_counts.to_dense_f64();
    let means: Vec<f64> = sim
        .held_out_genes
        .iter()
        .map(|&g| {
            (0..sc.nrows())
                .filter(|&c| sc_lib[c] > 0.0)
                .map(|c| sc[[c, g]] / sc_lib[c])
                .sum::<f64>()
                / sc.nrows() as f64
        })
        .collect();
    let sp_lib = sim.spatial_counts.row_sums();
    let baseline =
        Array2::from_shape_fn((sp_lib.len(), means.len()), |(c, j)| means[j] * sp_lib[c]);
    let base = median_spearman(&baseline, &sim);
    println!("median Spearman over held-out genes: gimVI {gimvi:.3}, per-gene mean {base:.3}");
    assert!(gimvi > base + 0.15, "gimVI {gimvi} vs mean baseline {base}");
}

#[test]
fn seeded_runs_are_identical_and_save_load_round_trips() {
    let sim = simulate(&SimulationConfig {
        n_sc: 300,
        n_spatial: 250,
        seed: 2,
        ..SimulationConfig::default()
    });
    let opts = ImputeOptions {
        samples: 5,
        normalized: true,
        seed: 9,
    };
    let a = fit(&sim, &quick(6, 5.0, 3));
    let b = fit(&sim, &quick(6, 5.0, 3));
    let losses = |r: &TrainResult| {
        r.history
            .iter()
            .map(|h| (h.loss, h.validation_loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));
    let ia = a
        .model
        .impute(1, &sim.spatial_counts, &sim.held_out_genes, opts)
        .unwrap();
    let ib = b
        .model
        .impute(1, &sim.spatial_counts, &sim.held_out_genes, opts)
        .unwrap();
    assert_eq!(ia, ib);
    assert!(ia
        .variance
        .as_ref()
        .unwrap()
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0));

    let dir = tempfile::tempdir().unwrap();
    a.model.save(dir.path()).unwrap();
    let loaded = GimviModel::load(dir.path(), &device()).unwrap();
    assert_eq!(loaded.config, a.model.config);
    let il = loaded
        .impute(1, &sim.spatial_counts, &sim.held_out_genes, opts)
        .unwrap();
    assert_eq!(il, ia);
    assert_eq!(
        loaded.latent(0, &sim.sc_counts).unwrap(),
        a.model.latent(0, &sim.sc_counts).unwrap()
    );
}

/// Balanced accuracy of predicting each cell's dataset from its 15 nearest neighbours in z.
fn knn_dataset_accuracy(z_sc: &Array2<f32>, z_sp: &Array2<f32>) -> f64 {
    let z = ndarray::concatenate(ndarray::Axis(0), &[z_sc.view(), z_sp.view()]).unwrap();
    let labels: Vec<usize> = (0..z.nrows())
        .map(|i| usize::from(i >= z_sc.nrows()))
        .collect();
    let nb = knn_self(z.view(), 15).unwrap();
    let mut hits = [0usize; 2];
    for (i, n) in nb.iter().enumerate() {
        let same = n.iter().filter(|&&j| labels[j] == labels[i]).count();
        if 2 * same > n.len() {
            hits[labels[i]] += 1;
        }
    }
    0.5 * (hits[0] as f64 / z_sc.nrows() as f64 + hits[1] as f64 / z_sp.nrows() as f64)
}

#[test]
fn the_adversary_mixes_shifted_datasets() {
    let sim = simulate(&SimulationConfig {
        shift: true,
        seed: 4,
        ..SimulationConfig::default()
    });
    let mut acc = Vec::new();
    for kappa in [0.0, 5.0] {
        let r = fit(&sim, &quick(100, kappa, 5));
        let z_sc = r.model.latent(0, &sim.sc_counts).unwrap();
        let z_sp = r.model.latent(1, &sim.spatial_counts).unwrap();
        acc.push(knn_dataset_accuracy(&z_sc, &z_sp));
    }
    println!(
        "balanced k-NN accuracy of the dataset label on z: κ=0 {:.3}, κ=5 {:.3}",
        acc[0], acc[1]
    );
    assert!(acc[1] < acc[0] - 0.05, "κ=5 {} vs κ=0 {}", acc[1], acc[0]);
}

#[test]
fn nan_input_is_refused_before_training() {
    let sim = simulate(&SimulationConfig {
        n_sc: 50,
        n_spatial: 40,
        ..SimulationConfig::default()
    });
    let mut dense = sim.sc_counts.to_dense();
    dense[7] = f32::NAN;
    let bad =
        CsrMatrix::from_dense(sim.sc_counts.n_rows(), sim.sc_counts.n_cols(), &dense).unwrap();
    let mut epochs_run = 0;
    let err = train(
        model_for(&sim, CountLikelihood::Nb),
        &[&bad, &sim.spatial_counts],
        &quick(3, 5.0, 0),
        |_| epochs_run += 1,
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::Model(ModelError::InvalidInput(_))),
        "{err}"
    );
    assert!(err.to_string().contains("non-finite"), "{err}");
    assert_eq!(epochs_run, 0);
    // Wrong number of genes for the spatial dataset.
    let err = train(
        model_for(&sim, CountLikelihood::Nb),
        &[&sim.sc_counts, &sim.sc_counts],
        &quick(3, 5.0, 0),
        |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::Model(ModelError::Shape { .. })),
        "{err}"
    );
}

/// Every 2-D float parameter with `genes` rows or columns (the layers that touch every gene),
/// as host values.
struct WideParams {
    genes: usize,
    found: Vec<Vec<f32>>,
}

impl burn::module::ModuleVisitor for WideParams {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::Tensor<D>>) {
        let t = param.val();
        let dims = t.dims();
        if D == 2 && (dims[0] == self.genes || dims[1] == self.genes) {
            self.found.push(
                t.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap(),
            );
        }
    }
}

fn wide_params(model: &GimviModel, genes: usize) -> Vec<Vec<f32>> {
    use burn::module::Module;
    let mut v = WideParams {
        genes,
        found: Vec::new(),
    };
    model.module.visit(&mut v);
    v.found
}

/// A scRNA-seq dataset of ≥ `HOST_PATH_MIN_GENES` genes trains through the host path
/// (`gimvi_model::host`): the layers that touch every gene get their gradients from it (their
/// weights move), a seeded run is reproducible, and the ELBO improves.
#[test]
fn wide_data_trains_through_the_host_path_reproducibly() {
    let genes = gimvi_model::HOST_PATH_MIN_GENES + 76;
    let sim = simulate(&SimulationConfig {
        n_sc: 200,
        n_spatial: 150,
        n_genes: genes,
        seed: 4,
        ..SimulationConfig::default()
    });
    let before = wide_params(&model_for(&sim, CountLikelihood::Zinb), genes);
    // Private and library encoder input layers, ρ and dropout heads, ln θ.
    assert_eq!(before.len(), 5);
    let a = fit(&sim, &quick(4, 5.0, 1));
    let b = fit(&sim, &quick(4, 5.0, 1));
    let losses = |r: &TrainResult| {
        r.history
            .iter()
            .map(|h| (h.loss, h.validation_loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));
    let after = wide_params(&a.model, genes);
    for (i, (p0, p1)) in before.iter().zip(&after).enumerate() {
        let moved = p0.iter().zip(p1).filter(|(x, y)| x != y).count();
        assert!(
            moved > p0.len() / 2,
            "wide parameter {i}: only {moved} of {} entries changed",
            p0.len()
        );
    }
    let first = a.history.first().unwrap().reconstruction;
    let last = a.history.last().unwrap().reconstruction;
    assert!(last < first, "reconstruction {first} → {last}");
}

/// The host step (`TrainConfig::host_step`, the default on CPU for narrow datasets) trains as
/// burn's autodiff graph does: over three epochs of ZINB + Poisson data with the adversary, the
/// per-epoch losses, KL, classifier loss and validation ELBO agree to float round-off.
#[test]
fn the_host_step_trains_as_the_graph_does() {
    host_and_graph_agree(false);
}

/// As `the_host_step_trains_as_the_graph_does`, with the classifier trained on a second pass
/// of the encoders (`classifier_second_pass`: on the host, `GimviModule::host_encode_sample`).
#[test]
fn the_host_second_pass_trains_as_the_graph_does() {
    host_and_graph_agree(true);
}

fn host_and_graph_agree(second_pass: bool) {
    let sim = simulate(&SimulationConfig {
        n_sc: 300,
        n_spatial: 250,
        seed: 4,
        ..SimulationConfig::default()
    });
    let config = TrainConfig {
        classifier_second_pass: second_pass,
        ..quick(3, 5.0, 6)
    };
    let host = fit(&sim, &config);
    let graph = fit(
        &sim,
        &TrainConfig {
            host_step: false,
            ..config.clone()
        },
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(1.0);
    for (h, g) in host.history.iter().zip(&graph.history) {
        for (what, a, b) in [
            ("loss", h.loss, g.loss),
            ("reconstruction", h.reconstruction, g.reconstruction),
            ("kl", h.kl, g.kl),
            ("classifier", h.classifier_loss, g.classifier_loss),
            (
                "validation",
                h.validation_loss.unwrap(),
                g.validation_loss.unwrap(),
            ),
        ] {
            assert!(
                close(a, b),
                "epoch {}: {what} {a} (host) vs {b} (graph)",
                h.epoch
            );
        }
    }
    assert_eq!(host.history.len(), 3);
}

/// Float parameters by id: all of them, or only those that require a gradient (BatchNorm's
/// running statistics do not).
struct ById {
    values: std::collections::HashMap<burn::module::ParamId, Vec<f32>>,
    trainable_only: bool,
}

impl burn::module::ModuleVisitor for ById {
    fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::tensor::Tensor<D>>) {
        let t = p.val();
        if !self.trainable_only || t.is_require_grad() {
            let v = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap();
            self.values.insert(p.id, v);
        }
    }
}

/// A model's float parameters by id (`trainable`: only those requiring a gradient).
fn by_id(
    model: &GimviModel,
    trainable: bool,
) -> std::collections::HashMap<burn::module::ParamId, Vec<f32>> {
    use burn::module::Module;
    let mut v = ById {
        values: Default::default(),
        trainable_only: trainable,
    };
    model.module.visit(&mut v);
    v.values
}

/// `decoder_learning_rate_factor` multiplies the step of the generative network's parameters
/// and of nothing else: after one Adam step (one minibatch holding every cell) from the same
/// initial weights, the decoder's displacement with factor 3 is 3 × that with factor 1, and
/// every other trainable parameter moved identically.
#[test]
fn the_decoder_learning_rate_factor_scales_only_the_decoder() {
    let sim = simulate(&SimulationConfig {
        n_sc: 60,
        n_spatial: 50,
        ..SimulationConfig::default()
    });
    let init_model = model_for(&sim, CountLikelihood::Zinb);
    let init = by_id(&init_model, true);
    assert!(
        init.len() > 20,
        "trainable parameters found: {}",
        init.len()
    );
    let decoder = init_model.module.decoder_param_ids();
    let decoder: Vec<_> = decoder.matrices.iter().chain(&decoder.vectors).collect();
    let step = |factor: f64| {
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: 1_000,
            train_fraction: 1.0,
            decoder_learning_rate_factor: factor,
            ..quick(1, 5.0, 3)
        };
        let model = init_model.clone();
        let data = [&sim.sc_counts, &sim.spatial_counts];
        let trained = train(model, &data, &cfg, |_| {}).expect("training runs");
        by_id(&trained.model, false)
    };
    let (one, three) = (step(1.0), step(3.0));
    let mut decoder_moved = 0usize;
    for (id, start) in &init {
        // Trained parameters keep their ids (read unfiltered: the host step switches
        // require-grad off).
        let (a, b) = (&one[id], &three[id]);
        if decoder.contains(&id) {
            for ((s, a), b) in start.iter().zip(a).zip(b) {
                let (da, db) = ((a - s) as f64, (b - s) as f64);
                // f32 round-off of the updated value: a few ulps of |start|.
                let ulps = 8.0 * f32::EPSILON as f64 * (*s as f64).abs().max(1.0);
                assert!(
                    (db - 3.0 * da).abs() <= 1e-3 * da.abs() + ulps,
                    "decoder step {db} vs 3 × {da}"
                );
                decoder_moved += usize::from(da.abs() > 1e-5);
            }
        } else {
            assert_eq!(a, b, "a parameter outside the decoder moved differently");
        }
    }
    assert!(
        decoder_moved > 10,
        "the decoder moved ({decoder_moved} entries)"
    );
}

/// A non-positive or non-finite decoder learning-rate factor is refused before training.
#[test]
fn a_bad_decoder_learning_rate_factor_is_refused() {
    let sim = simulate(&SimulationConfig {
        n_sc: 30,
        n_spatial: 20,
        ..SimulationConfig::default()
    });
    for factor in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let cfg = TrainConfig {
            decoder_learning_rate_factor: factor,
            ..quick(1, 5.0, 0)
        };
        let err = train(
            model_for(&sim, CountLikelihood::Zinb),
            &[&sim.sc_counts, &sim.spatial_counts],
            &cfg,
            |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::Config(m) if m.contains("decoder learning-rate factor")),
            "{err}"
        );
    }
}

#[test]
fn a_single_dataset_model_learns_the_cells_neighbourhoods_and_refuses_the_adversary() {
    use gimvi_metrics::integration::knn_purity;
    let sim = simulate(&SimulationConfig {
        seed: 6,
        ..SimulationConfig::default()
    });
    let spec = DatasetSpec {
        name: "scRNA-seq".into(),
        genes: sim.genes.clone(),
        gene_index: (0..sim.genes.len()).collect(),
        likelihood: CountLikelihood::Zinb,
        library: log_library_prior(&sim.sc_counts),
    };
    let config = ModelConfig::new(sim.genes.clone(), vec![spec]).with_latent(6);
    let model = || GimviModel::new(config.clone(), &device(), 3).expect("one dataset is valid");

    // The adversary needs two datasets: κ > 0 is a configuration error, before any epoch.
    let mut epochs_run = 0;
    let err = train(model(), &[&sim.sc_counts], &quick(3, 5.0, 0), |_| {
        epochs_run += 1
    })
    .unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
    assert!(err.to_string().contains("two datasets"), "{err}");
    assert_eq!(epochs_run, 0);

    // κ = 0: an scVI model of the scRNA-seq data alone.
    let r = train(model(), &[&sim.sc_counts], &quick(60, 0.0, 3), |_| {}).expect("trains");
    let first = r.history[0].validation_loss.unwrap();
    let last = r.history.last().unwrap().validation_loss.unwrap();
    assert!(
        last < first,
        "validation loss did not fall: {first} → {last}"
    );
    let z = r.model.latent(0, &sim.sc_counts).unwrap();
    assert_eq!(z.dim(), (sim.sc_counts.n_rows(), 6));
    // Its neighbourhoods recover those of the simulated latent z far better than chance (a
    // latent with its cells shuffled).
    let truth = sim.sc_z.mapv(|v| v as f32);
    let ks = [15];
    let mean = |p: Vec<Vec<f64>>| p[0].iter().sum::<f64>() / p[0].len() as f64;
    let learned = mean(knn_purity(z.view(), truth.view(), &ks).unwrap());
    let mut order: Vec<usize> = (0..z.nrows()).collect();
    order.reverse();
    order.rotate_left(z.nrows() / 3);
    let shuffled = z.select(ndarray::Axis(0), &order);
    let chance = mean(knn_purity(shuffled.view(), truth.view(), &ks).unwrap());
    println!(
        "k-NN purity against the simulated z at k = 15: learned {learned:.3}, shuffled {chance:.3}"
    );
    assert!(
        learned > 0.15 && learned > 10.0 * chance,
        "learned {learned}, shuffled {chance}"
    );
}

/// Every float parameter and buffer of a module, by id, in visiting order.
struct AllParams(Vec<(burn::module::ParamId, Vec<f64>)>);

impl burn::module::ModuleVisitor for AllParams {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        self.0
            .push((param.id, param.val().into_data().iter::<f64>().collect()));
    }
}

fn all_params(model: &GimviModel) -> Vec<(burn::module::ParamId, Vec<f64>)> {
    use burn::module::Module;
    let mut v = AllParams(Vec::new());
    model.module.visit(&mut v);
    v.0
}

/// `weight_average_epochs = 2` returns the mean of the weights after the last two epochs: a
/// seeded run of E − 1 epochs follows the first E − 1 epochs of a run of E (β and every random
/// draw depend on the epoch number only), so the averaged E-epoch model equals the mean of the
/// plain (E − 1)- and E-epoch models, parameter by parameter and for BatchNorm's running
/// statistics; and it still imputes finite values.
#[test]
fn weight_averaging_returns_the_mean_of_the_last_epochs_weights() {
    let sim = simulate(&SimulationConfig {
        n_sc: 160,
        n_spatial: 120,
        seed: 9,
        ..SimulationConfig::default()
    });
    let shorter = fit(&sim, &quick(3, 5.0, 2));
    let longer = fit(&sim, &quick(4, 5.0, 2));
    let averaged = fit(
        &sim,
        &TrainConfig {
            weight_average_epochs: 2,
            ..quick(4, 5.0, 2)
        },
    );
    assert_eq!(
        averaged.history.iter().map(|h| h.loss).collect::<Vec<_>>(),
        longer.history.iter().map(|h| h.loss).collect::<Vec<_>>(),
        "averaging must not change the training trajectory"
    );
    let (a, b, m) = (
        all_params(&shorter.model),
        all_params(&longer.model),
        all_params(&averaged.model),
    );
    assert_eq!(a.len(), m.len());
    let mut differing = 0usize;
    for (((_, pa), (_, pb)), (_, pm)) in a.iter().zip(&b).zip(&m) {
        assert_eq!(pa.len(), pm.len());
        for ((x, y), z) in pa.iter().zip(pb).zip(pm) {
            let mean = 0.5 * (x + y);
            assert!(
                (z - mean).abs() <= 1e-6 * (1.0 + mean.abs()),
                "averaged {z} vs mean {mean} of {x} and {y}"
            );
            if (z - y).abs() > 1e-6 {
                differing += 1;
            }
        }
    }
    assert!(
        differing > 100,
        "only {differing} weights differ from the last epoch's"
    );
    let pred = averaged
        .model
        .impute(
            1,
            &sim.spatial_counts,
            &sim.held_out_genes,
            ImputeOptions::default(),
        )
        .expect("imputes");
    assert!(pred.mean.iter().all(|v| v.is_finite()));
}
