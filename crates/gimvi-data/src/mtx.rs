//! MatrixMarket counts: 10x Genomics folders (`matrix.mtx[.gz]`, `features.tsv[.gz]` or
//! `genes.tsv[.gz]`, `barcodes.tsv[.gz]`, genes × cells) and loose files.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::text::{line_err, open_text, split_line, BOM, MAX_RESERVE};
use crate::{in_file, Column, CsrMatrix, DataError, Dataset};

fn find_first(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Reads a 10x-style folder: `matrix.mtx[.gz]` (genes × cells), `features.tsv[.gz]` (id,
/// name, type) or `genes.tsv[.gz]` (id, name), and `barcodes.tsv[.gz]`. Gene names are the
/// second column when there is one.
pub fn read_10x_dir(dir: impl AsRef<Path>) -> Result<Dataset, DataError> {
    let dir = dir.as_ref();
    let missing = |what: &str| DataError::Missing {
        path: dir.to_path_buf(),
        what: what.to_string(),
    };
    let matrix = find_first(dir, &["matrix.mtx.gz", "matrix.mtx"])
        .ok_or_else(|| missing("matrix.mtx or matrix.mtx.gz"))?;
    let genes = find_first(
        dir,
        &[
            "features.tsv.gz",
            "features.tsv",
            "genes.tsv.gz",
            "genes.tsv",
        ],
    )
    .ok_or_else(|| missing("features.tsv[.gz] or genes.tsv[.gz]"))?;
    let barcodes = find_first(dir, &["barcodes.tsv.gz", "barcodes.tsv"])
        .ok_or_else(|| missing("barcodes.tsv[.gz]"))?;
    read_mtx(&matrix, &genes, &barcodes)
}

/// Reads a MatrixMarket file of genes × cells with a gene-name file and a cell-name file.
///
/// Name files: `.csv` files have a header line and their first column is the name (other
/// columns of the cell file become cell metadata, e.g. `cell_type`); other files have no header
/// and the name is the second tab-separated column when there are several (10x), else the only
/// one.
pub fn read_mtx(matrix: &Path, genes: &Path, cells: &Path) -> Result<Dataset, DataError> {
    let (n_genes, n_cells, triplets) = read_matrix_market(matrix)?;
    let (gene_names, _) = read_names(genes)?;
    let (cell_names, cell_columns) = read_names(cells)?;
    if gene_names.len() != n_genes {
        return Err(DataError::Shape {
            what: format!(
                "{}: gene names in {} vs matrix rows",
                matrix.display(),
                genes.display()
            ),
            expected: n_genes.to_string(),
            found: gene_names.len().to_string(),
        });
    }
    if cell_names.len() != n_cells {
        return Err(DataError::Shape {
            what: format!(
                "{}: cell names in {} vs matrix columns",
                matrix.display(),
                cells.display()
            ),
            expected: n_cells.to_string(),
            found: cell_names.len().to_string(),
        });
    }
    // Entries are (gene, cell): build cells × genes directly.
    let swapped: Vec<(usize, usize, f32)> =
        triplets.into_iter().map(|(g, c, v)| (c, g, v)).collect();
    let counts = CsrMatrix::from_triplets(n_cells, n_genes, &swapped).map_err(in_file(matrix))?;
    Dataset::new(
        matrix.display().to_string(),
        counts,
        gene_names,
        cell_names,
        cell_columns,
        None,
    )
}

type Triplets = Vec<(usize, usize, f32)>;

/// Parses a coordinate MatrixMarket file: returns (rows, cols, 0-based triplets).
///
/// Accepted: `%%MatrixMarket matrix coordinate` with field `integer`, `real`, `double` or
/// `pattern` and symmetry `general` (what 10x, `Matrix::writeMM` and `scipy.io.mmwrite` write for
/// count matrices). Refused with a [`DataError::Format`]: other formats, `complex` values,
/// symmetric / skew-symmetric / hermitian storage (not a count matrix), a size line declaring
/// more entries than rows × columns or more than 2³² − 1 rows or columns, an entry outside the
/// declared size or beyond the declared count; with a [`DataError::Shape`]: fewer entries than
/// declared. Nothing is reserved from the declared entry count beyond 2²⁰ (1,048,576) entries:
/// memory follows the entries the file really holds.
pub fn read_matrix_market(path: &Path) -> Result<(usize, usize, Triplets), DataError> {
    let reader = open_text(path)?;
    let fmt = |line: usize, message: String| DataError::Format {
        path: path.to_path_buf(),
        message: format!("line {line}: {message}"),
    };
    let mut lines = reader.lines().enumerate();
    let (_, header) = lines
        .next()
        .ok_or_else(|| fmt(1, "empty file, expected a %%MatrixMarket header".into()))?;
    let header = header.map_err(line_err(path, 1))?;
    let header = header.trim_start_matches(BOM).trim_end();
    let h: Vec<String> = header.split_whitespace().map(str::to_lowercase).collect();
    if h.len() < 3 || h[0] != "%%matrixmarket" || h[1] != "matrix" || h[2] != "coordinate" {
        return Err(fmt(
            1,
            format!(
                "expected '%%MatrixMarket matrix coordinate <field> general', found '{}'",
                header.chars().take(80).collect::<String>()
            ),
        ));
    }
    let field = h.get(3).map(String::as_str).unwrap_or("real");
    let symmetry = h.get(4).map(String::as_str).unwrap_or("general");
    if !["integer", "real", "double", "pattern"].contains(&field) {
        return Err(fmt(
            1,
            format!("'{field}' values are not supported (integer, real or pattern counts are)"),
        ));
    }
    if symmetry != "general" {
        return Err(fmt(
            1,
            format!(
                "'{symmetry}' storage is not supported: a count matrix is 'general' (every \
                 entry written out)"
            ),
        ));
    }
    let pattern = field == "pattern";
    let mut size: Option<(usize, usize, usize)> = None;
    let mut triplets = Vec::new();
    for (i, line) in lines {
        let line = line.map_err(line_err(path, i + 1))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        let fields: Vec<&str> = t.split_whitespace().collect();
        match size {
            None => {
                if fields.len() != 3 {
                    return Err(fmt(
                        i + 1,
                        format!("expected 'rows cols entries', found '{t}'"),
                    ));
                }
                let p = |s: &str| {
                    s.parse::<usize>()
                        .map_err(|_| fmt(i + 1, format!("'{}' is not a size", s.escape_debug())))
                };
                let (rows, cols, nnz) = (p(fields[0])?, p(fields[1])?, p(fields[2])?);
                for (n, what) in [(rows, "rows"), (cols, "columns")] {
                    if u32::try_from(n).is_err() {
                        return Err(fmt(
                            i + 1,
                            format!(
                                "{n} {what} declared: more than this reader supports (2^32 − 1)"
                            ),
                        ));
                    }
                }
                if rows.checked_mul(cols).is_some_and(|cells| nnz > cells) {
                    return Err(fmt(
                        i + 1,
                        format!(
                            "{nnz} entries declared for a {rows} × {cols} matrix, which has only \
                             {} positions",
                            rows * cols
                        ),
                    ));
                }
                triplets.reserve(nnz.min(MAX_RESERVE));
                size = Some((rows, cols, nnz));
            }
            Some((rows, cols, nnz)) => {
                if triplets.len() == nnz {
                    return Err(fmt(
                        i + 1,
                        format!("more entries than the {nnz} the size line declares"),
                    ));
                }
                let need = if pattern { 2 } else { 3 };
                if fields.len() < need {
                    return Err(fmt(i + 1, format!("expected 'row col value', found '{t}'")));
                }
                let idx = |s: &str, max: usize| -> Result<usize, DataError> {
                    match s.parse::<usize>() {
                        Ok(v) if v >= 1 && v <= max => Ok(v - 1),
                        _ => Err(fmt(
                            i + 1,
                            format!(
                                "index '{}' outside 1..={max} (the declared size)",
                                s.escape_debug()
                            ),
                        )),
                    }
                };
                let r = idx(fields[0], rows)?;
                let c = idx(fields[1], cols)?;
                let v = if pattern {
                    1.0
                } else {
                    fields[2].parse::<f32>().map_err(|_| {
                        fmt(
                            i + 1,
                            format!("'{}' is not a number", fields[2].escape_debug()),
                        )
                    })?
                };
                triplets.push((r, c, v));
            }
        }
    }
    let (rows, cols, nnz) = size.ok_or_else(|| fmt(2, "missing the size line".into()))?;
    if triplets.len() != nnz {
        return Err(DataError::Shape {
            what: format!("{}: entries vs declared count", path.display()),
            expected: nnz.to_string(),
            found: triplets.len().to_string(),
        });
    }
    Ok((rows, cols, triplets))
}

/// Reads a names file (see [`read_mtx`]): the names and, for `.csv` files with more columns,
/// those columns as text.
/// Names plus the extra annotation columns of a names file.
type NamesAndColumns = (Vec<String>, Vec<(String, Column)>);

fn read_names(path: &Path) -> Result<NamesAndColumns, DataError> {
    let reader = open_text(path)?;
    let lower = path.to_string_lossy().to_lowercase();
    let csv = lower.ends_with(".csv") || lower.ends_with(".csv.gz");
    let mut names = Vec::new();
    let mut header: Vec<String> = Vec::new();
    let mut extra: Vec<Vec<String>> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(line_err(path, i + 1))?;
        let line = line.trim_end_matches(['\r', '\n']);
        let line = if i == 0 {
            line.trim_start_matches(BOM)
        } else {
            line
        };
        if line.is_empty() {
            continue;
        }
        if csv {
            let fields: Vec<String> = split_line(line, ',');
            if i == 0 {
                header = fields;
                extra = vec![Vec::new(); header.len().saturating_sub(1)];
                continue;
            }
            names.push(fields.first().cloned().unwrap_or_default());
            for (j, col) in extra.iter_mut().enumerate() {
                col.push(fields.get(j + 1).cloned().unwrap_or_default());
            }
        } else {
            let fields: Vec<&str> = line.split('\t').collect();
            names.push(fields.get(1).unwrap_or(&fields[0]).to_string());
        }
    }
    let columns = header
        .into_iter()
        .skip(1)
        .zip(extra)
        .map(|(h, v)| (h, Column::Text(v)))
        .collect();
    Ok((names, columns))
}
