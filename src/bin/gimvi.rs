//! `gimvi`: integrate scRNA-seq and spatial transcriptomics and impute unmeasured genes, from
//! the command line. Run `gimvi --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gimvi::data::{Column, CountSource, H5adOptions, LoomOptions};
use gimvi::paper::{evaluate_pair, EvaluateOptions};
use gimvi::{
    BackendKind, CountLikelihood, Dataset, FitOptions, Genes, Gimvi, ImputeOptions, Kappa,
    Progress, TrainConfig,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    /// scRNA-seq reference file: its genes are the ones that can be imputed.
    #[arg(long)]
    sc: PathBuf,
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
    /// Latent dimension.
    #[arg(long, default_value_t = 10)]
    latent: usize,
    /// Compute backend among those compiled in: auto (flex, else ndarray), ndarray, flex, wgpu,
    /// cuda.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Round non-integer counts instead of refusing them.
    #[arg(long)]
    round: bool,
    /// Models trained per κ, each from its own seed, whose imputations are averaged (`fit`
    /// saves them together in --out; `evaluate` averages them per fold). Averaging removes much
    /// of one training's seed-to-seed noise (docs/results.md), at ENSEMBLE× the training time.
    #[arg(long, default_value_t = 1)]
    ensemble: usize,
    /// Average the models of several κ instead of training one, e.g. `0,1,5` (each an
    /// ensemble of ENSEMBLE models): no κ has to be chosen, at one training per κ.
    /// Replaces a number given to --kappa; with `--kappa auto` the average is used unless one
    /// κ beats it by more than one standard error in the inner validation.
    #[arg(long, value_delimiter = ',', value_name = "KAPPAS")]
    average_kappas: Vec<f64>,
    /// Extra trainings that calibrate the prediction intervals (0-5; 0 = none, raw posterior
    /// intervals). Each hides a different 20 % of the spatial genes and measures how far
    /// their counts fall from the imputation (split conformal, docs/uncertainty.md); they
    /// train the adversarial classifier on the first encoder pass whatever
    /// --classifier-second-pass says (that flag sets the model's own training).
    #[arg(long, default_value_t = gimvi::FitOptions::default().calibration_splits)]
    calibration_splits: usize,
    /// Epochs of each calibration training (default: 40 % of --epochs, at least 1).
    #[arg(long, value_name = "EPOCHS")]
    calibration_epochs: Option<usize>,
    /// Training settings (the library's `TrainConfig`).
    #[command(flatten)]
    train: TrainConfig,
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
    /// Coverage of the prediction interval written beside every imputed count (layers
    /// imputed_lower / imputed_upper; calibrated when the model was fit with calibration).
    #[arg(long, default_value_t = 0.9)]
    coverage: f64,
    /// Write no prediction interval.
    #[arg(long)]
    no_intervals: bool,
    /// Promise the coverage for measurements given that the gene is detected (nonzero counts)
    /// instead of for any measurement, zeros included.
    #[arg(long)]
    given_detection: bool,
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
    /// Use these gene folds instead of the seeded split: a JSON object {gene: fold} listing
    /// every shared gene (e.g. the folds scripts/peers/ ran the Python tools on).
    #[arg(long)]
    folds_from: Option<PathBuf>,
    /// paper: the reference restricted to the shared genes (the paper's Table 1);
    /// transcriptome: the reference keeps all its genes.
    #[arg(long, value_enum, default_value_t = Protocol::Paper)]
    protocol: Protocol,
    /// Score another tool's imputations beside gimvi's: NAME=FILE, FILE an .h5ad (or any
    /// readable matrix) with one row per cell of the spatial file and one column per shared
    /// gene, made on the same folds (--folds-from), NaN where the tool made none. Repeatable.
    #[arg(long, value_name = "NAME=FILE")]
    peer: Vec<String>,
    /// Score only the baselines and the --peer imputations, without training gimVI.
    #[arg(long)]
    skip_gimvi: bool,
    /// Write figures here (SVG and PNG): the calibration curve of the prediction intervals,
    /// error against uncertainty per held-out gene (Fig. 3), a held-out gene on the tissue
    /// (Fig. 4: measured, imputed, interval width).
    #[arg(long, value_name = "DIR")]
    figures: Option<PathBuf>,
}

