//! The datasets of the gimVI paper (Lopez et al. 2019) and the real substitutes available here,
//! located under a data directory (`GIMVI_DATA_DIR`).
//!
//! | function | file (relative to the data directory) | what |
//! |---|---|---|
//! | [`osmfish`] | `osmfish_smfish/smfish.h5ad` | osmFISH, mouse somatosensory cortex (Codeluppi 2018), 4,530 cells × 33 genes |
//! | [`starmap`] | `starmap_mpfc/mpfc-starmap.loom` | starMAP, mouse medial prefrontal cortex (Wang 2018), 3,704 cells × 158 genes |
//! | [`zeisel_cortex`] | `zeisel2015_cortex/expression_mRNA_17-Aug-2014.txt` | the paper's mSMS reference: Zeisel 2015 cortex scRNA-seq, 3,005 cells (GEO GSE60361) |
//! | [`zeisel550`] | `zeisel2015_gpsfish/zeisel550_ref.h5ad` | the same reference subsampled: 550 of its cells (11 types × 50) with all 19,972 genes |
//! | [`saunders_frontal_cortex`] | `saunders2018_frontal_cortex/fc-dropseq.loom` | the paper's mPFC reference: Saunders 2018 frontal cortex Drop-seq |
//! | [`mop_reference`] | `mop_10x_dot_sample/mop_ref.h5ad` | real substitute reference: 10x mouse motor cortex, 11,444 cells × 500 genes |
//!
//! [`msms`] and [`mpfc`] pair a reference with the spatial data: the paper's reference when its
//! file is present (for mSMS the full Zeisel 2015 release, else its 550-cell subsample),
//! otherwise — with [`Reference::Substitute`] or [`Reference::PaperOrSubstitute`] — the
//! motor-cortex substitute. The pair says which reference it holds.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::h5ad::{read_h5ad, H5adOptions};
use crate::loom::{read_loom, LoomOptions};
use crate::text::open_text;
use crate::{io_err, Column, CsrMatrix, DataError, Dataset};

/// The environment variable naming the data directory.
pub const DATA_DIR_VAR: &str = "GIMVI_DATA_DIR";

/// The data directory: `explicit` if given, else `$GIMVI_DATA_DIR`.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os(DATA_DIR_VAR) {
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => Err(DataError::NoDataDir),
    }
}

/// A file of the registry: where it lives and where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    /// Path relative to the data directory.
    pub relative_path: &'static str,
    /// What it is and its public source, for error messages.
    pub source: &'static str,
}

/// osmFISH (spatial half of mSMS).
pub const OSMFISH: DataFile = DataFile {
    relative_path: "osmfish_smfish/smfish.h5ad",
    source: "osmFISH mouse somatosensory cortex (Codeluppi et al. 2018), the file scvi-tools' \
             smfish() loader uses: public repository YosefLab/scVI-data, file smfish.h5ad",
};

/// starMAP (spatial half of mPFC).
pub const STARMAP: DataFile = DataFile {
    relative_path: "starmap_mpfc/mpfc-starmap.loom",
    source: "starMAP mouse medial prefrontal cortex (Wang et al. 2018): public repository \
             YosefLab/scVI-data, file mpfc-starmap.loom",
};

/// Zeisel 2015 cortex (the paper's mSMS reference).
pub const ZEISEL_CORTEX: DataFile = DataFile {
    relative_path: "zeisel2015_cortex/expression_mRNA_17-Aug-2014.txt",
    source: "Zeisel et al. 2015 mouse cortex scRNA-seq, 3,005 cells: GEO GSE60361, file \
             expression_mRNA_17-Aug-2014.txt (also on the Linnarsson lab website)",
};

/// Zeisel 2015 cortex, 550 of its 3,005 cells with all 19,972 genes (the paper's mSMS
/// reference, subsampled).
pub const ZEISEL550: DataFile = DataFile {
    relative_path: "zeisel2015_gpsfish/zeisel550_ref.h5ad",
    source: "Zeisel et al. 2015 mouse cortex UMI counts (GEO GSE60361), 550 cells (11 types × \
             50) with all 19,972 genes, as zeisel550_ref.h5ad (see the data folder's README)",
};

/// Saunders 2018 frontal cortex (the paper's mPFC reference).
pub const SAUNDERS_FC: DataFile = DataFile {
    relative_path: "saunders2018_frontal_cortex/fc-dropseq.loom",
    source: "Saunders et al. 2018 frontal cortex Drop-seq (DropViz; GEO GSE116470, \
             F_GRCm38.81.P60Cortex_noRep5_FRONTALonly), as the loom fc-dropseq.loom of \
             YosefLab/scVI-data",
};

