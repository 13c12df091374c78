//! Reading and writing the data gimVI works on, in pure Rust (no HDF5 C library):
//!
//! * [`h5ad`]: AnnData `.h5ad` (scanpy, squidpy, scvi-tools) — read X dense or sparse (CSR/CSC,
//!   anndata ≥ 0.7 `encoding-type` and the older `h5sparse` layout), `layers`, `raw`, `obs`
//!   (numeric, string and categorical columns), `obsm` spatial coordinates; write results
//!   that `anndata.read_h5ad` opens;
//! * [`loom`]: loom files (`/matrix` genes × cells, `/row_attrs`, `/col_attrs`);
//! * [`mtx`]: 10x-style MatrixMarket folders and loose MatrixMarket files;
//! * [`delimited`]: dense CSV/TSV with genes or cells as rows, and CSV output;
//! * [`prepare`]: case-insensitive gene matching, removal of empty cells, count validation,
//!   library-size statistics;
//! * [`registry`]: the paper's dataset pairs (mSMS, mPFC) under `GIMVI_DATA_DIR`.
//!
//! Every reader returns a [`Dataset`]; every failure is a [`DataError`] that names the file and
//! the cause. The HDF5 layer is the `hdf5-pure` crate (see `docs/data.md` for the choice).
#![warn(missing_docs)]

mod atomic;
pub mod csr;
pub mod delimited;
pub mod h5ad;
mod hdf;
pub mod loom;
pub mod mtx;
pub mod prepare;
pub mod registry;
mod text;

use std::path::{Path, PathBuf};

pub use csr::CsrMatrix;

/// One metadata column of the cells (an `obs` column or a loom column attribute).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Numbers (integers are stored as f64).
    Numeric(Vec<f64>),
    /// Free text.
    Text(Vec<String>),
    /// Categorical: one code per cell into `categories` (−1 = missing).
    Categorical {
        /// Code per cell, −1 for missing.
        codes: Vec<i32>,
        /// Category labels.
        categories: Vec<String>,
    },
}

impl Column {
    /// Number of cells the column covers.
    pub fn len(&self) -> usize {
        match self {
            Column::Numeric(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Categorical { codes, .. } => codes.len(),
        }
    }

    /// Whether the column has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of cell `i` as text (numbers formatted, missing categories as "").
    pub fn label(&self, i: usize) -> String {
        match self {
            Column::Numeric(v) => v[i].to_string(),
            Column::Text(v) => v[i].clone(),
            Column::Categorical { codes, categories } => usize::try_from(codes[i])
                .ok()
                .and_then(|c| categories.get(c).cloned())
                .unwrap_or_default(),
        }
    }

    fn select(&self, rows: &[usize]) -> Column {
        match self {
            Column::Numeric(v) => Column::Numeric(rows.iter().map(|&r| v[r]).collect()),
            Column::Text(v) => Column::Text(rows.iter().map(|&r| v[r].clone()).collect()),
            Column::Categorical { codes, categories } => Column::Categorical {
                codes: rows.iter().map(|&r| codes[r]).collect(),
                categories: categories.clone(),
            },
        }
    }
}

/// A cells × genes count matrix with its annotations, as read from any supported format.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where the data came from (file path or a label), used in messages.
    pub source: String,
    /// Counts, cells × genes.
    pub counts: CsrMatrix,
    /// Gene names, one per column.
    pub genes: Vec<String>,
    /// Cell names, one per row.
    pub cells: Vec<String>,
    /// Cell metadata columns in file order.
    pub obs: Vec<(String, Column)>,
    /// Spatial coordinates, one row of (x, y[, z]) per cell, when the file has them.
    pub spatial: Option<Vec<Vec<f64>>>,
    /// What reading changed or noticed and a user should be told (each a full sentence naming
    /// the source): gene names renamed to make them unique or non-empty, gene names that look
    /// like spreadsheet dates. Empty for a clean file. See [`Dataset::new`].
    pub warnings: Vec<String>,
}

