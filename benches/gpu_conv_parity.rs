//! The GPU convolution op (`pgan_cube`) against an f64 host reference, on the paper networks'
//! layer shapes: value, input, weight and bias gradients, per cubek algorithm and precision
//! (`pgan_cube::parity`); then one whole training step (D loss with its penalty, G loss, every
//! gradient) against the CPU's from the same weights (`pgan_train::step_parity`). `scripts/gpu_check.sh` runs it before it times anything, so a device
//! run says whether the implicit-GEMM kernels it times compute the convolution.
//!
//! ```sh
//! cargo bench -p pgan-train --features cuda,wgpu --bench gpu_conv_parity --no-run
//! PGAN_BENCH_BACKEND=cuda target/.../gpu_conv_parity-<hash>
//! ```
//! Environment: `PGAN_BENCH_BACKEND` (`cuda` or `wgpu`, default `cuda`), `PGAN_PARITY_CASES`
//! (`paper`, default, or `small` for a software rasteriser), `PGAN_PARITY_CONVS` (a space list of
//! `PGAN_GPU_CONV` spellings naming implicit GEMMs, default `implicit-gemm`),
//! `PGAN_PARITY_PRECISIONS` (a space list of `f32` and `bf16` for the first conv and the step;
//! default both on CUDA, `f32` on wgpu; the other convs run f32, as the benchmark times them),
//! `PGAN_PARITY_PARTS` (`convs`, `steps` or both, the default). Every check runs on
//! burn's fused backend; the first conv's f32 also on the plain one. Prints one JSON line per check; exits 1 when any check fails.

