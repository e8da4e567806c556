//! The same networks on burn's wgpu backend give the Flex (CPU) results.
//!
//! CI runs this on lavapipe (Mesa's software Vulkan). Without any Vulkan
//! adapter the test prints a note and passes, unless `PGAN_REQUIRE_WGPU` is
//! set, in which case the missing device is a failure.

use burn::backend::wgpu::Wgpu;
use burn::tensor::Tensor;

use crate::test_utils::*;
use pgan_cube::testing::wgpu_device;

#[test]
fn wgpu_forward_matches_flex() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let config = tiny_config(8);
    let flex = Default::default();

    let g_cpu = reseed(config.init_generator::<TestBackend>(&flex), 1);
    let g_gpu = reseed(config.init_generator::<Wgpu>(&device), 1);
    let z = to_vec(randn::<TestBackend, 2>([4, 8], 2, &flex));
    let z_cpu = Tensor::<TestBackend, 1>::from_floats(z.as_slice(), &flex).reshape([4, 8]);
    let z_gpu = Tensor::<Wgpu, 1>::from_floats(z.as_slice(), &device).reshape([4, 8]);
    for (stage, alpha) in [(0, 1.0), (1, 0.5), (1, 1.0)] {
        let expected = to_vec(g_cpu.forward(z_cpu.clone(), stage, alpha));
        let got = to_vec(g_gpu.forward(z_gpu.clone(), stage, alpha));
        assert_close(
            &got,
            &expected,
            1e-4,
            1e-3,
            &format!("generator stage {stage} alpha {alpha}"),
        );
    }

    let d_cpu = reseed(config.init_discriminator::<TestBackend>(&flex), 3);
    let d_gpu = reseed(config.init_discriminator::<Wgpu>(&device), 3);
    let x = to_vec(randn::<TestBackend, 4>([4, 3, 8, 8], 4, &flex));
    let v = to_vec(randn::<TestBackend, 4>([4, 3, 8, 8], 5, &flex));
    let image = |data: &[f32]| {
        (
            Tensor::<TestBackend, 1>::from_floats(data, &flex).reshape([4, 3, 8, 8]),
            Tensor::<Wgpu, 1>::from_floats(data, &device).reshape([4, 3, 8, 8]),
        )
    };
    let ((x_cpu, x_gpu), (v_cpu, v_gpu)) = (image(&x), image(&v));
    let expected = to_vec(d_cpu.forward(x_cpu.clone(), 1, 0.5));
    let got = to_vec(d_gpu.forward(x_gpu.clone(), 1, 0.5));
    assert_close(&got, &expected, 1e-4, 1e-3, "discriminator");
    let (_, expected) = d_cpu.forward_jvp(x_cpu, v_cpu, 1, 0.5);
    let (_, got) = d_gpu.forward_jvp(x_gpu, v_gpu, 1, 0.5);
    assert_close(
        &to_vec(got),
        &to_vec(expected),
        1e-4,
        1e-3,
        "discriminator jvp",
    );
}

/// The minibatch-stddev layer for one group per batch (`M` = 1, where a `repeat_dim` →
/// `reshape` → `expand` chain gave zeros past the first sample on burn-cubecl) and several.
#[test]
fn minibatch_stddev_matches_flex_for_every_group_layout() {
    use crate::minibatch_stddev::{minibatch_stddev, minibatch_stddev_jvp};
    let Some(device) = wgpu_device() else {
        return;
    };
    let flex = Default::default();
    for (n, group) in [(4, 4), (8, 4), (6, 2), (4, 1)] {
        let x = to_vec(randn::<TestBackend, 4>([n, 5, 4, 4], 7, &flex));
        let v = to_vec(randn::<TestBackend, 4>([n, 5, 4, 4], 8, &flex));
        let cpu = |d: &[f32]| Tensor::<TestBackend, 1>::from_floats(d, &flex).reshape([n, 5, 4, 4]);
        let gpu = |d: &[f32]| Tensor::<Wgpu, 1>::from_floats(d, &device).reshape([n, 5, 4, 4]);
        let what = format!("minibatch stddev, batch {n}, group {group}");
        assert_close(
            &to_vec(minibatch_stddev(gpu(&x), group)),
            &to_vec(minibatch_stddev(cpu(&x), group)),
            1e-5,
            1e-4,
            &what,
        );
        let (_, got) = minibatch_stddev_jvp(gpu(&x), gpu(&v), group);
        let (_, expected) = minibatch_stddev_jvp(cpu(&x), cpu(&v), group);
        assert_close(
            &to_vec(got),
            &to_vec(expected),
            1e-5,
            1e-4,
            &format!("{what} jvp"),
        );
    }
}
