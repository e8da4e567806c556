//! One training step on a backend against the same step on the CPU: the discriminator loss
//! with its penalty and every gradient of D, then the generator loss and every gradient of G,
//! from the same weights and the same inputs, compared with burn's `Flex` in f32.
//!
//! The convolution parity (`pgan_cube::parity`) proves the GPU conv op alone; this proves the
//! step the benchmark times, with everything around the op: the fade, pixel norm,
//! minibatch-stddev, the batched reals/fakes pass, the forward-mode penalty, burn's fusion and
//! autodiff. `scripts/gpu_check.sh` runs it before it times anything; on wgpu (lavapipe) a test
//! runs it in CI.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use pgan_model::{Discriminator, Generator, ModelConfig};

use crate::config::LossConfig;
use crate::host_read::read_f32s;
use crate::loss::{discriminator_loss, generator_loss};

/// Relative errors of one quantity against the CPU's: `‖a − b‖ / ‖b‖` over all its values, and
/// the worst of that per tensor (a gradient is one tensor per parameter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepError {
    /// Over every value of the quantity.
    pub relative_rms: f64,
    /// The worst single tensor.
    pub worst_tensor: f64,
}

/// The step's quantities, in the order [`check_step`] returns them.
pub const STEP_QUANTITIES: [&str; 4] = ["d_loss", "d_grads", "g_loss", "g_grads"];

/// The result of one step comparison.
#[derive(Clone, Debug)]
pub struct StepParity {
    /// One per [`STEP_QUANTITIES`]; NaN where a value is missing or not finite.
    pub errors: [StepError; 4],
    /// The tolerance on each relative error.
    pub tolerance: f64,
}

/// How far the worst single tensor may be off, in tolerances: a small tensor (a bias's
/// gradient) carries more relative rounding than the whole, but a wrong layer is off by O(1).
pub const WORST_TENSOR_FACTOR: f64 = 4.0;

impl StepParity {
    /// Whether every quantity is within the tolerance, its worst tensor within
    /// [`WORST_TENSOR_FACTOR`] times it (NaN never is).
    pub fn ok(&self) -> bool {
        self.errors.iter().all(|e| {
            e.relative_rms <= self.tolerance
                && e.worst_tensor <= self.tolerance * WORST_TENSOR_FACTOR
        })
    }
}

/// The quantities of one step on one backend: losses and gradients, on the host.
struct Step {
    d_loss: Vec<f32>,
    d_grads: Vec<Vec<f32>>,
    g_loss: Vec<f32>,
    g_grads: Vec<Vec<f32>>,
}

/// One step of `model` at `resolution` (fading in at `alpha`) with `batch` images on `B`,
/// compared with the CPU. The weights are fixed values (from `weights_seed`) made on the CPU
/// and copied to `B` through burn's records; the reals, latents and penalty mixes are the same
/// fixed values on both. `tolerance` bounds each relative error: f32 gradients through a TF32
/// convolution differ by ~1e-3, a wrong kernel by far more.
#[allow(clippy::too_many_arguments)]
pub fn check_step<B: AutodiffBackend>(
    device: &B::Device,
    model: &ModelConfig,
    loss: &LossConfig,
    resolution: u32,
    alpha: f32,
    batch: usize,
    weights_seed: u64,
    tolerance: f64,
) -> StepParity {
    type Cpu = Autodiff<Flex>;
    let cpu = Default::default();
    let g = fixed_weights(model.init_generator::<Cpu>(&cpu), weights_seed);
    let d = fixed_weights(
        model.init_discriminator::<Cpu>(&cpu),
        weights_seed.wrapping_add(1 << 32),
    );
    let stage = model
        .stage_for_resolution(resolution)
        .expect("a resolution of the model");
    let reference = step::<Cpu>(&g, &d, model, loss, stage, alpha, batch, &cpu);
    let measured = step::<B>(
        &copy_to::<Cpu, B, _>(g.clone(), model.init_generator::<B>(device), device),
        &copy_to::<Cpu, B, _>(d.clone(), model.init_discriminator::<B>(device), device),
        model,
        loss,
        stage,
        alpha,
        batch,
        device,
    );
    let one = |a: &[f32], b: &[f32]| compare(&[a.to_vec()], &[b.to_vec()]);
    StepParity {
        errors: [
            one(&measured.d_loss, &reference.d_loss),
            compare(&measured.d_grads, &reference.d_grads),
            one(&measured.g_loss, &reference.g_loss),
            compare(&measured.g_grads, &reference.g_grads),
        ],
        tolerance,
    }
}

