//! Choosing the compute backend at run time: `cpu` (burn's flex, always present), `wgpu` and
//! `cuda` (cargo features). Asking for a backend that is not compiled in, or that has no device,
//! is a clear error instead of a panic deep inside a driver.

use burn::tensor::backend::AutodiffBackend;

use crate::config::BackendKind;
use crate::error::{Result, TrainError};

/// Work that runs on whichever backend the user chose.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B` and `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// The backends this binary was built with.
pub fn compiled_backends() -> Vec<BackendKind> {
    let mut out = vec![BackendKind::Cpu];
    if cfg!(feature = "wgpu") {
        out.push(BackendKind::Wgpu);
    }
    if cfg!(feature = "cuda") {
        out.push(BackendKind::Cuda);
    }
    out
}

/// Refuses a device index that cannot exist without opening a device: any but 0 on the CPU,
/// which is one device (all its cores), so another index is a mistake, not a choice. (A GPU
/// index is checked when its driver is asked.)
pub fn check_device_index(kind: BackendKind, index: usize) -> Result<()> {
    if kind == BackendKind::Cpu && index != 0 {
        return Err(TrainError::Backend {
            backend: "cpu".into(),
            message: format!(
                "device {index} does not exist: the CPU backend has one device, 0 (it uses \
                 every core); device indices select GPUs with wgpu or cuda"
            ),
        });
    }
    Ok(())
}

/// Runs `job` on the backend `kind`, device `index`.
pub fn dispatch<J: BackendJob>(kind: BackendKind, index: usize, job: J) -> Result<J::Output> {
    check_device_index(kind, index)?;
    match kind {
        BackendKind::Cpu => {
            type B = burn::backend::Autodiff<burn::backend::Flex>;
            job.run::<B>(Default::default())
        }
        BackendKind::Wgpu => run_wgpu(index, job),
        BackendKind::Cuda => run_cuda(index, job),
    }
}

/// The environment variable that turns burn's operation fusion off on the GPU backends.
pub const FUSION_ENV: &str = "PGAN_GPU_FUSION";

/// Whether the GPU backends run with burn's fusion (`PGAN_GPU_FUSION`, default on), after
/// checking `PGAN_GPU_CONV` too: both are read once per process, so a typo is an error here
/// rather than a silently different benchmark.
///
/// Fusion stays the default: it merges the step's many elementwise passes (leaky ReLU, pixel
/// norm, the losses, Adam), and the conv op works under it (as a custom operation in the
/// fusion stream, a fusion barrier like burn's own conv2d); `scripts/gpu_check.sh` measures
/// both.
#[allow(dead_code)]
fn gpu_settings(backend: &str) -> Result<bool> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    pgan_cube::ConvChoice::from_env().map_err(|e| TrainError::Backend {
        backend: backend.into(),
        message: e.to_string(),
    })?;
    fusion_setting(std::env::var(FUSION_ENV).ok().as_deref(), backend)
}

/// Sets the convolutions' operand type for this process (`run.precision`, which the config
/// check has already limited to f32 on every backend but cuda). bf16 runs in pgan-cube's
/// implicit-GEMM op, so `PGAN_GPU_CONV=autotune` (burn's f32 `conv2d`) cannot honour it.
pub fn apply_precision(precision: crate::config::Precision, backend: BackendKind) -> Result<()> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        use crate::config::Precision;
        if precision == Precision::Bf16
            && pgan_cube::ConvChoice::from_env() == Ok(pgan_cube::ConvChoice::Autotune)
        {
            return Err(TrainError::Backend {
                backend: backend.to_string(),
                message: format!(
                    "run.precision = \"bf16\" runs in pgan-cube's implicit-GEMM convolution, \
                     but {}=autotune asks for burn's f32 conv2d",
                    pgan_cube::CONV_ENV
                ),
            });
        }
        pgan_cube::set_conv_precision(match precision {
            Precision::F32 => pgan_cube::ConvPrecision::F32,
            Precision::Bf16 => pgan_cube::ConvPrecision::Bf16,
        });
    }
    let _ = (precision, backend);
    Ok(())
}

/// Parses a `PGAN_GPU_FUSION` value (`None` when unset).
#[allow(dead_code)]
fn fusion_setting(value: Option<&str>, backend: &str) -> Result<bool> {
    match value.map(str::trim) {
        None | Some("") | Some("on") | Some("1") | Some("true") => Ok(true),
        Some("off") | Some("0") | Some("false") => Ok(false),
        Some(other) => Err(TrainError::Backend {
            backend: backend.into(),
            message: format!("{FUSION_ENV}={other:?}: expected `on` or `off`"),
        }),
    }
}

