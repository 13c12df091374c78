//! Shared driver of the paper examples (`msms.rs`, `mpfc.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser};
use gimvi::data::{DatasetPair, Reference};
use gimvi::metrics::{median, spearman};
use gimvi::paper::{
    calibration_figure, method_name, table1, worth_imputing, FoldPosterior, Table1Data,
    Table1Options,
};
use gimvi::{BackendKind, CountLikelihood, FitOptions, TrainConfig};

pub struct Pair {
    pub name: &'static str,
    pub load: fn(&std::path::Path, Reference) -> Result<DatasetPair, gimvi::data::DataError>,
    pub spatial_likelihood: CountLikelihood,
}

/// The options of the paper examples.
#[derive(Parser)]
struct ExampleArgs {
    /// Smoke run: 2 epochs, one model per fold, 10 posterior samples (not a result).
    #[arg(long)]
    quick: bool,
    /// Gene folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Use the gene folds of this file ({gene: fold}, scripts/anchor_folds.py).
    #[arg(long)]
    folds_from: Option<PathBuf>,
    /// Add the automatic-κ rows (their inner validation trains 15 extra models per fold).
    #[arg(long)]
    auto_kappa: bool,
    /// Also report every gimVI method averaged over M models per fold (the "×M" rows; 1: none).
    #[arg(long, default_value_t = 1)]
    ensemble: usize,
    /// Calibration trainings of gimVI κ = 5's prediction intervals per fold (as `gimvi fit
    /// --calibration-splits`; 0: the raw posterior intervals, one model's time).
    #[arg(long, default_value_t = FitOptions::default().calibration_splits)]
    calibration_splits: usize,
    /// Reference: auto (the paper's file when present, else the substitute), paper,
    /// substitute.
    #[arg(long, default_value = "auto")]
    reference: String,
    /// Data folder (default: $GIMVI_DATA_DIR, else ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder (default results/<pair>[-quick]).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute backend: auto, ndarray, flex, wgpu, cuda.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Training settings (the library's TrainConfig), with the paper's protocol as defaults.
    #[command(flatten)]
    train: TrainConfig,
}

