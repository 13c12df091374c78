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

use hdf5_pure::{AttrValue, FileBuilder, Group};

use crate::csr::DenseRowsToCsr;
use crate::hdf::{self, H5};
use crate::{in_file, Column, CsrMatrix, DataError, Dataset};

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
///
/// Before the count matrix is read, its declared shape is checked against the lengths of the
/// `obs` and `var` indices and against what the file can hold, so that a corrupt size field
/// gives an error instead of a huge allocation.
pub fn read_h5ad(path: impl AsRef<Path>, options: &H5adOptions) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let h5 = hdf::open(path)?;
    let (matrix_loc, var_loc) = match &options.counts {
        CountSource::X => ("X".to_string(), "var"),
        CountSource::Layer(name) => (format!("layers/{name}"), "var"),
        CountSource::Raw => ("raw/X".to_string(), "raw/var"),
    };
    let matrix = locate_matrix(&h5, &matrix_loc)?;
    let genes = read_index(&h5, var_loc)?;
    let cells = read_index(&h5, "obs")?;
    let (n_rows, n_cols) = matrix.shape();
    for (names, n, which, dim) in [
        (&cells, n_rows, "obs", "rows"),
        (&genes, n_cols, var_loc, "columns"),
    ] {
        if names.len() as u64 != n {
            return Err(DataError::Shape {
                what: format!(
                    "{}: names in the '{which}' index vs {dim} of '{matrix_loc}'",
                    path.display()
                ),
                expected: n.to_string(),
                found: names.len().to_string(),
            });
        }
    }
    let counts = read_matrix(&h5, &matrix_loc, matrix)?;
    let obs = read_obs_columns(&h5)?;
    let spatial = read_spatial(&h5, &obs, counts.n_rows())?;
    Dataset::new(
        path.display().to_string(),
        counts,
        genes,
        cells,
        obs,
        spatial,
    )
}

/// A count matrix found in the file, with its declared shape, not yet read.
enum Matrix {
    /// A dense 2-D dataset (shape checked against the file's size).
    Dense {
        ds: hdf5_pure::Dataset,
        n_rows: usize,
        n_cols: usize,
    },
    /// A sparse group: CSR (`csr = true`) or CSC, of the declared shape.
    Sparse {
        g: Group,
        csr: bool,
        n_rows: u64,
        n_cols: u64,
    },
}

impl Matrix {
    fn shape(&self) -> (u64, u64) {
        match self {
            Matrix::Dense { n_rows, n_cols, .. } => (*n_rows as u64, *n_cols as u64),
            Matrix::Sparse { n_rows, n_cols, .. } => (*n_rows, *n_cols),
        }
    }
}

fn locate_matrix(h5: &H5, loc: &str) -> Result<Matrix, DataError> {
    let path = h5.path.as_path();
    let (parent_path, name) = match loc.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", loc),
    };
    let parent = h5
        .group_at(parent_path)?
        .ok_or_else(|| DataError::Missing {
            path: path.to_path_buf(),
            what: format!("group '{parent_path}' (needed for the count matrix '{loc}')"),
        })?;
    if h5.has_dataset(&parent, name)? {
        let ds = h5.dataset(&parent, name, loc)?;
        let shape = h5.checked_shape(&ds, loc)?;
        if shape.len() != 2 {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!("'{loc}' has {} dimensions, expected 2", shape.len()),
            });
        }
        return Ok(Matrix::Dense {
            ds,
            n_rows: shape[0],
            n_cols: shape[1],
        });
    }
    if !h5.has_group(&parent, name)? {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            what: format!("count matrix '{loc}'"),
        });
    }
    let g = h5.group(&parent, name, loc)?;
    let attrs = h5.attrs_of_group(&g);
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
    let shape = hdf::attr_sizes(&attrs, "shape")
        .or_else(|| hdf::attr_sizes(&attrs, "h5sparse_shape"))
        .filter(|s| s.len() == 2)
        .ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "sparse matrix '{loc}' has no valid 'shape' attribute (two non-negative integers)"
            ),
        })?;
    Ok(Matrix::Sparse {
        g,
        csr,
        n_rows: shape[0],
        n_cols: shape[1],
    })
}

