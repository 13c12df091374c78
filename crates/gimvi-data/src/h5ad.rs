//! AnnData `.h5ad`: reading counts and annotations, writing results scanpy opens.
//!
//! Layout handled (AnnData on-disk format, anndata ≥ 0.7, and the older one):
//! * `X` (or `layers/<name>`, or `raw/X`): a dense dataset, or a sparse group with
//!   `encoding-type` = `csr_matrix` / `csc_matrix` and a `shape` attribute (anndata ≥ 0.7), or
//!   with `h5sparse_format` = `csr` / `csc` and `h5sparse_shape` (anndata < 0.7); any integer
//!   or float element type;
//! * `var` / `obs`: dataframe groups whose index dataset is named by the `_index` attribute
//!   (default `_index`, older files `index`); `obs` columns numeric, string, or categorical
//!   (a group with `codes` and `categories`, or — older files — integer codes with the labels
//!   in `uns/<column>_categories`);
//! * `obsm/spatial` or `obsm/X_spatial` (cells × 2 or 3) for spatial coordinates, else the
//!   `obs` columns `x_coord`/`y_coord`, `x`/`y` or `X`/`Y`.

use std::path::Path;

use hdf5_pure::{AttrValue, File, FileBuilder, Group};

use crate::csr::DenseRowsToCsr;
use crate::hdf::{self, h5_err};
use crate::{Column, CsrMatrix, DataError, Dataset};

/// Which matrix of the file holds the raw counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CountSource {
    /// `X` (the default).
    #[default]
    X,
    /// `layers/<name>`, e.g. `layers/counts` when `X` holds normalised values.
    Layer(String),
    /// `raw/X`, with the genes of `raw/var`.
    Raw,
}

/// Options for [`read_h5ad`].
#[derive(Debug, Clone, Default)]
pub struct H5adOptions {
    /// Where the counts are.
    pub counts: CountSource,
}

/// Reads an `.h5ad` file into a [`Dataset`].
pub fn read_h5ad(path: impl AsRef<Path>, options: &H5adOptions) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let file = hdf::open(path)?;
    let (matrix_loc, var_loc) = match &options.counts {
        CountSource::X => ("X".to_string(), "var"),
        CountSource::Layer(name) => (format!("layers/{name}"), "var"),
        CountSource::Raw => ("raw/X".to_string(), "raw/var"),
    };
    let counts = read_matrix(path, &file, &matrix_loc)?;
    let genes = read_index(path, &file, var_loc)?;
    let cells = read_index(path, &file, "obs")?;
    let obs = read_obs_columns(path, &file)?;
    let spatial = read_spatial(path, &file, &obs, counts.n_rows())?;
    Dataset::new(
        path.display().to_string(),
        counts,
        genes,
        cells,
        obs,
        spatial,
    )
}

