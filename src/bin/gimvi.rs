//! `gimvi`: integrate scRNA-seq and spatial transcriptomics and impute unmeasured genes, from
//! the command line. Run `gimvi --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gimvi::data::h5ad::{write_h5ad, CountSource, H5adOptions, H5adOutput};
use gimvi::data::loom::LoomOptions;
use gimvi::data::prepare::library_stats;
use gimvi::data::{Column, Dataset};
use gimvi::ensemble::ModelEnsemble;
use gimvi::likelihoods::CountLikelihood;
use gimvi::metrics::protocol::{evaluate, KnnExpressionImputer, MeanImputer, ProtocolConfig};
use gimvi::model::{ImputeOptions, LibraryModel};
use gimvi::pipeline::{
    choose_kappa, method_name, prepare_model, GimviImputer, ModelInputs, KAPPA_CANDIDATES,
    KAPPA_INNER_SPLITS,
};
use gimvi::trainer::{Cycling, TrainConfig};
use gimvi::BackendKind;

#[derive(Parser)]
#[command(
    name = "gimvi",
    version,
    about = "Integrate scRNA-seq with spatial transcriptomics (gimVI) and impute the genes the spatial assay did not measure",
    long_about = "gimvi learns one model of an scRNA-seq reference and one or more spatial \
                  transcriptomics datasets (osmFISH, smFISH, MERFISH, starMAP, …), then predicts \
                  every reference gene in every spatial cell, with its uncertainty.\n\n\
                  Files: AnnData .h5ad (scanpy, squidpy, scvi-tools), .loom, a 10x MatrixMarket \
                  folder, or a dense .csv/.tsv (genes as rows). Counts must be raw integer \
                  counts (use --layer counts when X is normalised).\n\n\
                  Typical use:\n  gimvi inspect spatial.h5ad\n  gimvi fit --sc reference.h5ad \
                  --spatial spatial.h5ad --out model/\n  gimvi impute --model model/ --spatial \
                  spatial.h5ad --out imputed.h5ad"
)]
struct Cli {
    /// Print nothing but errors (no progress bars or summaries).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a data file: cells, genes, count type, annotations — run this first on a new file.
    Inspect(InspectArgs),
    /// Train a model on scRNA-seq and spatial files and save it to a folder.
    Fit(FitArgs),
    /// Impute genes in spatial cells with a trained model; write .h5ad (scanpy) or .csv.
    Impute(ImputeArgs),
    /// Score imputation on your own pair: hold out genes shared by both files, predict them,
    /// report the correlation with the measurement (the paper's evaluation).
    Evaluate(EvaluateArgs),
}

#[derive(Args, Clone)]
struct ReadArgs {
    /// For .h5ad: read counts from layers/<LAYER> instead of X (e.g. --layer counts), or from
    /// raw/X with --layer raw.
    #[arg(long)]
    layer: Option<String>,
    /// For .loom: row attribute holding the gene names (default: Gene).
    #[arg(long)]
    gene_attr: Option<String>,
}

#[derive(Args)]
struct InspectArgs {
    /// The file (or 10x folder) to describe.
    file: PathBuf,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(Copy, Clone, ValueEnum)]
enum ScLikelihood {
    /// Zero-inflated negative binomial (default; scvi-tools' default).
    Zinb,
    /// Negative binomial.
    Nb,
}

#[derive(Copy, Clone, ValueEnum)]
enum SpatialLikelihood {
    /// Poisson: smFISH, osmFISH, MERFISH (default).
    Poisson,
    /// Negative binomial: starMAP and other sequencing-like panels.
    Nb,
    /// Zero-inflated negative binomial.
    Zinb,
}

