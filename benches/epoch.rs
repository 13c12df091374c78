//! Training and imputation benchmark, the counterpart of scvi-tools' anchor script
//! (`../shared/anchors/scvi_gimvi_bench.py`): same protocols, same data, same fold, same
//! report (seconds per epoch, cells per second, peak RSS, median Spearman of the held-out genes).
//!
//! ```sh
//! # the anchor's synthetic data (written by scripts/anchor_synthetic.py), its fold 0:
//! cargo bench --bench epoch -- --sc sc.h5ad --spatial sp.h5ad --folds-from folds.json \
//!     --protocol transcriptome --epochs 3
//! # or synthetic data drawn here from the same generative recipe:
//! cargo bench --bench epoch -- --synthetic 3005,33,4530,33 --protocol paper --epochs 10
//! ```
//!
//! Protocols as in the anchor: `paper` (scRNA-seq restricted to the shared genes, latent 8,
//! 95 % of cells for training, unnormalised imputation scored against raw counts), `tutorial`
//! (same genes, latent 10, 90 %, normalised values against counts / cell total) and
//! `transcriptome` (like tutorial, but the scRNA-seq keeps all its genes).
//!
//! `--no-classifier-second-pass` trains the adversarial classifier on the generator step's z
//! instead of a second encoder pass (`TrainConfig::classifier_second_pass`, on by default as in
//! scvi-tools; `--classifier-second-pass` insists on it). `--decoder-lr-factor F` sets
//! `TrainConfig::decoder_learning_rate_factor` (default 2; 1 is scvi-tools' single learning rate).
//! `--cycling repeat-epoch|reshuffle` sets `TrainConfig::cycling` (default repeat-epoch, as
//! scvi-tools). `--average-epochs N` averages the weights over the last N epochs
//! (`TrainConfig::weight_average_epochs`, default 0). `--latent-out PREFIX` writes both
//! datasets' latent means to `PREFIX_sc.txt` and `PREFIX_sp.txt`.
//! `--impute-samples N` also scores, from the same model, the imputation averaged over N
//! posterior samples of z (`spearman_per_gene_sampled`; default 0: not computed).

use std::collections::BTreeMap;
use std::time::Instant;

use gimvi::data::{read_any, CsrMatrix, Dataset};
use gimvi::likelihoods::CountLikelihood;
use gimvi::metrics::correlation::{median, spearman};
use gimvi::metrics::protocol::gene_folds;
use gimvi::model::ImputeOptions;
use gimvi::pipeline::{fit, prepare_model, ModelInputs};
use gimvi::trainer::TrainConfig;
use gimvi::BackendKind;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

type Error = Box<dyn std::error::Error>;

struct Args {
    sc: Option<String>,
    spatial: Option<String>,
    synthetic: Option<[usize; 4]>,
    protocol: String,
    epochs: Option<usize>,
    folds: usize,
    fold: usize,
    folds_from: Option<String>,
    seed: u64,
    kappa: f64,
    spatial_likelihood: CountLikelihood,
    /// `TrainConfig::classifier_second_pass` (`None`: the default).
    second_pass: Option<bool>,
    /// `TrainConfig::cycling` (`None`: the default).
    cycling: Option<gimvi::trainer::Cycling>,
    /// `TrainConfig::decoder_learning_rate_factor` (`None`: the default).
    decoder_lr_factor: Option<f64>,
    /// `TrainConfig::weight_average_epochs`.
    average_epochs: usize,
    /// Also score the average of the imputation over this many posterior samples (0: no).
    impute_samples: usize,
    /// Write each dataset's latent means (posterior mean of z) as whitespace-separated text to
    /// `PREFIX_sc.txt` and `PREFIX_sp.txt`.
    latent_out: Option<String>,
    backend: BackendKind,
}