#[cfg(feature = "wgpu")]
fn run_wgpu<J: BackendJob>(index: usize, job: J) -> Result<J::Output> {
    use burn::backend::wgpu::WgpuDevice;
    // Index 0 is wgpu's preferred adapter (a discrete GPU if there is one, else e.g. lavapipe);
    // other indices name the n-th discrete GPU.
    let device = if index == 0 {
        WgpuDevice::DefaultDevice
    } else {
        WgpuDevice::DiscreteGpu(index)
    };
    if gpu_settings("wgpu")? {
        type B = burn::backend::Autodiff<pgan_cube::WgpuFused>;
        probe::<B>(&device, "wgpu", index)?;
        job.run::<B>(device)
    } else {
        type B = burn::backend::Autodiff<pgan_cube::WgpuPlain>;
        probe::<B>(&device, "wgpu", index)?;
        job.run::<B>(device)
    }
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu<J: BackendJob>(_index: usize, _job: J) -> Result<J::Output> {
    Err(not_compiled("wgpu"))
}

#[cfg(feature = "cuda")]
fn run_cuda<J: BackendJob>(index: usize, job: J) -> Result<J::Output> {
    use burn::backend::cuda::CudaDevice;
    type B = burn::backend::Autodiff<pgan_cube::CudaFused>;
    // cubecl loads libcuda lazily and panics inside its loader when the driver is missing: look
    // for the driver's files first, so that no driver code runs on a machine without one.
    if !cuda_driver_files_present() {
        return Err(TrainError::Backend {
            backend: "cuda".into(),
            message: "no CUDA device or driver found on this machine".into(),
        });
    }
    let device = CudaDevice::new(index);
    if gpu_settings("cuda")? {
        probe::<B>(&device, "cuda", index)?;
        job.run::<B>(device)
    } else {
        type Plain = burn::backend::Autodiff<pgan_cube::CudaPlain>;
        probe::<Plain>(&device, "cuda", index)?;
        job.run::<Plain>(device)
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: BackendJob>(_index: usize, _job: J) -> Result<J::Output> {
    Err(not_compiled("cuda"))
}

/// Whether an NVIDIA device node and a `libcuda.so` on the usual library paths exist.
#[cfg(feature = "cuda")]
fn cuda_driver_files_present() -> bool {
    use std::path::Path;
    let node = ["/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !node {
        return false;
    }
    let mut dirs: Vec<String> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/compat",
            "/usr/lib/wsl/lib",
            "/usr/local/nvidia/lib64",
        ]
        .map(str::to_owned),
    );
    dirs.iter().any(|d| {
        ["libcuda.so", "libcuda.so.1"]
            .iter()
            .any(|lib| Path::new(d).join(lib).exists())
    })
}

/// Fails when `kind` is not compiled into this binary (what [`dispatch`] would say), without
/// touching a device.
pub fn check_compiled(kind: BackendKind) -> Result<()> {
    if compiled_backends().contains(&kind) {
        return Ok(());
    }
    #[cfg(not(all(feature = "wgpu", feature = "cuda")))]
    return Err(not_compiled(&kind.to_string()));
    #[cfg(all(feature = "wgpu", feature = "cuda"))]
    unreachable!("every backend is compiled in")
}

#[cfg(not(all(feature = "wgpu", feature = "cuda")))]
fn not_compiled(name: &str) -> TrainError {
    TrainError::Backend {
        backend: name.into(),
        message: format!(
            "not compiled into this binary (it has: {}); rebuild with `cargo build --release --features {name}`",
            compiled_backends().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Touches the device once, turning a driver panic into an error.
///
/// cubecl initialises a device on its own server thread: when that fails (no adapter at the
/// requested index, no driver), the informative panic is on that thread and the caller only sees
/// a closed channel. A temporary panic hook keeps the first panic message of any thread, so the
/// error says what the driver said, and nothing is printed as a crash.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn probe<B: AutodiffBackend>(device: &B::Device, name: &str, index: usize) -> Result<()> {
    use std::sync::{Arc, Mutex};
    let first_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let previous_hook = std::panic::take_hook();
    {
        let first_panic = first_panic.clone();
        std::panic::set_hook(Box::new(move |info| {
            let mut slot = first_panic.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(panic_text(info.payload()));
            }
        }));
    }
    let device = device.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let t = burn::tensor::Tensor::<B, 1>::ones([4], &device);
        crate::host_read::read_scalar(t.sum())
    }));
    std::panic::set_hook(previous_hook);
    match result {
        Ok(v) if (v - 4.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(TrainError::Backend {
            backend: name.into(),
            message: format!("device self-test computed {v} instead of 4"),
        }),
        Err(panic) => {
            let reason = first_panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| panic_text(&*panic));
            Err(TrainError::NoDevice {
                backend: name.into(),
                index,
                reason,
            })
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown error".into())
}

/// Bytes that the GPU runtime's memory pool holds on `device`: `(in use, reserved)`. `None` on
/// the CPU backend, whose memory is the process's own (`Mem/peak_rss_mb`).
pub fn device_memory<D: 'static>(device: &D) -> Option<(u64, u64)> {
    #[allow(unused_variables)]
    let device = device as &dyn std::any::Any;
    #[cfg(feature = "wgpu")]
    if let Some(device) = device.downcast_ref::<burn::backend::wgpu::WgpuDevice>() {
        use cubecl::Runtime;
        let usage = cubecl::wgpu::WgpuRuntime::client(device)
            .memory_usage()
            .ok()?;
        return Some((usage.bytes_in_use, usage.bytes_reserved));
    }
    #[cfg(feature = "cuda")]
    if let Some(device) = device.downcast_ref::<burn::backend::cuda::CudaDevice>() {
        use cubecl::Runtime;
        let usage = cubecl::cuda::CudaRuntime::client(device)
            .memory_usage()
            .ok()?;
        return Some((usage.bytes_in_use, usage.bytes_reserved));
    }
    None
}

