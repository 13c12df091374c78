//! Host kernels for the layers that touch every gene, on CPU backends.
//!
//! At transcriptome scale two kinds of layer see all G genes of a minibatch: the first layers
//! of the scRNA-seq encoders (private and library, input `[cells, G]`) and the decoder's output
//! heads (ρ and dropout logits, output `[cells, G]`). Run as burn ops, each is a dense
//! `[128, 20,000]` matrix product forward and backward plus copies of `[128, 20,000]` buffers.
//! On CPU backends [`crate::ops`] runs them as custom operations built from the kernels here:
//!
//! * **Encoder input layers on sparse input.** ln(1 + x) of a minibatch is mostly zeros (93 %
//!   in the synthetic transcriptome benchmark, ~95 % in UMI data), so Y = X W is computed from
//!   the non-zero entries only ([`SparseRows::matmul`]) and ∂W = Xᵀ ∂Y is again a sparse
//!   product ([`SparseRows::t_matmul`]).
//! * **Decoder output heads.** The logits l = h W + b are computed on the host
//!   ([`dense_matmul`]) and fed to the likelihood kernel; backward, with ∂o the upstream
//!   gradient of each cell's ln p, ∂h = ∂o ∂l Wᵀ ([`matmul_t`]), ∂W = hᵀ diag(∂o) ∂l and
//!   ∂b = Σ_n ∂o_n ∂l_n ([`head_param_grads`]).

use rayon::prelude::*;

/// Datasets with at least this many genes take the host path on CPU backends; narrower ones
/// (a 33-gene panel) keep burn's ops, where the host round trip would cost more than it saves.
pub const HOST_PATH_MIN_GENES: usize = 1024;

/// o ← o + s x (fused multiply-add when `FMA`, which the caller guarantees the CPU has).
#[inline(always)]
fn axpy<const FMA: bool>(o: &mut [f32], s: f32, x: &[f32]) {
    for (a, &b) in o.iter_mut().zip(x) {
        *a = if FMA { s.mul_add(b, *a) } else { *a + s * b };
    }
}

/// Σ a_i b_i with 32 partial sums: four independent vector accumulators, so that the sum is
/// bound by multiply-add throughput rather than by the latency of one accumulator chain.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let mut ac = a.chunks_exact(32);
    let mut bc = b.chunks_exact(32);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for l in 0..32 {
            acc[l] = if FMA {
                x[l].mul_add(y[l], acc[l])
            } else {
                acc[l] + x[l] * y[l]
            };
        }
    }
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// ln(1 + k) for the integer counts k < 4,096 (most entries of real count matrices).
pub(crate) fn ln_1p_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..4096).map(|k| (k as f64).ln_1p() as f32).collect())
}

/// ln(1 + v), from the table for integer counts below its size.
#[inline]
pub(crate) fn ln_1p_count(table: &[f32], v: f32) -> f32 {
    if (0.0..table.len() as f32).contains(&v) && v.fract() == 0.0 {
        table[v as usize]
    } else {
        v.ln_1p()
    }
}

/// The rows of a minibatch matrix in compressed sparse form on the host, row-major (CSR) and
/// column-major (CSC) both, so that X W and Xᵀ D each stream their dense operand once.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    rows: usize,
    cols: usize,
    /// CSC: column j's entries are `colptr[j]..colptr[j + 1]` of `row_of` / `val_of`.
    colptr: Vec<usize>,
    row_of: Vec<u32>,
    val_of: Vec<f32>,
}

impl SparseRows {
    /// ln(1 + x) of a dense row-major `rows × cols` block of counts, keeping the non-zeros.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `cols` or the shape exceeds `u32` indices (internal
    /// contract: the model passes its own minibatches).
    pub fn log1p_of_dense(x: &[f32], cols: usize) -> Self {
        assert!(cols > 0 && x.len().is_multiple_of(cols), "x is rows × cols");
        let rows = x.len() / cols;
        Self::log1p_of_entries(rows, cols, |r| {
            x[r * cols..(r + 1) * cols].iter().copied().enumerate()
        })
    }