/// Which genes the reference keeps in `evaluate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// The reference restricted to the genes it shares with the spatial data.
    Paper,
    /// The reference keeps all its genes.
    Transcriptome,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn read(path: &Path, args: &ReadArgs) -> Result<Dataset> {
    let name = path.to_string_lossy().to_lowercase();
    let ds = if name.ends_with(".h5ad") {
        let counts = match args.layer.as_deref() {
            None => CountSource::X,
            Some("raw") => CountSource::Raw,
            Some(l) => CountSource::Layer(l.to_string()),
        };
        gimvi::data::read_h5ad(path, &H5adOptions { counts })?
    } else if name.ends_with(".loom") {
        gimvi::data::read_loom(
            path,
            &LoomOptions {
                gene_attr: args.gene_attr.clone(),
                layer: args.layer.clone(),
            },
        )?
    } else {
        gimvi::read(path)?
    };
    Ok(ds)
}

fn backend(name: &str) -> Result<BackendKind> {
    Ok(name.parse::<BackendKind>()?)
}

fn say(quiet: bool, text: impl AsRef<str>) {
    if !quiet {
        eprintln!("{}", text.as_ref());
    }
}

/// What the reader noticed about a file (renamed or spreadsheet-mangled gene names, …).
fn warn_about(quiet: bool, ds: &Dataset) {
    for w in &ds.warnings {
        say(quiet, format!("warning: {}: {w}", ds.source));
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
    // Library sizes (total counts per cell).
    let mut library = ds.counts.row_sums();
    library.sort_by(f64::total_cmp);
    let zero_cells = library.iter().filter(|&&v| v == 0.0).count();
    let (lib_min, lib_max) = (
        library.first().copied().unwrap_or(0.0),
        library.last().copied().unwrap_or(0.0),
    );
    let lib_median = gimvi::metrics::median(&library).unwrap_or(0.0);
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
        lib_median, lib_min, lib_max, zero_cells
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

/// The training settings and the models to train, checked before any file is read.
fn plan(args: &ModelArgs) -> Result<(TrainConfig, FitOptions)> {
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
    let given = kappa(args)?;
    let train = TrainConfig {
        kappa: given.unwrap_or(5.0),
        ..args.train.clone()
    };
    train.validate()?;
    let kappa = match (given, args.average_kappas.is_empty()) {
        (None, true) => Kappa::Auto {
            candidates: vec![0.0, 1.0, 5.0],
            keep_average: false,
        },
        (None, false) => Kappa::Auto {
            candidates: args.average_kappas.clone(),
            keep_average: true,
        },
        (Some(_), true) => Kappa::Given,
        (Some(_), false) => Kappa::Average(args.average_kappas.clone()),
    };
    let options = FitOptions {
        kappa,
        models_per_kappa: args.ensemble,
        calibration_splits: args.calibration_splits,
        calibration_epochs: args.calibration_epochs,
    };
    Ok((train, options))
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

/// A progress reporter for training: an epoch bar per model on a terminal, notes as lines.
fn progress_reporter(quiet: bool) -> impl FnMut(Progress<'_>) {
    let mut bar: Option<ProgressBar> = None;
    move |p| {
        if quiet {
            return;
        }
        match p {
            Progress::Note(text) => eprintln!("{text}"),
            Progress::Model {
                index,
                count,
                kappa,
                seed,
            } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if count > 1 {
                    eprintln!("model {}/{count}: κ = {kappa}, seed {seed}", index + 1);
                }
            }
            Progress::Epoch { log, epochs } => {
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::with_draw_target(
                        Some(epochs as u64),
                        ProgressDrawTarget::stderr(),
                    );
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} epoch {pos}/{len} [{bar:30}] {msg} (ETA {eta})",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b
                });
                b.set_message(format!(
                    "loss {:.3} rec {:.3} kl {:.3}{}",
                    log.loss,
                    log.reconstruction,
                    log.kl,
                    log.validation_loss
                        .map(|v| format!(" val {v:.3}"))
                        .unwrap_or_default()
                ));
                b.inc(1);
                if log.epoch + 1 == epochs {
                    b.finish_and_clear();
                    bar = None;
                }
            }
        }
    }
}

