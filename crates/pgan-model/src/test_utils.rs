//! Helpers shared by the unit tests: deterministic data and parameters
//! (the backends' RNG is global, so tests running in parallel would race on
//! it), tolerance checks and a finite-difference JVP check.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::ModelConfig;

pub type TestBackend = Flex;
pub type TestAutodiffBackend = Autodiff<Flex>;

/// Tests that run backward passes take turns: burn's autodiff cleanup after a backward pass also
/// frees graphs other threads are building (pgan-train's `training_loop/step/turn.rs`).
pub fn graph_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// splitmix64 + Box–Muller: reproducible normals without touching a backend RNG.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

pub fn randn<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(Rng::new(seed).normals(n), shape), device)
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// A network small enough for debug-mode tests: 8, 8, 4, 2 feature maps at 4², 8², 16², 32².
pub fn tiny_config(resolution: u32) -> ModelConfig {
    ModelConfig::new(resolution)
        .with_latent_dim(8)
        .with_fmap_base(32)
        .with_fmap_max(8)
        .with_mbstd_group_size(2)
}

/// Overwrites every float parameter with reproducible values
/// (weights `N(0,1)` like the real init, biases `0.1·N(0,1)` so they are exercised).
pub struct Reseed(pub Rng);

impl<B: Backend> ModuleMapper<B> for Reseed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| {
            let shape = t.shape();
            let require_grad = t.is_require_grad();
            let scale = if D == 1 { 0.1 } else { 1.0 };
            let values: Vec<f32> = self
                .0
                .normals(shape.num_elements())
                .iter()
                .map(|v| v * scale)
                .collect();
            Tensor::from_data(TensorData::new(values, shape), &t.device())
                .set_require_grad(require_grad)
        })
    }
}

pub fn reseed<B: Backend, M: Module<B>>(module: M, seed: u64) -> M {
    module.map(&mut Reseed(Rng::new(seed)))
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// `|a - b| <= atol + rtol · max|b|`, elementwise.
pub fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let bound = atol + rtol * max_abs(b);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= bound && x.is_finite(),
            "{what}: element {i}: {x} vs {y} (bound {bound})"
        );
    }
}

/// Checks a JVP against central finite differences `(f(x+h·dx) − f(x−h·dx)) / 2h`
/// and checks that its primal matches `f`.
pub fn check_jvp<const D: usize, const E: usize>(
    f: impl Fn(Tensor<TestBackend, D>) -> Tensor<TestBackend, E>,
    f_jvp: impl Fn(
        Tensor<TestBackend, D>,
        Tensor<TestBackend, D>,
    ) -> (Tensor<TestBackend, E>, Tensor<TestBackend, E>),
    x: Tensor<TestBackend, D>,
    dx: Tensor<TestBackend, D>,
    h: f32,
    rtol: f32,
    what: &str,
) {
    let (y, dy) = f_jvp(x.clone(), dx.clone());
    let y_ref = to_vec(f(x.clone()));
    assert_close(&to_vec(y), &y_ref, 1e-6, 1e-5, &format!("{what}: primal"));
    let plus = f(x.clone() + dx.clone().mul_scalar(h));
    let minus = f(x - dx.mul_scalar(h));
    let fd = to_vec((plus - minus).div_scalar(2.0 * h));
    let dy = to_vec(dy);
    assert!(max_abs(&dy) > 1e-3, "{what}: tangent is trivially zero");
    assert_close(&dy, &fd, 1e-5, rtol, &format!("{what}: tangent"));
}