/// `module` with every float parameter set to fixed values of unit variance (from `seed` and the
/// parameter's place): the same step on every run. The backend's random generator is one per
/// process, and tests drawing from it in parallel would make the weights, and the rounding the
/// comparison meets, differ from run to run.
fn fixed_weights<B: Backend, M: Module<B>>(module: M, seed: u64) -> M {
    struct Fix {
        seed: u64,
        place: u64,
    }
    impl<B: Backend> ModuleMapper<B> for Fix {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            self.place += 1;
            let seed = self.seed.wrapping_mul(0x1_0000).wrapping_add(self.place);
            param.map(|old| {
                let (shape, device) = (old.shape(), old.device());
                // Uniform on [-√3, √3]: unit variance, as the equalized-lr N(0, 1) weights.
                let values = fixed_values(shape.num_elements(), seed, 3f32.sqrt());
                Tensor::from_data(TensorData::new(values, shape), &device)
                    .set_require_grad(old.is_require_grad())
            })
        }
    }
    module.map(&mut Fix { seed, place: 0 })
}

/// `module`'s weights in `fresh` (a module of the same structure on `B`), through burn's
/// record bytes.
fn copy_to<A: Backend, B: Backend, M: Module<A> + SameModule<B>>(
    module: M,
    fresh: <M as SameModule<B>>::Mapped,
    device: &B::Device,
) -> <M as SameModule<B>>::Mapped {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes =
        Recorder::<A>::record(&recorder, module.into_record(), ()).expect("records serialise");
    let record: <<M as SameModule<B>>::Mapped as Module<B>>::Record =
        Recorder::<B>::load(&recorder, bytes, device).expect("records deserialise");
    fresh.load_record(record)
}

/// A module type and its spelling on another backend.
trait SameModule<B: Backend> {
    type Mapped: Module<B>;
}
impl<A: Backend, B: Backend> SameModule<B> for Generator<A> {
    type Mapped = Generator<B>;
}
impl<A: Backend, B: Backend> SameModule<B> for Discriminator<A> {
    type Mapped = Discriminator<B>;
}

/// The D step's loss and D's gradients, then the G step's loss and G's gradients.
#[allow(clippy::too_many_arguments)]
fn step<B: AutodiffBackend>(
    g: &Generator<B>,
    d: &Discriminator<B>,
    model: &ModelConfig,
    loss: &LossConfig,
    stage: usize,
    alpha: f32,
    batch: usize,
    device: &B::Device,
) -> Step {
    let side = 4usize << stage;
    let channels = model.num_channels;
    let reals = tensor::<B, 4>(
        fixed_values(batch * channels * side * side, 1, 1.0),
        [batch, channels, side, side],
        device,
    );
    let latents = tensor::<B, 2>(
        fixed_values(batch * model.latent_dim, 2, 1.7),
        [batch, model.latent_dim],
        device,
    );
    let mix = tensor::<B, 4>(
        fixed_values(batch, 3, 0.5)
            .iter()
            .map(|v| v + 0.5)
            .collect(),
        [batch, 1, 1, 1],
        device,
    );

    let fakes = g.forward(latents.clone(), stage, alpha).detach();
    let (d_loss, _) = discriminator_loss(loss, d, reals, fakes, mix, stage, alpha);
    let d_grads = gradients(d, &d_loss.backward());
    let g_scores = d.forward(g.forward(latents, stage, alpha), stage, alpha);
    let g_loss = generator_loss(loss, g_scores);
    let g_grads = gradients(g, &g_loss.backward());
    Step {
        d_loss: read_f32s(d_loss.inner()),
        d_grads,
        g_loss: read_f32s(g_loss.inner()),
        g_grads,
    }
}

/// Every float parameter's gradient in visiting order (empty where there is none).
fn gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Vec<Vec<f32>> {
    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        out: Vec<Vec<f32>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.out.push(
                param
                    .val()
                    .grad(self.grads)
                    .map(read_f32s)
                    .unwrap_or_default(),
            );
        }
    }
    let mut collect = Collect {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut collect);
    collect.out
}

fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// `n` fixed values in `[-scale, scale]` (a hash of the index and `seed`): the same inputs on
/// every backend without a shared random generator.
fn fixed_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut x =
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
            x ^= x >> 31;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 29;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Relative errors of `measured` against `reference`, tensor by tensor; NaN when a tensor is
