//! A compressed-sparse-row count matrix (cells × genes).

use crate::DataError;

/// Cells × genes counts in compressed sparse row form. Values are `f32`: integer counts up to
/// 2²⁴ are exact, and the model computes in `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    n_rows: usize,
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    data: Vec<f32>,
}

impl CsrMatrix {
    /// Builds a matrix from its CSR arrays, checking that they are consistent (indptr of
    /// length rows + 1, non-decreasing, ending at nnz; column indices in range). Within a row,
    /// column indices are sorted (duplicates are summed).
    pub fn from_parts(
        n_rows: usize,
        n_cols: usize,
        indptr: Vec<usize>,
        indices: Vec<u32>,
        data: Vec<f32>,
    ) -> Result<Self, DataError> {
        if n_rows.checked_add(1) != Some(indptr.len()) {
            return Err(DataError::Shape {
                what: "CSR indptr length".into(),
                expected: format!("{n_rows} + 1 (rows + 1)"),
                found: indptr.len().to_string(),
            });
        }
        if u32::try_from(n_cols).is_err() {
            return Err(DataError::Shape {
                what: "CSR column count".into(),
                expected: "below 2^32 (column indices are 32-bit)".into(),
                found: n_cols.to_string(),
            });
        }
        if indices.len() != data.len() {
            return Err(DataError::Shape {
                what: "CSR indices vs data length".into(),
                expected: data.len().to_string(),
                found: indices.len().to_string(),
            });
        }
        if indptr[0] != 0 || indptr.windows(2).any(|w| w[0] > w[1]) || indptr[n_rows] != data.len()
        {
            return Err(DataError::Shape {
                what: "CSR indptr".into(),
                expected: format!("non-decreasing from 0 to nnz = {}", data.len()),
                found: format!("from {} to {}", indptr[0], indptr[n_rows]),
            });
        }
        if let Some(&bad) = indices.iter().find(|&&j| j as usize >= n_cols) {
            return Err(DataError::Shape {
                what: "CSR column index".into(),
                expected: format!("< {n_cols} (number of columns)"),
                found: bad.to_string(),
            });
        }
        let mut m = CsrMatrix {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        };
        m.canonicalise();
        Ok(m)
    }

    /// Builds a matrix from (row, column, value) triplets; duplicates are summed and explicit
    /// zeros dropped.
    pub fn from_triplets(
        n_rows: usize,
        n_cols: usize,
        triplets: &[(usize, usize, f32)],
    ) -> Result<Self, DataError> {
        let size_err = || DataError::Shape {
            what: "matrix size".into(),
            expected: "rows below 2^64 − 1 and columns below 2^32".into(),
            found: format!("{n_rows} × {n_cols}"),
        };
        if u32::try_from(n_cols).is_err() {
            return Err(size_err());
        }
        let mut counts = vec![0usize; n_rows.checked_add(1).ok_or_else(size_err)?];
        for &(r, c, _) in triplets {
            if r >= n_rows || c >= n_cols {
                return Err(DataError::Shape {
                    what: "matrix entry position".into(),
                    expected: format!("inside {n_rows} × {n_cols}"),
                    found: format!("({}, {})", r + 1, c + 1),
                });
            }
            counts[r + 1] += 1;
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; triplets.len()];
        let mut data = vec![0f32; triplets.len()];
        for &(r, c, v) in triplets {
            let p = next[r];
            indices[p] = c as u32;
            data[p] = v;
            next[r] += 1;
        }
        Self::from_parts(n_rows, n_cols, indptr, indices, data)
    }

    /// Builds a matrix from a dense row-major buffer (explicit zeros are not stored).
    pub fn from_dense(n_rows: usize, n_cols: usize, values: &[f32]) -> Result<Self, DataError> {
        if n_rows.checked_mul(n_cols) != Some(values.len()) || u32::try_from(n_cols).is_err() {
            return Err(DataError::Shape {
                what: "dense matrix buffer".into(),
                expected: format!("{n_rows} × {n_cols} values (columns below 2^32)"),
                found: values.len().to_string(),
            });
        }
        let mut rows = DenseRowsToCsr::new(n_rows, n_cols);
        rows.push_rows(values, n_rows);
        Ok(rows.finish())
    }

    /// Sorts column indices within rows, sums duplicates and drops explicit zeros. NaN and
    /// negative values are kept, so that validation can report them.
    fn canonicalise(&mut self) {
        let mut new_indptr = Vec::with_capacity(self.n_rows + 1);
        let mut new_indices = Vec::with_capacity(self.indices.len());
        let mut new_data = Vec::with_capacity(self.data.len());
        new_indptr.push(0);
        let mut row: Vec<(u32, f32)> = Vec::new();
        for r in 0..self.n_rows {
            row.clear();
            for p in self.indptr[r]..self.indptr[r + 1] {
                row.push((self.indices[p], self.data[p]));
            }
            row.sort_by_key(|e| e.0);
            let mut i = 0;
            while i < row.len() {
                let (c, mut v) = row[i];
                let mut j = i + 1;
                while j < row.len() && row[j].0 == c {
                    v += row[j].1;
                    j += 1;
                }
                if v != 0.0 {
                    new_indices.push(c);
                    new_data.push(v);
                }
                i = j;
            }
            new_indptr.push(new_data.len());
        }
        self.indptr = new_indptr;
        self.indices = new_indices;
        self.data = new_data;
    }