#[derive(Args)]
struct ModelArgs {
    /// scRNA-seq reference file(s); the first defines the genes that can be imputed.
    #[arg(long, required = true, num_args = 1..)]
    sc: Vec<PathBuf>,
    /// Spatial file(s), one dataset each.
    #[arg(long, required = true, num_args = 1..)]
    spatial: Vec<PathBuf>,
    /// Likelihood of the scRNA-seq counts.
    #[arg(long, value_enum, default_value = "zinb")]
    sc_likelihood: ScLikelihood,
    /// Likelihood of the spatial counts.
    #[arg(long, value_enum, default_value = "poisson")]
    spatial_likelihood: SpatialLikelihood,
    /// Weight of the dataset-mixing adversary: a number (0 switches it off) or `auto`, which
    /// picks among 0, 1 and 5 by an inner validation that hides 20 % of the spatial genes.
    #[arg(long, default_value = "5", allow_hyphen_values = true)]
    kappa: String,
    /// Training epochs.
    #[arg(long, default_value_t = 200)]
    epochs: usize,
    /// Factor on the decoder's learning rate (default: the library's, 2; 1 trains as
    /// scvi-tools does; the trainer refuses one that is not finite and > 0).
    #[arg(long)]
    decoder_lr_factor: Option<f64>,
    /// Train the adversarial classifier on the generator step's z instead of a second
    /// stochastic pass of the updated encoders (the default, as scvi-tools); saves one
    /// encoder pass per step.
    #[arg(long)]
    no_classifier_second_pass: bool,
    /// How the dataset with fewer cells is cycled within an epoch: repeat-epoch (default, as
    /// scvi-tools: a fresh shuffle each epoch, its minibatches repeated until the epoch ends)
    /// or reshuffle (a fresh shuffle at every pass, running on across epochs).
    #[arg(long)]
    cycling: Option<Cycling>,
    /// Average each model's weights over its last N epochs (stochastic weight averaging;
    /// default 0: the last epoch's weights, as scvi-tools).
    #[arg(long, default_value_t = 0)]
    average_epochs: usize,
    /// Latent dimension.
    #[arg(long, default_value_t = 10)]
    latent: usize,
    /// Random seed (runs with one seed are identical on the CPU).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute backend among those compiled in: auto (flex, else ndarray), ndarray, flex, wgpu,
    /// cuda.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Round non-integer counts instead of refusing them.
    #[arg(long)]
    round: bool,
    /// Models trained per κ, each from its own seed, whose imputations are averaged (`fit`
    /// saves them together in --out; `evaluate` averages them per fold). 1: one model, the
    /// paper's protocol. Averaging removes much of one training's seed-to-seed noise: with 3,
    /// the held-out-gene median Spearman rose by 0.033 (mSMS) and 0.012 (mPFC) over one model
    /// (docs/results.md), at ENSEMBLE× the training time.
    #[arg(long, default_value_t = 1)]
    ensemble: usize,
    /// Average the models of several κ instead of training one, e.g. `0,1,5` (each an
    /// ensemble of ENSEMBLE models): no κ has to be chosen, at one training per κ.
    /// Replaces a number given to --kappa; with `--kappa auto` the average is used unless one
    /// κ beats it by more than one standard error in the inner validation (on the training
    /// genes of each fold for `evaluate`, on all spatial genes for `fit`).
    #[arg(long, value_delimiter = ',', value_name = "KAPPAS")]
    average_kappas: Vec<f64>,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(Args)]