/// missing, differs in size or holds a non-finite value.
fn compare(measured: &[Vec<f32>], reference: &[Vec<f32>]) -> StepError {
    if measured.len() != reference.len() {
        return StepError {
            relative_rms: f64::NAN,
            worst_tensor: f64::NAN,
        };
    }
    let (mut diff_all, mut norm_all, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for (a, b) in measured.iter().zip(reference) {
        if a.len() != b.len() || a.iter().any(|v| !v.is_finite()) {
            return StepError {
                relative_rms: f64::NAN,
                worst_tensor: f64::NAN,
            };
        }
        let diff: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum();
        let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
        diff_all += diff;
        norm_all += norm;
        // A tensor whose reference is 0 (a bias the step cannot move) must be 0 too.
        let relative = if norm > 0.0 {
            (diff / norm).sqrt()
        } else if diff > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        worst = worst.max(relative);
    }
    StepError {
        relative_rms: if norm_all > 0.0 {
            (diff_all / norm_all).sqrt()
        } else if diff_all > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
        worst_tensor: worst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ModelConfig {
        ModelConfig::cpu_small(16)
            .with_latent_dim(8)
            .with_fmap_base(32)
            .with_fmap_max(16)
    }

    #[test]
    fn the_cpu_against_itself_is_exact_and_a_wrong_step_is_caught() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let loss = LossConfig::default();
        let same =
            check_step::<Autodiff<Flex>>(&Default::default(), &small(), &loss, 16, 0.5, 4, 1, 1e-6);
        assert!(same.ok(), "{same:?}");
        assert!(
            same.errors.iter().all(|e| e.relative_rms == 0.0),
            "{same:?}"
        );
        // Another penalty weight changes D's loss and gradients: the check must see it.
        let mut other = loss.clone();
        other.gp_lambda *= 2.0;
        let reference = step_values(&loss);
        let changed = step_values(&other);
        let err = compare(&changed.d_grads, &reference.d_grads);
        assert!(err.relative_rms > 1e-3, "{err:?}");
        assert!(compare(&[vec![f32::NAN]], &[vec![1.0]])
            .relative_rms
            .is_nan());
    }

    fn step_values(loss: &LossConfig) -> Step {
        type Cpu = Autodiff<Flex>;
        let device = Default::default();
        let model = small();
        // The same weights for both losses: drawn once from a seeded backend.
        Cpu::seed(&device, 11);
        let g = model.init_generator::<Cpu>(&device);
        let d = model.init_discriminator::<Cpu>(&device);
        step::<Cpu>(&g, &d, &model, loss, 2, 0.5, 4, &device)
    }

    #[cfg(feature = "wgpu")]
    type Wgpu = Autodiff<pgan_cube::WgpuFused>;

    /// One step of `model` on wgpu against the CPU, within 1e-3 (lavapipe computes in plain f32).
    #[cfg(feature = "wgpu")]
    fn on_wgpu(model: &ModelConfig, resolution: u32, alpha: f32, weights_seed: u64) -> StepParity {
        let device = burn::backend::wgpu::WgpuDevice::default();
        check_step::<Wgpu>(
            &device,
            model,
            &LossConfig::default(),
            resolution,
            alpha,
            4,
            weights_seed,
            1e-3,
        )
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn a_training_step_on_wgpu_matches_the_cpu() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let probe = std::panic::catch_unwind(|| {
            Tensor::<Wgpu, 1>::zeros([1], &Default::default()).into_data();
        });
        if probe.is_err() && std::env::var("PGAN_REQUIRE_WGPU").is_err() {
            eprintln!("skipping: no wgpu device; set PGAN_REQUIRE_WGPU=1 to fail instead");
            return;
        }
        let parity = on_wgpu(&small(), 16, 0.5, 1);
        assert!(parity.ok(), "{parity:?}");
        // The other minibatch layer (its own broadcasts), at 8x8 to keep lavapipe quick.
        let discrimination = small().with_minibatch(pgan_model::Minibatch::Discrimination);
        let parity = on_wgpu(&discrimination, 8, 1.0, 1);
        assert!(parity.ok(), "minibatch discrimination: {parity:?}");
    }

    /// How the step's agreement varies with the weights: `cargo test -p pgan-train --features
    /// wgpu --lib -- --ignored --nocapture wgpu_step_parity_over_weights`.
    #[cfg(feature = "wgpu")]
    #[test]
    #[ignore = "a survey, not a check"]
    fn wgpu_step_parity_over_weights() {
        for seed in 1..=12 {
            let parity = on_wgpu(&small(), 16, 0.5, seed);
            println!("seed {seed}: ok {} {:?}", parity.ok(), parity.errors);
        }
    }
}