pub fn run(pair: Pair) -> ExitCode {
    // Faster CPU training: keep large freed blocks in the heap (process-wide; see its docs).
    gimvi::tune_allocator();
    match try_run(&pair) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_run(pair: &Pair) -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The paper's protocol (100 epochs, 95 % of the cells for training) as the defaults of
    // the library's training options.
    let paper = Table1Options::paper_training();
    let command = ExampleArgs::command()
        .name(pair.name.to_lowercase())
        .about(format!(
            "{} example: the paper's Table 1 protocol on real data",
            pair.name
        ))
        .mut_arg("epochs", |a| a.default_value(paper.epochs.to_string()))
        .mut_arg("train_fraction", |a| {
            a.default_value(paper.train_fraction.to_string())
        });
    let parsed = ExampleArgs::from_arg_matches(&command.get_matches())?;
    let quick = parsed.quick;
    let mut train = parsed.train.clone();
    if quick && !args.iter().any(|a| a == "--epochs") {
        train.epochs = 2;
    }
    let (epochs, folds, seed) = (train.epochs, parsed.folds, train.seed);
    // Extra rows: every gimVI method as an average of M models (1 = none). One by default, so
    // that the main job stays within 10 minutes on 2 cores with the 19,972-gene reference.
    let ensemble = parsed.ensemble;
    if ensemble == 0 {
        return Err("--ensemble must be at least 1".into());
    }
    let reference = match parsed.reference.as_str() {
        "auto" => Reference::PaperOrSubstitute,
        "paper" => Reference::Paper,
        "substitute" => Reference::Substitute,
        other => {
            return Err(format!("unknown --reference '{other}' (auto, paper, substitute)").into())
        }
    };
    // The data: --data, else $GIMVI_DATA_DIR, else ../shared/data when it exists.
    let dir = match parsed.data.clone() {
        Some(d) => d,
        None => gimvi::data::DatasetPair::data_dir(None).or_else(|e| {
            let fallback = PathBuf::from("../shared/data");
            if fallback.is_dir() {
                Ok(fallback)
            } else {
                Err(e)
            }
        })?,
    };
    let backend: BackendKind = parsed.backend.parse()?;
    let out = parsed.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "results/{}{}",
            pair.name.to_lowercase(),
            if quick { "-quick" } else { "" }
        ))
    });

    let start = Instant::now();
    let data = (pair.load)(&dir, reference)?;
    eprintln!(
        "{}: reference {} ({} cells × {} genes), spatial {} ({} cells × {} genes)",
        pair.name,
        data.sc_label,
        data.sc.n_cells(),
        data.sc.n_genes(),
        data.spatial_label,
        data.spatial.n_cells(),
        data.spatial.n_genes()
    );
    let options = Table1Options {
        train,
        folds,
        n_latent: 8,
        spatial_likelihood: pair.spatial_likelihood,
        auto_kappa: parsed.auto_kappa,
        progress: true,
        posterior_samples: if quick { 10 } else { 50 },
        ensemble,
        // κ = 5's intervals calibrated as a default `fit` calibrates them (Fig. 4's width).
        calibration_splits: parsed.calibration_splits,
        calibration_epochs: None,
        device: backend.open()?.autodiff(),
        fold_of: match &parsed.folds_from {
            None => None,
            Some(path) => {
                let path = path.display();
                let text = std::fs::read_to_string(path.to_string())
                    .map_err(|e| format!("cannot read --folds-from {path}: {e}"))?;
                let map: std::collections::BTreeMap<String, usize> = serde_json::from_str(&text)
                    .map_err(|e| format!("--folds-from {path}: expected {{gene: fold}}: {e}"))?;
                Some(map)
            }
        },
    };
    let folds = options
        .fold_of
        .as_ref()
        .map_or(folds, |m| m.values().max().map_or(0, |&f| f + 1));
    eprintln!(
        "{} folds × {} methods, {epochs} epochs each{} …",
        folds,
        options.methods().len(),
        if quick {
            " (quick smoke run, not a result)"
        } else {
            ""
        }
    );
    let (report, used) = table1(&data, &options)?;
    let seconds = start.elapsed().as_secs_f64();

    let command = format!(
        "cargo run --release --example {} -- {}",
        pair.name.to_lowercase(),
        args.join(" ")
    );
    let mut md = format!(
        "# {} — Table 1 protocol\n\nReference: **{}**; spatial: **{}**. {} shared genes \
         ({}), scRNA-seq cells {} kept / {} dropped, spatial cells {} kept / {} dropped \
         (no counts on the shared genes). Latent 8, {epochs} epochs, {folds} folds, seed {seed}, \
         backend {backend}. Total {:.0} s.\n\nCommand: `{command}`\n\n",
        pair.name,
        data.sc_label,
        data.spatial_label,
        used.genes.len(),
        used.genes.join(", "),
        used.sc_cells.0,
        used.sc_cells.1,
        used.spatial_cells.0,
        used.spatial_cells.1,
        seconds
    );
    md.push_str(&report.to_markdown());
    if !used.chosen_kappas.is_empty() {
        let k: Vec<String> = used
            .chosen_kappas
            .iter()
            .map(|c| c.kappa.to_string())
            .collect();
        md.push_str(&format!(
            "\nκ* chosen per fold by inner validation on the fold's training genes: {}\n",
            k.join(", ")
        ));
        md.push_str(
            "\n| fold | inner (gene, split) pairs scored | median inner Spearman per κ | average of the κ | best κ − average per gene (mean ± SE) | κ* chooses | κ*/avg chooses |\n|---|---|---|---|---|---|---|\n",
        );
        for (f, c) in used.chosen_kappas.iter().enumerate() {
            let scores: Vec<String> = c
                .scores
                .iter()
                .map(|(k, r)| format!("κ={k}: {r:.3}"))
                .collect();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                f + 1,
                c.inner_genes,
                scores.join(", "),
                c.average_score.map_or("–".into(), |a| format!("{a:.3}")),
                c.margin_over_average()
                    .map_or("–".into(), |(m, se)| format!("{m:+.3} ± {se:.3}")),
                c.kappa,
                c.label_with_average()
            ));
        }
    }
    let tempering: Vec<String> = used
        .posterior
        .iter()
        .map(|f| f.tempering().map_or("1".into(), |w| format!("{w:.2}")))
        .collect();
    if !tempering.is_empty() {
        md.push_str(&format!(
            "\ngimVI κ = 5's imputation tempered toward the cell's library (w chosen per fold by \
             its interval calibration on the fold's training genes; 1 = untempered): {}\n",
            tempering.join(", ")
        ));
    }
    if !used.intervals.is_empty() {
        md.push_str(&format!(
            "\n## Prediction intervals of gimVI κ = 5 on the held-out genes\n\n{}",
            used.intervals_markdown()
        ));
    }
    std::fs::create_dir_all(&out)?;
    if !used.intervals.is_empty() {
        calibration_figure(&used.intervals, &out.join("calibration"))?;
        md.push_str(
            "\nCalibration curve (`calibration.svg`, `calibration.png`): nominal against \
             empirical coverage of κ = 5's intervals on the held-out genes.\n",
        );
    }
    md.push_str(&figures(pair.name, &report, &used, &options, &out)?);
    std::fs::write(out.join("report.json"), report.to_json())?;
    if !used.chosen_kappas.is_empty() {
        // The inner validation per fold, gene by gene, so a choice rule can be re-read later.
        let folds: Vec<serde_json::Value> = used
            .chosen_kappas
            .iter()
            .map(|c| {
                serde_json::json!({
                    "kappa": c.kappa,
                    "scores": c.scores,
                    "average_score": c.average_score,
                    "inner_genes": c.inner_genes,
                    "gene_scores": c.gene_scores,
                    "average_gene_scores": c.average_gene_scores,
                    "margin_over_average": c.margin_over_average(),
                    "with_average_chooses": c.label_with_average(),
                })
            })
            .collect();
        std::fs::write(
            out.join("kappa_choices.json"),
            serde_json::to_string_pretty(&folds)?,
        )?;
    }
    std::fs::write(out.join("report.md"), &md)?;
    println!("{md}");
    eprintln!("written to {}", out.display());

    // The medians must be finite (CI checks this on --quick runs).
    for m in &report.methods {
        for v in [m.median_spearman_paper, m.median_spearman_tutorial] {
            if !v.is_finite() {
                return Err(format!("{}: non-finite median {v}", m.name).into());
            }
        }
    }
    Ok(())
}