/// Returns the GPU pool's unused pages on backend `kind`, device `index`, to the driver (a no-op
/// on the CPU), so that the next run's `Mem/device_peak_reserved_mb` starts from what is still
/// in use rather than from the pages an earlier run left in the pool (the benchmark's
/// per-resolution peaks).
pub fn release_device_memory(kind: BackendKind, index: usize) {
    let _ = index; // read only by the GPU backends
    match kind {
        BackendKind::Cpu => {}
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            use cubecl::Runtime;
            let device = if index == 0 {
                burn::backend::wgpu::WgpuDevice::DefaultDevice
            } else {
                burn::backend::wgpu::WgpuDevice::DiscreteGpu(index)
            };
            cubecl::wgpu::WgpuRuntime::client(&device).memory_cleanup();
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            use cubecl::Runtime;
            let device = burn::backend::cuda::CudaDevice::new(index);
            cubecl::cuda::CudaRuntime::client(&device).memory_cleanup();
        }
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ElementConversion;

    struct Sum;
    impl BackendJob for Sum {
        type Output = f32;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<f32> {
            Ok(burn::tensor::Tensor::<B, 1>::ones([3], &device)
                .sum()
                .into_scalar()
                .elem::<f32>())
        }
    }

    #[test]
    fn cpu_is_always_available() {
        assert_eq!(dispatch(BackendKind::Cpu, 0, Sum).unwrap(), 3.0);
        let err = dispatch(BackendKind::Cpu, 99, Sum).unwrap_err().to_string();
        assert!(
            err.contains("device 99 does not exist") && err.contains("one device"),
            "{err}"
        );
        let cpu: burn::backend::flex::FlexDevice = Default::default();
        assert_eq!(device_memory(&cpu), None, "the CPU has no device pool");
    }

    #[test]
    fn fusion_settings_parse_and_a_bad_one_is_a_clear_error() {
        assert!(fusion_setting(None, "wgpu").unwrap());
        assert!(fusion_setting(Some("on"), "wgpu").unwrap());
        assert!(!fusion_setting(Some(" off "), "cuda").unwrap());
        let err = fusion_setting(Some("maybe"), "wgpu")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PGAN_GPU_FUSION") && err.contains("maybe") && err.contains("`off`"),
            "{err}"
        );
    }

    /// Without the driver's files, no driver code runs; with them, the probe answers either way.
    #[cfg(feature = "cuda")]
    #[test]
    fn a_machine_without_the_cuda_driver_is_an_error_not_a_panic() {
        let result = dispatch(BackendKind::Cuda, 0, Sum);
        if !cuda_driver_files_present() {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("no CUDA device or driver"), "{err}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_compiled_in_is_a_clear_error() {
        let err = dispatch(BackendKind::Cuda, 0, Sum).unwrap_err().to_string();
        assert!(
            err.contains("not compiled") && err.contains("--features cuda"),
            "{err}"
        );
    }
}