struct FitArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder to write the model to (config.json, weights.bpk, history.json, ensemble.json;
    /// the second and later models of an ensemble in member-1/, member-2/, …).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ImputeArgs {
    /// Folder written by `gimvi fit` (one model, or several with `fit --ensemble` /
    /// `--average-kappas`: their imputations are averaged and their spread adds to the variance).
    #[arg(long)]
    model: PathBuf,
    /// Spatial file whose cells to impute (the same genes as one spatial dataset of the model).
    #[arg(long)]
    spatial: PathBuf,
    /// Genes to impute, comma-separated (default: every reference gene the file does not measure).
    #[arg(long, value_delimiter = ',', conflicts_with = "all")]
    genes: Option<Vec<String>>,
    /// Impute every reference gene, measured ones included.
    #[arg(long)]
    all: bool,
    /// Posterior samples for the uncertainty (variance); 0 = posterior mean only.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Write normalised expression (fractions of the cell's panel) instead of expected counts.
    #[arg(long)]
    normalized: bool,
    /// Random seed of the posterior samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Backend among those compiled in.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Output: .h5ad (X = imputed, layers/variance, obsm/X_gimvi = latent, the first model's
    /// for several) or .csv.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Gene folds (each fold holds out about 1/FOLDS of the shared genes).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Write the full report (per-gene correlations, timings) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn read(path: &Path, args: &ReadArgs) -> Result<Dataset> {
    let name = path.to_string_lossy().to_lowercase();
    if name.ends_with(".h5ad") {
        let counts = match args.layer.as_deref() {
            None => CountSource::X,
            Some("raw") => CountSource::Raw,
            Some(l) => CountSource::Layer(l.to_string()),
        };
        return Ok(gimvi::data::h5ad::read_h5ad(path, &H5adOptions { counts })?);
    }
    if name.ends_with(".loom") {
        return Ok(gimvi::data::loom::read_loom(
            path,
            &LoomOptions {
                gene_attr: args.gene_attr.clone(),
                layer: args.layer.clone(),
            },
        )?);
    }
    Ok(gimvi::data::read_any(path)?)
}

fn device(name: &str) -> Result<gimvi::Device> {
    let kind: BackendKind = name.parse()?;
    Ok(kind.open()?.autodiff())
}

fn say(quiet: bool, text: impl AsRef<str>) {
    if !quiet {
        eprintln!("{}", text.as_ref());
    }
}

fn inspect(args: &InspectArgs) -> Result<()> {
    let ds = read(&args.file, &args.read)?;
    let data = ds.counts.data();
    let integer = data.iter().all(|v| v.fract() == 0.0);
    let (min, max) = data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let stats = library_stats(&ds);
    let cells = ds.n_cells().max(1) * ds.n_genes().max(1);
    println!("file        {}", args.file.display());
    println!("cells       {}", ds.n_cells());
    println!("genes       {}", ds.n_genes());
    println!(
        "non-zeros   {} ({:.1} % of entries)",
        ds.counts.nnz(),
        100.0 * ds.counts.nnz() as f64 / cells as f64
    );
    println!(
        "counts      {} (stored values from {} to {})",
        if integer {
            "integers"
        } else {
            "NOT integers: use --layer counts or --round"
        },
        if data.is_empty() { 0.0 } else { min },
        if data.is_empty() { 0.0 } else { max }
    );
    println!(
        "library     median {:.0}, range {:.0}–{:.0}, {} cells with zero counts",
        stats.median, stats.min, stats.max, stats.zero_cells
    );
    let show: Vec<&str> = ds.genes.iter().take(8).map(String::as_str).collect();
    println!("first genes {}", show.join(", "));
    println!(
        "spatial     {}",
        match &ds.spatial {
            Some(s) => format!(
                "coordinates present ({} dimensions)",
                s.first().map_or(0, Vec::len)
            ),
            None => "no coordinates".into(),
        }
    );
    for (name, col) in &ds.obs {
        let kind = match col {
            Column::Numeric(_) => "numeric".to_string(),
            Column::Text(_) => "text".to_string(),
            Column::Categorical { categories, .. } => {
                format!("categorical, {} categories", categories.len())
            }
        };
        println!("cell column {name} ({kind})");
    }
    Ok(())
}

/// `Some(κ)` for a number, `None` for `auto`.
fn kappa(args: &ModelArgs) -> Result<Option<f64>> {
    if args.kappa.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    match args.kappa.parse::<f64>() {
        Ok(k) if k.is_finite() && k >= 0.0 => Ok(Some(k)),
        _ => Err(format!(
            "--kappa must be a number ≥ 0 or 'auto', got '{}'",
            args.kappa
        )
        .into()),
    }
}