    /// ln(1 + x) of the given rows of a CSR count matrix (a minibatch), straight from its
    /// stored entries: no dense copy is scanned.
    ///
    /// # Panics
    /// If a row index is out of range or the batch has 2³² rows or more (internal contract).
    pub fn log1p_of_rows(counts: &gimvi_data::CsrMatrix, rows: &[usize]) -> Self {
        Self::log1p_of_entries(rows.len(), counts.n_cols(), |i| counts.row(rows[i]))
    }

    /// ln(1 + x) of `rows` rows of `cols` columns whose (column, value) entries `row(i)` lists
    /// (zeros may be listed or not), into the column-major pattern: a counting sort by column,
    /// rows ascending within a column.
    fn log1p_of_entries<I: Iterator<Item = (usize, f32)>>(
        rows: usize,
        cols: usize,
        row: impl Fn(usize) -> I,
    ) -> Self {
        assert!(u32::try_from(rows).is_ok(), "fewer than 2³² rows");
        let table = ln_1p_table();
        let mut colptr = vec![0usize; cols + 1];
        for r in 0..rows {
            for (j, v) in row(r) {
                colptr[j + 1] += usize::from(v != 0.0);
            }
        }
        for j in 0..cols {
            colptr[j + 1] += colptr[j];
        }
        let nnz = colptr[cols];
        let mut next = colptr.clone();
        let mut row_of = vec![0u32; nnz];
        let mut val_of = vec![0f32; nnz];
        for r in 0..rows {
            for (j, v) in row(r) {
                if v != 0.0 {
                    let k = next[j];
                    row_of[k] = r as u32;
                    val_of[k] = ln_1p_count(table, v);
                    next[j] += 1;
                }
            }
        }
        Self {
            rows,
            cols,
            colptr,
            row_of,
            val_of,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored (non-zero) entries.
    #[cfg(test)]
    pub fn nnz(&self) -> usize {
        self.val_of.len()
    }

    /// X W for a row-major `cols × d_out` matrix `w`: a row-major `rows × d_out` result. Each
    /// thread takes a range of columns, streams their rows of `w` once and adds them, weighted,
    /// into its own copy of the (small) result; the copies are summed.
    ///
    /// # Panics
    /// If `w.len()` is not `cols × d_out`.
    pub fn matmul(&self, w: &[f32], d_out: usize) -> Vec<f32> {
        assert_eq!(w.len(), self.cols * d_out, "w is cols × d_out");
        let size = self.rows * d_out;
        if d_out == 0 || self.cols == 0 {
            return vec![0.0; size];
        }
        let tasks = rayon::current_num_threads().clamp(1, self.cols);
        let per = self.cols.div_ceil(tasks);
        let partials: Vec<Vec<f32>> = (0..tasks)
            .into_par_iter()
            .map(|t| {
                let mut y = vec![0.0f32; size];
                let (j0, j1) = (t * per, ((t + 1) * per).min(self.cols));
                sparse_matmul_task(self, w, d_out, j0, j1, &mut y);
                y
            })
            .collect();
        // Summed in task order, so a seeded run gives the same floats every time (rayon's
        // reduction tree depends on work stealing).
        let mut parts = partials.into_iter();
        let mut y = parts.next().unwrap_or_else(|| vec![0.0; size]);
        for p in parts {
            for (a, b) in y.iter_mut().zip(&p) {
                *a += b;
            }
        }
        y
    }

    /// Xᵀ D for a row-major `rows × d_out` matrix `d`: a row-major `cols × d_out` result (rows
    /// of columns with no non-zero entry are zero), threaded over blocks of columns.
    ///
    /// # Panics
    /// If `d.len()` is not `rows × d_out`.
    pub fn t_matmul(&self, d: &[f32], d_out: usize) -> Vec<f32> {
        assert_eq!(d.len(), self.rows * d_out, "d is rows × d_out");
        let mut out = vec![0.0f32; self.cols * d_out];
        if d_out == 0 {
            return out;
        }
        let block = 64usize;
        out.par_chunks_mut(block * d_out)
            .enumerate()
            .for_each(|(bi, out_b)| sparse_t_matmul_task(self, d, d_out, bi * block, out_b));
        out
    }
}

gimvi_likelihoods::simd_dispatch!(
    fn sparse_matmul_task(
        x: &SparseRows,
        w: &[f32],
        d_out: usize,
        j0: usize,
        j1: usize,
        y: &mut [f32]
    ) = sparse_matmul_body::<true>, sparse_matmul_body::<false>;
);

#[inline(always)]
fn sparse_matmul_body<const FMA: bool>(
    x: &SparseRows,
    w: &[f32],
    d_out: usize,
    j0: usize,
    j1: usize,
    y: &mut [f32],
) {
    for j in j0..j1 {
        let w_j = &w[j * d_out..(j + 1) * d_out];
        for k in x.colptr[j]..x.colptr[j + 1] {
            let r = x.row_of[k] as usize;
            axpy::<FMA>(&mut y[r * d_out..(r + 1) * d_out], x.val_of[k], w_j);
        }
    }
}

gimvi_likelihoods::simd_dispatch!(
    fn sparse_t_matmul_task(
        x: &SparseRows,
        d: &[f32],
        d_out: usize,
        j0: usize,
        out: &mut [f32]
    ) = sparse_t_matmul_body::<true>, sparse_t_matmul_body::<false>;
);

#[inline(always)]
fn sparse_t_matmul_body<const FMA: bool>(
    x: &SparseRows,
    d: &[f32],
    d_out: usize,
    j0: usize,
    out: &mut [f32],
) {
    for (jj, out_j) in out.chunks_mut(d_out).enumerate() {
        let j = j0 + jj;
        for k in x.colptr[j]..x.colptr[j + 1] {
            let r = x.row_of[k] as usize;
            axpy::<FMA>(out_j, x.val_of[k], &d[r * d_out..(r + 1) * d_out]);
        }
    }
}

/// Columns per block in the dense host kernels: a block of a row (4 KiB) stays in L1 while the
/// `k` rows of the weight matrix stream past it.
const COL_BLOCK: usize = 1024;

/// Rows per task of the dense host kernels: each task walks the column blocks once, so a
/// block of the weight matrix (k × 4 KiB) is read from memory once per task and then reused
/// from cache for every row of the task.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// `a` (`rows × k`) times `b` (`k × cols`) plus the row vector `bias` (`cols`), row-major,
/// threaded over ranges of rows.
pub(crate) fn dense_matmul(
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    rows: usize,
    k: usize,
    cols: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    if cols == 0 || rows == 0 {
        return out;
    }
    let per = rows_per_task(rows);
    out.par_chunks_mut(per * cols)
        .enumerate()
        .for_each(|(t, o)| dense_rows_task(&a[t * per * k..], b, bias, k, cols, o));
    out
}

gimvi_likelihoods::simd_dispatch!(
    fn dense_rows_task(
        a: &[f32],
        b: &[f32],
        bias: &[f32],
        k: usize,
        cols: usize,
        o: &mut [f32]
    ) = dense_rows_body::<true>, dense_rows_body::<false>;
);

/// `o` holds whole rows; `a` starts at their first row.
#[inline(always)]
fn dense_rows_body<const FMA: bool>(
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    k: usize,
    cols: usize,
    o: &mut [f32],
) {
    for c0 in (0..cols).step_by(COL_BLOCK) {
        let c1 = (c0 + COL_BLOCK).min(cols);
        for (r, o_r) in o.chunks_mut(cols).enumerate() {
            let ob = &mut o_r[c0..c1];
            ob.copy_from_slice(&bias[c0..c1]);
            for (j, &s) in a[r * k..(r + 1) * k].iter().enumerate() {
                axpy::<FMA>(ob, s, &b[j * cols + c0..j * cols + c1]);
            }
        }
    }
}

/// A matrix operand of [`gemm`]: its elements and its (row, column) strides, so that a
/// transpose is only a swap of the strides.
pub(crate) type Strided<'a> = (&'a [f32], (usize, usize));

/// `c ← a b + beta c` for an `m × k` matrix `a` and a `k × n` matrix `b` (`(m, k, n)` =
/// `dims`) into the row-major `m × n` `c`: a small dense product through `matrixmultiply`'s
/// packed kernels (AVX2/FMA detected at run time).
///
/// # Panics
/// If a slice is too short for the extents and strides given.
pub(crate) fn gemm(
    (m, k, n): (usize, usize, usize),
    (a, (rsa, csa)): Strided<'_>,
    (b, (rsb, csb)): Strided<'_>,
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= m * n, "c holds m × n");
    if k > 0 {
        assert!(a.len() > (m - 1) * rsa + (k - 1) * csa, "a holds m × k");
        assert!(b.len() > (k - 1) * rsb + (n - 1) * csb, "b holds k × n");
    }
    let s = |x: usize| isize::try_from(x).expect("strides fit in isize");
    // SAFETY: the asserts above keep every element the strides address inside the slices;
    // `c` is a unique borrow, so it aliases neither `a` nor `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            s(rsa),
            s(csa),
            b.as_ptr(),
            s(rsb),
            s(csb),
            beta,
            c.as_mut_ptr(),
            s(n),
            1,
        );
    }
}