/// Fig. 3 (uncertainty vs predictability), Fig. 4 (measured vs imputed expression in space)
/// and the worth-imputing score; returns the report's markdown section.
fn figures(
    name: &str,
    report: &gimvi::paper::ProtocolReport,
    used: &Table1Data,
    options: &Table1Options,
    out: &std::path::Path,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut md = String::new();
    let genes = &used.genes;
    let samples = options.posterior_samples;
    let k5 = report.methods.iter().position(|m| m.name == "gimVI κ=5");
    // Per-gene ρ (paper protocol) of a method.
    let rho_of = |method: &str| -> Vec<Option<f64>> {
        match report.methods.iter().find(|m| m.name == method) {
            Some(m) => m.per_gene.iter().map(|g| g.spearman_paper).collect(),
            None => vec![None; genes.len()],
        }
    };

    // Worth-imputing score and Fig. 3: from gimVI κ = 5's posterior (the paper's), and from
    // the posterior pooled over κ = 5 ×M's members when an ensemble ran.
    if !used.posterior.is_empty() {
        md.push_str(&worth_and_fig3(
            name,
            &WorthInput {
                method: "gimVI κ=5",
                posterior: &used.posterior,
                pooled: false,
                rho: rho_of("gimVI κ=5"),
                figure: "fig3",
            },
            used,
            samples,
            out,
        )?);
    }
    if !used.posterior_ensemble.is_empty() {
        let method = method_name(5.0, false, &[], options.ensemble);
        md.push_str(&worth_and_fig3(
            name,
            &WorthInput {
                method: &method,
                posterior: &used.posterior_ensemble,
                pooled: true,
                rho: rho_of(&method),
                figure: "fig3-ensemble",
            },
            used,
            samples,
            out,
        )?);
    }

    // Fig. 2: integration metrics over k in the first fold's latent spaces.
    if !used.integration.is_empty() {
        let ks: Vec<f64> = used.integration[0].ks.iter().map(|&k| k as f64).collect();
        let series =
            |f: fn(&gimvi::paper::IntegrationCurve) -> &Vec<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
                used.integration
                    .iter()
                    .map(|c| {
                        (
                            c.method.clone(),
                            ks.iter().copied().zip(f(c).iter().copied()).collect(),
                        )
                    })
                    .collect()
            };
        gimvi::figures::line_panels(
            &out.join("fig2"),
            &format!(
                "{name}: integration in the joint latent space (fold {})",
                used.integration[0].fold + 1
            ),
            "k (neighbours)",
            &[
                (
                    "entropy of mixing (higher = mixed)".to_string(),
                    series(|c| &c.mixing),
                ),
                (
                    "k-NN purity, scRNA-seq cells".to_string(),
                    series(|c| &c.purity_sc),
                ),
                (
                    "k-NN purity, spatial cells".to_string(),
                    series(|c| &c.purity_spatial),
                ),
            ],
            false,
        )?;
        md.push_str(&format!(
            "\n## Integration (Fig. 2, `fig2.svg`, `fig2.png`)\n\nFold {} models; mean over cells. Entropy \
             of mixing in KL form (0 = every neighbourhood has the global dataset proportions, \
             negative = segregated); k-NN purity = Jaccard index between a cell's k nearest \
             neighbours in the joint latent space and in the latent space of a model fitted on \
             its own dataset alone (scVI, κ = 0, on the cells and genes the joint model saw \
             for that dataset), as in the paper.\n\n| method | mixing k=10 | mixing k=50 | mixing \
             k=100 | purity sc k=10 / 50 / 100 | purity spatial k=10 / 50 / 100 \
             |\n|---|---|---|---|---|---|\n",
            used.integration[0].fold + 1
        ));
        let at = |v: &[f64], k: usize| {
            used.integration[0]
                .ks
                .iter()
                .position(|&kk| kk == k)
                .and_then(|i| v.get(i))
                .map_or("n/a".to_string(), |x| format!("{x:.3}"))
        };
        for c in &used.integration {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} / {} / {} | {} / {} / {} |\n",
                c.method,
                at(&c.mixing, 10),
                at(&c.mixing, 50),
                at(&c.mixing, 100),
                at(&c.purity_sc, 10),
                at(&c.purity_sc, 50),
                at(&c.purity_sc, 100),
                at(&c.purity_spatial, 10),
                at(&c.purity_spatial, 50),
                at(&c.purity_spatial, 100)
            ));
        }
    }

    // Fig. 4: Lamp5 when shared, else the held-out gene with the highest mean count.
    if let (Some(xy), Some(i)) = (&used.coordinates, k5) {
        let g = genes
            .iter()
            .position(|g| g.eq_ignore_ascii_case("lamp5"))
            .unwrap_or_else(|| {
                let means: Vec<f64> = used
                    .spatial_counts
                    .columns()
                    .into_iter()
                    .map(|c| c.mean().unwrap_or(0.0))
                    .collect();
                (0..genes.len())
                    .max_by(|&a, &b| means[a].total_cmp(&means[b]))
                    .unwrap_or(0)
            });
        // The cells the gene's fold kept (the others have no counts on its training genes
        // and no prediction).
        let kept: Vec<usize> = used
            .predictions
            .iter()
            .find(|(method, _)| method == &report.methods[i].name)
            .map(|(_, pred)| {
                (0..pred.nrows())
                    .filter(|&c| pred[[c, g]].is_finite())
                    .collect()
            })
            .unwrap_or_default();
        let measured: Vec<f64> = kept.iter().map(|&c| used.spatial_counts[[c, g]]).collect();
        let xy: Vec<Vec<f64>> = kept.iter().map(|&c| xy[c].clone()).collect();
        let mut panels = vec![(format!("{} measured", genes[g]), measured.clone())];
        for (method, pred) in &used.predictions {
            if method == &report.methods[i].name || method.starts_with("scVI + k-NN") {
                let v: Vec<f64> = kept.iter().map(|&c| pred[[c, g]]).collect();
                let r = spearman(&measured, &v)?;
                panels.push((
                    format!(
                        "{method} (ρ {})",
                        r.map_or("n/a".to_string(), |r| format!("{r:.3}"))
                    ),
                    v,
                ));
            }
        }
        // The width of κ = 5's 90 % interval (its fold's posterior; calibrated when the fold
        // has a calibration, as a default `fit` gives it).
        let mut kind = "raw posterior";
        if let Some(fold) = used.posterior.iter().find(|f| f.genes.contains(&g)) {
            if fold.is_calibrated() {
                kind = "calibrated";
            }
            let j = fold.genes.iter().position(|&x| x == g).unwrap_or(0);
            let width: Vec<f64> = kept
                .iter()
                .map(|&c| {
                    fold.cells
                        .iter()
                        .position(|&r| r == c)
                        .map_or(f64::NAN, |row| {
                            let (lo, hi) = fold.interval(row, j, 0.9);
                            hi - lo
                        })
                })
                .collect();
            panels.push((format!("90 % interval width ({kind}, κ=5)"), width));
        }
        let xy: Vec<(f64, f64)> = xy
            .iter()
            .map(|p| {
                (
                    p.first().copied().unwrap_or(0.0),
                    p.get(1).copied().unwrap_or(0.0),
                )
            })
            .collect();
        gimvi::figures::spatial_panels(
            &out.join("fig4"),
            &format!(
                "{name}: {} in space, measured vs imputed while held out",
                genes[g]
            ),
            &xy,
            &panels,
        )?;
        md.push_str(&format!(
            "\nFig. 4 (`fig4.svg`, `fig4.png`): {} at the spatial cells' coordinates, measured, \
             imputed (held out in its fold) and the width of κ = 5's 90 % {kind} \
             interval, each on its own colour scale.\n",
            genes[g]
        ));
    }
    Ok(md)
}