impl Dataset {
    /// Assembles a dataset, checking that names and annotations match the matrix shape, and
    /// applies the gene-name policy (docs/reliability.md), recording each change in
    /// [`warnings`](Dataset::warnings):
    ///
    /// * surrounding whitespace is trimmed, and an empty name becomes `unnamed-<column>`
    ///   (1-based), so that every gene can be named in messages and outputs;
    /// * a name that repeats an earlier one — compared case-insensitively, as
    ///   [`prepare::match_genes`] compares — gets a suffix `-1`, `-2`, … (anndata's
    ///   `var_names_make_unique` scheme), so that two columns never merge silently and the
    ///   first occurrence keeps its name;
    /// * names that look like dates a spreadsheet made of gene symbols (`2-Mar`, `1-Sep`,
    ///   `1-Dec`: MARCH2, SEPT1, DEC1 …) are kept as written — mapping them back is ambiguous
    ///   (`1-Mar` is MARCH1 or MARC1) — and listed in a warning, because they will not match
    ///   the symbol in another dataset.
    pub fn new(
        source: impl Into<String>,
        counts: CsrMatrix,
        genes: Vec<String>,
        cells: Vec<String>,
        obs: Vec<(String, Column)>,
        spatial: Option<Vec<Vec<f64>>>,
    ) -> Result<Self, DataError> {
        let source = source.into();
        let (genes, warnings) = tidy_gene_names(&source, genes);
        let check = |what: String, expected: usize, found: usize| {
            if expected == found {
                Ok(())
            } else {
                Err(DataError::Shape {
                    what: format!("{source}: {what}"),
                    expected: expected.to_string(),
                    found: found.to_string(),
                })
            }
        };
        check(
            "gene names vs matrix columns".into(),
            counts.n_cols(),
            genes.len(),
        )?;
        check(
            "cell names vs matrix rows".into(),
            counts.n_rows(),
            cells.len(),
        )?;
        for (name, col) in &obs {
            check(
                format!("cell column '{name}' length"),
                counts.n_rows(),
                col.len(),
            )?;
        }
        if let Some(sp) = &spatial {
            check("spatial coordinate rows".into(), counts.n_rows(), sp.len())?;
        }
        Ok(Dataset {
            source,
            counts,
            genes,
            cells,
            obs,
            spatial,
            warnings,
        })
    }

    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.counts.n_rows()
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.counts.n_cols()
    }

    /// A metadata column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.obs.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// The cells listed in `rows`, in that order, with their annotations.
    pub fn select_cells(&self, rows: &[usize]) -> Dataset {
        Dataset {
            source: self.source.clone(),
            counts: self.counts.select_rows(rows),
            genes: self.genes.clone(),
            cells: rows.iter().map(|&r| self.cells[r].clone()).collect(),
            obs: self
                .obs
                .iter()
                .map(|(n, c)| (n.clone(), c.select(rows)))
                .collect(),
            spatial: self
                .spatial
                .as_ref()
                .map(|s| rows.iter().map(|&r| s[r].clone()).collect()),
            warnings: self.warnings.clone(),
        }
    }

    /// The genes listed in `cols`, in that order.
    pub fn select_genes(&self, cols: &[usize]) -> Dataset {
        Dataset {
            source: self.source.clone(),
            counts: self.counts.select_cols(cols),
            genes: cols.iter().map(|&c| self.genes[c].clone()).collect(),
            cells: self.cells.clone(),
            obs: self.obs.clone(),
            spatial: self.spatial.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// Whether a gene name looks like a date a spreadsheet made of a gene symbol: a day and an
/// English month abbreviation, either way round (`2-Mar`, `01-Sep`, `Dec-1`), as Excel turns
/// MARCH2, SEPT1 or DEC1 into dates.
pub fn looks_like_spreadsheet_date(name: &str) -> bool {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let lower = name.trim().to_ascii_lowercase();
    let Some((a, b)) = lower.split_once('-') else {
        return false;
    };
    let day = |s: &str| {
        !s.is_empty() && s.len() <= 2 && s.bytes().all(|c| c.is_ascii_digit()) && s != "0"
    };
    (day(a) && MONTHS.contains(&b)) || (MONTHS.contains(&a) && day(b))
}

/// Names shown in a warning before "…".
const WARNING_EXAMPLES: usize = 8;

fn examples(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(WARNING_EXAMPLES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > WARNING_EXAMPLES {
        s.push_str(&format!(", … ({} in all)", items.len()));
    }
    s
}

/// The gene-name policy of [`Dataset::new`]: trimmed, non-empty, unique case-insensitively.
fn tidy_gene_names(source: &str, genes: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut trimmed = 0;
    let mut unnamed = Vec::new();
    let mut genes: Vec<String> = genes
        .into_iter()
        .enumerate()
        .map(|(j, g)| {
            let t = g.trim();
            if t.is_empty() {
                let name = format!("unnamed-{}", j + 1);
                unnamed.push(name.clone());
                name
            } else if t.len() != g.len() {
                trimmed += 1;
                t.to_string()
            } else {
                g
            }
        })
        .collect();
    if trimmed > 0 {
        warnings.push(format!(
            "{source}: {trimmed} gene name(s) had spaces around them; trimmed"
        ));
    }
    if !unnamed.is_empty() {
        warnings.push(format!(
            "{source}: {} empty gene name(s), named by their column: {}",
            unnamed.len(),
            examples(&unnamed)
        ));
    }
    let mut taken: std::collections::HashSet<String> =
        std::collections::HashSet::with_capacity(genes.len());
    let mut first_seen: std::collections::HashSet<String> =
        genes.iter().map(|g| g.to_lowercase()).collect();
    let mut renamed = Vec::new();
    for g in genes.iter_mut() {
        let key = g.to_lowercase();
        if taken.insert(key.clone()) {
            continue;
        }
        let mut k = 1usize;
        let new = loop {
            let candidate = format!("{g}-{k}");
            let ck = candidate.to_lowercase();
            if !taken.contains(&ck) && !first_seen.contains(&ck) {
                break candidate;
            }
            k += 1;
        };
        taken.insert(new.to_lowercase());
        first_seen.insert(new.to_lowercase());
        renamed.push(format!("{g} → {new}"));
        *g = new;
    }
    if !renamed.is_empty() {
        warnings.push(format!(
            "{source}: {} duplicate gene name(s) (compared case-insensitively) made unique with \
             a suffix, as anndata's var_names_make_unique does; the first occurrence keeps its \
             name: {}",
            renamed.len(),
            examples(&renamed)
        ));
    }
    let dates: Vec<String> = genes
        .iter()
        .filter(|g| looks_like_spreadsheet_date(g))
        .cloned()
        .collect();
    if !dates.is_empty() {
        warnings.push(format!(
            "{source}: {} gene name(s) look like dates a spreadsheet made of gene symbols \
             (MARCH2 → 2-Mar, SEPT1 → 1-Sep): {}; kept as written, so they will not match \
             those symbols in another dataset",
            dates.len(),
            examples(&dates)
        ));
    }
    (genes, warnings)
}

/// Errors of reading, writing and preparing data. Each names the file or dataset concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system could not read or write a file.
    #[error("cannot access {path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not HDF5 (h5ad and loom are HDF5 files).
    #[error("{path} is not an HDF5 file (no HDF5 signature), so it is neither .h5ad nor .loom")]
    NotHdf5 {
        /// File concerned.
        path: PathBuf,
    },
    /// The HDF5 layer failed (truncated or corrupt file, unsupported feature).
    #[error("{path}: cannot read {what}: {message}")]
    Hdf5 {
        /// File concerned.
        path: PathBuf,
        /// Object being read.
        what: String,
        /// The HDF5 reader's message.
        message: String,
    },
    /// Writing an output file failed inside the file-format writer (the target, if it
    /// existed, is unchanged: writes are atomic).
    #[error("cannot write {path}: {message}")]
    Write {
        /// File concerned.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A required element is absent.
    #[error("{path}: {what} not found")]
    Missing {
        /// File concerned.
        path: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// The content does not follow the expected format.
    #[error("{path}: {message}")]
    Format {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Sizes that must agree do not.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        /// Which sizes.
        what: String,
        /// Expected size.
        expected: String,
        /// Size found.
        found: String,
    },
    /// A count is NaN or infinite.
    #[error("{dataset}: non-finite count ({value}) at cell '{cell}', gene '{gene}'")]
    NonFinite {
        /// Dataset.
        dataset: String,
        /// The value.
        value: f32,
        /// Cell name.
        cell: String,
        /// Gene name.
        gene: String,
    },
    /// A count is negative.
    #[error(
        "{dataset}: negative count ({value}) at cell '{cell}', gene '{gene}'; counts must be ≥ 0"
    )]
    Negative {
        /// Dataset.
        dataset: String,
        /// The value.
        value: f32,
        /// Cell name.
        cell: String,
        /// Gene name.
        gene: String,
    },
    /// A count is not an integer although the likelihood needs integer counts.
    #[error(
        "{dataset}: non-integer count ({value}) at cell '{cell}', gene '{gene}'; the count \
         likelihoods need raw integer counts (use the raw counts layer, or opt in to rounding)"
    )]
    NonInteger {
        /// Dataset.
        dataset: String,
        /// The value.
        value: f32,
        /// Cell name.
        cell: String,
        /// Gene name.
        gene: String,
    },
    /// Two datasets share no gene name (compared case-insensitively).
    #[error(
        "no gene in common between {first} ({first_genes} genes) and {second} ({second_genes} \
         genes), compared case-insensitively"
    )]
    NoSharedGenes {
        /// First dataset.
        first: String,
        /// Its gene count.
        first_genes: usize,
        /// Second dataset.
        second: String,
        /// Its gene count.
        second_genes: usize,
    },
    /// Every cell was removed (e.g. all had zero counts on the genes used).
    #[error("{dataset}: no cell left after {step}")]
    NoCells {
        /// Dataset.
        dataset: String,
        /// The step that removed them.
        step: String,
    },
    /// A data file the registry needs is absent.
    #[error("data file {path} not found: {hint}")]
    MissingDataFile {
        /// Expected location.
        path: PathBuf,
        /// What the file is and where to get it.
        hint: String,
    },
    /// `GIMVI_DATA_DIR` is not set and no directory was given.
    #[error(
        "GIMVI_DATA_DIR is not set: point it at the folder holding the datasets (in this \
         repository's CI, ../shared/data; see docs/data.md for the files and their sources)"
    )]
    NoDataDir,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Adds the file's path to a [`DataError::Shape`] raised by code that does not know it (the