fn fit_command(args: &FitArgs, quiet: bool) -> Result<()> {
    let a = &args.model;
    let (train, options) = plan(a)?;
    let kind = backend(&a.backend)?;
    // Check the backend before reading (possibly large) files: a machine without a GPU
    // adapter fails at once with a typed error.
    kind.open()?;
    // And where the model goes: a bad --out fails now, not after the training.
    Gimvi::check_save_path(&args.out)?;
    let sc = read(&a.sc, &a.read)?;
    warn_about(quiet, &sc);
    let sp: Vec<Dataset> = a
        .spatial
        .iter()
        .map(|p| read(p, &a.read))
        .collect::<Result<_>>()?;
    let (sc_lik, sp_lik) = likelihoods(a);
    let mut builder = Gimvi::builder(&sc)
        .reference_likelihood(sc_lik)
        .latent(a.latent)
        .round_counts(a.round)
        .backend(kind);
    for ds in &sp {
        warn_about(quiet, ds);
        builder = builder.spatial(ds, sp_lik);
    }
    let mut model = builder.build()?;
    for d in model.datasets() {
        say(
            quiet,
            format!(
                "{}: {} cells × {} genes used ({} empty cells dropped, {} genes not in the reference{})",
                d.name,
                d.cells.unwrap_or(0),
                d.genes.len(),
                d.dropped_cells,
                d.unused_genes,
                if d.rounded > 0 { format!(", {} values rounded", d.rounded) } else { String::new() }
            ),
        );
    }
    model.train_with(&train, &options, progress_reporter(quiet))?;
    model.save(&args.out)?;
    let history = model.history();
    let finals: Vec<String> = history
        .iter()
        .map(|h| {
            let last = h.last();
            format!(
                "{:.3}{}",
                last.map_or(f64::NAN, |l| l.loss),
                last.and_then(|l| l.validation_loss)
                    .map(|v| format!(" (validation {v:.3})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let epochs = history.first().map_or(0, Vec::len);
    say(
        quiet,
        format!(
            "trained {} ({epochs} epochs; final loss {}); written to {}",
            if model.models() == 1 {
                "1 model".to_string()
            } else {
                format!("{} models, imputed as their average", model.models())
            },
            finals.join(", "),
            args.out.display()
        ),
    );
    Ok(())
}

/// Refuses, before any work, an output file the atomic writer could not put in place: a folder,
/// a path whose folder does not exist or cannot be written into.
fn check_out_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(format!(
            "cannot write {}: is a folder; give a file name (.h5ad or .csv)",
            path.display()
        )
        .into());
    }
    let Some(name) = path.file_name() else {
        return Err(format!("cannot write {}: no file name", path.display()).into());
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(format!(
            "cannot write {}: the folder {} does not exist",
            path.display(),
            parent.display()
        )
        .into());
    }
    let probe = parent.join(format!(
        ".{}.probe-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot write {}: cannot write into {}: {e}",
            path.display(),
            parent.display()
        )
        .into()),
    }
}

fn impute_command(args: &ImputeArgs, quiet: bool) -> Result<()> {
    check_out_file(&args.out)?;
    let model = Gimvi::load(&args.model, backend(&args.backend)?)?;
    let ds = read(&args.spatial, &args.read)?;
    warn_about(quiet, &ds);
    let genes = match (&args.genes, args.all) {
        (Some(list), _) => Genes::List(list.clone()),
        (None, true) => Genes::All,
        (None, false) => Genes::Unmeasured,
    };
    let imputed = model.impute(
        &ds,
        &ImputeOptions {
            genes,
            samples: args.samples,
            normalized: args.normalized,
            seed: args.seed,
            coverage: (!args.no_intervals).then_some(args.coverage),
            given_detection: args.given_detection,
        },
    )?;
    let out_name = args.out.to_string_lossy().to_lowercase();
    if out_name.ends_with(".csv") {
        let written = imputed.write_csv(&args.out)?;
        if written.len() > 1 {
            let beside: Vec<String> = written[1..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            say(quiet, format!("also written: {}", beside.join(", ")));
        }
    } else {
        imputed.write_h5ad(&args.out)?;
    }
    say(
        quiet,
        format!(
            "imputed {} genes in {} cells{}{}; written to {}",
            imputed.genes.len(),
            imputed.cells.len(),
            if imputed.models > 1 {
                format!(" as the average of {} models", imputed.models)
            } else {
                String::new()
            },
            match (&imputed.variance, imputed.models) {
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
    if let Some(iv) = &imputed.intervals {
        say(
            quiet,
            format!(
                "{:.0} % prediction intervals ({}) in layers imputed_lower / imputed_upper",
                100.0 * iv.coverage,
                if iv.calibrated {
                    "calibrated"
                } else {
                    "raw posterior, uncalibrated: the model was fit with --calibration-splits 0"
                }
            ),
        );
    }
    Ok(())
}

fn evaluate_command(args: &EvaluateArgs, quiet: bool) -> Result<()> {
    let a = &args.model;
    if a.spatial.len() != 1 {
        return Err("evaluate takes exactly one --spatial file".into());
    }
    let (train, fit) = plan(a)?;
    let device = backend(&a.backend)?.open()?.autodiff();
    let sc = read(&a.sc, &a.read)?;
    let sp = read(&a.spatial[0], &a.read)?;
    warn_about(quiet, &sc);
    warn_about(quiet, &sp);
    let (sc_likelihood, spatial_likelihood) = likelihoods(a);
    let fold_of = match &args.folds_from {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --folds-from {}: {e}", path.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| {
                format!(
                    "--folds-from {}: expected a JSON object {{gene: fold}}: {e}",
                    path.display()
                )
            })?)
        }
    };
    let mut peers = Vec::new();
    for spec in &args.peer {
        let (name, file) = spec
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
            .ok_or_else(|| format!("--peer expects NAME=FILE, got '{spec}'"))?;
        peers.push((name.to_string(), gimvi::read(file)?));
    }
    let evaluation = evaluate_pair(
        &sc,
        &sp,
        &EvaluateOptions {
            train,
            fit,
            n_latent: a.latent,
            sc_likelihood,
            spatial_likelihood,
            folds: args.folds,
            round_counts: a.round,
            device,
            fold_of,
            transcriptome: args.protocol == Protocol::Transcriptome,
            peers,
            skip_gimvi: args.skip_gimvi,
        },
    )?;
    say(
        quiet,
        format!(
            "{} shared genes, {} folds",
            evaluation.genes.len(),
            args.folds
        ),
    );
    println!("{}", evaluation.report.to_markdown());
    if !evaluation.chosen_kappas.is_empty() {
        let chosen: Vec<String> = evaluation
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
    let tempering: Vec<Option<f64>> = evaluation
        .posterior
        .iter()
        .map(gimvi::paper::FoldPosterior::tempering)
        .collect();
    if tempering.iter().any(Option::is_some) {
        let shown: Vec<String> = tempering
            .iter()
            .map(|w| w.map_or("1 (untempered)".into(), |w| format!("{w:.2}")))
            .collect();
        println!(
            "Point imputation tempered toward the cell's library, w per fold (chosen on training \
             genes by the calibration): {}",
            shown.join(", ")
        );
    }
    if !evaluation.intervals.is_empty() {
        println!(
            "\nPrediction intervals of the held-out genes (gimVI, {} posterior samples{}):\n\n{}",
            50,
            if a.calibration_splits > 0 {
                format!(
                    "; calibrated per fold with {} extra trainings on its training genes",
                    a.calibration_splits
                )
            } else {
                String::new()
            },
            evaluation.intervals_markdown()
        );
    }
    if let Some(path) = &args.json {
        let mut json: serde_json::Value = serde_json::from_str(&evaluation.report.to_json())?;
        if let Some(object) = json.as_object_mut() {
            object.insert(
                "intervals".into(),
                serde_json::to_value(&evaluation.intervals)?,
            );
            object.insert("tempering".into(), serde_json::to_value(&tempering)?);
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        say(quiet, format!("report written to {}", path.display()));
    }
    if let Some(dir) = &args.figures {
        let written = evaluation.write_figures(dir)?;
        say(
            quiet,
            format!(
                "{} figure files written to {}",
                written.len(),
                dir.display()
            ),
        );
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
    use gimvi::Cycling;

    fn fit_plan(extra: &[&str]) -> (TrainConfig, FitOptions) {
        let mut argv = vec!["gimvi", "fit", "--sc", "a.h5ad", "--spatial", "b.h5ad"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--out", "m"]);
        match Cli::try_parse_from(argv).expect("valid arguments").command {
            Command::Fit(args) => plan(&args.model).expect("valid settings"),
            _ => unreachable!("a fit command"),
        }
    }

    /// The training flags reach the trainer's settings; without them the library's defaults
    /// (the decoder's rate ×2, the classifier on a second encoder pass, scvi-tools' cycling).
    #[test]
    fn training_flags_set_the_train_config() {
        let (default, options) = fit_plan(&[]);
        assert_eq!(default, TrainConfig::default());
        assert_eq!(options, FitOptions::default());
        let (set, options) = fit_plan(&[
            "--decoder-lr-factor",
            "1",
            "--classifier-second-pass",
            "false",
            "--cycling",
            "reshuffle",
            "--kappa",
            "1",
            "--epochs",
            "7",
            "--ensemble",
            "2",
            "--average-kappas",
            "0,1",
            "--calibration-splits",
            "3",
            "--calibration-epochs",
            "4",
        ]);
        assert_eq!(set.decoder_learning_rate_factor, 1.0);
        assert!(!set.classifier_second_pass);
        assert_eq!(set.cycling, Cycling::Reshuffle);
        assert_eq!(set.kappa, 1.0);
        assert_eq!(set.epochs, 7);
        assert_eq!(
            options,
            FitOptions {
                kappa: Kappa::Average(vec![0.0, 1.0]),
                models_per_kappa: 2,
                calibration_splits: 3,
                calibration_epochs: Some(4),
            }
        );
    }
}
