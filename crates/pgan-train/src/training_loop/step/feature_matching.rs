//! The G step's pass through the frozen D, with the feature-matching term when
//! `loss.feature_matching` is on ([`feature_matching`](crate::feature_matching)).

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use pgan_model::Discriminator;

use super::Trainer;
use crate::feature_matching::feature_matching_loss;

impl<B: AutodiffBackend> Trainer<B> {
    /// D's scores of `fakes` and, with feature matching on, its weighted term against the
    /// features of `reals` (the D step's minibatch, as D saw it).
    pub(super) fn g_scores(
        &self,
        d: &Discriminator<B>,
        fakes: Tensor<B, 4>,
        reals: Option<Tensor<B, 4>>,
        stage: usize,
        alpha: f32,
    ) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        let weight = self.config.loss.feature_matching;
        match reals {
            Some(reals) if weight > 0.0 => {
                let (scores, fake_features) = d.forward_with_features(fakes, stage, alpha);
                let real_features = d
                    .valid()
                    .forward_with_features(reals.inner(), stage, alpha)
                    .1;
                let real_features = Tensor::<B, 2>::from_inner(real_features);
                let term = feature_matching_loss(real_features, fake_features).mul_scalar(weight);
                (scores, Some(term))
            }
            _ => (d.forward(fakes, stage, alpha), None),
        }
    }
}
