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
//! The training options are the library's `TrainConfig` (`--classifier-second-pass false`,
//! `--decoder-lr-factor F`, `--cycling reshuffle`, `--average-epochs N`, …; `--epochs` and
//! `--train-fraction` default to the protocol's: 100 and 0.95 for `paper`, 200 and 0.9
//! otherwise). `--latent-out PREFIX` writes both datasets' latent means to `PREFIX_sc.txt` and
//! `PREFIX_sp.txt`. `--impute-samples N` also scores, from the same model, the imputation
//! averaged over N posterior samples of z (`spearman_per_gene_sampled`; default 0: not
//! computed).

use std::collections::BTreeMap;
use std::time::Instant;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use gimvi::data::CsrMatrix;
use gimvi::metrics::{median, spearman};
use gimvi::paper::Table1Options;
use gimvi::{
    BackendKind, CountLikelihood, Dataset, FitOptions, Genes, Gimvi, ImputeOptions, TrainConfig,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

type Error = Box<dyn std::error::Error>;

/// Options of the epoch bench.
#[derive(Parser)]
struct Args {
    /// scRNA-seq file.
    #[arg(long)]
    sc: Option<String>,
    /// Spatial file.
    #[arg(long)]
    spatial: Option<String>,
    /// Synthetic data drawn here: n_sc,genes_sc,n_spatial,genes_spatial.
    #[arg(long, value_delimiter = ',')]
    synthetic: Option<Vec<usize>>,
    /// paper, tutorial or transcriptome.
    #[arg(long, default_value = "paper")]
    protocol: String,
    /// Gene folds of the seeded split.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// The fold to run.
    #[arg(long, default_value_t = 0)]
    fold: usize,
    /// Folds from a {gene: fold} file (scripts/anchor_folds.py).
    #[arg(long)]
    folds_from: Option<String>,
    /// κ of the model.
    #[arg(long, default_value_t = 5.0)]
    kappa: f64,
    /// nb, poisson or zinb.
    #[arg(long, default_value = "nb")]
    spatial_likelihood: String,
    /// Also score the average of the imputation over this many posterior samples (0: no).
    #[arg(long, default_value_t = 0)]
    impute_samples: usize,
    /// Write each dataset's latent means to PREFIX_sc.txt and PREFIX_sp.txt.
    #[arg(long)]
    latent_out: Option<String>,
    /// Compute backend.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Training settings.
    #[command(flatten)]
    train: TrainConfig,
}

fn parse() -> Result<Args, Error> {
    // `cargo bench` passes `--bench`; ignore it.
    let raw = std::env::args().filter(|a| a != "--bench");
    let matches: ArgMatches = Args::command().get_matches_from(raw);
    let mut args = Args::from_arg_matches(&matches)?;
    // The protocol's training defaults where none was given.
    let default =
        |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::DefaultValue);
    if args.protocol == "paper" {
        let paper = Table1Options::paper_training();
        if default("epochs") {
            args.train.epochs = paper.epochs;
        }
        if default("train_fraction") {
            args.train.train_fraction = paper.train_fraction;
        }
    }
    args.train.kappa = args.kappa;
    Ok(args)
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
    let spatial_likelihood = match a.spatial_likelihood.as_str() {
        "nb" => CountLikelihood::Nb,
        "poisson" => CountLikelihood::Poisson,
        "zinb" => CountLikelihood::Zinb,
        o => return Err(format!("unknown --spatial-likelihood {o}").into()),
    };
    let t0 = Instant::now();
    let (sc, sp) = match (&a.synthetic, &a.sc, &a.spatial) {
        (Some(v), _, _) if v.len() == 4 => synthetic(v[0], v[1], v[2], v[3], a.train.seed),
        (Some(_), _, _) => {
            return Err("--synthetic wants n_sc,genes_sc,n_spatial,genes_spatial".into())
        }
        (None, Some(sc), Some(sp)) => (gimvi::read(sc)?, gimvi::read(sp)?),
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
        None => gimvi::paper::gene_folds(shared.len(), a.folds, a.train.seed)?[a.fold].clone(),
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
    let n_latent = if paper { 8 } else { 10 };
    let epochs = a.train.epochs;
    let mut model = Gimvi::builder(&sc_used)
        .spatial(&sp_train, spatial_likelihood)
        .latent(n_latent)
        .backend(a.backend)
        .build()?;
    // Spatial cells kept by preparation (those with counts on the training genes).
    let nonzero = |d: &Dataset| -> Vec<usize> {
        let sums = d.counts.row_sums();
        (0..sums.len()).filter(|&c| sums[c] > 0.0).collect()
    };
    let sp_kept = nonzero(&sp_train);
    let sp_model = sp_train.select_cells(&sp_kept);
    let sc_model = sc_used.select_cells(&nonzero(&sc_used));
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    // Epoch timing: the model alone, without the interval calibration's extra trainings.
    model.train_with(
        &a.train,
        &FitOptions {
            calibration_splits: 0,
            ..FitOptions::default()
        },
        |_| {},
    )?;
    let train_s = t1.elapsed().as_secs_f64();
    let history = model.history().remove(0);

    // Impute the held-out genes for the kept spatial cells.
    let held_names: Vec<String> = held
        .iter()
        .map(|&k| sc.genes[shared[k].0].clone())
        .collect();
    let impute = |samples: usize| {
        model.impute(
            &sp_model,
            &ImputeOptions {
                genes: Genes::List(held_names.clone()),
                samples,
                normalized: !paper,
                seed: a.train.seed,
                coverage: None,
                given_detection: false,
            },
        )
    };
    let t2 = Instant::now();
    let imputed = impute(0)?;
    let impute_s = t2.elapsed().as_secs_f64();
    // The same model's imputation averaged over posterior samples (paired with the above).
    let sampled = (a.impute_samples > 0)
        .then(|| impute(a.impute_samples))
        .transpose()?;

    if let Some(prefix) = &a.latent_out {
        for (data, tag) in [(&sc_model, "sc"), (&sp_model, "sp")] {
            let z = model.latent(data)?;
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
    let datasets = model.datasets();
    let cells: Vec<usize> = datasets.iter().map(|d| d.cells.unwrap_or(0)).collect();
    let n_cells: usize = cells.iter().sum();
    let report = serde_json::json!({
        "tool": format!("gimvi {} ({} backend)", env!("CARGO_PKG_VERSION"), a.backend),
        "protocol": a.protocol,
        "epochs": epochs,
        "n_latent": n_latent,
        "kappa": a.kappa,
        "decoder_lr_factor": a.train.decoder_learning_rate_factor,
        "classifier_second_pass": a.train.classifier_second_pass,
        "cycling": a.train.cycling,
        "weight_average_epochs": a.train.weight_average_epochs,
        "seed": a.train.seed,
        "fold": a.fold,
        "shared_genes": shared.len(),
        "load_s": (load_s * 1000.0).round() / 1000.0,
        "train_s": (train_s * 1000.0).round() / 1000.0,
        "s_per_epoch": (train_s / epochs as f64 * 10000.0).round() / 10000.0,
        "first_epoch_s": history.first().map(|h| h.seconds),
        "cells_per_s": (n_cells as f64 * epochs as f64 / train_s).round(),
        "impute_s": (impute_s * 1000.0).round() / 1000.0,
        "sc_cells": cells[0],
        "sc_genes": datasets[0].genes.len(),
        "spatial_cells": cells[1],
        "spatial_genes_train": datasets[1].genes.len(),
        "datasets": datasets.len(),
        "peak_rss_mib": peak_rss_mib(),
        "spearman_per_gene": per_gene,
        "impute_samples": a.impute_samples,
        "spearman_per_gene_sampled": per_gene_sampled,
        "median_spearman": median(&rhos),
        "history": history,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
