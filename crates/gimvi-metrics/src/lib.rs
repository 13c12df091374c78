//! Metrics for gimVI (Lopez et al. 2019): how well imputed genes match held-out measurements
//! and how well the joint latent space mixes datasets without erasing biology.
//!
//! * [`correlation`]: Spearman (average ranks for ties) and Pearson per gene, medians,
//!   quartiles, the relative change δρ of Table 1;
//! * [`knn`]: exact k-nearest neighbours (k-d tree, rayon-parallel queries);
//! * [`integration`]: entropy of mixing (negative KL form for unbalanced datasets) and k-NN
//!   purity (Jaccard of neighbourhoods), over a range of k;
//! * [`intervals`]: coverage, calibration error and widths of prediction intervals;
//! * [`li2022`]: Li et al. 2022's per-gene PCC, SSIM, RMSE and JS and their accuracy score;
//! * [`regression`]: k-NN regression, the paper's baseline imputer on any shared space;
//! * [`protocol`]: the held-out-gene protocol (seeded K-fold gene split, any [`protocol::Imputer`],
//!   JSON and markdown reports) with two model-free baselines.
//!
//! Everything here is plain Rust on `ndarray` views: no tensors, no backend.
#![warn(missing_docs)]

pub mod correlation;
pub mod integration;
pub mod intervals;
pub mod knn;
pub mod li2022;
pub mod protocol;
pub mod regression;

pub use ndarray;

/// Errors of the metrics and the protocol. Each names what was wrong with which input.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Two inputs that must agree in size do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which inputs.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size found.
        got: usize,
    },
    /// An input is empty.
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// An input holds NaN or ±∞.
    #[error("non-finite value (NaN or infinity) in {0}")]
    NonFinite(&'static str),
    /// Counts are negative.
    #[error("negative value in {0}; counts must be ≥ 0")]
    Negative(&'static str),
    /// k is 0 or larger than the number of available neighbours.
    #[error("invalid k = {k}: must be between 1 and {available}")]
    InvalidK {
        /// The requested k.
        k: usize,
        /// Neighbours available.
        available: usize,
    },
    /// Not enough genes for the requested number of folds.
    #[error("cannot split {genes} shared genes into {folds} folds (need 2 ≤ folds ≤ genes)")]
    TooFewGenes {
        /// Shared genes.
        genes: usize,
        /// Requested folds.
        folds: usize,
    },
    /// A given split of the genes into folds is not a partition.
    #[error("invalid gene folds: {0}")]
    InvalidFolds(String),
    /// An imputation method failed.
    #[error("imputer '{method}' failed: {source}")]
    Imputer {
        /// Method name.
        method: String,
        /// Its error.
        source: protocol::ImputerError,
    },
}