/// `d` (`rows × cols`) times `wᵀ` for `w` `k × cols`: a `rows × k` result, threaded over ranges
/// of rows.
pub(crate) fn matmul_t(d: &[f32], w: &[f32], rows: usize, k: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * k];
    if k == 0 || rows == 0 {
        return out;
    }
    let per = rows_per_task(rows);
    out.par_chunks_mut(per * k)
        .enumerate()
        .for_each(|(t, o)| matmul_t_task(&d[t * per * cols..], w, k, cols, o));
    out
}

gimvi_likelihoods::simd_dispatch!(
    fn matmul_t_task(
        d: &[f32],
        w: &[f32],
        k: usize,
        cols: usize,
        o: &mut [f32]
    ) = matmul_t_body::<true>, matmul_t_body::<false>;
);

/// `o` holds whole rows of the result; `d` starts at their first row.
#[inline(always)]
fn matmul_t_body<const FMA: bool>(d: &[f32], w: &[f32], k: usize, cols: usize, o: &mut [f32]) {
    o.fill(0.0);
    for c0 in (0..cols).step_by(COL_BLOCK) {
        let c1 = (c0 + COL_BLOCK).min(cols);
        for (r, o_r) in o.chunks_mut(k).enumerate() {
            let d_r = &d[r * cols + c0..r * cols + c1];
            for (j, oj) in o_r.iter_mut().enumerate() {
                *oj += dot::<FMA>(d_r, &w[j * cols + c0..j * cols + c1]);
            }
        }
    }
}