    /// Number of rows (cells).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns (genes).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }

    /// Row pointer array (length rows + 1).
    pub fn indptr(&self) -> &[usize] {
        &self.indptr
    }

    /// Column indices of the stored entries.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// Values of the stored entries.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable values of the stored entries (the sparsity pattern stays fixed).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The stored entries of row `r` as (column, value) pairs.
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        (self.indptr[r]..self.indptr[r + 1]).map(move |p| (self.indices[p] as usize, self.data[p]))
    }

    /// Value at (r, c) (0 if not stored).
    pub fn get(&self, r: usize, c: usize) -> f32 {
        let s = &self.indices[self.indptr[r]..self.indptr[r + 1]];
        match s.binary_search(&(c as u32)) {
            Ok(i) => self.data[self.indptr[r] + i],
            Err(_) => 0.0,
        }
    }

    /// Sum of every row, in f64.
    pub fn row_sums(&self) -> Vec<f64> {
        (0..self.n_rows)
            .map(|r| self.row(r).map(|(_, v)| v as f64).sum())
            .collect()
    }

    /// Sum of every column, in f64.
    pub fn col_sums(&self) -> Vec<f64> {
        let mut s = vec![0.0; self.n_cols];
        for (&c, &v) in self.indices.iter().zip(&self.data) {
            s[c as usize] += v as f64;
        }
        s
    }

    /// The transpose (columns become rows).
    pub fn transpose(&self) -> CsrMatrix {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.n_cols {
            counts[i + 1] += counts[i];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            for p in self.indptr[r]..self.indptr[r + 1] {
                let c = self.indices[p] as usize;
                let q = next[c];
                indices[q] = r as u32;
                data[q] = self.data[p];
                next[c] += 1;
            }
        }
        CsrMatrix {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr,
            indices,
            data,
        }
    }

    /// The rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> CsrMatrix {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::new();
        let mut data = Vec::new();
        indptr.push(0);
        for &r in rows {
            indices.extend_from_slice(&self.indices[self.indptr[r]..self.indptr[r + 1]]);
            data.extend_from_slice(&self.data[self.indptr[r]..self.indptr[r + 1]]);
            indptr.push(data.len());
        }
        CsrMatrix {
            n_rows: rows.len(),
            n_cols: self.n_cols,
            indptr,
            indices,
            data,
        }
    }

    /// The columns listed in `cols`, in that order (a column may not repeat).
    pub fn select_cols(&self, cols: &[usize]) -> CsrMatrix {
        let mut map = vec![u32::MAX; self.n_cols];
        for (new, &old) in cols.iter().enumerate() {
            map[old] = new as u32;
        }
        let mut triplets = Vec::new();
        for r in 0..self.n_rows {
            for (c, v) in self.row(r) {
                if map[c] != u32::MAX {
                    triplets.push((r, map[c] as usize, v));
                }
            }
        }
        CsrMatrix::from_triplets(self.n_rows, cols.len(), &triplets)
            .expect("selected positions lie inside the new shape")
    }

    /// Dense row-major copy as f32 (rows × columns).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n_rows * self.n_cols];
        for r in 0..self.n_rows {
            for (c, v) in self.row(r) {
                out[r * self.n_cols + c] = v;
            }
        }
        out
    }

    /// Dense copy of the whole matrix as an `ndarray` of f64 (rows × columns).
    pub fn to_dense_f64(&self) -> ndarray::Array2<f64> {
        let mut out = ndarray::Array2::zeros((self.n_rows, self.n_cols));
        for r in 0..self.n_rows {
            for (c, v) in self.row(r) {
                out[[r, c]] = v as f64;
            }
        }
        out
    }
}

/// Builds a CSR matrix from dense row-major rows handed over in pieces (explicit zeros are not
/// stored), so that a large dense matrix can be converted window by window.
pub(crate) struct DenseRowsToCsr {
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    data: Vec<f32>,
}

impl DenseRowsToCsr {
    /// An empty builder for rows of `n_cols` values; `n_rows` (expected rows) sizes the row
    /// pointer, up to [`MAX_RESERVE`](crate::text::MAX_RESERVE) rows.
    pub(crate) fn new(n_rows: usize, n_cols: usize) -> Self {
        let mut indptr = Vec::with_capacity(n_rows.min(crate::text::MAX_RESERVE) + 1);
        indptr.push(0);
        Self {
            n_cols,
            indptr,
            indices: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Appends `rows` rows from `values` (`rows × n_cols`, row-major; the caller checks the
    /// length).
    pub(crate) fn push_rows(&mut self, values: &[f32], rows: usize) {
        for r in 0..rows {
            let row = &values[r * self.n_cols..(r + 1) * self.n_cols];
            for (c, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    self.indices.push(c as u32);
                    self.data.push(v);
                }
            }
            self.indptr.push(self.data.len());
        }
    }

    /// The number of values per row.
    pub(crate) fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// The matrix of the rows pushed so far (column indices are sorted by construction).
    pub(crate) fn finish(self) -> CsrMatrix {
        CsrMatrix {
            n_rows: self.indptr.len() - 1,
            n_cols: self.n_cols,
            indptr: self.indptr,
            indices: self.indices,
            data: self.data,
        }
    }
}
