//! Bounds checked before anything is allocated or drawn: the size of a rendered sheet or
//! sample grid (checked arithmetic, one pixel limit), the images an evaluation holds in memory
//! against the memory there is, the dataset bytes checked against their checksums on the way,
//! and the truncation ψ, whose rejection sampling never ends for
//! ψ ≤ 0 and takes ~1/(0.8 ψ) draws per component for small ψ.

/// The most pixels one rendered image (sheet, strip, timeline, sample grid) may have: 2^28
/// (16384 x 16384), 768 MiB as 8-bit RGB.
pub const MAX_SHEET_PIXELS: u64 = 1 << 28;

/// The most dataset bytes checked against their checksums on the way (before an evaluation,
/// after the dataset was written to during training): beyond a few GiB, reading them would
/// cost more than what they are checked for, and `pgan verify` is the tool for it.
pub const LEVEL_CHECK_BYTES: u64 = 4 << 30;

/// Smallest truncation ψ: about 25 normal draws per latent component at ψ = 0.05.
pub const MIN_TRUNCATION: f32 = 0.05;

/// Checks a truncation ψ. None is usable with a ProGAN generator: its first layer
/// pixel-normalizes the latent (Karras et al. 2018, section 4.2), which undoes redrawing the
/// components beyond ±ψ, so a "truncated" sheet or evaluation would be an untruncated one under
/// another label (the diversity of a sheet drawn at a small ψ stays that of an untruncated one:
/// bench-log.md). An out-of-range ψ is named as such first.
pub fn check_truncation(psi: f32) -> Result<(), String> {
    let no_effect = "it pixel-normalizes its latent before its first layer, which undoes the \
                     truncation (the images stay as diverse as without it); leave --truncation out";
    if !(psi.is_finite() && psi >= MIN_TRUNCATION) {
        // Said with the reason every ψ is refused, so that a usable one is not tried next.
        return Err(format!(
            "truncation {psi} must be a number of at least {MIN_TRUNCATION} (latent components \
             beyond ±ψ are redrawn, so a smaller ψ never or hardly ever finishes), and no ψ has \
             an effect on a ProGAN generator: {no_effect}"
        ));
    }
    Err(format!(
        "truncation {psi} has no effect on a ProGAN generator: {no_effect}"
    ))
}

/// Checks that `images` float32 images of `channels x side x side` fit in the memory this
/// machine has available (`/proc/meminfo`'s MemAvailable; unchecked where it cannot be read),
/// with `what` saying what they are for in the error.
pub fn check_images_fit(
    images: usize,
    channels: usize,
    side: u32,
    what: &str,
) -> Result<(), String> {
    let bytes = (images as u128) * (channels as u128) * (side as u128).pow(2) * 4;
    check_fits(
        bytes,
        &format!("{what} hold {images} images of {side}x{side} in memory:"),
    )
}

/// Checks that `bytes` fit in the memory this machine has available (unchecked where that
/// cannot be read); the error starts with `what`.
pub fn check_fits(bytes: u128, what: &str) -> Result<(), String> {
    let Some(available) = available_memory_bytes() else {
        return Ok(());
    };
    if bytes <= available as u128 {
        return Ok(());
    }
    let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
    Err(format!(
        "{what} {:.1} GiB, and {:.1} GiB is available",
        gib(bytes),
        gib(available as u128)
    ))
}

pub use pgan_data::memory::available_memory_bytes;

/// Pixel dimensions of a grid of `rows x cols` cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SheetSize {
    /// Side of one cell: the image side times the nearest-neighbour upscale factor.
    pub cell: u32,
    /// Width of the whole sheet.
    pub width: u32,
    /// Height of the whole sheet.
    pub height: u32,
}

/// The size of a `rows x cols` grid of `image_px`-pixel images, each upscaled by a whole factor
/// to at least `min_cell_px` pixels, with a `gap`-pixel border (the layout of
/// [`crate::images::grid`] after [`crate::images::upscale_cells`]); an error when it overflows
/// or exceeds [`MAX_SHEET_PIXELS`].
pub fn sheet_size(
    rows: usize,
    cols: usize,
    image_px: u32,
    min_cell_px: u32,
    gap: u32,
) -> Result<SheetSize, String> {
    if image_px == 0 {
        return Err(format!("an empty grid ({rows} x {cols} of 0-pixel images)"));
    }
    let factor = u64::from(min_cell_px).div_ceil(u64::from(image_px)).max(1);
    let cell = u64::from(image_px).saturating_mul(factor);
    grid_size(rows, cols, cell, gap).map_err(|e| {
        format!("{e} ({image_px}-pixel images upscaled to at least {min_cell_px} pixels)")
    })
}