/// 10x mouse motor cortex sample (real substitute reference).
pub const MOP_REFERENCE: DataFile = DataFile {
    relative_path: "mop_10x_dot_sample/mop_ref.h5ad",
    source: "10x mouse primary motor cortex reference shipped with the DOT R package \
             (saezlab/DOT, data/dot.sample.rda), converted to h5ad with duplicates removed",
};

impl DataFile {
    /// The file's full path under `dir`, or [`DataError::MissingDataFile`] naming it and its
    /// source when it is absent.
    pub fn locate(&self, dir: &Path) -> Result<PathBuf, DataError> {
        let p = dir.join(self.relative_path);
        if p.is_file() {
            Ok(p)
        } else {
            Err(DataError::MissingDataFile {
                path: p,
                hint: format!(
                    "expected {}; get it from {}",
                    self.relative_path, self.source
                ),
            })
        }
    }
}

/// osmFISH: 4,530 cells × 33 genes, x/y coordinates, cell-type labels.
pub fn osmfish(dir: &Path) -> Result<Dataset, DataError> {
    read_h5ad(OSMFISH.locate(dir)?, &H5adOptions::default())
}

/// starMAP: 3,704 cells × 158 genes (lower-case symbols), coordinates, cluster labels.
pub fn starmap(dir: &Path) -> Result<Dataset, DataError> {
    read_loom(STARMAP.locate(dir)?, &LoomOptions::default())
}

/// The 10x motor-cortex substitute reference (11,444 cells × 500 genes, `cell_type`).
pub fn mop_reference(dir: &Path) -> Result<Dataset, DataError> {
    read_h5ad(MOP_REFERENCE.locate(dir)?, &H5adOptions::default())
}

/// The paper's mSMS reference, Zeisel 2015 (3,005 cells).
pub fn zeisel_cortex(dir: &Path) -> Result<Dataset, DataError> {
    read_zeisel_expression(ZEISEL_CORTEX.locate(dir)?)
}

/// The paper's mSMS reference subsampled: Zeisel 2015, 550 cells × 19,972 genes, `cell_type`.
pub fn zeisel550(dir: &Path) -> Result<Dataset, DataError> {
    read_h5ad(ZEISEL550.locate(dir)?, &H5adOptions::default())
}

/// The paper's mPFC reference, Saunders 2018 frontal cortex Drop-seq.
pub fn saunders_frontal_cortex(dir: &Path) -> Result<Dataset, DataError> {
    read_loom(SAUNDERS_FC.locate(dir)?, &LoomOptions::default())
}

/// Parses the Linnarsson-lab text release of Zeisel 2015 (`expression_mRNA_17-Aug-2014.txt`):
/// tab-separated; 0-based line 1 holds the group numbers, line 7 the cell ids, lines 8 and 9
/// the level-1 and level-2 classes (values from the third field on); from line 11 on, one gene
/// per line: name, cluster, then one count per cell. (Layout as read by scvi-tools' cortex
/// loader; the file itself is not available in this repository's environment.)
pub fn read_zeisel_expression(path: impl AsRef<Path>) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let reader = open_text(path)?;
    let fmt = |line: usize, message: String| DataError::Format {
        path: path.to_path_buf(),
        message: format!("line {}: {message}", line + 1),
    };
    let mut cells: Vec<String> = Vec::new();
    let mut level1: Vec<String> = Vec::new();
    let mut level2: Vec<String> = Vec::new();
    let mut group: Vec<String> = Vec::new();
    let mut genes = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        let fields: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
        let tail = || {
            fields
                .iter()
                .skip(2)
                .map(|s| s.trim().to_string())
                .collect()
        };
        match i {
            1 => group = tail(),
            7 => cells = tail(),
            8 => level1 = tail(),
            9 => level2 = tail(),
            i if i >= 11 => {
                if fields.len() != cells.len() + 2 {
                    return Err(fmt(
                        i,
                        format!(
                            "gene line has {} counts, the header has {} cells",
                            fields.len().saturating_sub(2),
                            cells.len()
                        ),
                    ));
                }
                genes.push(fields[0].trim().to_string());
                for f in &fields[2..] {
                    values.push(
                        f.trim()
                            .parse::<f32>()
                            .map_err(|_| fmt(i, format!("'{f}' is not a count")))?,
                    );
                }
            }
            _ => {}
        }
    }
    if cells.is_empty() || genes.is_empty() {
        return Err(fmt(
            7,
            "no cell ids (line 8) or no gene lines (from line 12): not the Zeisel 2015 layout"
                .into(),
        ));
    }
    let counts = CsrMatrix::from_dense(genes.len(), cells.len(), &values)?.transpose();
    let mut obs = Vec::new();
    for (name, col) in [
        ("level1class", level1),
        ("level2class", level2),
        ("group", group),
    ] {
        if col.len() == cells.len() {
            obs.push((name.to_string(), Column::Text(col)));
        }
    }
    Dataset::new(path.display().to_string(), counts, genes, cells, obs, None)
}