/// CSR constructors), so that every reader error names its file.
pub(crate) fn in_file(path: &Path) -> impl FnOnce(DataError) -> DataError + '_ {
    move |e| match e {
        DataError::Shape {
            what,
            expected,
            found,
        } if !what.contains(&path.display().to_string()) => DataError::Shape {
            what: format!("{}: {what}", path.display()),
            expected,
            found,
        },
        other => other,
    }
}

/// Reads any supported file, choosing the reader by extension: `.h5ad`, `.loom`, `.mtx` /
/// `.mtx.gz` (with sibling gene/barcode files), a folder (10x MatrixMarket), `.csv` / `.tsv` /
/// `.txt` (dense, genes as rows unless the first line looks like gene names).
pub fn read_any(path: impl AsRef<Path>) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if path.is_dir() {
        mtx::read_10x_dir(path)
    } else if name.ends_with(".h5ad") || name.ends_with(".h5") {
        h5ad::read_h5ad(path, &h5ad::H5adOptions::default())
    } else if name.ends_with(".loom") {
        loom::read_loom(path, &loom::LoomOptions::default())
    } else if name.ends_with(".mtx") || name.ends_with(".mtx.gz") {
        mtx::read_10x_dir(path.parent().unwrap_or(Path::new(".")))
    } else if [".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz"]
        .iter()
        .any(|e| name.ends_with(e))
    {
        delimited::read_delimited(path, delimited::Orientation::GenesAsRows)
    } else if !path.exists() {
        Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })
    } else {
        Err(DataError::Format {
            path: path.to_path_buf(),
            message: "unknown file type: expected .h5ad, .loom, .mtx[.gz], a 10x folder, \
                      .csv or .tsv"
                .into(),
        })
    }
}