/// The size of a `rows x cols` grid of `cell`-pixel cells with a `gap`-pixel border; an error
/// when it overflows or exceeds [`MAX_SHEET_PIXELS`]. With `cell` the smallest a checkpoint
/// could give, it refuses a grid before any checkpoint is read.
pub fn grid_size(rows: usize, cols: usize, cell: u64, gap: u32) -> Result<SheetSize, String> {
    if rows == 0 || cols == 0 || cell == 0 {
        return Err(format!(
            "an empty grid ({rows} x {cols} of {cell}-pixel cells)"
        ));
    }
    let side = |n: usize| {
        cell.checked_add(u64::from(gap))?
            .checked_mul(u64::try_from(n).ok()?)?
            .checked_add(u64::from(gap))
    };
    let (width, height) = (side(cols), side(rows));
    match (u32::try_from(cell), width, height) {
        (Ok(cell), Some(w), Some(h)) if w.checked_mul(h).is_some_and(|p| p <= MAX_SHEET_PIXELS) => {
            // Below the pixel limit every side fits in u32.
            Ok(SheetSize {
                cell,
                width: w as u32,
                height: h as u32,
            })
        }
        _ => {
            let show =
                |v: Option<u64>| v.map_or_else(|| "(overflow)".to_string(), |v| v.to_string());
            Err(format!(
                "a grid of {rows} row(s) x {cols} column(s) of {cell}-pixel cells would be {} \
                 pixels wide and {} high, above the limit of {} megapixels; use fewer rows, \
                 columns, frames or seeds, or a smaller cell size",
                show(width),
                show(height),
                MAX_SHEET_PIXELS >> 20
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_beyond_the_available_memory_are_refused_with_the_figures() {
        let available = available_memory_bytes().expect("Linux has /proc/meminfo");
        check_images_fit(1024, 3, 16, "SWD").unwrap();
        // One image more than the memory there is, at 1024x1024 RGB (12 MiB each).
        let images = (available / (3 << 22)) as usize + 1;
        let err = check_images_fit(images, 3, 1024, "SWD").unwrap_err();
        assert!(
            err.starts_with(&format!("SWD hold {images} images of 1024x1024 in memory")),
            "{err}"
        );
    }

    #[test]
    fn sheet_sizes_match_the_grid_layout() {
        let size = sheet_size(6, 8, 16, 64, 2).unwrap();
        assert_eq!(size.cell, 64);
        assert_eq!((size.width, size.height), (8 * 66 + 2, 6 * 66 + 2));
        // The upscale is a whole factor: 24 -> 48 for at least 40.
        assert_eq!(sheet_size(1, 1, 24, 40, 2).unwrap().cell, 48);
        assert_eq!(sheet_size(1, 1, 64, 8, 2).unwrap().cell, 64);
        let images: Vec<image::RgbImage> = (0..6).map(|_| image::RgbImage::new(16, 16)).collect();
        let grid = crate::images::grid(&crate::images::upscale_cells(images, 40), 2, 3, 2);
        let size = sheet_size(2, 3, 16, 40, 2).unwrap();
        assert_eq!(grid.dimensions(), (size.width, size.height));
    }

    #[test]
    fn huge_or_overflowing_sheets_are_refused() {
        for (rows, cols, px, cell) in [
            (100_000, 100_000, 16, 64),
            (1, 1, 16, 100_000),
            (1, 1, 16, u32::MAX),
            (1, 1_000_000, 16, 64),
            (usize::MAX, usize::MAX, 1024, u32::MAX),
        ] {
            let err = sheet_size(rows, cols, px, cell, 2).unwrap_err();
            assert!(err.contains("above the limit of 256 megapixels"), "{err}");
        }
        assert!(sheet_size(0, 3, 16, 64, 2).is_err());
    }

    #[test]
    fn truncation_must_be_a_usable_number() {
        for psi in [0.0, -1.0, f32::NAN, f32::INFINITY, 0.01] {
            let err = check_truncation(psi).unwrap_err();
            assert!(
                err.contains("at least 0.05") && err.contains("no ψ has an effect"),
                "{psi}: {err}"
            );
        }
        for psi in [0.05, 0.7, 2.0] {
            let err = check_truncation(psi).unwrap_err();
            assert!(err.contains("has no effect"), "{psi}: {err}");
        }
    }
}
