//! mPFC: starMAP (mouse medial prefrontal cortex, 158 genes, negative-binomial likelihood)
//! with an scRNA-seq reference — Saunders 2018 frontal cortex when its file is present under
//! the data folder, else the real 10x motor-cortex substitute (every number is labelled with
//! the reference used). Runs the paper's Table 1 protocol (`gimvi::paper`).
//!
//! ```text
//! cargo run --release --example mpfc            # full: 100 epochs, 5 folds, one model per fold and method
//! cargo run --release --example mpfc -- --ensemble 3 --auto-kappa   # + 3-model and automatic-κ rows (slower)
//! cargo run --release --example mpfc -- --quick # smoke run: 2 epochs
//! ```

mod common;

fn main() -> std::process::ExitCode {
    common::run(common::Pair {
        name: "mPFC",
        load: gimvi::data::DatasetPair::mpfc,
        spatial_likelihood: gimvi::CountLikelihood::Nb,
    })
}
