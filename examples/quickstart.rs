//! gimvi end to end without any data file: a simulated scRNA-seq reference (40 genes) and a
//! spatial panel that measures 16 of them; 4 of those are hidden from the panel, imputed by
//! gimVI from the reference, and compared with the hidden truth (Spearman across cells, beside
//! the "per-gene mean × the cell's library" baseline). The imputation is written as `.h5ad`.
//!
//! ```text
//! cargo run --release --example quickstart [-- --backend ndarray|flex|wgpu|cuda]
//! ```
//!
//! Every call is the front door a Rust program uses: `Dataset::new` (or `gimvi::read` for a
//! file), `Gimvi::builder`, `train`, `impute`, `write_h5ad`.

use gimvi::data::CsrMatrix;
use gimvi::metrics::{median, spearman};
use gimvi::{BackendKind, CountLikelihood, Dataset, Genes, Gimvi, ImputeOptions, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};

const GENES: usize = 40;
const TYPES: usize = 5;

/// Counts of `cells` cells drawn from `TYPES` cell types, each with its own gene programme,
/// with a LogNormal library size around `library`; returns the counts and each cell's type.
fn simulate(cells: usize, library: f64, rng: &mut impl Rng) -> (Vec<f32>, Vec<usize>) {
    let lib = LogNormal::new(library.ln(), 0.4).expect("valid");
    // Type t expresses gene g strongly when (g + t) % TYPES == 0, weakly otherwise.
    let mut x = Vec::with_capacity(cells * GENES);
    let mut types = Vec::with_capacity(cells);
    for _ in 0..cells {
        let t = rng.random_range(0..TYPES);
        let l = lib.sample(rng);
        let weights: Vec<f64> = (0..GENES)
            .map(|g| if (g + t) % TYPES == 0 { 8.0 } else { 1.0 } * (1.0 + (g % 3) as f64))
            .collect();
        let total: f64 = weights.iter().sum();
        for w in weights {
            let rate = l * w / total;
            x.push(Poisson::new(rate).map_or(0.0, |p| p.sample(rng)) as f32);
        }
        types.push(t);
    }
    (x, types)
}

fn dataset(name: &str, x: &[f32], genes: &[String]) -> Result<Dataset, gimvi::Error> {
    let cells = x.len() / GENES;
    let all = CsrMatrix::from_dense(cells, GENES, x)?;
    let cols: Vec<usize> = (0..GENES)
        .filter(|g| genes.contains(&format!("Gene{g}")))
        .collect();
    let cell_names = (0..cells).map(|i| format!("{name}-{i}")).collect();
    Ok(Dataset::new(
        name,
        all.select_cols(&cols),
        cols.iter().map(|g| format!("Gene{g}")).collect(),
        cell_names,
        Vec::new(),
        None,
    )?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Faster CPU training: keep large freed blocks in the heap (process-wide; see its docs).
    gimvi::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let backend: BackendKind = match args.iter().position(|a| a == "--backend") {
        Some(i) => args.get(i + 1).ok_or("--backend needs a value")?.parse()?,
        None => BackendKind::default(),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let all_genes: Vec<String> = (0..GENES).map(|g| format!("Gene{g}")).collect();
    let (sc_x, _) = simulate(1500, 3000.0, &mut rng);
    let (sp_x, _) = simulate(1000, 300.0, &mut rng);
    // The panel measures every second gene of the first 32 — and 4 of those are hidden.
    let panel: Vec<String> = (0..32).step_by(2).map(|g| format!("Gene{g}")).collect();
    let hidden: Vec<String> = panel.iter().skip(1).step_by(4).cloned().collect();
    let measured: Vec<String> = panel
        .iter()
        .filter(|g| !hidden.contains(g))
        .cloned()
        .collect();
    let reference = dataset("reference", &sc_x, &all_genes)?;
    let spatial = dataset("spatial", &sp_x, &measured)?;
    let truth = dataset("spatial (hidden genes)", &sp_x, &hidden)?;

    let mut model = Gimvi::builder(&reference)
        .spatial(&spatial, CountLikelihood::Poisson)
        .backend(backend)
        .build()?;
    let train = TrainConfig {
        epochs: 60,
        ..TrainConfig::default()
    };
    eprintln!("training on {backend} ({} epochs) …", train.epochs);
    model.train(&train)?;
    let imputed = model.impute(
        &spatial,
        &ImputeOptions {
            genes: Genes::List(hidden.clone()),
            ..ImputeOptions::default()
        },
    )?;

    // Score: Spearman across cells per hidden gene, against the "mean × library" baseline.
    let truth_dense = truth.counts.to_dense_f64();
    let library: Vec<f64> = spatial.counts.row_sums();
    let mut rows = Vec::new();
    let (mut ours, mut baseline) = (Vec::new(), Vec::new());
    for (j, gene) in imputed.genes.iter().enumerate() {
        let col = truth.genes.iter().position(|g| g == gene).ok_or("gene")?;
        let t: Vec<f64> = truth_dense.column(col).to_vec();
        let p: Vec<f64> = imputed.mean.column(j).iter().map(|&v| v.into()).collect();
        let r = spearman(&t, &p)?.unwrap_or(0.0);
        let b = spearman(&t, &library)?.unwrap_or(0.0);
        let sd = imputed.variance.as_ref().map_or(0.0, |v| {
            v.column(j)
                .iter()
                .map(|&x| f64::from(x).sqrt())
                .sum::<f64>()
        });
        rows.push(format!(
            "{gene:<8} Spearman {r:.3} (mean × library {b:.3}), mean posterior sd {:.2}",
            sd / p.len() as f64
        ));
        ours.push(r);
        baseline.push(b);
    }
    println!("{}", rows.join("\n"));
    println!(
        "median Spearman of the {} hidden genes: gimVI {:.3}, mean × library {:.3}",
        hidden.len(),
        median(&ours).unwrap_or(f64::NAN),
        median(&baseline).unwrap_or(f64::NAN)
    );
    std::fs::create_dir_all("results")?;
    imputed.write_h5ad("results/quickstart.h5ad")?;
    eprintln!("written to results/quickstart.h5ad (X = imputed, layers/variance, obsm/X_gimvi)");
    Ok(())
}