fn read_matrix(path: &Path, file: &File, loc: &str) -> Result<CsrMatrix, DataError> {
    let (parent_path, name) = match loc.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", loc),
    };
    let parent = hdf::group_at(file, parent_path).ok_or_else(|| DataError::Missing {
        path: path.to_path_buf(),
        what: format!("group '{parent_path}' (needed for the count matrix '{loc}')"),
    })?;
    if hdf::has_dataset(&parent, name) {
        let ds = parent.dataset(name).map_err(h5_err(path, loc))?;
        let shape = hdf::shape(path, &ds, loc)?;
        if shape.len() != 2 {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!("'{loc}' has {} dimensions, expected 2", shape.len()),
            });
        }
        return read_dense_as_csr(path, &ds, loc, shape[0], shape[1], DENSE_WINDOW_VALUES);
    }
    if !hdf::has_group(&parent, name) {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            what: format!("count matrix '{loc}'"),
        });
    }
    let g = parent.group(name).map_err(h5_err(path, loc))?;
    let attrs = hdf::attrs_of_group(&g);
    let format = hdf::attr_string(&attrs, "encoding-type")
        .or_else(|| hdf::attr_string(&attrs, "h5sparse_format"))
        .ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "'{loc}' is a group without an 'encoding-type' or 'h5sparse_format' attribute"
            ),
        })?;
    let csr = match format.as_str() {
        "csr_matrix" | "csr" => true,
        "csc_matrix" | "csc" => false,
        other => {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!("'{loc}' has unsupported sparse encoding '{other}'"),
            })
        }
    };
    let shape = hdf::attr_ints(&attrs, "shape")
        .or_else(|| hdf::attr_ints(&attrs, "h5sparse_shape"))
        .filter(|s| s.len() == 2 && s.iter().all(|&x| x >= 0))
        .ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            message: format!("sparse matrix '{loc}' has no valid 2-D 'shape' attribute"),
        })?;
    let (n_rows, n_cols) = (shape[0] as usize, shape[1] as usize);
    let part = |n: &str| -> Result<hdf5_pure::Dataset, DataError> {
        if !hdf::has_dataset(&g, n) {
            return Err(DataError::Missing {
                path: path.to_path_buf(),
                what: format!("'{loc}/{n}'"),
            });
        }
        g.dataset(n).map_err(h5_err(path, &format!("{loc}/{n}")))
    };
    let data = hdf::to_f32(path, loc, hdf::read_f64(path, &part("data")?, "data")?)?;
    let indices = hdf::read_i64(path, &part("indices")?, "indices")?;
    let indptr = hdf::read_i64(path, &part("indptr")?, "indptr")?;
    let bad_index = |what: &str| DataError::Format {
        path: path.to_path_buf(),
        message: format!("sparse matrix '{loc}' has a negative or oversized {what}"),
    };
    let indices: Vec<u32> = indices
        .into_iter()
        .map(|i| u32::try_from(i).map_err(|_| bad_index("index")))
        .collect::<Result<_, _>>()?;
    let indptr: Vec<usize> = indptr
        .into_iter()
        .map(|i| usize::try_from(i).map_err(|_| bad_index("pointer")))
        .collect::<Result<_, _>>()?;
    if csr {
        CsrMatrix::from_parts(n_rows, n_cols, indptr, indices, data)
    } else {
        // CSC of (rows × cols) is CSR of its transpose.
        Ok(CsrMatrix::from_parts(n_cols, n_rows, indptr, indices, data)?.transpose())
    }
}

/// The index (row names) of a dataframe group (`obs`, `var`, `raw/var`).
fn read_index(path: &Path, file: &File, loc: &str) -> Result<Vec<String>, DataError> {
    let g = hdf::group_at(file, loc).ok_or_else(|| {
        let old_layout = !loc.contains('/') && hdf::has_dataset(&file.root(), loc);
        DataError::Missing {
            path: path.to_path_buf(),
            what: if old_layout {
                format!(
                    "dataframe group '{loc}' ('{loc}' is a compound dataset: the pre-0.7 \
                     anndata layout; re-save the file with anndata ≥ 0.7)"
                )
            } else {
                format!("dataframe group '{loc}'")
            },
        }
    })?;
    let attrs = hdf::attrs_of_group(&g);
    let mut candidates: Vec<String> = Vec::new();
    if let Some(name) = hdf::attr_string(&attrs, "_index") {
        candidates.push(name);
    }
    candidates.extend(["_index".to_string(), "index".to_string()]);
    for c in candidates {
        if hdf::has_dataset(&g, &c) {
            let ds = g.dataset(&c).map_err(h5_err(path, &format!("{loc}/{c}")))?;
            return hdf::read_strings(path, &ds, &format!("{loc}/{c}"));
        }
    }
    Err(DataError::Missing {
        path: path.to_path_buf(),
        what: format!("index of '{loc}' (no '_index' dataset)"),
    })
}

