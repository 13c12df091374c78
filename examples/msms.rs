//! mSMS: osmFISH (mouse somatosensory cortex, 33 genes, Poisson likelihood) with an scRNA-seq
//! reference — Zeisel 2015 when its file is present under the data folder, else the real 10x
//! motor-cortex substitute (every number is labelled with the reference used). Runs the paper's
//! Table 1 protocol (`gimvi::paper`).
//!
//! ```text
//! cargo run --release --example msms            # full: 100 epochs, 5 folds, one model per fold and method
//! cargo run --release --example msms -- --ensemble 3 --auto-kappa   # + 3-model and automatic-κ rows (slower)
//! cargo run --release --example msms -- --quick # smoke run: 2 epochs
//! ```

mod common;

fn main() -> std::process::ExitCode {
    common::run(common::Pair {
        name: "mSMS",
        load: gimvi::data::DatasetPair::msms,
        spatial_likelihood: gimvi::CountLikelihood::Poisson,
    })
}
