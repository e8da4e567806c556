//! Helpers shared by the trainer's integration tests (`training.rs`, `data_parallel.rs`).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::Tensor;
use pgan_train::checkpoint;

/// A folder of small coloured-square PNGs and its pyramid up to `resolution`.
pub fn tiny_dataset(dir: &Path, resolution: u32) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for k in 0..24u32 {
        let colour = [
            (k * 37 % 256) as u8,
            (k * 91 % 256) as u8,
            (k * 53 % 256) as u8,
        ];
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            if (x / 4 + y / 4 + k) % 2 == 0 {
                image::Rgb(colour)
            } else {
                image::Rgb([255 - colour[0], 40, 200])
            }
        });
        img.save(images.join(format!("{k:03}.png"))).unwrap();
    }
    let out = dir.join("tiny.pgan");
    let options = pgan_data::PrepareOptions::new(images, out.clone(), resolution);
    pgan_data::prepare(&options).unwrap();
    out
}

/// Every parameter value of G, D and G_ema of a checkpoint, in visiting order (parameter ids are
/// random per run and are not compared).
pub fn parameter_values(ckpt: &Path) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Collect(Vec<f32>);
    impl ModuleVisitor<Flex> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0
                .extend(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let device = Default::default();
    let state = checkpoint::read_state(ckpt).unwrap();
    let model = checkpoint::model_config(&state, ckpt).unwrap();
    let mut c = Collect(Vec::new());
    for stem in [checkpoint::GENERATOR, checkpoint::GENERATOR_EMA] {
        let g = checkpoint::load_module(model.init_generator::<Flex>(&device), ckpt, stem, &device)
            .unwrap();
        g.visit(&mut c);
    }
    let d = checkpoint::load_module(
        model.init_discriminator::<Flex>(&device),
        ckpt,
        checkpoint::DISCRIMINATOR,
        &device,
    )
    .unwrap();
    d.visit(&mut c);
    c.0
}