/// Which scRNA-seq reference a pair should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// The paper's own reference; an error naming the file and its source if absent.
    Paper,
    /// The real substitute available here (10x motor cortex).
    Substitute,
    /// The paper's reference when its file is present, else the substitute.
    PaperOrSubstitute,
}

/// An scRNA-seq reference paired with a spatial dataset.
#[derive(Debug, Clone)]
pub struct DatasetPair {
    /// Name of the pair (`mSMS`, `mPFC`).
    pub name: &'static str,
    /// The scRNA-seq reference.
    pub sc: Dataset,
    /// Which reference it is, for labelling every reported number.
    pub sc_label: &'static str,
    /// The spatial dataset.
    pub spatial: Dataset,
    /// Its label.
    pub spatial_label: &'static str,
}

/// One of the paper's references: its file, its loader and its label.
type PaperReference = (
    DataFile,
    fn(&Path) -> Result<Dataset, DataError>,
    &'static str,
);

/// The first of `paper` (in order of preference) whose file is present, or the substitute.
fn pick_reference(
    dir: &Path,
    which: Reference,
    paper: &[PaperReference],
) -> Result<(Dataset, &'static str), DataError> {
    const SUBSTITUTE: &str =
        "10x mouse motor cortex (substitute reference, 11,444 cells × 500 genes)";
    let present = paper
        .iter()
        .find(|(file, _, _)| dir.join(file.relative_path).is_file());
    match (which, present) {
        (Reference::Substitute, _) => Ok((mop_reference(dir)?, SUBSTITUTE)),
        (_, Some((_, load, label))) => Ok((load(dir)?, label)),
        // Absent: the error names the preferred file and its source.
        (Reference::Paper, None) => Ok((paper[0].1(dir)?, paper[0].2)),
        (Reference::PaperOrSubstitute, None) => Ok((mop_reference(dir)?, SUBSTITUTE)),
    }
}

/// mSMS: osmFISH with its scRNA-seq reference.
pub fn msms(dir: &Path, reference: Reference) -> Result<DatasetPair, DataError> {
    let (sc, sc_label) = pick_reference(
        dir,
        reference,
        &[
            (
                ZEISEL_CORTEX,
                zeisel_cortex,
                "Zeisel 2015 cortex (paper reference)",
            ),
            (
                ZEISEL550,
                zeisel550,
                "Zeisel 2015 cortex, 550 cells × 19,972 genes (paper reference, subsampled)",
            ),
        ],
    )?;
    Ok(DatasetPair {
        name: "mSMS",
        sc,
        sc_label,
        spatial: osmfish(dir)?,
        spatial_label: "osmFISH (Codeluppi 2018)",
    })
}

/// mPFC: starMAP with its scRNA-seq reference.
pub fn mpfc(dir: &Path, reference: Reference) -> Result<DatasetPair, DataError> {
    let (sc, sc_label) = pick_reference(
        dir,
        reference,
        &[(
            SAUNDERS_FC,
            saunders_frontal_cortex,
            "Saunders 2018 frontal cortex Drop-seq (paper reference)",
        )],
    )?;
    Ok(DatasetPair {
        name: "mPFC",
        sc,
        sc_label,
        spatial: starmap(dir)?,
        spatial_label: "starMAP (Wang 2018)",
    })
}

impl DatasetPair {
    /// The data folder ([`data_dir`]): `explicit`, else `GIMVI_DATA_DIR`, else `../shared/data`.
    pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
        data_dir(explicit)
    }

    /// The paper's mSMS pair ([`msms`]).
    pub fn msms(dir: &Path, reference: Reference) -> Result<DatasetPair, DataError> {
        msms(dir, reference)
    }

    /// The paper's mPFC pair ([`mpfc`]).
    pub fn mpfc(dir: &Path, reference: Reference) -> Result<DatasetPair, DataError> {
        mpfc(dir, reference)
    }
}