fn parse() -> Result<Args, Error> {
    // `cargo bench` passes `--bench`; ignore it.
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let value = |flag: &str| -> Option<String> {
        raw.iter()
            .position(|a| a == flag)
            .and_then(|i| raw.get(i + 1).cloned())
    };
    let synthetic = match value("--synthetic") {
        None => None,
        Some(s) => {
            let v: Vec<usize> = s
                .split(',')
                .map(|p| p.trim().parse())
                .collect::<Result<_, _>>()?;
            if v.len() != 4 {
                return Err("--synthetic wants n_sc,genes_sc,n_spatial,genes_spatial".into());
            }
            Some([v[0], v[1], v[2], v[3]])
        }
    };
    Ok(Args {
        sc: value("--sc"),
        spatial: value("--spatial"),
        synthetic,
        protocol: value("--protocol").unwrap_or_else(|| "paper".into()),
        epochs: value("--epochs").map(|v| v.parse()).transpose()?,
        folds: value("--folds").map_or(Ok(5), |v| v.parse())?,
        fold: value("--fold").map_or(Ok(0), |v| v.parse())?,
        folds_from: value("--folds-from"),
        seed: value("--seed").map_or(Ok(0), |v| v.parse())?,
        kappa: value("--kappa").map_or(Ok(5.0), |v| v.parse())?,
        spatial_likelihood: match value("--spatial-likelihood").as_deref() {
            None | Some("nb") => CountLikelihood::Nb,
            Some("poisson") => CountLikelihood::Poisson,
            Some("zinb") => CountLikelihood::Zinb,
            Some(o) => return Err(format!("unknown --spatial-likelihood {o}").into()),
        },
        backend: value("--backend").as_deref().unwrap_or("auto").parse()?,
        second_pass: if std::env::args().any(|a| a == "--no-classifier-second-pass") {
            Some(false)
        } else if std::env::args().any(|a| a == "--classifier-second-pass") {
            Some(true)
        } else {
            None
        },
        cycling: value("--cycling").map(|v| v.parse()).transpose()?,
        decoder_lr_factor: value("--decoder-lr-factor")
            .map(|v| v.parse())
            .transpose()?,
        average_epochs: value("--average-epochs").map_or(Ok(0), |v| v.parse())?,
        impute_samples: value("--impute-samples").map_or(Ok(0), |v| v.parse())?,
        latent_out: value("--latent-out"),
    })
}