/// One posterior to score genes by: the method whose posterior it is, per-gene ρ of that
/// method, and the file name of its Fig. 3.
struct WorthInput<'a> {
    method: &'a str,
    posterior: &'a [FoldPosterior],
    /// The posterior is pooled over an ensemble's members.
    pooled: bool,
    rho: Vec<Option<f64>>,
    figure: &'a str,
}

/// The worth-imputing score of every gene from `input.posterior`, how well it ranks the genes'
/// ρ, and Fig. 3 (posterior CV vs 1 − R²); returns the report's markdown section.
fn worth_and_fig3(
    name: &str,
    input: &WorthInput<'_>,
    used: &Table1Data,
    samples: usize,
    out: &std::path::Path,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut md = String::new();
    let genes = &used.genes;
    let worth = worth_imputing(input.posterior, genes.len());
    let pairs: Vec<(f64, f64)> = worth
        .iter()
        .zip(&input.rho)
        .filter_map(|(w, r)| Some(((*w)?, (*r)?)))
        .collect();
    let (w, r): (Vec<f64>, Vec<f64>) = pairs.iter().cloned().unzip();
    let agreement = spearman(&w, &r)?;
    let top_half = {
        // Median ρ of the genes the score ranks in its upper half vs lower half.
        let mut idx: Vec<usize> = (0..w.len()).collect();
        idx.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
        let half = idx.len() / 2;
        let pick = |s: &[usize]| median(&s.iter().map(|&i| r[i]).collect::<Vec<_>>());
        (pick(&idx[..half]), pick(&idx[half..]))
    };
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let pooled = if input.pooled {
        ", pooled over the ensemble's members (mixture of their posteriors: the variance \
         includes their disagreement)"
    } else {
        ""
    };
    md.push_str(&format!(
        "\n## Worth imputing ({} posterior)\n\nScore per gene = −median over cells of the \
         posterior coefficient of variation (sd / mean of the imputed expected count over {} \
         posterior samples{} of {}{pooled}, in the fold that held the gene out). Spearman \
         between the score and the gene's ρ (paper protocol, {}), over {} genes: **{}**. \
         Median ρ of the genes the score puts in its upper half: {}; lower half: {}.\n\n\
         | gene | ρ {} | worth score | unexplained by a linear fit (1 − R²) \
         |\n|---|---|---|---|\n",
        input.method,
        samples,
        if pooled.is_empty() { "" } else { " per member" },
        input.method,
        input.method,
        pairs.len(),
        fmt(agreement),
        fmt(top_half.0),
        fmt(top_half.1),
        input.method
    ));
    for (g, gene) in genes.iter().enumerate() {
        md.push_str(&format!(
            "| {gene} | {} | {} | {} |\n",
            fmt(input.rho[g]),
            fmt(worth[g]),
            fmt(used.unexplained[g])
        ));
    }
    let points: Vec<(f64, f64, String)> = genes
        .iter()
        .enumerate()
        .filter_map(|(g, gene)| Some((used.unexplained[g]?, -worth[g]?, gene.clone())))
        .collect();
    let (ux, uy): (Vec<f64>, Vec<f64>) = points.iter().map(|p| (p.0, p.1)).unzip();
    let fig3_rho = spearman(&ux, &uy)?;
    gimvi::figures::scatter(
        &out.join(input.figure),
        &format!(
            "{name}, {}: imputation uncertainty vs predictability (Spearman {})",
            input.method,
            fmt(fig3_rho)
        ),
        "1 − R² of a linear fit of the gene on the other genes (scRNA-seq)",
        "median posterior CV of the imputed gene",
        &points,
    )?;
    md.push_str(&format!(
        "\nFig. 3 (`{0}.svg`, `{0}.png`, {1}): per gene, the posterior CV against 1 − R² of a linear \
         regression of its log-normalised scRNA-seq expression on the fold's training \
         genes; Spearman between the two: {2}.\n",
        input.figure,
        input.method,
        fmt(fig3_rho)
    ));
    Ok(md)
}
