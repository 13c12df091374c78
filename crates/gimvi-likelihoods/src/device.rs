//! Which compute backend a device runs on: the one test that decides whether gimvi's CPU host
//! kernels ([`crate::kernels`] and the model crate's fast paths) are used.

use burn::tensor::{Device, Tensor};

/// Whether `device` (with or without autodiff) is one of the CPU backends compiled into this
/// crate: burn-ndarray (feature `ndarray`) or burn-flex (feature `flex`). Decided from the
/// device's backend variant, not from its name.
pub fn is_cpu(device: &Device) -> bool {
    let inner = device.clone().without_autodiff();
    #[allow(unreachable_patterns)]
    match inner.as_dispatch() {
        #[cfg(feature = "ndarray")]
        burn::backend::DispatchDevice::NdArray(_) => true,
        #[cfg(feature = "flex")]
        burn::backend::DispatchDevice::Flex(_) => true,
        _ => false,
    }
}

/// Whether the host kernels run for tensors on `device`: a CPU backend ([`is_cpu`]), unless
/// the environment variable `GIMVI_NO_FUSED` is set (any value), which makes every computation
/// use burn's tensor operations instead — a check that the fast paths change nothing but
/// speed (`docs/performance.md`).
pub fn host_kernels(device: &Device) -> bool {
    std::env::var_os("GIMVI_NO_FUSED").is_none() && is_cpu(device)
}

/// A float tensor's values on the host as f32, row-major (the copy every host path starts
/// from).
pub fn host_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("an f32 tensor")
}
