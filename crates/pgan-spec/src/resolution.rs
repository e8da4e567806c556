//! The resolutions pgan works at: powers of two from 4x4 (ProGAN's first stage) to 1024x1024
//! (the paper's CelebA-HQ network). Datasets (`pgan-data`) store every level in this range up to
//! their top; networks (`pgan-model`) grow through the same levels.

/// Smallest resolution: the 4x4 base block and the bottom of a dataset's pyramid.
pub const MIN_RESOLUTION: u32 = 4;
/// Largest resolution: the paper's 1024x1024 network.
pub const MAX_RESOLUTION: u32 = 1024;

/// Whether `resolution` is a power of two in [`MIN_RESOLUTION`]`..=`[`MAX_RESOLUTION`].
pub fn is_supported(resolution: u32) -> bool {
    resolution.is_power_of_two() && (MIN_RESOLUTION..=MAX_RESOLUTION).contains(&resolution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_from_4_to_1024() {
        let supported: Vec<u32> = (0..=2048).filter(|&r| is_supported(r)).collect();
        assert_eq!(supported, [4, 8, 16, 32, 64, 128, 256, 512, 1024]);
    }
}
