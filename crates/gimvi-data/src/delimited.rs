//! Dense delimited text (CSV/TSV) in and out.

use std::io::{BufRead, Write};
use std::path::Path;

use crate::csr::DenseRowsToCsr;
pub use crate::text::split_line;
use crate::text::{line_err, open_text, BOM};
use crate::{io_err, DataError, Dataset};

/// Which way round a dense table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// One row per gene, one column per cell (Giotto, many papers' supplements).
    GenesAsRows,
    /// One row per cell, one column per gene (pandas / scanpy `to_df()`).
    CellsAsRows,
}

/// Reads a dense table: a header line of column names, then one line per row starting with its
/// name. The delimiter is a tab when the header contains one, else a comma, else a semicolon
/// (spreadsheets set to a European locale). A header with one field fewer than the data lines
/// (no corner cell, as Giotto writes) is accepted. A UTF-8 byte-order mark and CRLF line ends
/// are accepted; blank lines are skipped; `NA` / `nan` cells are read as NaN (count validation
/// reports them).
///
/// Refused with a typed error naming the file (and line): an empty file, a header without data
/// lines, data lines without values (a single column), rows of different lengths, a cell that is
/// not a number, text that is not UTF-8. Rows are converted to sparse form as they are read, so
/// memory follows the non-zero values.
pub fn read_delimited(
    path: impl AsRef<Path>,
    orientation: Orientation,
) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let reader = open_text(path)?;
    let fmt = |line: usize, message: String| DataError::Format {
        path: path.to_path_buf(),
        message: format!("line {line}: {message}"),
    };
    let mut lines = reader.lines();
    let header = lines
        .next()
        .ok_or_else(|| fmt(1, "empty file".into()))?
        .map_err(line_err(path, 1))?;
    let header = header.trim_start_matches(BOM).trim_end_matches('\r');
    let delim = if header.contains('\t') {
        '\t'
    } else if header.contains(',') {
        ','
    } else if header.contains(';') {
        ';'
    } else {
        ','
    };
    let mut columns = split_line(header, delim);
    let mut row_names = Vec::new();
    let mut rows: Option<DenseRowsToCsr> = None;
    let mut values: Vec<f32> = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let line = line.map_err(line_err(path, line_no))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_line(line, delim);
        let n = fields.len() - 1;
        let csr = match &mut rows {
            None => {
                if columns.len() == n + 1 {
                    columns.remove(0); // corner cell
                } else if columns.len() != n {
                    return Err(DataError::Shape {
                        what: format!("{}: header fields vs data fields", path.display()),
                        expected: format!("{n} or {}", n + 1),
                        found: columns.len().to_string(),
                    });
                }
                if n == 0 {
                    return Err(fmt(
                        line_no,
                        format!(
                            "no values after the row name '{}': the table has no value \
                             columns (no cells or genes across, or a separator other than \
                             tabs, commas or semicolons)",
                            fields[0].chars().take(60).collect::<String>()
                        ),
                    ));
                }
                rows.insert(DenseRowsToCsr::new(0, n))
            }
            Some(csr) => {
                if csr.n_cols() != n {
                    return Err(DataError::Shape {
                        what: format!("{}: values on line {line_no}", path.display()),
                        expected: csr.n_cols().to_string(),
                        found: n.to_string(),
                    });
                }
                csr
            }
        };
        values.clear();
        for (j, f) in fields[1..].iter().enumerate() {
            let t = f.trim();
            let v = if t.eq_ignore_ascii_case("nan") || t.eq_ignore_ascii_case("na") {
                f32::NAN
            } else {
                t.parse::<f32>().map_err(|_| {
                    fmt(
                        line_no,
                        format!(
                            "field {} ('{}'): {}",
                            j + 2,
                            fields[0]
                                .chars()
                                .take(40)
                                .collect::<String>()
                                .escape_debug(),
                            if t.is_empty() {
                                "empty, expected a number".to_string()
                            } else {
                                format!(
                                    "'{}' is not a number",
                                    t.chars().take(40).collect::<String>().escape_debug()
                                )
                            }
                        ),
                    )
                })?
            };
            values.push(v);
        }
        csr.push_rows(&values, 1);
        row_names.push(fields.into_iter().next().unwrap_or_default());
    }
    let Some(rows) = rows else {
        return Err(fmt(
            2,
            "no data lines after the header (a table needs a header line and one line per row)"
                .into(),
        ));
    };
    let matrix = rows.finish();
    let (counts, genes, cells) = match orientation {
        Orientation::GenesAsRows => (matrix.transpose(), row_names, columns),
        Orientation::CellsAsRows => (matrix, columns, row_names),
    };
    Dataset::new(
        path.display().to_string(),
        counts,
        genes,
        cells,
        Vec::new(),
        None,
    )
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes a dense row-major matrix as CSV: a header `cell,<column names…>` then one line per
/// row. Values are written with full `f32` precision.
///
/// The write is atomic, as for [`write_h5ad`](crate::h5ad::write_h5ad): a temporary file in
/// the same folder is renamed over `path` only when complete; on error it is removed and an
/// existing `path` is left as it was.
pub fn write_csv(
    path: impl AsRef<Path>,
    row_names: &[String],
    column_names: &[String],
    values: &[f32],
) -> Result<(), DataError> {
    let path = path.as_ref();
    if values.len() != row_names.len() * column_names.len() {
        return Err(DataError::Shape {
            what: "CSV output (rows × columns)".into(),
            expected: (row_names.len() * column_names.len()).to_string(),
            found: values.len().to_string(),
        });
    }
    crate::atomic::write_atomic(path, |w| {
        let mut header = String::from("cell");
        for c in column_names {
            header.push(',');
            header.push_str(&quote(c));
        }
        writeln!(w, "{header}").map_err(io_err(path))?;
        for (r, name) in row_names.iter().enumerate() {
            let mut line = quote(name);
            for v in &values[r * column_names.len()..(r + 1) * column_names.len()] {
                line.push(',');
                line.push_str(&v.to_string());
            }
            writeln!(w, "{line}").map_err(io_err(path))?;
        }
        Ok(())
    })
}
