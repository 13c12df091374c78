//! Dense delimited text (CSV/TSV) in and out.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use crate::text::open_text;
pub use crate::text::split_line;
use crate::{io_err, CsrMatrix, DataError, Dataset};

/// Which way round a dense table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// One row per gene, one column per cell (Giotto, many papers' supplements).
    GenesAsRows,
    /// One row per cell, one column per gene (pandas / scanpy `to_df()`).
    CellsAsRows,
}

/// Reads a dense table: a header line of column names, then one line per row starting with its
/// name. The delimiter is a tab when the header contains one, else a comma. A header with one
/// field fewer than the data lines (no corner cell, as Giotto writes) is accepted.
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
        .map_err(io_err(path))?;
    let header = header.trim_end_matches('\r');
    let delim = if header.contains('\t') { '\t' } else { ',' };
    let mut columns = split_line(header, delim);
    let mut row_names = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let mut width: Option<usize> = None;
    for (i, line) in lines.enumerate() {
        let line = line.map_err(io_err(path))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_line(line, delim);
        let n = fields.len() - 1;
        match width {
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
                width = Some(n);
            }
            Some(w) if w != n => {
                return Err(DataError::Shape {
                    what: format!("{}: values on line {}", path.display(), i + 2),
                    expected: w.to_string(),
                    found: n.to_string(),
                })
            }
            _ => {}
        }
        row_names.push(fields[0].clone());
        for f in &fields[1..] {
            let t = f.trim();
            let v = if t.eq_ignore_ascii_case("nan") || t.eq_ignore_ascii_case("na") {
                f32::NAN
            } else {
                t.parse::<f32>()
                    .map_err(|_| fmt(i + 2, format!("'{t}' is not a number")))?
            };
            values.push(v);
        }
    }
    let n_cols = columns.len();
    let matrix = CsrMatrix::from_dense(row_names.len(), n_cols, &values)?;
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
    let f = std::fs::File::create(path).map_err(io_err(path))?;
    let mut w = BufWriter::new(f);
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
    w.flush().map_err(io_err(path))
}
