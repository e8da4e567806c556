//! Feature matching (Salimans et al. 2016, section 3.1): a generator loss term that asks the
//! fakes to match the reals' statistics in D's last hidden layer rather than only to fool D,
//! `‖mean_i f(real_i) − mean_i f(fake_i)‖²`, weighted by `loss.feature_matching` and added to
//! G's adversarial loss. The reals' features are constants (D is frozen in the G step); the
//! gradient reaching each fake's features is `−2 (mean f(real) − mean f(fake)) / N`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `‖mean_i real_features_i − mean_i fake_features_i‖²`.
///
/// # Shapes
/// - real_features: `[N_real, F]`, fake_features: `[N_fake, F]`
/// - output: `[1]`
pub fn feature_matching_loss<B: Backend>(
    real_features: Tensor<B, 2>,
    fake_features: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let gap = real_features.mean_dim(0) - fake_features.mean_dim(0); // [1, F]
    gap.powf_scalar(2.0).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    fn tensor(values: &[f32], rows: usize) -> Tensor<B, 2> {
        let cols = values.len() / rows;
        Tensor::from_data(
            TensorData::new(values.to_vec(), [rows, cols]),
            &Default::default(),
        )
    }

    #[test]
    fn the_loss_is_the_squared_distance_of_the_feature_means_and_its_gradient() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        // Reals' means (2, 0, 1); fakes' means (0.5, 1, 1).
        let reals = tensor(&[1.0, -1.0, 1.0, 3.0, 1.0, 1.0], 2);
        let fake_values = [0.0, 1.0, 2.0, 1.0, 2.0, 0.0, 0.5, 0.0, 1.0];
        let fakes = tensor(&fake_values, 3).require_grad();
        let loss = feature_matching_loss(reals, fakes.clone());
        let value = loss.clone().into_data().to_vec::<f32>().unwrap()[0];
        // (2 − 0.5)² + (0 − 1)² + (1 − 1)² = 3.25.
        assert!((value - 3.25).abs() < 1e-6, "{value}");
        let grads = loss.backward();
        let g: Vec<f32> = fakes.grad(&grads).unwrap().into_data().to_vec().unwrap();
        // −2 (mean real − mean fake) / 3 per row: (−1, 2/3, 0).
        for row in g.chunks(3) {
            for (got, want) in row.iter().zip([-1.0f32, 2.0 / 3.0, 0.0]) {
                assert!((got - want).abs() < 1e-6, "{g:?}");
            }
        }
    }

    #[test]
    fn matching_means_cost_nothing_whatever_the_spread() {
        let reals = tensor(&[1.0, 2.0, 3.0, 4.0], 2); // means (2, 3)
        let fakes = tensor(&[-2.0, 3.0, 6.0, 3.0], 2); // means (2, 3), other spread
        let v = feature_matching_loss(reals, fakes)
            .into_data()
            .to_vec::<f32>()
            .unwrap()[0];
        assert_eq!(v, 0.0);
    }
}
