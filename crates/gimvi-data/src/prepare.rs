//! Preparing datasets for the model: gene matching, empty-cell removal, count validation and
//! library-size statistics.

use std::collections::HashMap;

use crate::{CsrMatrix, DataError, Dataset};

/// The result of matching the genes of two datasets case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneMatch {
    /// Shared genes, named as in the first dataset, in the first dataset's order.
    pub shared: Vec<String>,
    /// Column of each shared gene in the first dataset.
    pub first_index: Vec<usize>,
    /// Column of each shared gene in the second dataset.
    pub second_index: Vec<usize>,
    /// Genes of the first dataset absent from the second.
    pub only_in_first: Vec<String>,
    /// Genes of the second dataset absent from the first (e.g. spatial genes the reference
    /// does not measure: they cannot be used).
    pub only_in_second: Vec<String>,
}

/// Matches gene names case-insensitively (osmFISH `Gad2` = starMAP `gad2`); the first
/// occurrence of a name wins if a dataset repeats it. Errors when nothing is shared.
pub fn match_genes(first: &Dataset, second: &Dataset) -> Result<GeneMatch, DataError> {
    let mut second_pos: HashMap<String, usize> = HashMap::new();
    for (j, g) in second.genes.iter().enumerate() {
        second_pos.entry(g.to_lowercase()).or_insert(j);
    }
    let mut seen_first: HashMap<String, usize> = HashMap::new();
    let mut m = GeneMatch {
        shared: Vec::new(),
        first_index: Vec::new(),
        second_index: Vec::new(),
        only_in_first: Vec::new(),
        only_in_second: Vec::new(),
    };
    for (i, g) in first.genes.iter().enumerate() {
        let key = g.to_lowercase();
        if seen_first.insert(key.clone(), i).is_some() {
            continue;
        }
        match second_pos.get(&key) {
            Some(&j) => {
                m.shared.push(g.clone());
                m.first_index.push(i);
                m.second_index.push(j);
            }
            None => m.only_in_first.push(g.clone()),
        }
    }
    for g in &second.genes {
        if !seen_first.contains_key(&g.to_lowercase()) {
            m.only_in_second.push(g.clone());
        }
    }
    if m.shared.is_empty() {
        return Err(DataError::NoSharedGenes {
            first: first.source.clone(),
            first_genes: first.n_genes(),
            second: second.source.clone(),
            second_genes: second.n_genes(),
        });
    }
    Ok(m)
}

/// Removes cells whose counts sum to zero (on the genes the dataset currently has — subset the
/// genes first), as scvi-tools' tutorial does with `filter_cells(min_counts=1)`: such a cell has
/// no observed library, ln 0 = −∞. Returns the kept dataset and how many cells were dropped;
/// errors when no cell is left.
pub fn drop_empty_cells(ds: &Dataset) -> Result<(Dataset, usize), DataError> {
    let keep: Vec<usize> = ds
        .counts
        .row_sums()
        .iter()
        .enumerate()
        .filter(|(_, &s)| s > 0.0)
        .map(|(i, _)| i)
        .collect();
    if keep.is_empty() {
        return Err(DataError::NoCells {
            dataset: ds.source.clone(),
            step: "dropping cells with zero counts".into(),
        });
    }
    let dropped = ds.n_cells() - keep.len();
    Ok((ds.select_cells(&keep), dropped))
}

/// What the count likelihoods may be fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CountPolicy {
    /// Counts must be non-negative integers (the default for ZINB / NB / Poisson).
    #[default]
    RequireIntegers,
    /// Non-integer values are rounded to the nearest integer (explicit opt-in), e.g. for
    /// ambient-corrected or imputed "counts".
    Round,
    /// Any finite non-negative value is accepted.
    AllowReal,
}

/// Largest distance from an integer still treated as an integer (f32 storage of integer
/// counts is exact, so this only absorbs values that went through float arithmetic).
const INTEGER_TOLERANCE: f32 = 1e-4;

/// Checks that every count is finite and non-negative and, under
/// [`CountPolicy::RequireIntegers`], an integer; under [`CountPolicy::Round`] rounds in place.
/// Returns how many values were rounded. The error names the first offending cell and gene.
pub fn validate_counts(ds: &mut Dataset, policy: CountPolicy) -> Result<usize, DataError> {
    let mut rounded = 0;
    let n_rows = ds.n_cells();
    for r in 0..n_rows {
        let (start, end) = (ds.counts.indptr()[r], ds.counts.indptr()[r + 1]);
        for p in start..end {
            let v = ds.counts.data()[p];
            let c = ds.counts.indices()[p] as usize;
            let at = |ds: &Dataset| (ds.source.clone(), ds.cells[r].clone(), ds.genes[c].clone());
            if !v.is_finite() {
                let (dataset, cell, gene) = at(ds);
                return Err(DataError::NonFinite {
                    dataset,
                    value: v,
                    cell,
                    gene,
                });
            }
            if v < 0.0 {
                let (dataset, cell, gene) = at(ds);
                return Err(DataError::Negative {
                    dataset,
                    value: v,
                    cell,
                    gene,
                });
            }
            if (v - v.round()).abs() > INTEGER_TOLERANCE {
                match policy {
                    CountPolicy::RequireIntegers => {
                        let (dataset, cell, gene) = at(ds);
                        return Err(DataError::NonInteger {
                            dataset,
                            value: v,
                            cell,
                            gene,
                        });
                    }
                    CountPolicy::Round => {
                        ds.counts.data_mut()[p] = v.round();
                        rounded += 1;
                    }
                    CountPolicy::AllowReal => {}
                }
            }
        }
    }
    Ok(rounded)
}

/// Library-size statistics of a dataset (total counts per cell).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LibraryStats {
    /// Cells.
    pub n_cells: usize,
    /// Cells with zero total counts.
    pub zero_cells: usize,
    /// Smallest library.
    pub min: f64,
    /// Median library.
    pub median: f64,
    /// Largest library.
    pub max: f64,
    /// Mean of ln(library) over cells with a positive library: the LogNormal prior's μ.
    pub log_mean: f64,
    /// Population variance (ddof = 0) of ln(library) over those cells: the prior's σ².
    pub log_var: f64,
}

/// Mean and population variance (ddof = 0) of ln(library) over the cells of `counts` with a
/// positive library — the empirical LogNormal prior of a latent library (Lopez et al. 2019,
/// Eq. 2; scvi-tools computes it the same way). (0, 0) when no cell has counts.
pub fn log_library_moments(counts: &CsrMatrix) -> (f64, f64) {
    let logs: Vec<f64> = counts
        .row_sums()
        .into_iter()
        .filter(|&l| l > 0.0)
        .map(f64::ln)
        .collect();
    if logs.is_empty() {
        return (0.0, 0.0);
    }
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// Library-size statistics; the log moments come from [`log_library_moments`].
pub fn library_stats(ds: &Dataset) -> LibraryStats {
    let mut libs = ds.counts.row_sums();
    libs.sort_by(f64::total_cmp);
    let n = libs.len();
    let positive = libs.iter().filter(|&&l| l > 0.0).count();
    let (log_mean, log_var) = log_library_moments(&ds.counts);
    let median = if n == 0 {
        0.0
    } else if n % 2 == 1 {
        libs[n / 2]
    } else {
        0.5 * (libs[n / 2 - 1] + libs[n / 2])
    };
    LibraryStats {
        n_cells: n,
        zero_cells: n - positive,
        min: libs.first().copied().unwrap_or(0.0),
        median,
        max: libs.last().copied().unwrap_or(0.0),
        log_mean,
        log_var,
    }
}
