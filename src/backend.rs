//! Run-time choice among the backends compiled into this build.

use std::fmt;
use std::str::FromStr;

use std::sync::Mutex;

use burn::tensor::{Device, Tensor, TensorData};

/// A compute backend gimvi can run on. Which ones are usable depends on the cargo features the
/// crate was built with; [`BackendKind::compiled`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// burn-ndarray on the CPU (cargo feature `ndarray`, on by default).
    NdArray,
    /// burn-flex, burn's pure-Rust CPU backend (cargo feature `flex`).
    Flex,
    /// wgpu: Vulkan, Metal or DX12 GPUs (cargo feature `wgpu`).
    Wgpu,
    /// CUDA on NVIDIA GPUs (cargo feature `cuda`).
    Cuda,
}

/// Errors choosing a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The name is not one of gimvi's backends.
    #[error("unknown backend '{0}': expected one of auto, ndarray, flex, wgpu, cuda")]
    Unknown(String),
    /// The backend exists but this build does not include it.
    #[error(
        "backend '{kind}' is not compiled into this build; rebuild with `--features {feature}` \
         (compiled in: {available})"
    )]
    NotCompiled {
        /// The requested backend.
        kind: BackendKind,
        /// The cargo feature that enables it.
        feature: &'static str,
        /// Backends this build has, comma-separated.
        available: String,
    },
    /// The backend is compiled in but cannot run here (no GPU adapter, no driver, …).
    #[error("backend '{kind}' is compiled in but unusable on this machine: {reason}")]
    Unavailable {
        /// The requested backend.
        kind: BackendKind,
        /// What went wrong when a first tensor operation was tried.
        reason: String,
    },
}

impl BackendKind {
    /// Every backend gimvi knows, compiled in or not.
    pub const ALL: [BackendKind; 4] = [Self::NdArray, Self::Flex, Self::Wgpu, Self::Cuda];

    /// The name used on the command line and in cargo features.
    pub fn name(self) -> &'static str {
        match self {
            Self::NdArray => "ndarray",
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::NdArray => cfg!(feature = "ndarray"),
            Self::Flex => cfg!(feature = "flex"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends this build includes.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled()).collect()
    }

    /// Order of preference for [`BackendKind::default`]: flex first, because it trains 1.5× (33
    /// genes) to ~10× (20,000 genes) faster than ndarray on the same CPU (docs/performance.md),
    /// then ndarray. GPU backends are only used when asked for.
    pub const PREFERENCE: [BackendKind; 2] = [Self::Flex, Self::NdArray];

    /// The burn device for this backend (its default adapter / GPU 0), without autodiff.
    ///
    /// Device creation is lazy in burn: a missing GPU adapter or driver surfaces at the first
    /// tensor operation, not here.
    pub fn device(self) -> Result<Device, BackendError> {
        if !self.is_compiled() {
            return Err(BackendError::NotCompiled {
                kind: self,
                feature: self.name(),
                available: Self::compiled()
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(self.device_unchecked())
    }

    /// Like [`BackendKind::device`], and also checks that the backend works on this machine by
    /// running a first small computation on it (burn initialises GPU adapters lazily and panics
    /// when none is found; that panic is caught here and becomes
    /// [`BackendError::Unavailable`]).
    pub fn open(self) -> Result<Device, BackendError> {
        static PROBE: Mutex<()> = Mutex::new(());
        let device = self.device()?;
        let probe_device = device.clone();
        // Serialise the probes: the panic hook is process-wide.
        let _guard = PROBE.lock().unwrap_or_else(|e| e.into_inner());
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let outcome = std::panic::catch_unwind(move || {
            let t =
                Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0], [3]), &probe_device);
            t.sum().into_data().convert::<f32>().try_to_vec::<f32>()
        });
        std::panic::set_hook(previous_hook);
        let reason = match outcome {
            Ok(Ok(v)) if v.first() == Some(&6.0) => return Ok(device),
            Ok(Ok(v)) => format!("a test sum gave {v:?} instead of [6.0]"),
            Ok(Err(e)) => format!("reading a test tensor back failed: {e:?}"),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the backend panicked during initialisation".to_string()),
        };
        Err(BackendError::Unavailable {
            kind: self,
            reason: format!("no usable adapter or driver was found ({reason})"),
        })
    }

    #[allow(unreachable_code, deprecated)]
    fn device_unchecked(self) -> Device {
        match self {
            #[cfg(feature = "ndarray")]
            Self::NdArray => Device::ndarray(),
            #[cfg(feature = "flex")]
            Self::Flex => Device::flex(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "cuda")]
            Self::Cuda => Device::cuda(0),
            #[allow(unreachable_patterns)]
            _ => unreachable!("device_unchecked called for a backend that is not compiled in"),
        }
    }
}

impl Default for BackendKind {
    /// The preferred compiled-in CPU backend ([`BackendKind::PREFERENCE`]: flex in a default
    /// build), else the first compiled-in backend.
    fn default() -> Self {
        Self::PREFERENCE
            .into_iter()
            .find(|k| k.is_compiled())
            .or_else(|| Self::compiled().first().copied())
            .unwrap_or(BackendKind::NdArray)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self::default());
        }
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| BackendError::Unknown(s.to_string()))
    }
}

/// Whether `device` computes on the CPU, where independent trainings can run side by side on
/// threads (the GPU backends run one at a time).
pub(crate) fn is_cpu(device: &Device) -> bool {
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if *device == Device::ndarray() {
        return true;
    }
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return true;
    }
    let _ = device;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!("NdArray".parse::<BackendKind>(), Ok(BackendKind::NdArray));
        assert_eq!(" cuda ".parse::<BackendKind>(), Ok(BackendKind::Cuda));
        let err = "tpu".parse::<BackendKind>().unwrap_err();
        assert!(err.to_string().contains("unknown backend 'tpu'"), "{err}");
    }

    #[test]
    fn default_build_has_ndarray_and_refuses_missing_backends() {
        assert!(BackendKind::NdArray.is_compiled());
        assert!(BackendKind::NdArray.open().is_ok());
        assert!(BackendKind::Flex.is_compiled());
        assert_eq!("auto".parse::<BackendKind>(), Ok(BackendKind::Flex));
        assert_eq!(BackendKind::default(), BackendKind::Flex);
        for kind in BackendKind::ALL {
            match kind.device() {
                Ok(_) => assert!(kind.is_compiled()),
                Err(e) => {
                    assert!(!kind.is_compiled());
                    assert!(matches!(kind.open(), Err(BackendError::NotCompiled { .. })));
                    assert!(e.to_string().contains("--features"), "{e}");
                }
            }
        }
    }
}