/// The inputs of a decoder head's parameter gradients ([`head_param_grads`]).
pub(crate) struct HeadGrad<'a> {
    /// The head's input h, row-major `rows × k`.
    pub h: &'a [f32],
    /// The upstream gradient of each cell's ln p, `rows`.
    pub d_o: &'a [f32],
    /// ∂ ln p / ∂l of the head's logits, row-major `rows × cols`.
    pub d: &'a [f32],
    /// The head's input width.
    pub k: usize,
    /// The model columns the head's `cols` columns are (`None`: all, in order).
    pub genes: Option<&'a [usize]>,
    /// The model's gene count (the full head's width).
    pub n_genes: usize,
}

gimvi_likelihoods::simd_dispatch!(
    /// The output head's ∂W (`k × width`, stored in `dw_t`) and ∂b (`width` = `db.len()`) for
    /// the block of columns starting at `c0`: ∂W_j += h_nj ∂o_n D_n and ∂b += ∂o_n D_n over
    /// the rows n.
    fn output_grad_task(
        g: &HeadGrad<'_>,
        cols: usize,
        c0: usize,
        dw_t: &mut [f32],
        db: &mut [f32]
    ) = output_grad_body::<true>, output_grad_body::<false>;
);

#[inline(always)]
fn output_grad_body<const FMA: bool>(
    g: &HeadGrad<'_>,
    cols: usize,
    c0: usize,
    dw_t: &mut [f32],
    db: &mut [f32],
) {
    let (h, k) = (g.h, g.k);
    let width = db.len();
    for (r, &s) in g.d_o.iter().enumerate() {
        if s == 0.0 {
            continue;
        }
        let d_r = &g.d[r * cols + c0..r * cols + c0 + width];
        axpy::<FMA>(db, s, d_r);
        for j in 0..k {
            let hs = h[r * k + j] * s;
            axpy::<FMA>(&mut dw_t[j * width..(j + 1) * width], hs, d_r);
        }
    }
}

