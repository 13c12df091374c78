//! Count likelihoods, KL divergences and special functions for gimVI (Lopez et al. 2019),
//! written with burn tensor operations so that they run on any burn device (CPU or GPU) and
//! are differentiated by burn's autodiff.
//!
//! burn 0.22 has no backend type parameter on `Tensor`: the [`burn::tensor::Device`] a tensor
//! lives on decides which backend runs it (`Device::ndarray()`, `Device::flex()`,
//! `Device::wgpu(..)`, `Device::cuda(0)`, each behind its cargo feature, and `.autodiff()` for
//! gradients). Every function here is therefore device-generic: it works unchanged on whichever
//! device its inputs were created on.
//!
//! * [`log_nb`], [`log_zinb`], [`log_poisson`]: elementwise log-probabilities in saddle-point
//!   form, accurate in `f32` up to counts of 10⁵ (see [`count`] for the derivation);
//! * [`kl_normal_standard`], [`kl_normal`]: the Gaussian KL terms of the two ELBOs;
//! * [`lgamma`]: ln Γ for float tensors (burn has none), differentiable, gradient = digamma;
//! * [`CountLikelihood`]: the per-dataset choice (ZINB | NB | Poisson) as a value;
//! * [`device`]: whether a device is one of the CPU backends, where gimvi runs its host
//!   kernels instead of chains of tensor operations.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use gimvi_likelihoods::log_nb;
//!
//! let device = Device::default();
//! let x = Tensor::<2>::from_floats([[0.0, 3.0]], &device);
//! let mu = Tensor::<2>::from_floats([[1.0, 2.0]], &device);
//! let theta = Tensor::<2>::from_floats([[5.0, 5.0]], &device);
//! let lp = log_nb(x, mu, theta);
//! assert_eq!(lp.dims(), [1, 2]);
//! ```
#![warn(missing_docs)]

/// Defines `fn name(args) -> ret` that runs `fast(args)` compiled for AVX2 + FMA when the CPU
/// has them (a runtime check, cached by the standard library) and `slow(args)` otherwise:
/// `simd_dispatch!(fn name(a: &[f32], b: f32) -> f32 = body::<true>, body::<false>);`.
/// `fast` and `slow` are usually the same `#[inline(always)]` body (or two instances of a
/// generic one), so that the AVX2 build is the same safe code compiled for wider vectors. The
/// check runs on every call: put it around per-row or per-task kernels, inside rayon closures,
/// so that the worker threads execute the vector code.
#[doc(hidden)]
#[macro_export]
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?
        = $fast:expr, $slow:expr;) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $fast($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only
                    // requirement of a `target_feature` function; the body is safe Rust.
                    return unsafe { fast($($arg),*) };
                }
            }
            $slow($($arg),*)
        }
    };
}

pub mod count;
pub mod device;
mod fastmath;
#[doc(hidden)]
pub mod kernels;
pub mod kl;
pub mod special;

use burn::tensor::Tensor;

pub use count::{log_nb, log_poisson, log_zinb, EPS};
pub use kl::{kl_normal, kl_normal_standard};
pub use special::{expm1, lgamma, log1p, log1p_series, stirling_correction};

/// The observation model of one dataset (Lopez et al. 2019, Eq. 3 and Eq. 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountLikelihood {
    /// Zero-inflated negative binomial (scRNA-seq default): needs θ and dropout logits.
    Zinb,
    /// Negative binomial (scRNA-seq without zero inflation; starMAP): needs θ.
    Nb,
    /// Poisson (smFISH / osmFISH): needs only the mean.
    Poisson,
}

/// A parameter that the chosen likelihood needs was not supplied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LikelihoodError {
    /// The likelihood needs the inverse dispersion θ.
    #[error("{0:?} likelihood needs the inverse dispersion theta, none was given")]
    MissingTheta(CountLikelihood),
    /// The likelihood needs dropout logits.
    #[error("{0:?} likelihood needs dropout logits, none were given")]
    MissingDropout(CountLikelihood),
}

impl CountLikelihood {
    /// Whether this likelihood has an inverse-dispersion parameter θ.
    pub fn has_dispersion(self) -> bool {
        matches!(self, Self::Zinb | Self::Nb)
    }

    /// Whether this likelihood has a zero-inflation (dropout) head.
    pub fn has_dropout(self) -> bool {
        matches!(self, Self::Zinb)
    }

    /// Elementwise log-probability of counts `x` under mean `mu` and, where the likelihood has
    /// them, inverse dispersion `theta` and dropout logits (ignored otherwise).
    pub fn log_prob<const D: usize>(
        self,
        x: Tensor<D>,
        mu: Tensor<D>,
        theta: Option<Tensor<D>>,
        dropout_logits: Option<Tensor<D>>,
    ) -> Result<Tensor<D>, LikelihoodError> {
        match self {
            Self::Poisson => Ok(log_poisson(x, mu)),
            Self::Nb => {
                let theta = theta.ok_or(LikelihoodError::MissingTheta(self))?;
                Ok(log_nb(x, mu, theta))
            }
            Self::Zinb => {
                let theta = theta.ok_or(LikelihoodError::MissingTheta(self))?;
                let logits = dropout_logits.ok_or(LikelihoodError::MissingDropout(self))?;
                Ok(log_zinb(x, mu, theta, logits))
            }
        }
    }
}