/// Refuses ensemble settings that cannot train, before any file is read.
fn check_ensemble(args: &ModelArgs) -> Result<()> {
    if args.ensemble == 0 {
        return Err("--ensemble must be at least 1 (models trained per κ)".into());
    }
    if let Some(bad) = args
        .average_kappas
        .iter()
        .find(|k| !(k.is_finite() && **k >= 0.0))
    {
        return Err(
            format!("--average-kappas: every κ must be a finite number ≥ 0, got {bad}").into(),
        );
    }
    Ok(())
}

fn train_config(args: &ModelArgs, quiet: bool) -> Result<TrainConfig> {
    let mut config = TrainConfig {
        epochs: args.epochs,
        kappa: kappa(args)?.unwrap_or(5.0),
        seed: args.seed,
        progress: !quiet,
        weight_average_epochs: args.average_epochs,
        ..TrainConfig::default()
    };
    if let Some(factor) = args.decoder_lr_factor {
        config.decoder_learning_rate_factor = factor;
    }
    if args.no_classifier_second_pass {
        config.classifier_second_pass = false;
    }
    if let Some(cycling) = args.cycling {
        config.cycling = cycling;
    }
    Ok(config)
}

fn likelihoods(args: &ModelArgs) -> (CountLikelihood, CountLikelihood) {
    let sc = match args.sc_likelihood {
        ScLikelihood::Zinb => CountLikelihood::Zinb,
        ScLikelihood::Nb => CountLikelihood::Nb,
    };
    let sp = match args.spatial_likelihood {
        SpatialLikelihood::Poisson => CountLikelihood::Poisson,
        SpatialLikelihood::Nb => CountLikelihood::Nb,
        SpatialLikelihood::Zinb => CountLikelihood::Zinb,
    };
    (sc, sp)
}