/// The anchor's synthetic recipe: z ~ N(0, I₁₀), W ~ 0.8 N(0, 1), ρ = softmax(zW),
/// ℓ ~ LogNormal(8, 0.5), x ~ Poisson(ℓρ); the spatial genes are a random subset.
fn synthetic(n_sc: usize, g_sc: usize, n_sp: usize, g_sp: usize, seed: u64) -> (Dataset, Dataset) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).expect("valid");
    let lib = LogNormal::new(8.0, 0.5).expect("valid");
    let w: Vec<f64> = (0..10 * g_sc)
        .map(|_| 0.8 * normal.sample(&mut rng))
        .collect();
    let mut sp_genes: Vec<usize> = (0..g_sc).collect();
    rand::seq::SliceRandom::shuffle(&mut sp_genes[..], &mut rng);
    sp_genes.truncate(g_sp);
    let mut sample = |n: usize, cols: Option<&[usize]>| {
        let (mut indptr, mut indices, mut data) = (vec![0usize], Vec::new(), Vec::new());
        let mut logits = vec![0.0f64; g_sc];
        for _ in 0..n {
            let z: Vec<f64> = (0..10).map(|_| normal.sample(&mut rng)).collect();
            for (g, l) in logits.iter_mut().enumerate() {
                *l = (0..10).map(|k| z[k] * w[k * g_sc + g]).sum();
            }
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let ell = lib.sample(&mut rng);
            let mut row: Vec<(usize, f32)> = Vec::new();
            let mut draw = |g: usize, j: usize, rng: &mut ChaCha8Rng| {
                let rate = ell * (logits[g] - max).exp() / total;
                let x = if rate > 0.0 {
                    Poisson::new(rate).map_or(0.0, |p| p.sample(rng))
                } else {
                    0.0
                };
                if x > 0.0 {
                    row.push((j, x as f32));
                }
            };
            match cols {
                None => (0..g_sc).for_each(|g| draw(g, g, &mut rng)),
                Some(c) => c
                    .iter()
                    .enumerate()
                    .for_each(|(j, &g)| draw(g, j, &mut rng)),
            }
            for (j, x) in row {
                indices.push(j as u32);
                data.push(x);
            }
            indptr.push(indices.len());
        }
        (indptr, indices, data)
    };
    let names = |idx: &[usize]| idx.iter().map(|g| format!("g{g}")).collect::<Vec<_>>();
    let all: Vec<usize> = (0..g_sc).collect();
    let (p, i, d) = sample(n_sc, None);
    let sc = CsrMatrix::from_parts(n_sc, g_sc, p, i, d).expect("valid CSR");
    let (p, i, d) = sample(n_sp, Some(&sp_genes));
    let sp = CsrMatrix::from_parts(n_sp, g_sp, p, i, d).expect("valid CSR");
    let cells = |n: usize| (0..n).map(|c| format!("cell{c}")).collect::<Vec<_>>();
    (
        Dataset::new(
            "synthetic scRNA-seq",
            sc,
            names(&all),
            cells(n_sc),
            vec![],
            None,
        )
        .expect("valid"),
        Dataset::new(
            "synthetic spatial",
            sp,
            names(&sp_genes),
            cells(n_sp),
            vec![],
            None,
        )
        .expect("valid"),
    )
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Error> {
    // As the CLI and the examples do (docs/performance.md, attempt 8).
    gimvi::tune_allocator();
    let a = parse()?;
    let t0 = Instant::now();
    let (sc, sp) = match (&a.synthetic, &a.sc, &a.spatial) {
        (Some([n1, g1, n2, g2]), _, _) => synthetic(*n1, *g1, *n2, *g2, a.seed),
        (None, Some(sc), Some(sp)) => (read_any(sc)?, read_any(sp)?),
        _ => return Err("give --sc FILE --spatial FILE, or --synthetic n,g,n,g".into()),
    };
    // Shared genes in the spatial file's order (as the anchor orders them).
    let lower: BTreeMap<String, usize> = sc
        .genes
        .iter()
        .enumerate()
        .map(|(i, g)| (g.to_lowercase(), i))
        .collect();
    let shared: Vec<(usize, usize)> = sp
        .genes
        .iter()
        .enumerate()
        .filter_map(|(j, g)| lower.get(&g.to_lowercase()).map(|&i| (i, j)))
        .collect();
    if shared.is_empty() {
        return Err("no shared genes".into());
    }
    let held: Vec<usize> = match &a.folds_from {
        Some(path) => {
            let map: BTreeMap<String, usize> =
                serde_json::from_str(&std::fs::read_to_string(path)?)?;
            let map: BTreeMap<String, usize> = map
                .into_iter()
                .map(|(g, f)| (g.to_lowercase(), f))
                .collect();
            (0..shared.len())
                .filter(|&k| map.get(&sc.genes[shared[k].0].to_lowercase()) == Some(&a.fold))
                .collect()
        }
        None => gene_folds(shared.len(), a.folds, a.seed)?[a.fold].clone(),
    };
    let kept: Vec<usize> = (0..shared.len()).filter(|k| !held.contains(k)).collect();
    let paper = a.protocol == "paper";
    let sc_used = if a.protocol == "transcriptome" {
        sc.clone()
    } else {
        // As the anchor (and the paper's code): the scRNA-seq cells without counts on the
        // fold's training genes are dropped.
        let all = sc.select_genes(&shared.iter().map(|p| p.0).collect::<Vec<_>>());
        let on_train = all.select_genes(&kept);
        let sums = on_train.counts.row_sums();
        all.select_cells(
            &(0..sums.len())
                .filter(|&c| sums[c] > 0.0)
                .collect::<Vec<_>>(),
        )
    };
    let sp_train = sp.select_genes(&kept.iter().map(|&k| shared[k].1).collect::<Vec<_>>());
    let (n_latent, train_fraction, default_epochs) = if paper {
        (8, 0.95, 100)
    } else {
        (10, 0.9, 200)
    };
    let epochs = a.epochs.unwrap_or(default_epochs);
    let (config, prepared) = prepare_model(&ModelInputs {
        sc: vec![&sc_used],
        spatial: vec![&sp_train],
        sc_likelihood: CountLikelihood::Zinb,
        spatial_likelihood: a.spatial_likelihood,
        n_latent,
        round_counts: false,
    })?;
    // Spatial cells kept by preparation (those with counts on the training genes).
    let sp_kept: Vec<usize> = {
        let sums = sp_train.counts.row_sums();
        (0..sums.len()).filter(|&c| sums[c] > 0.0).collect()
    };
    let load_s = t0.elapsed().as_secs_f64();
    let device = a.backend.open()?.autodiff();
    let mut train_cfg = TrainConfig {
        epochs,
        kappa: a.kappa,
        train_fraction,
        seed: a.seed,
        progress: false,
        weight_average_epochs: a.average_epochs,
        ..TrainConfig::default()
    };
    if let Some(p) = a.second_pass {
        train_cfg.classifier_second_pass = p;
    }
    if let Some(c) = a.cycling {
        train_cfg.cycling = c;
    }
    if let Some(f) = a.decoder_lr_factor {
        train_cfg.decoder_learning_rate_factor = f;
    }
    let counts: Vec<&CsrMatrix> = prepared.iter().map(|p| &p.data.counts).collect();
    let t1 = Instant::now();
    let result = fit(config, &counts, &train_cfg, &device, |_| {})?;
    let train_s = t1.elapsed().as_secs_f64();

    // Impute the held-out genes (indices into G) for the kept spatial cells.
    let held_in_g: Vec<usize> = held
        .iter()
        .map(|&k| {
            result
                .model
                .gene_indices(&[sc.genes[shared[k].0].clone()])
                .map(|v| v[0])
        })
        .collect::<Result<_, _>>()?;
    let t2 = Instant::now();
    let imputed = result.model.impute(
        1,
        &prepared[1].data.counts,
        &held_in_g,
        ImputeOptions {
            samples: 0,
            normalized: !paper,
            seed: a.seed,
        },
    )?;
    let impute_s = t2.elapsed().as_secs_f64();
    // The same model's imputation averaged over posterior samples (paired with the above).
    let sampled = (a.impute_samples > 0)
        .then(|| {
            result.model.impute(
                1,
                &prepared[1].data.counts,
                &held_in_g,
                ImputeOptions {
                    samples: a.impute_samples,
                    normalized: !paper,
                    seed: a.seed,
                },
            )
        })
        .transpose()?;

    if let Some(prefix) = &a.latent_out {
        for (m, tag) in [(0, "sc"), (1, "sp")] {
            let z = result.model.latent(m, &prepared[m].data.counts)?;
            let text: String = z
                .rows()
                .into_iter()
                .map(|r| {
                    let cols: Vec<String> = r.iter().map(|v| v.to_string()).collect();
                    cols.join(" ") + "\n"
                })
                .collect();
            std::fs::write(format!("{prefix}_{tag}.txt"), text)?;
        }
    }

    let sp_dense = sp.counts.to_dense_f64();
    let shared_cols: Vec<usize> = shared.iter().map(|p| p.1).collect();
    let mut rhos = Vec::new();
    let mut per_gene = BTreeMap::new();
    let mut per_gene_sampled = BTreeMap::new();
    // Column j of an imputation, as f64.
    let column = |m: &ndarray::Array2<f32>, j: usize| -> Vec<f64> {
        m.column(j).iter().map(|&v| v.into()).collect()
    };
    for (j, &k) in held.iter().enumerate() {
        let truth: Vec<f64> = sp_kept
            .iter()
            .map(|&c| {
                let v = sp_dense[[c, shared[k].1]];
                if paper {
                    v
                } else {
                    let total: f64 = shared_cols.iter().map(|&g| sp_dense[[c, g]]).sum();
                    v / total.max(1.0)
                }
            })
            .collect();
        let rho = spearman(&truth, &column(&imputed.mean, j))?;
        per_gene.insert(sc.genes[shared[k].0].clone(), rho);
        if let Some(r) = rho {
            rhos.push(r);
        }
        if let Some(s) = &sampled {
            let rho = spearman(&truth, &column(&s.mean, j))?;
            per_gene_sampled.insert(sc.genes[shared[k].0].clone(), rho);
        }
    }
    let steps_cells: usize = counts.len();
    let n_cells: usize = counts.iter().map(|c| c.n_rows()).sum();
    let report = serde_json::json!({
        "tool": format!("gimvi {} ({} backend)", env!("CARGO_PKG_VERSION"), a.backend),
        "protocol": a.protocol,
        "epochs": epochs,
        "n_latent": n_latent,
        "kappa": a.kappa,
        "decoder_lr_factor": train_cfg.decoder_learning_rate_factor,
        "classifier_second_pass": train_cfg.classifier_second_pass,
        "cycling": train_cfg.cycling,
        "weight_average_epochs": train_cfg.weight_average_epochs,
        "seed": a.seed,
        "fold": a.fold,
        "shared_genes": shared.len(),
        "load_s": (load_s * 1000.0).round() / 1000.0,
        "train_s": (train_s * 1000.0).round() / 1000.0,
        "s_per_epoch": (train_s / epochs as f64 * 10000.0).round() / 10000.0,
        "first_epoch_s": result.history.first().map(|h| h.seconds),
        "cells_per_s": (n_cells as f64 * epochs as f64 / train_s).round(),
        "impute_s": (impute_s * 1000.0).round() / 1000.0,
        "sc_cells": counts[0].n_rows(),
        "sc_genes": counts[0].n_cols(),
        "spatial_cells": counts[1].n_rows(),
        "spatial_genes_train": counts[1].n_cols(),
        "datasets": steps_cells,
        "peak_rss_mib": peak_rss_mib(),
        "spearman_per_gene": per_gene,
        "impute_samples": a.impute_samples,
        "spearman_per_gene_sampled": per_gene_sampled,
        "median_spearman": median(&rhos),
        "history": result.history,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