fn main() {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    std::process::exit(gpu::run());
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        eprintln!("gpu_conv_parity needs the `wgpu` or `cuda` feature");
        std::process::exit(2);
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::time::Instant;

    use pgan_cube::parity::{self, ConvCase, Parity, Reference, QUANTITIES};
    use pgan_cube::{ConvChoice, ConvPrecision, Gemm, GemmConvBackend};

    /// One check on `B`, as a JSON line; false when it failed or panicked.
    fn report<B: GemmConvBackend>(
        device: &B::Device,
        backend: &str,
        fusion: &str,
        reference: &Reference,
        gemm: Gemm,
        conv: &str,
    ) -> bool {
        let start = Instant::now();
        let case = reference.case();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            parity::check_against::<B>(device, reference, gemm)
        }));
        let mut row = serde_json::json!({
            "bench": "gpu_conv_parity",
            "backend": backend,
            "fusion": fusion,
            "conv": conv,
            "precision": match gemm.precision {
                ConvPrecision::F32 => "f32",
                ConvPrecision::Bf16 => "bf16",
            },
            "case": [case.batch, case.c_in, case.c_out, case.size, case.kernel],
            "bias": case.bias,
        });
        let ok = match outcome {
            Ok(result) => {
                fill(&mut row, &result);
                result.ok()
            }
            Err(panic) => {
                row["error"] = panic_text(panic).into();
                row["ok"] = false.into();
                false
            }
        };
        row["ms"] = (start.elapsed().as_secs_f64() * 1e3).round().into();
        println!("{row}");
        ok
    }

    fn fill(row: &mut serde_json::Value, result: &Parity) {
        let json = |errors: &[Option<f64>; 4]| {
            let mut map = serde_json::Map::new();
            for (name, e) in QUANTITIES.iter().zip(errors) {
                if let Some(e) = e {
                    // NaN (a non-finite or missing result) is not JSON: a string says it.
                    let v = serde_json::Number::from_f64(*e)
                        .map(serde_json::Value::Number)
                        .unwrap_or_else(|| "NaN".into());
                    map.insert(name.to_string(), v);
                }
            }
            serde_json::Value::Object(map)
        };
        row["relative_rms"] = json(&result.errors.relative_rms);
        row["relative_max"] = json(&result.errors.relative_max);
        row["rms_tolerance"] = result.rms_tolerance().into();
        row["max_tolerance"] = result.max_tolerance().into();
        row["gemm_passes"] = result.gemm_passes.into();
        row["fallback_passes"] = result.fallback_passes.into();
        row["ok"] = result.ok().into();
    }

    fn list(name: &str, default: &str) -> Vec<String> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// The checks of one backend: every conv × precision fused, the default f32 also plain.
    fn run_on<Fused: GemmConvBackend, Plain: GemmConvBackend>(
        fused: &Fused::Device,
        plain: &Plain::Device,
        backend: &str,
        cases: &[ConvCase],
        convs: &[String],
        precisions: &[ConvPrecision],
    ) -> bool {
        // The host results once per case, for every kernel checked against them.
        let references: Vec<Reference> = cases.iter().map(|&c| Reference::new(c)).collect();
        let mut all_ok = true;
        for conv in convs {
            let (algorithm, tile) = match conv.parse::<ConvChoice>() {
                Ok(ConvChoice::ImplicitGemm { algorithm, tile }) => (algorithm, tile),
                Ok(ConvChoice::Autotune) => {
                    eprintln!("PGAN_PARITY_CONVS: `autotune` is burn's conv2d, not this op");
                    return false;
                }
                Err(e) => {
                    eprintln!("PGAN_PARITY_CONVS: {e}");
                    return false;
                }
            };
            // The other algorithms are timed in f32 only.
            let precisions = if conv == &convs[0] {
                precisions
            } else {
                &[ConvPrecision::F32][..]
            };
            for &precision in precisions {
                let gemm = Gemm {
                    algorithm,
                    tile,
                    precision,
                };
                for reference in &references {
                    all_ok &= report::<Fused>(fused, backend, "on", reference, gemm, conv);
                }
                if conv == &convs[0] && precision == ConvPrecision::F32 {
                    for reference in &references {
                        all_ok &= report::<Plain>(plain, backend, "off", reference, gemm, conv);
                    }
                }
            }
        }
        all_ok
    }

    /// One training step on `B` against the CPU (`pgan_train::step_parity`) at each
    /// precision, as JSON lines; false when one failed or panicked.
    fn step_checks<B: burn::tensor::backend::AutodiffBackend>(
        device: &B::Device,
        backend: &str,
        precisions: &[ConvPrecision],
        small: bool,
    ) -> bool {
        use pgan_train::step_parity::{check_step, STEP_QUANTITIES};
        // A narrow network (the CPU computes the reference) with the paper's layers, fading
        // in 32x32; a batch of one minibatch-stddev group and one of two.
        let (model, resolution) = if small {
            (pgan_model::ModelConfig::cpu_small(16).with_fmap_max(32), 16)
        } else {
            (pgan_model::ModelConfig::cpu_small(32), 32)
        };
        let loss = pgan_train::config::LossConfig::default();
        let mut all_ok = true;
        for &precision in precisions {
            pgan_cube::set_conv_precision(precision);
            // TF32 rounds the convolutions' operands to 10 bits, bf16 to 7; a wrong kernel or
            // layout is off by O(1). Lavapipe computes in plain f32.
            let tolerance = match (backend, precision) {
                ("wgpu", _) => 1e-3,
                (_, ConvPrecision::F32) => 5e-2,
                (_, ConvPrecision::Bf16) => 2e-1,
            };
            for batch in [4, 8] {
                let start = Instant::now();
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    check_step::<B>(device, &model, &loss, resolution, 0.5, batch, 1, tolerance)
                }));
                let mut row = serde_json::json!({
                    "bench": "gpu_step_parity",
                    "backend": backend,
                    "precision": match precision {
                        ConvPrecision::F32 => "f32",
                        ConvPrecision::Bf16 => "bf16",
                    },
                    "model": "cpu-small",
                    "fmap_max": model.fmap_max,
                    "resolution": resolution,
                    "batch": batch,
                    "tolerance": tolerance,
                });
                let ok = match outcome {
                    Ok(result) => {
                        let number = |v: f64| {
                            serde_json::Number::from_f64(v)
                                .map(serde_json::Value::Number)
                                .unwrap_or_else(|| "NaN".into())
                        };
                        let mut rms = serde_json::Map::new();
                        let mut worst = serde_json::Map::new();
                        for (name, e) in STEP_QUANTITIES.iter().zip(&result.errors) {
                            rms.insert(name.to_string(), number(e.relative_rms));
                            worst.insert(name.to_string(), number(e.worst_tensor));
                        }
                        row["relative_rms"] = rms.into();
                        row["worst_tensor"] = worst.into();
                        result.ok()
                    }
                    Err(panic) => {
                        row["error"] = panic_text(panic).into();
                        false
                    }
                };
                row["ok"] = ok.into();
                row["ms"] = (start.elapsed().as_secs_f64() * 1e3).round().into();
                println!("{row}");
                all_ok &= ok;
            }
        }
        pgan_cube::set_conv_precision(ConvPrecision::F32);
        all_ok
    }

    fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
            .chars()
            .take(600)
            .collect()
    }

    /// The checks `parts` asks for on one backend (fused and plain share a device type).
    fn all_checks<Fused, Plain>(
        device: &Fused::Device,
        backend: &str,
        parts: &Parts,
        cases: &[ConvCase],
        convs: &[String],
        precisions: &[ConvPrecision],
        small: bool,
    ) -> bool
    where
        Fused: GemmConvBackend,
        Plain: GemmConvBackend<Device = Fused::Device>,
    {
        let convs_ok = !parts.convs
            || run_on::<Fused, Plain>(device, device, backend, cases, convs, precisions);
        let steps_ok = !parts.steps
            || step_checks::<burn::backend::Autodiff<Fused>>(device, backend, precisions, small);
        convs_ok && steps_ok
    }

    /// Which checks run (`PGAN_PARITY_PARTS`).
    struct Parts {
        convs: bool,
        steps: bool,
    }

    pub fn run() -> i32 {
        let backend = std::env::var("PGAN_BENCH_BACKEND").unwrap_or_else(|_| "cuda".into());
        let cases: &[ConvCase] = match std::env::var("PGAN_PARITY_CASES").as_deref() {
            Ok("small") => &parity::SMALL_CASES,
            Ok("paper") | Err(_) => &parity::PAPER_CASES,
            Ok(other) => {
                eprintln!("PGAN_PARITY_CASES={other:?}: expected `paper` or `small`");
                return 2;
            }
        };
        let small = std::env::var("PGAN_PARITY_CASES").as_deref() == Ok("small");
        let parts = list("PGAN_PARITY_PARTS", "convs steps");
        let parts = Parts {
            convs: parts.iter().any(|p| p == "convs"),
            steps: parts.iter().any(|p| p == "steps"),
        };
        let convs = list("PGAN_PARITY_CONVS", "implicit-gemm");
        let default_precisions = if backend == "cuda" { "f32 bf16" } else { "f32" };
        let mut precisions = Vec::new();
        for p in list("PGAN_PARITY_PRECISIONS", default_precisions) {
            precisions.push(match p.as_str() {
                "f32" => ConvPrecision::F32,
                "bf16" => ConvPrecision::Bf16,
                other => {
                    eprintln!("PGAN_PARITY_PRECISIONS: {other:?} is not f32 or bf16");
                    return 2;
                }
            });
        }
        let ok = match backend.as_str() {
            #[cfg(feature = "cuda")]
            "cuda" => all_checks::<pgan_cube::CudaFused, pgan_cube::CudaPlain>(
                &Default::default(),
                &backend,
                &parts,
                cases,
                &convs,
                &precisions,
                small,
            ),
            #[cfg(feature = "wgpu")]
            "wgpu" => all_checks::<pgan_cube::WgpuFused, pgan_cube::WgpuPlain>(
                &Default::default(),
                &backend,
                &parts,
                cases,
                &convs,
                &precisions,
                small,
            ),
            other => {
                eprintln!(
                    "PGAN_BENCH_BACKEND={other:?}: not a GPU backend compiled into this binary"
                );
                return 2;
            }
        };
        for reason in pgan_cube::fallback_reasons() {
            eprintln!("implicit GEMM refused: {reason}");
        }
        if ok {
            0
        } else {
            1
        }
    }
}
