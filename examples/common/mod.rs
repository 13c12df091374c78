//! Shared driver of the paper examples (`msms.rs`, `mpfc.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use gimvi::data::registry::{self, DatasetPair, Reference};
use gimvi::likelihoods::CountLikelihood;
use gimvi::paper::{table1, Table1Options};
use gimvi::BackendKind;

pub struct Pair {
    pub name: &'static str,
    pub load: fn(&std::path::Path, Reference) -> Result<DatasetPair, gimvi::data::DataError>,
    pub spatial_likelihood: CountLikelihood,
}

const USAGE: &str =
    "options: [--quick] [--epochs N] [--folds K] [--folds-from FILE.json] [--seed S] \
[--no-auto-kappa] \
[--reference auto|paper|substitute] [--data DIR] [--out DIR] [--backend auto|ndarray|flex|wgpu|cuda]";

pub fn run(pair: Pair) -> ExitCode {
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
    let value = |flag: &str| -> Option<String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{} example: the paper's Table 1 protocol on real data\n{USAGE}",
            pair.name
        );
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let epochs: usize = value("--epochs").map_or(Ok(if quick { 2 } else { 100 }), |v| v.parse())?;
    let folds: usize = value("--folds").map_or(Ok(5), |v| v.parse())?;
    let seed: u64 = value("--seed").map_or(Ok(0), |v| v.parse())?;
    let reference = match value("--reference").as_deref() {
        None | Some("auto") => Reference::PaperOrSubstitute,
        Some("paper") => Reference::Paper,
        Some("substitute") => Reference::Substitute,
        Some(other) => return Err(format!("unknown --reference '{other}'; {USAGE}").into()),
    };
    // The data: --data, else $GIMVI_DATA_DIR, else ../shared/data when it exists.
    let dir = match value("--data") {
        Some(d) => PathBuf::from(d),
        None => registry::data_dir(None).or_else(|e| {
            let fallback = PathBuf::from("../shared/data");
            if fallback.is_dir() {
                Ok(fallback)
            } else {
                Err(e)
            }
        })?,
    };
    let backend: BackendKind = value("--backend").as_deref().unwrap_or("auto").parse()?;
    let out = PathBuf::from(value("--out").unwrap_or_else(|| {
        format!(
            "results/{}{}",
            pair.name.to_lowercase(),
            if quick { "-quick" } else { "" }
        )
    }));

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
        epochs,
        folds,
        seed,
        n_latent: 8,
        spatial_likelihood: pair.spatial_likelihood,
        auto_kappa: !args.iter().any(|a| a == "--no-auto-kappa"),
        progress: true,
        device: backend.open()?.autodiff(),
        fold_of: match value("--folds-from") {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(&path)
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
        if options.auto_kappa { 7 } else { 6 },
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
        let k: Vec<String> = used.chosen_kappas.iter().map(|v| v.to_string()).collect();
        md.push_str(&format!(
            "\nκ* chosen per fold by inner validation on the fold's training genes: {}\n",
            k.join(", ")
        ));
    }
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.json"), report.to_json())?;
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
