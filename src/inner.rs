//! Inner held-out-gene splits on the genes a model is given: the machinery that the automatic
//! κ choice ([`crate::kappa`]) and the interval calibration ([`crate::calibration`]) share.
//!
//! The measured genes of every spatial (observed-library) dataset are shuffled (seeded) and
//! cut into [`INNER_GROUPS`] near-equal groups of ~20 % (the outer protocol's fraction); split
//! k hides group k of every such dataset from a model trained on the rest, so the hidden genes
//! can be imputed and compared with their counts without touching any gene the caller holds
//! out itself.

use gimvi_data::CsrMatrix;
use gimvi_model::{LibraryModel, ModelConfig};
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Groups the measured genes of a spatial dataset are cut into: 5 groups of ~20 %.
pub(crate) const INNER_GROUPS: usize = 5;

/// Per spatial (observed-library) dataset with at least `min_genes` genes: its index and its
/// gene columns, shuffled with `seed` and cut into [`INNER_GROUPS`] contiguous near-equal
/// groups (with fewer genes than groups the later ones are empty).
pub(crate) fn gene_groups(
    config: &ModelConfig,
    seed: u64,
    min_genes: usize,
) -> Vec<(usize, Vec<Vec<usize>>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut groups = Vec::new();
    for (m, spec) in config.datasets.iter().enumerate() {
        if !matches!(spec.library, LibraryModel::Observed) || spec.gene_index.len() < min_genes {
            continue;
        }
        let mut cols: Vec<usize> = (0..spec.gene_index.len()).collect();
        cols.shuffle(&mut rng);
        let n = cols.len();
        let cut: Vec<Vec<usize>> = (0..INNER_GROUPS)
            .map(|k| cols[k * n / INNER_GROUPS..(k + 1) * n / INNER_GROUPS].to_vec())
            .collect();
        groups.push((m, cut));
    }
    groups
}

/// Genes of one dataset hidden by an [`InnerSplit`].
#[derive(Debug, Clone)]
pub(crate) struct Hidden {
    /// The dataset.
    pub dataset: usize,
    /// The hidden genes as indices into the model's gene space G (for imputation).
    pub genes: Vec<usize>,
    /// Their counts, the dataset's cells × the hidden genes.
    pub truth: Array2<f64>,
}

/// One inner split: the model configuration and data without the hidden genes, and what was
/// hidden.
#[derive(Debug, Clone)]
pub(crate) struct InnerSplit {
    /// The configuration with the hidden genes removed from their datasets.
    pub config: ModelConfig,
    /// Per dataset: its counts on the kept genes, or `None` where nothing was hidden.
    reduced: Vec<Option<CsrMatrix>>,
    /// The hidden genes, per dataset that lost some.
    pub hidden: Vec<Hidden>,
}

impl InnerSplit {
    /// The training data of the split: the reduced datasets, the others as `given`.
    pub fn data<'a>(&'a self, given: &[&'a CsrMatrix]) -> Vec<&'a CsrMatrix> {
        given
            .iter()
            .zip(&self.reduced)
            .map(|(&given, r)| r.as_ref().unwrap_or(given))
            .collect()
    }
}

/// Split `split` of `groups` (from [`gene_groups`]) applied to `config` and `data`; `None`
/// when it hides no gene.
pub(crate) fn inner_split(
    config: &ModelConfig,
    data: &[&CsrMatrix],
    groups: &[(usize, Vec<Vec<usize>>)],
    split: usize,
) -> Option<InnerSplit> {
    let mut inner = config.clone();
    let mut reduced: Vec<Option<CsrMatrix>> = vec![None; data.len()];
    let mut hidden = Vec::new();
    for (m, cut) in groups {
        let mut hide = cut.get(split)?.clone();
        if hide.is_empty() {
            continue;
        }
        hide.sort_unstable();
        let spec = &config.datasets[*m];
        let keep: Vec<usize> = (0..spec.gene_index.len())
            .filter(|c| !hide.contains(c))
            .collect();
        let s = &mut inner.datasets[*m];
        s.genes = keep.iter().map(|&c| spec.genes[c].clone()).collect();
        s.gene_index = keep.iter().map(|&c| spec.gene_index[c]).collect();
        hidden.push(Hidden {
            dataset: *m,
            genes: hide.iter().map(|&c| spec.gene_index[c]).collect(),
            truth: data[*m].select_cols(&hide).to_dense_f64(),
        });
        reduced[*m] = Some(data[*m].select_cols(&keep));
    }
    (!hidden.is_empty()).then_some(InnerSplit {
        config: inner,
        reduced,
        hidden,
    })
}