fn read_obs_columns(path: &Path, file: &File) -> Result<Vec<(String, Column)>, DataError> {
    let Some(obs) = hdf::group_at(file, "obs") else {
        return Ok(Vec::new());
    };
    let attrs = hdf::attrs_of_group(&obs);
    let index_name = hdf::attr_string(&attrs, "_index").unwrap_or_else(|| "_index".into());
    let mut names = hdf::attr_strings(&attrs, "column-order").unwrap_or_default();
    if names.is_empty() {
        names = obs.datasets().unwrap_or_default();
        names.extend(obs.groups().unwrap_or_default());
        names.retain(|n| n != &index_name && n != "index" && n != "__categories");
        names.sort();
    }
    let old_categories = hdf::group_at(file, "uns");
    let mut out = Vec::new();
    for name in names {
        let what = format!("obs/{name}");
        if hdf::has_group(&obs, &name) {
            let g = obs.group(&name).map_err(h5_err(path, &what))?;
            let ga = hdf::attrs_of_group(&g);
            if hdf::attr_string(&ga, "encoding-type").as_deref() == Some("categorical") {
                out.push((name.clone(), read_categorical(path, &g, &what)?));
            }
            // Other encodings (nullable integers/booleans, …) are skipped: not needed here.
            continue;
        }
        if !hdf::has_dataset(&obs, &name) {
            continue;
        }
        let ds = obs.dataset(&name).map_err(h5_err(path, &what))?;
        if hdf::is_string_dataset(&ds) {
            out.push((name, Column::Text(hdf::read_strings(path, &ds, &what)?)));
            continue;
        }
        let values = hdf::read_f64(path, &ds, &what)?;
        // Pre-0.7 categoricals: integer codes here, labels in uns/<name>_categories.
        let cat_name = format!("{name}_categories");
        if let Some(uns) = old_categories
            .as_ref()
            .filter(|u| hdf::has_dataset(u, &cat_name))
        {
            let cds = uns.dataset(&cat_name).map_err(h5_err(path, &cat_name))?;
            let categories = hdf::read_strings(path, &cds, &format!("uns/{cat_name}"))?;
            let codes = values.iter().map(|&v| v as i32).collect();
            out.push((name, Column::Categorical { codes, categories }));
        } else {
            out.push((name, Column::Numeric(values)));
        }
    }
    Ok(out)
}

fn read_categorical(path: &Path, g: &Group, what: &str) -> Result<Column, DataError> {
    for part in ["codes", "categories"] {
        if !hdf::has_dataset(g, part) {
            return Err(DataError::Missing {
                path: path.to_path_buf(),
                what: format!("'{what}/{part}' of a categorical column"),
            });
        }
    }
    let codes_ds = g.dataset("codes").map_err(h5_err(path, what))?;
    let cats_ds = g.dataset("categories").map_err(h5_err(path, what))?;
    let codes = hdf::read_i64(path, &codes_ds, what)?
        .into_iter()
        .map(|c| c as i32)
        .collect();
    let categories = if hdf::is_string_dataset(&cats_ds) {
        hdf::read_strings(path, &cats_ds, what)?
    } else {
        hdf::read_f64(path, &cats_ds, what)?
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    };
    Ok(Column::Categorical { codes, categories })
}

fn read_spatial(
    path: &Path,
    file: &File,
    obs: &[(String, Column)],
    n_cells: usize,
) -> Result<Option<Vec<Vec<f64>>>, DataError> {
    if let Some(obsm) = hdf::group_at(file, "obsm") {
        for key in ["spatial", "X_spatial"] {
            if !hdf::has_dataset(&obsm, key) {
                continue;
            }
            let what = format!("obsm/{key}");
            let ds = obsm.dataset(key).map_err(h5_err(path, &what))?;
            let shape = hdf::shape(path, &ds, &what)?;
            if shape.len() != 2 || shape[0] != n_cells || shape[1] == 0 {
                return Err(DataError::Shape {
                    what: format!("{}: {what}", path.display()),
                    expected: format!("{n_cells} × 2"),
                    found: format!("{shape:?}"),
                });
            }
            let v = hdf::read_f64(path, &ds, &what)?;
            return Ok(Some(v.chunks(shape[1]).map(<[f64]>::to_vec).collect()));
        }
    }
    let numeric = |name: &str| {
        obs.iter().find_map(|(n, c)| match c {
            Column::Numeric(v) if n == name => Some(v.clone()),
            _ => None,
        })
    };
    for (xn, yn) in [("x_coord", "y_coord"), ("x", "y"), ("X", "Y")] {
        if let (Some(x), Some(y)) = (numeric(xn), numeric(yn)) {
            return Ok(Some(
                x.into_iter().zip(y).map(|(a, b)| vec![a, b]).collect(),
            ));
        }
    }
    Ok(None)
}

/// What to write to an `.h5ad` result file. All matrices are dense, row-major, cells × columns.
#[derive(Debug, Clone, Default)]
pub struct H5adOutput {
    /// Cell names (obs index).
    pub obs_names: Vec<String>,
    /// Column names of `x` (var index), e.g. imputed genes.
    pub var_names: Vec<String>,
    /// Main matrix, `obs_names.len()` × `var_names.len()` (e.g. imputed expression).
    pub x: Vec<f32>,
    /// Extra matrices of the same shape as `x`, written under `layers/` (e.g. `variance`).
    pub layers: Vec<(String, Vec<f32>)>,
    /// Per-cell embeddings written under `obsm/` as (name, values, dimension), e.g.
    /// (`X_gimvi`, latent, 10) or (`spatial`, coordinates, 2).
    pub obsm: Vec<(String, Vec<f32>, usize)>,
    /// Cell metadata columns written to `obs`.
    pub obs: Vec<(String, Column)>,
    /// Free-text notes written as string attributes of `uns` (e.g. method, version).
    pub uns: Vec<(String, String)>,
}

