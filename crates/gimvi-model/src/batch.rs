//! Minibatches of a CSR count matrix as dense rows, on the host or as a tensor.

use burn::tensor::{Device, Tensor, TensorData};
use gimvi_data::CsrMatrix;

/// The given rows of a CSR matrix as a dense `[rows, genes]` tensor.
pub(crate) fn dense_batch(counts: &CsrMatrix, rows: &[usize], device: &Device) -> Tensor<2> {
    let v = dense_rows(counts, rows);
    Tensor::from_data(TensorData::new(v, [rows.len(), counts.n_cols()]), device)
}

/// The given rows of a CSR matrix, densified on the host (row-major `rows × genes`).
pub(crate) fn dense_rows(counts: &CsrMatrix, rows: &[usize]) -> Vec<f32> {
    let g = counts.n_cols();
    let mut v = vec![0f32; rows.len() * g];
    for (i, &r) in rows.iter().enumerate() {
        for (c, x) in counts.row(r) {
            v[i * g + c] = x;
        }
    }
    v
}
