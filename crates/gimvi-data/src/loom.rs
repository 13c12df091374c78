//! loom files (Linnarsson lab, velocyto): `/matrix` is genes × cells; gene names are a row
//! attribute, cell annotations column attributes.

use std::path::Path;

use crate::hdf;
use crate::{in_file, Column, CsrMatrix, DataError, Dataset};

/// Options for [`read_loom`].
#[derive(Debug, Clone, Default)]
pub struct LoomOptions {
    /// Row attribute with the gene names; default: the first of `Gene`, `gene_names`,
    /// `var_names`, `Accession` that exists.
    pub gene_attr: Option<String>,
    /// Read counts from `/layers/<name>` instead of `/matrix`.
    pub layer: Option<String>,
}

/// Reads a loom file into a [`Dataset`] (cells × genes). One-dimensional column attributes
/// become cell columns (numbers or text); a two-column attribute whose name mentions
/// "spatial" or "coord", or else the pair `X`/`Y`, becomes the spatial coordinates; cell names
/// come from `CellID`, `obs_names` or `cell_names` (else `cell_<i>`).
pub fn read_loom(path: impl AsRef<Path>, options: &LoomOptions) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let h5 = hdf::open(path)?;
    let matrix_loc = match &options.layer {
        Some(l) => format!("layers/{l}"),
        None => "matrix".to_string(),
    };
    let (parent, name) = match matrix_loc.rsplit_once('/') {
        Some((p, n)) => (h5.group_at(p)?, n.to_string()),
        None => (Some(h5.root()?), matrix_loc.clone()),
    };
    let parent = match parent {
        Some(p) if h5.has_dataset(&p, &name)? => p,
        _ => {
            return Err(DataError::Missing {
                path: path.to_path_buf(),
                what: format!("loom matrix '/{matrix_loc}'"),
            })
        }
    };
    let ds = h5.dataset(&parent, &name, &matrix_loc)?;
    let shape = h5.checked_shape(&ds, &matrix_loc)?;
    if shape.len() != 2 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("'/{matrix_loc}' has {} dimensions, expected 2", shape.len()),
        });
    }
    let (n_genes, n_cells) = (shape[0], shape[1]);
    if u32::try_from(n_genes).is_err() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("'/{matrix_loc}' has {n_genes} genes, more than this reader supports"),
        });
    }

    let rows = h5
        .group_at("row_attrs")?
        .ok_or_else(|| DataError::Missing {
            path: path.to_path_buf(),
            what: "group '/row_attrs' (gene names)".into(),
        })?;
    let row_names = h5.dataset_names(&rows);
    let gene_attr = match &options.gene_attr {
        Some(a) => a.clone(),
        None => ["Gene", "gene_names", "var_names", "Accession"]
            .into_iter()
            .find(|a| row_names.iter().any(|n| n == a))
            .map(str::to_string)
            .ok_or_else(|| DataError::Missing {
                path: path.to_path_buf(),
                what: "gene names (row attribute Gene, gene_names, var_names or Accession)".into(),
            })?,
    };
    if !row_names.contains(&gene_attr) {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            what: format!("row attribute '{gene_attr}'"),
        });
    }
    let what = format!("row_attrs/{gene_attr}");
    let gds = h5.dataset(&rows, &gene_attr, &what)?;
    if !h5.is_string_dataset(&gds) {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("'{what}' (the gene names) does not hold strings"),
        });
    }
    let gene_shape = h5.checked_shape(&gds, &what)?;
    if gene_shape.len() != 1 || gene_shape[0] != n_genes {
        return Err(DataError::Shape {
            what: format!(
                "{}: gene names '{what}' vs rows of '/{matrix_loc}'",
                path.display()
            ),
            expected: n_genes.to_string(),
            found: dims(&gene_shape),
        });
    }
    let genes = h5.read_strings(&gds, &what)?;

    let values = hdf::to_f32(path, &matrix_loc, h5.read_f64(&ds, &matrix_loc)?)?;
    let counts = CsrMatrix::from_dense(n_genes, n_cells, &values)
        .map_err(in_file(path))?
        .transpose();

    let mut obs = Vec::new();
    let mut spatial: Option<Vec<Vec<f64>>> = None;
    let mut cells: Option<Vec<String>> = None;
    if let Some(cols) = h5.group_at("col_attrs")? {
        let mut names = h5.dataset_names(&cols);
        names.sort();
        for name in names {
            let what = format!("col_attrs/{name}");
            let ds = h5.dataset(&cols, &name, &what)?;
            let shape = h5.checked_shape(&ds, &what)?;
            // The loom format requires every column attribute to have one entry per cell; a
            // different length means the matrix or the attribute is corrupt.
            if shape.first() != Some(&n_cells) {
                return Err(DataError::Shape {
                    what: format!(
                        "{}: column attribute '{what}' vs columns (cells) of '/{matrix_loc}'",
                        path.display()
                    ),
                    expected: n_cells.to_string(),
                    found: dims(&shape),
                });
            }
            if shape.len() > 2 {
                continue;
            }
            if h5.is_string_dataset(&ds) {
                if shape.len() != 1 {
                    continue;
                }
                let v = h5.read_strings(&ds, &what)?;
                if cells.is_none() && ["CellID", "obs_names", "cell_names"].contains(&name.as_str())
                {
                    cells = Some(v.clone());
                }
                obs.push((name, Column::Text(v)));
                continue;
            }
            let v = h5.read_f64(&ds, &what)?;
            let width = shape.get(1).copied().unwrap_or(1);
            if width == 0 || v.len() != n_cells * width {
                continue;
            }
            let lname = name.to_lowercase();
            if width == 1 {
                obs.push((name, Column::Numeric(v)));
            } else if (2..=3).contains(&width)
                && (lname.contains("spatial") || lname.contains("coord"))
                && spatial.is_none()
            {
                spatial = Some(v.chunks(width).map(<[f64]>::to_vec).collect());
            }
        }
    }
    if spatial.is_none() {
        let num = |n: &str| {
            obs.iter().find_map(|(k, c)| match c {
                Column::Numeric(v) if k == n => Some(v.clone()),
                _ => None,
            })
        };
        if let (Some(x), Some(y)) = (num("X"), num("Y")) {
            spatial = Some(x.into_iter().zip(y).map(|(a, b)| vec![a, b]).collect());
        }
    }
    let cells = cells.unwrap_or_else(|| (0..n_cells).map(|i| format!("cell_{i}")).collect());
    Dataset::new(
        path.display().to_string(),
        counts,
        genes,
        cells,
        obs,
        spatial,
    )
}

/// A shape for messages: `158` or `158 × 2`.
fn dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" × ")
}