fn enc(kind: &str, version: &str) -> [(&'static str, AttrValue); 2] {
    [
        ("encoding-type", AttrValue::VarLenString(kind.to_string())),
        (
            "encoding-version",
            AttrValue::VarLenString(version.to_string()),
        ),
    ]
}

/// Writes `out` as an AnnData file (on-disk format 0.1.0 / elements 0.2.0, as anndata 0.8+
/// writes), readable by `anndata.read_h5ad` and scanpy.
pub fn write_h5ad(path: impl AsRef<Path>, out: &H5adOutput) -> Result<(), DataError> {
    let path = path.as_ref();
    let (n, g) = (out.obs_names.len(), out.var_names.len());
    let shape_err = |what: String, expected: usize, found: usize| DataError::Shape {
        what,
        expected: expected.to_string(),
        found: found.to_string(),
    };
    if out.x.len() != n * g {
        return Err(shape_err(
            "h5ad X (cells × genes)".into(),
            n * g,
            out.x.len(),
        ));
    }
    for (name, v) in &out.layers {
        if v.len() != n * g {
            return Err(shape_err(format!("h5ad layer '{name}'"), n * g, v.len()));
        }
    }
    for (name, v, d) in &out.obsm {
        if *d == 0 || v.len() != n * d {
            return Err(shape_err(format!("h5ad obsm '{name}'"), n * d, v.len()));
        }
    }
    for (name, c) in &out.obs {
        if c.len() != n {
            return Err(shape_err(format!("h5ad obs column '{name}'"), n, c.len()));
        }
    }

    let mut b = FileBuilder::new();
    for (k, v) in enc("anndata", "0.1.0") {
        b.set_attr(k, v);
    }
    {
        let ds = b.create_dataset("X");
        ds.with_f32_data(&out.x).with_shape(&[n as u64, g as u64]);
        for (k, v) in enc("array", "0.2.0") {
            ds.set_attr(k, v);
        }
    }

    // obs and var dataframes.
    for (group, names, columns) in [
        ("obs", &out.obs_names, out.obs.as_slice()),
        ("var", &out.var_names, &[][..]),
    ] {
        let mut gb = b.create_group(group);
        for (k, v) in enc("dataframe", "0.2.0") {
            gb.set_attr(k, v);
        }
        gb.set_attr("_index", AttrValue::VarLenString("_index".into()));
        let order: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
        gb.set_attr(
            "column-order",
            if order.is_empty() {
                AttrValue::F64Array(Vec::new())
            } else {
                AttrValue::VarLenStringArray(order)
            },
        );
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let ds = gb.create_dataset("_index");
        ds.with_vlen_strings(&refs);
        for (k, v) in enc("string-array", "0.2.0") {
            ds.set_attr(k, v);
        }
        for (name, col) in columns {
            match col {
                Column::Numeric(v) => {
                    let ds = gb.create_dataset(name);
                    ds.with_f64_data(v);
                    for (k, v) in enc("array", "0.2.0") {
                        ds.set_attr(k, v);
                    }
                }
                Column::Text(v) => {
                    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
                    let ds = gb.create_dataset(name);
                    ds.with_vlen_strings(&refs);
                    for (k, v) in enc("string-array", "0.2.0") {
                        ds.set_attr(k, v);
                    }
                }
                Column::Categorical { codes, categories } => {
                    let mut cg = gb.create_group(name);
                    for (k, v) in enc("categorical", "0.2.0") {
                        cg.set_attr(k, v);
                    }
                    cg.set_attr("ordered", AttrValue::I8(0));
                    let ds = cg.create_dataset("codes");
                    ds.with_i32_data(codes);
                    for (k, v) in enc("array", "0.2.0") {
                        ds.set_attr(k, v);
                    }
                    let refs: Vec<&str> = categories.iter().map(String::as_str).collect();
                    let ds = cg.create_dataset("categories");
                    ds.with_vlen_strings(&refs);
                    for (k, v) in enc("string-array", "0.2.0") {
                        ds.set_attr(k, v);
                    }
                    gb.add_group(cg.finish());
                }
            }
        }
        b.add_group(gb.finish());
    }

    // layers, obsm and the empty mappings anndata expects.
    let mut layers = b.create_group("layers");
    for (k, v) in enc("dict", "0.1.0") {
        layers.set_attr(k, v);
    }
    for (name, v) in &out.layers {
        let ds = layers.create_dataset(name);
        ds.with_f32_data(v).with_shape(&[n as u64, g as u64]);
        for (k, v) in enc("array", "0.2.0") {
            ds.set_attr(k, v);
        }
    }
    b.add_group(layers.finish());
    let mut obsm = b.create_group("obsm");
    for (k, v) in enc("dict", "0.1.0") {
        obsm.set_attr(k, v);
    }
    for (name, v, d) in &out.obsm {
        let ds = obsm.create_dataset(name);
        ds.with_f32_data(v).with_shape(&[n as u64, *d as u64]);
        for (k, v) in enc("array", "0.2.0") {
            ds.set_attr(k, v);
        }
    }
    b.add_group(obsm.finish());
    for name in ["obsp", "varm", "varp", "uns"] {
        let mut gb = b.create_group(name);
        for (k, v) in enc("dict", "0.1.0") {
            gb.set_attr(k, v);
        }
        if name == "uns" {
            for (key, text) in &out.uns {
                let ds = gb.create_dataset(key);
                ds.with_vlen_strings(&[text.as_str()]);
                for (k, v) in enc("string-array", "0.2.0") {
                    ds.set_attr(k, v);
                }
            }
        }
        b.add_group(gb.finish());
    }
    b.write(path).map_err(|e| DataError::Hdf5 {
        path: path.to_path_buf(),
        what: "the output file".into(),
        message: e.to_string(),
    })
}

/// Values read at a time from a dense count matrix (4 Mi values, 32 MiB as f64).
const DENSE_WINDOW_VALUES: usize = 1 << 22;

/// Reads a dense 2-D count matrix window by window (whole rows, about `window_values` values at
/// a time) straight into CSR, so that a large dense `X` (e.g. 3,005 × 20,000) never exists in
/// memory as a whole f64 or f32 buffer: peak memory is the sparse result plus one window.
fn read_dense_as_csr(
    path: &Path,
    ds: &hdf5_pure::Dataset,
    loc: &str,
    n_rows: usize,
    n_cols: usize,
    window_values: usize,
) -> Result<CsrMatrix, DataError> {
    let rows_per_window = (window_values / n_cols.max(1)).max(1);
    let mut csr = DenseRowsToCsr::new(n_rows, n_cols);
    let mut start = 0;
    while start < n_rows {
        let count = rows_per_window.min(n_rows - start);
        let values = ds
            .read_f64_rows(start as u64, count as u64)
            .map_err(h5_err(path, loc))?;
        if values.len() != count * n_cols {
            return Err(DataError::Shape {
                what: format!("rows {start}..{} of '{loc}'", start + count),
                expected: format!("{count} × {n_cols} = {}", count * n_cols),
                found: values.len().to_string(),
            });
        }
        csr.push_rows(&hdf::to_f32(path, loc, values)?, count);
        start += count;
    }
    Ok(csr.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windowed dense reader gives the same matrix whatever the window, including windows
    /// smaller than a row and windows that do not divide the row count.
    #[test]
    fn dense_x_read_in_windows_matches_whole_read() {
        let (n, g) = (7usize, 5usize);
        let x: Vec<f32> = (0..n * g)
            .map(|i| if i % 3 == 0 { 0.0 } else { (i % 11) as f32 })
            .collect();
        let out = H5adOutput {
            obs_names: (0..n).map(|i| format!("c{i}")).collect(),
            var_names: (0..g).map(|j| format!("g{j}")).collect(),
            x: x.clone(),
            layers: Vec::new(),
            obsm: Vec::new(),
            obs: Vec::new(),
            uns: Vec::new(),
        };
        let dir = std::env::temp_dir().join(format!("gimvi-dense-window-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dense.h5ad");
        write_h5ad(&path, &out).unwrap();
        let file = hdf::open(&path).unwrap();
        let ds = file.dataset("X").unwrap();
        let whole = CsrMatrix::from_dense(n, g, &x).unwrap();
        for window in [1, 4, 5, 11, 35, 1000] {
            let m = read_dense_as_csr(&path, &ds, "X", n, g, window).unwrap();
            assert_eq!(m, whole, "window of {window} values");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