/// A decoder head's ∂W (`k × n_genes`, row-major) and ∂b (`n_genes`): each row of D weighted by
/// ∂o_n, by blocks of columns (threaded), laid out as `k × cols` and scattered to the model
/// columns the head decoded (zero elsewhere).
pub(crate) fn head_param_grads(g: &HeadGrad<'_>) -> (Vec<f32>, Vec<f32>) {
    let rows = g.d_o.len();
    let cols = g.d.len() / rows.max(1);
    let (k, n_genes) = (g.k, g.n_genes);
    let blocks: Vec<(Vec<f32>, Vec<f32>)> = (0..cols.div_ceil(COL_BLOCK))
        .into_par_iter()
        .map(|bi| {
            let c0 = bi * COL_BLOCK;
            let width = COL_BLOCK.min(cols - c0);
            let mut dw_t = vec![0.0f32; k * width];
            let mut db = vec![0.0f32; width];
            output_grad_task(g, cols, c0, &mut dw_t, &mut db);
            (dw_t, db)
        })
        .collect();
    let mut dw = vec![0.0f32; k * cols];
    let mut db = Vec::with_capacity(cols);
    for (bi, (dw_t, db_b)) in blocks.iter().enumerate() {
        let (c0, width) = (bi * COL_BLOCK, db_b.len());
        for j in 0..k {
            dw[j * cols + c0..j * cols + c0 + width]
                .copy_from_slice(&dw_t[j * width..(j + 1) * width]);
        }
        db.extend_from_slice(db_b);
    }
    match g.genes {
        None => (dw, db),
        Some(genes) => {
            let mut full_w = vec![0.0f32; k * n_genes];
            let mut full_b = vec![0.0f32; n_genes];
            for (c, &gene) in genes.iter().enumerate() {
                for j in 0..k {
                    full_w[j * n_genes + gene] = dw[j * cols + c];
                }
                full_b[gene] = db[c];
            }
            (full_w, full_b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense_log1p(x: &[f32]) -> Vec<f32> {
        x.iter().map(|v| v.ln_1p()).collect()
    }

    #[test]
    fn sparse_products_match_dense_ones() {
        let (rows, cols, d_out) = (5, 2100, 3);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                if i % 7 == 0 || i % 11 == 3 {
                    (i % 5) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let s = SparseRows::log1p_of_dense(&x, cols);
        assert_eq!(s.rows(), rows);
        assert_eq!(s.nnz(), x.iter().filter(|&&v| v != 0.0).count());
        let xl = dense_log1p(&x);
        let w: Vec<f32> = (0..cols * d_out).map(|i| (i as f32 * 0.37).sin()).collect();
        let y = s.matmul(&w, d_out);
        let y_ref = dense_matmul(&xl, &w, &vec![0.0; d_out], rows, cols, d_out);
        for (a, b) in y.iter().zip(&y_ref) {
            approx::assert_abs_diff_eq!(a, b, epsilon = 1e-5);
        }
        let d: Vec<f32> = (0..rows * d_out).map(|i| (i as f32 * 0.71).cos()).collect();
        let dw = s.t_matmul(&d, d_out);
        // Xᵀ D by the definition.
        for j in 0..cols {
            for o in 0..d_out {
                let want: f32 = (0..rows).map(|r| xl[r * cols + j] * d[r * d_out + o]).sum();
                approx::assert_abs_diff_eq!(dw[j * d_out + o], want, epsilon = 1e-5);
            }
        }
        // D Wᵀ by the definition.
        let k = 4;
        let w2: Vec<f32> = (0..k * cols).map(|i| (i as f32 * 0.13).sin()).collect();
        let dd: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.29).cos()).collect();
        let g = matmul_t(&dd, &w2, rows, k, cols);
        for r in 0..rows {
            for j in 0..k {
                let want: f32 = (0..cols).map(|c| dd[r * cols + c] * w2[j * cols + c]).sum();
                approx::assert_abs_diff_eq!(g[r * k + j], want, epsilon = 1e-4);
            }
        }
    }
}
