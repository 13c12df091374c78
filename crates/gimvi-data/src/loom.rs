//! loom files (Linnarsson lab, velocyto): `/matrix` is genes × cells; gene names are a row
//! attribute, cell annotations column attributes.

use std::path::Path;

use crate::hdf::{self, h5_err};
use crate::{Column, CsrMatrix, DataError, Dataset};

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
    let file = hdf::open(path)?;
    let root = file.root();
    let matrix_loc = match &options.layer {
        Some(l) => format!("layers/{l}"),
        None => "matrix".to_string(),
    };
    let (parent, name) = match matrix_loc.rsplit_once('/') {
        Some((p, n)) => (hdf::group_at(&file, p), n.to_string()),
        None => (Some(root.clone()), matrix_loc.clone()),
    };
    let parent = parent
        .filter(|p| hdf::has_dataset(p, &name))
        .ok_or_else(|| DataError::Missing {
            path: path.to_path_buf(),
            what: format!("loom matrix '/{matrix_loc}'"),
        })?;
    let ds = parent.dataset(&name).map_err(h5_err(path, &matrix_loc))?;
    let shape = hdf::shape(path, &ds, &matrix_loc)?;
    if shape.len() != 2 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("'/{matrix_loc}' has {} dimensions, expected 2", shape.len()),
        });
    }
    let (n_genes, n_cells) = (shape[0], shape[1]);
    let values = hdf::to_f32(path, &matrix_loc, hdf::read_f64(path, &ds, &matrix_loc)?)?;
    let counts = CsrMatrix::from_dense(n_genes, n_cells, &values)?.transpose();

    let rows = hdf::group_at(&file, "row_attrs").ok_or_else(|| DataError::Missing {
        path: path.to_path_buf(),
        what: "group '/row_attrs' (gene names)".into(),
    })?;
    let gene_attr = match &options.gene_attr {
        Some(a) => a.clone(),
        None => ["Gene", "gene_names", "var_names", "Accession"]
            .into_iter()
            .find(|a| hdf::has_dataset(&rows, a))
            .map(str::to_string)
            .ok_or_else(|| DataError::Missing {
                path: path.to_path_buf(),
                what: "gene names (row attribute Gene, gene_names, var_names or Accession)".into(),
            })?,
    };
    if !hdf::has_dataset(&rows, &gene_attr) {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            what: format!("row attribute '{gene_attr}'"),
        });
    }
    let what = format!("row_attrs/{gene_attr}");
    let gds = rows.dataset(&gene_attr).map_err(h5_err(path, &what))?;
    let genes = hdf::read_strings(path, &gds, &what)?;

    let mut obs = Vec::new();
    let mut spatial: Option<Vec<Vec<f64>>> = None;
    let mut cells: Option<Vec<String>> = None;
    if let Some(cols) = hdf::group_at(&file, "col_attrs") {
        let mut names = cols.datasets().unwrap_or_default();
        names.sort();
        for name in names {
            let what = format!("col_attrs/{name}");
            let ds = cols.dataset(&name).map_err(h5_err(path, &what))?;
            let shape = hdf::shape(path, &ds, &what)?;
            if shape.first() != Some(&n_cells) {
                continue;
            }
            if hdf::is_string_dataset(&ds) {
                let v = hdf::read_strings(path, &ds, &what)?;
                if cells.is_none() && ["CellID", "obs_names", "cell_names"].contains(&name.as_str())
                {
                    cells = Some(v.clone());
                }
                obs.push((name, Column::Text(v)));
                continue;
            }
            let v = hdf::read_f64(path, &ds, &what)?;
            let width = shape.get(1).copied().unwrap_or(1);
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