fn read_matrix(h5: &H5, loc: &str, matrix: Matrix) -> Result<CsrMatrix, DataError> {
    let path = h5.path.as_path();
    let (g, csr, n_rows, n_cols) = match matrix {
        Matrix::Dense { ds, n_rows, n_cols } => {
            return read_dense_as_csr(h5, &ds, loc, n_rows, n_cols, DENSE_WINDOW_VALUES);
        }
        // The shape equals the index lengths (checked by the caller), so it fits in usize.
        Matrix::Sparse {
            g,
            csr,
            n_rows,
            n_cols,
        } => (g, csr, n_rows as usize, n_cols as usize),
    };
    let fmt = |message: String| DataError::Format {
        path: path.to_path_buf(),
        message: format!("sparse matrix '{loc}': {message}"),
    };
    let (major, minor) = if csr {
        (n_rows, n_cols)
    } else {
        (n_cols, n_rows)
    };
    if u32::try_from(minor).is_err() {
        return Err(fmt(format!(
            "{minor} {} is more than this reader supports (2^32 − 1)",
            if csr { "columns" } else { "rows" }
        )));
    }
    let part = |n: &str| -> Result<(hdf5_pure::Dataset, usize), DataError> {
        let what = format!("{loc}/{n}");
        if !h5.has_dataset(&g, n)? {
            return Err(DataError::Missing {
                path: path.to_path_buf(),
                what: format!("'{what}'"),
            });
        }
        let ds = h5.dataset(&g, n, &what)?;
        let shape = h5.checked_shape(&ds, &what)?;
        if shape.len() != 1 {
            return Err(fmt(format!(
                "'{n}' has {} dimensions, expected 1",
                shape.len()
            )));
        }
        Ok((ds, shape[0]))
    };
    let (data_ds, nnz) = part("data")?;
    let (indices_ds, n_indices) = part("indices")?;
    let (indptr_ds, n_indptr) = part("indptr")?;
    if n_indices != nnz {
        return Err(fmt(format!(
            "{n_indices} indices for {nnz} stored values (they must be as many)"
        )));
    }
    if n_indptr != major + 1 {
        return Err(fmt(format!(
            "indptr has {n_indptr} entries, expected {} ({} + 1 for a {} × {} {} matrix)",
            major + 1,
            major,
            n_rows,
            n_cols,
            if csr { "CSR" } else { "CSC" }
        )));
    }
    let what = |n: &str| format!("{loc}/{n}");
    let indptr = h5.read_i64(&indptr_ds, &what("indptr"))?;
    let indptr: Vec<usize> = indptr
        .into_iter()
        .map(|i| usize::try_from(i).map_err(|_| fmt(format!("negative pointer {i} in indptr"))))
        .collect::<Result<_, _>>()?;
    if indptr.first() != Some(&0)
        || indptr.windows(2).any(|w| w[0] > w[1])
        || indptr.last() != Some(&nnz)
    {
        return Err(fmt(format!(
            "indptr must rise from 0 to the number of stored values ({nnz}); it goes from {} to \
             {}{}",
            indptr.first().copied().unwrap_or(0),
            indptr.last().copied().unwrap_or(0),
            if indptr.windows(2).any(|w| w[0] > w[1]) {
                " and decreases somewhere"
            } else {
                ""
            }
        )));
    }
    let indices = h5.read_i64(&indices_ds, &what("indices"))?;
    let indices: Vec<u32> = indices
        .into_iter()
        .map(|i| {
            u32::try_from(i)
                .ok()
                .filter(|&j| (j as usize) < minor)
                .ok_or_else(|| {
                    fmt(format!(
                        "index {i} outside 0..{minor} (the number of {})",
                        if csr { "columns" } else { "rows" }
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let data = hdf::to_f32(path, loc, h5.read_f64(&data_ds, &what("data"))?)?;
    let m = CsrMatrix::from_parts(major, minor, indptr, indices, data).map_err(in_file(path))?;
    // CSC of (rows × cols) is CSR of its transpose.
    Ok(if csr { m } else { m.transpose() })
}

/// The index (row names) of a dataframe group (`obs`, `var`, `raw/var`).
fn read_index(h5: &H5, loc: &str) -> Result<Vec<String>, DataError> {
    let path = h5.path.as_path();
    let Some(g) = h5.group_at(loc)? else {
        let old_layout = !loc.contains('/') && h5.has_dataset(&h5.root()?, loc)?;
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            what: if old_layout {
                format!(
                    "dataframe group '{loc}' ('{loc}' is a compound dataset: the pre-0.7 \
                     anndata layout; re-save the file with anndata ≥ 0.7)"
                )
            } else {
                format!("dataframe group '{loc}'")
            },
        });
    };
    let attrs = h5.attrs_of_group(&g);
    let mut candidates: Vec<String> = Vec::new();
    if let Some(name) = hdf::attr_string(&attrs, "_index") {
        candidates.push(name);
    }
    candidates.extend(["_index".to_string(), "index".to_string()]);
    for c in candidates {
        if h5.has_dataset(&g, &c)? {
            let what = format!("{loc}/{c}");
            let ds = h5.dataset(&g, &c, &what)?;
            if !h5.is_string_dataset(&ds) {
                return Err(DataError::Format {
                    path: path.to_path_buf(),
                    message: format!("'{what}' (the names of '{loc}') does not hold strings"),
                });
            }
            let shape = h5.checked_shape(&ds, &what)?;
            if shape.len() != 1 {
                return Err(DataError::Format {
                    path: path.to_path_buf(),
                    message: format!("'{what}' has {} dimensions, expected 1", shape.len()),
                });
            }
            return h5.read_strings(&ds, &what);
        }
    }
    Err(DataError::Missing {
        path: path.to_path_buf(),
        what: format!("index of '{loc}' (no '_index' dataset)"),
    })
}

fn read_obs_columns(h5: &H5) -> Result<Vec<(String, Column)>, DataError> {
    let path = h5.path.as_path();
    let Some(obs) = h5.group_at("obs")? else {
        return Ok(Vec::new());
    };
    let attrs = h5.attrs_of_group(&obs);
    let index_name = hdf::attr_string(&attrs, "_index").unwrap_or_else(|| "_index".into());
    let mut names = hdf::attr_strings(&attrs, "column-order").unwrap_or_default();
    if names.is_empty() {
        names = h5.dataset_names(&obs);
        names.extend(h5.group_names(&obs));
        names.retain(|n| n != &index_name && n != "index" && n != "__categories");
        names.sort();
    }
    let old_categories = h5.group_at("uns")?;
    let mut out = Vec::new();
    for name in names {
        let what = format!("obs/{name}");
        if h5.has_group(&obs, &name)? {
            let g = h5.group(&obs, &name, &what)?;
            let ga = h5.attrs_of_group(&g);
            if hdf::attr_string(&ga, "encoding-type").as_deref() == Some("categorical") {
                out.push((name.clone(), read_categorical(h5, &g, &what)?));
            }
            // Other encodings (nullable integers/booleans, …) are skipped: not needed here.
            continue;
        }
        if !h5.has_dataset(&obs, &name)? {
            continue;
        }
        let ds = h5.dataset(&obs, &name, &what)?;
        if h5.is_string_dataset(&ds) {
            out.push((name, Column::Text(h5.read_strings(&ds, &what)?)));
            continue;
        }
        let values = h5.read_f64(&ds, &what)?;
        // Pre-0.7 categoricals: integer codes here, labels in uns/<name>_categories.
        let cat_name = format!("{name}_categories");
        let uns = match &old_categories {
            Some(u) if h5.has_dataset(u, &cat_name)? => Some(u),
            _ => None,
        };
        if let Some(uns) = uns {
            let cwhat = format!("uns/{cat_name}");
            let cds = h5.dataset(uns, &cat_name, &cwhat)?;
            let categories = h5.read_strings(&cds, &cwhat)?;
            let codes = category_codes(path, &what, &values, categories.len())?;
            out.push((name, Column::Categorical { codes, categories }));
        } else {
            out.push((name, Column::Numeric(values)));
        }
    }
    Ok(out)
}

/// Category codes as i32, checking each is −1 (missing) or a valid category position.
fn category_codes(
    path: &Path,
    what: &str,
    values: &[f64],
    n_categories: usize,
) -> Result<Vec<i32>, DataError> {
    values
        .iter()
        .map(|&v| {
            if v == -1.0 || (v >= 0.0 && v.fract() == 0.0 && v < n_categories as f64) {
                Ok(v as i32)
            } else {
                Err(DataError::Format {
                    path: path.to_path_buf(),
                    message: format!(
                        "categorical column '{what}' has code {v}; codes must be −1 (missing) or \
                         0..{n_categories} (the number of categories)"
                    ),
                })
            }
        })
        .collect()
}

fn read_categorical(h5: &H5, g: &Group, what: &str) -> Result<Column, DataError> {
    let path = h5.path.as_path();
    for part in ["codes", "categories"] {
        if !h5.has_dataset(g, part)? {
            return Err(DataError::Missing {
                path: path.to_path_buf(),
                what: format!("'{what}/{part}' of a categorical column"),
            });
        }
    }
    let codes_ds = h5.dataset(g, "codes", what)?;
    let cats_ds = h5.dataset(g, "categories", what)?;
    let categories = if h5.is_string_dataset(&cats_ds) {
        h5.read_strings(&cats_ds, what)?
    } else {
        h5.read_f64(&cats_ds, what)?
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    };
    let codes = category_codes(path, what, &h5.read_f64(&codes_ds, what)?, categories.len())?;
    Ok(Column::Categorical { codes, categories })
}

fn read_spatial(
    h5: &H5,
    obs: &[(String, Column)],
    n_cells: usize,
) -> Result<Option<Vec<Vec<f64>>>, DataError> {
    let path = h5.path.as_path();
    if let Some(obsm) = h5.group_at("obsm")? {
        for key in ["spatial", "X_spatial"] {
            if !h5.has_dataset(&obsm, key)? {
                continue;
            }
            let what = format!("obsm/{key}");
            let ds = h5.dataset(&obsm, key, &what)?;
            let shape = h5.checked_shape(&ds, &what)?;
            if shape.len() != 2 || shape[0] != n_cells || shape[1] == 0 {
                return Err(DataError::Shape {
                    what: format!("{}: {what}", path.display()),
                    expected: format!("{n_cells} × 2"),
                    found: format!("{shape:?}"),
                });
            }
            let v = h5.read_f64(&ds, &what)?;
            if v.len() != shape[0] * shape[1] {
                return Err(DataError::Shape {
                    what: format!("{}: values of {what}", path.display()),
                    expected: (shape[0] * shape[1]).to_string(),
                    found: v.len().to_string(),
                });
            }
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
///
/// The write is atomic: the file is written as `.{name}.tmp-{pid}-{n}` in the same folder and
/// renamed over `path` only when complete and synced to disk; on any error the temporary file
/// is removed and an existing `path` is left as it was. A `path` that is a folder, or whose
/// folder does not exist, is a [`DataError::Io`] naming it.
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
    crate::atomic::write_atomic(path, |w| {
        b.finish_to(w).map_err(|e| DataError::Write {
            path: path.to_path_buf(),
            message: format!("the HDF5 writer failed: {e}"),
        })
    })
}

/// Values read at a time from a dense count matrix (4 Mi values, 32 MiB as f64).
const DENSE_WINDOW_VALUES: usize = 1 << 22;

/// Reads a dense 2-D count matrix window by window (whole rows, about `window_values` values at
/// a time) straight into CSR, so that a large dense `X` (e.g. 3,005 × 20,000) never exists in
/// memory as a whole f64 or f32 buffer: peak memory is the sparse result plus one window.
/// The caller has checked the shape against the file ([`H5::checked_shape`]).
fn read_dense_as_csr(
    h5: &H5,
    ds: &hdf5_pure::Dataset,
    loc: &str,
    n_rows: usize,
    n_cols: usize,
    window_values: usize,
) -> Result<CsrMatrix, DataError> {
    let path = h5.path.as_path();
    if u32::try_from(n_cols).is_err() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("'{loc}' has {n_cols} columns, more than this reader supports"),
        });
    }
    let rows_per_window = (window_values / n_cols.max(1)).max(1);
    let mut csr = DenseRowsToCsr::new(n_rows, n_cols);
    let mut start = 0;
    while start < n_rows {
        let count = rows_per_window.min(n_rows - start);
        let values = h5.read_f64_rows(ds, loc, start, count)?;
        h5.check_count(ds, loc, count * n_cols, values.len())?;
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
        let h5 = hdf::open(&path).unwrap();
        let ds = h5.file.dataset("X").unwrap();
        let whole = CsrMatrix::from_dense(n, g, &x).unwrap();
        for window in [1, 4, 5, 11, 35, 1000] {
            let m = read_dense_as_csr(&h5, &ds, "X", n, g, window).unwrap();
            assert_eq!(m, whole, "window of {window} values");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