fn fit_command(args: &FitArgs, quiet: bool) -> Result<()> {
    let a = &args.model;
    check_ensemble(a)?;
    let auto = kappa(a)?.is_none();
    let device = device(&a.backend)?;
    let sc: Vec<Dataset> =
        a.sc.iter()
            .map(|p| read(p, &a.read))
            .collect::<Result<_>>()?;
    let sp: Vec<Dataset> = a
        .spatial
        .iter()
        .map(|p| read(p, &a.read))
        .collect::<Result<_>>()?;
    let (sc_lik, sp_lik) = likelihoods(a);
    let (config, prepared) = prepare_model(&ModelInputs {
        sc: sc.iter().collect(),
        spatial: sp.iter().collect(),
        sc_likelihood: sc_lik,
        spatial_likelihood: sp_lik,
        n_latent: a.latent,
        round_counts: a.round,
    })?;
    for (spec, p) in config.datasets.iter().zip(&prepared) {
        say(
            quiet,
            format!(
                "{}: {} cells × {} genes used ({} empty cells dropped, {} genes not in the reference{})",
                spec.name,
                p.data.n_cells(),
                p.data.n_genes(),
                p.dropped_cells,
                p.unused_genes.len(),
                if p.rounded > 0 { format!(", {} values rounded", p.rounded) } else { String::new() }
            ),
        );
    }
    let counts: Vec<&gimvi::data::CsrMatrix> = prepared.iter().map(|p| &p.data.counts).collect();
    let mut tc = train_config(a, quiet)?;
    // The κ whose models are trained: one, or every κ of the average.
    let mut kappas = if a.average_kappas.is_empty() {
        vec![tc.kappa]
    } else {
        a.average_kappas.clone()
    };
    if auto {
        let candidates = if a.average_kappas.is_empty() {
            KAPPA_CANDIDATES.to_vec()
        } else {
            a.average_kappas.clone()
        };
        let listed: Vec<String> = candidates.iter().map(f64::to_string).collect();
        say(
            quiet,
            format!(
                "choosing κ among {}{}: {KAPPA_INNER_SPLITS} inner splits, each hiding 20 % of the spatial genes …",
                listed.join(", "),
                if a.average_kappas.is_empty() { "" } else { " and their average" }
            ),
        );
        let choice = choose_kappa(
            &config,
            &counts,
            &candidates,
            &TrainConfig {
                progress: false,
                ..tc.clone()
            },
            &device,
        )?;
        let scores: Vec<String> = choice
            .scores
            .iter()
            .map(|(k, r)| format!("κ={k}: {r:.3}"))
            .chain(choice.average_score.map(|r| format!("average: {r:.3}")))
            .collect();
        say(
            quiet,
            format!(
                "best single κ = {} (median Spearman over {} inner held-out genes: {})",
                choice.kappa,
                choice.inner_genes,
                scores.join(", ")
            ),
        );
        let margin = choice
            .margin_over_average()
            .map(|(m, se)| format!(" (by {m:+.3} ± {se:.3} per inner gene)"))
            .unwrap_or_default();
        if !a.average_kappas.is_empty() && choice.prefers_average() {
            say(
                quiet,
                format!(
                    "κ = {} does not clearly beat the average{margin}: the models of every κ are kept and averaged",
                    choice.kappa
                ),
            );
        } else {
            if choice.prefers_average() {
                say(
                    quiet,
                    format!(
                        "note: κ = {} does not clearly beat the average of κ = 0, 1, 5{margin}; \
                         add --average-kappas 0,1,5 to keep that average instead (what the \
                         evaluation recommends, docs/results.md)",
                        choice.kappa
                    ),
                );
            }
            kappas = vec![choice.kappa];
        }
        tc.kappa = choice.kappa;
    }
    let total = kappas.len() * a.ensemble;
    let ensemble = ModelEnsemble::fit(
        &config,
        &counts,
        &tc,
        &kappas,
        a.ensemble,
        &device,
        |i, n, kappa, seed| {
            if n > 1 {
                say(
                    quiet,
                    format!("model {}/{n}: κ = {kappa}, seed {seed}", i + 1),
                );
            }
        },
    )?;
    ensemble.save(&args.out)?;
    let finals: Vec<String> = ensemble
        .members()
        .iter()
        .map(|m| {
            let last = m.history.last();
            format!(
                "{:.3}{}",
                last.map_or(f64::NAN, |l| l.loss),
                last.and_then(|l| l.validation_loss)
                    .map(|v| format!(" (validation {v:.3})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let epochs = ensemble.members()[0].history.len();
    say(
        quiet,
        format!(
            "trained {} ({epochs} epochs; final loss {}); written to {}",
            if total == 1 {
                "1 model".to_string()
            } else {
                format!("{total} models, imputed as their average")
            },
            finals.join(", "),
            args.out.display()
        ),
    );
    Ok(())
}

fn impute_command(args: &ImputeArgs, quiet: bool) -> Result<()> {
    let device = device(&args.backend)?;
    let model = ModelEnsemble::load(&args.model, &device)?;
    let ds = read(&args.spatial, &args.read)?;
    // Which dataset of the model: the observed-library dataset whose genes the file covers best.
    let lower: Vec<String> = ds.genes.iter().map(|g| g.to_lowercase()).collect();
    let (m, spec) = model
        .config()
        .datasets
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.library, LibraryModel::Observed))
        .max_by_key(|(_, s)| {
            s.genes
                .iter()
                .filter(|g| lower.contains(&g.to_lowercase()))
                .count()
        })
        .ok_or("the model has no spatial dataset")?;
    let mut cols = Vec::with_capacity(spec.genes.len());
    let mut missing = Vec::new();
    for g in &spec.genes {
        match lower.iter().position(|x| *x == g.to_lowercase()) {
            Some(i) => cols.push(i),
            None => missing.push(g.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} lacks {} of the {} genes the model was trained on (e.g. {})",
            args.spatial.display(),
            missing.len(),
            spec.genes.len(),
            missing[..missing.len().min(5)].join(", ")
        )
        .into());
    }
    let mut sub = ds.select_genes(&cols);
    gimvi::data::prepare::validate_counts(&mut sub, gimvi::data::prepare::CountPolicy::AllowReal)?;
    let gene_names: Vec<String> = match (&args.genes, args.all) {
        (Some(list), _) => list
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, true) => model.config().genes.clone(),
        (None, false) => model
            .config()
            .genes
            .iter()
            .enumerate()
            .filter(|(i, _)| !spec.gene_index.contains(i))
            .map(|(_, g)| g.clone())
            .collect(),
    };
    if gene_names.is_empty() {
        return Err("no gene to impute (the file measures every reference gene; use --all)".into());
    }
    let genes = model.gene_indices(&gene_names)?;
    let imputed = model.impute(
        m,
        &sub.counts,
        &genes,
        ImputeOptions {
            samples: args.samples,
            normalized: args.normalized,
            seed: args.seed,
        },
    )?;
    let latent = model.latent(m, &sub.counts)?;
    let out_name = args.out.to_string_lossy().to_lowercase();
    if out_name.ends_with(".csv") {
        gimvi::data::delimited::write_csv(
            &args.out,
            &sub.cells,
            &gene_names,
            imputed.mean.as_slice().ok_or("non-contiguous output")?,
        )?;
        if let Some(var) = &imputed.variance {
            let var_path = args.out.with_extension("variance.csv");
            gimvi::data::delimited::write_csv(
                &var_path,
                &sub.cells,
                &gene_names,
                var.as_slice().ok_or("non-contiguous output")?,
            )?;
            say(
                quiet,
                format!("variances written to {}", var_path.display()),
            );
        }
    } else {
        let mut obsm = vec![(
            "X_gimvi".to_string(),
            latent.iter().copied().collect(),
            model.config().n_latent,
        )];
        if let Some(sp) = &sub.spatial {
            let d = sp.first().map_or(0, Vec::len);
            if d > 0 {
                obsm.push((
                    "spatial".into(),
                    sp.iter().flatten().map(|&v| v as f32).collect(),
                    d,
                ));
            }
        }
        let out = H5adOutput {
            obs_names: sub.cells.clone(),
            var_names: gene_names.clone(),
            x: imputed.mean.iter().copied().collect(),
            layers: imputed
                .variance
                .as_ref()
                .map(|v| vec![("variance".to_string(), v.iter().copied().collect())])
                .unwrap_or_default(),
            obsm,
            obs: sub.obs.clone(),
            uns: vec![
                ("gimvi_version".into(), env!("CARGO_PKG_VERSION").into()),
                ("gimvi_models".into(), model.len().to_string()),
                (
                    "gimvi_values".into(),
                    if args.normalized {
                        "normalized expression".into()
                    } else {
                        "expected counts".into()
                    },
                ),
            ],
        };
        write_h5ad(&args.out, &out)?;
    }
    say(
        quiet,
        format!(
            "imputed {} genes in {} cells{}{}; written to {}",
            gene_names.len(),
            sub.n_cells(),
            if model.len() > 1 {
                format!(" as the average of {} models", model.len())
            } else {
                String::new()
            },
            match (&imputed.variance, model.len()) {
                (None, _) => String::new(),
                (Some(_), 1) => format!(" with variances over {} samples", args.samples),
                (Some(_), _) => format!(
                    " with variances over {} samples of each model (their spread included)",
                    args.samples
                ),
            },
            args.out.display()
        ),
    );
    Ok(())
}

fn evaluate_command(args: &EvaluateArgs, quiet: bool) -> Result<()> {
    let a = &args.model;
    if a.sc.len() != 1 || a.spatial.len() != 1 {
        return Err("evaluate takes exactly one --sc and one --spatial file".into());
    }
    check_ensemble(a)?;
    let device = device(&a.backend)?;
    let sc = read(&a.sc[0], &a.read)?;
    let sp = read(&a.spatial[0], &a.read)?;
    let (sc_lik, sp_lik) = likelihoods(a);
    // The paper's protocol: both datasets restricted to their shared genes.
    let (config, prepared) = prepare_model(&ModelInputs {
        sc: vec![&sc],
        spatial: vec![&sp],
        sc_likelihood: sc_lik,
        spatial_likelihood: sp_lik,
        n_latent: a.latent,
        round_counts: a.round,
    })?;
    let shared_idx = &config.datasets[1].gene_index;
    let shared: Vec<String> = shared_idx
        .iter()
        .map(|&g| config.genes[g].clone())
        .collect();
    let sc_cols: Vec<usize> = shared_idx.clone();
    let sc_shared = prepared[0].data.select_genes(&sc_cols);
    let sc_dense = sc_shared.counts.to_dense_f64();
    let sp_dense = prepared[1].data.counts.to_dense_f64();
    say(
        quiet,
        format!("{} shared genes, {} folds", shared.len(), args.folds),
    );
    let auto = kappa(a)?.is_none();
    let mut gimvi = GimviImputer {
        name: method_name(
            kappa(a)?.unwrap_or(0.0),
            auto,
            &a.average_kappas,
            a.ensemble,
        ),
        train: train_config(a, true)?,
        n_latent: a.latent,
        sc_likelihood: sc_lik,
        spatial_likelihood: sp_lik,
        device,
        auto_kappa: auto,
        chosen_kappas: Vec::new(),
        posterior_samples: 0,
        posterior: Vec::new(),
        record_latent: false,
        latents: Vec::new(),
        shared: None,
        ensemble: a.ensemble,
        kappa_average: a.average_kappas.clone(),
    };
    let mut mean = MeanImputer;
    let mut knn = KnnExpressionImputer::default();
    let report = evaluate(
        &shared,
        sc_dense.view(),
        sp_dense.view(),
        &mut [&mut gimvi, &mut mean, &mut knn],
        ProtocolConfig {
            folds: args.folds,
            seed: a.seed,
        },
    )?;
    println!("{}", report.to_markdown());
    if auto {
        let chosen: Vec<String> = gimvi
            .chosen_kappas
            .iter()
            .map(|c| {
                if a.average_kappas.is_empty() {
                    c.kappa.to_string()
                } else {
                    c.label_with_average()
                }
            })
            .collect();
        println!(
            "κ chosen per fold (inner validation on training genes): {}",
            chosen.join(", ")
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())?;
        say(quiet, format!("report written to {}", path.display()));
    }
    Ok(())
}

fn main() -> ExitCode {
    // Large tensors stay in the heap between steps (see `gimvi::tune_allocator`).
    gimvi::tune_allocator();
    // A user mistake must never show a Rust backtrace: errors are returned and printed on one
    // line below; a panic (a bug) is reported on one line too.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (please report it): {info}");
    }));
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(a) => inspect(a),
        Command::Fit(a) => fit_command(a, cli.quiet),
        Command::Impute(a) => impute_command(a, cli.quiet),
        Command::Evaluate(a) => evaluate_command(a, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit_config(extra: &[&str]) -> TrainConfig {
        let mut argv = vec!["gimvi", "fit", "--sc", "a.h5ad", "--spatial", "b.h5ad"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--out", "m"]);
        match Cli::try_parse_from(argv).expect("valid arguments").command {
            Command::Fit(args) => train_config(&args.model, true).expect("valid settings"),
            _ => unreachable!("a fit command"),
        }
    }

    /// The training flags reach the trainer's settings; without them the library's defaults
    /// (the decoder's rate ×2, the classifier on a second encoder pass, scvi-tools' cycling).
    #[test]
    fn training_flags_set_the_train_config() {
        let default = fit_config(&[]);
        assert_eq!(default.decoder_learning_rate_factor, 2.0);
        assert!(default.classifier_second_pass);
        assert_eq!(default.cycling, Cycling::RepeatEpoch);
        let set = fit_config(&[
            "--decoder-lr-factor",
            "1",
            "--no-classifier-second-pass",
            "--cycling",
            "reshuffle",
            "--kappa",
            "1",
        ]);
        assert_eq!(set.decoder_learning_rate_factor, 1.0);
        assert!(!set.classifier_second_pass);
        assert_eq!(set.cycling, Cycling::Reshuffle);
        assert_eq!(set.kappa, 1.0);
    }
}
