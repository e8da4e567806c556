//! TIFF layouts that the `image` crate refuses but common tools (Pillow, libtiff) read, decoded
//! with the `tiff` crate directly: grey + alpha (two samples per pixel, `BlackIsZero`, 8 or 16
//! bits), which `tiff` reports as a two-sample "multiband" image and `image` then rejects as
//! colour type `Unknown(16)`. The second sample is read as alpha, as Pillow does (its "LA" mode).

use std::io::BufReader;
use std::path::Path;

use image::{DynamicImage, ImageBuffer, LumaA};
use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::{PhotometricInterpretation, Tag};
use tiff::ColorType;

use crate::files::{open_regular, OpenError};
use crate::ingest::{alloc_limit, check_size};

/// Decodes a grey + alpha TIFF (first image of the file), with the same pixel and memory limits
/// as every other image and its `Orientation` tag applied.
pub(crate) fn decode(path: &Path, max_pixels: u64) -> Result<DynamicImage, String> {
    let (file, _) = open_regular(path).map_err(|e| match e {
        OpenError::NotRegular(kind) => format!("not a regular file ({kind})"),
        OpenError::Io(e) => format!("cannot read: {e}"),
    })?;
    let bad = |e: tiff::TiffError| format!("cannot decode TIFF: {e}");
    let mut decoder = Decoder::new(BufReader::new(file)).map_err(bad)?;
    let (w, h) = decoder.dimensions().map_err(bad)?;
    let bits = match decoder.colortype().map_err(bad)? {
        ColorType::Multiband {
            bit_depth: b @ (8 | 16),
            num_samples: 2,
        }
        | ColorType::GrayA(b @ (8 | 16)) => b,
        other => return Err(format!("unsupported TIFF colour type {other:?}")),
    };
    let photometric = decoder
        .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
        .map_err(bad)?;
    if photometric != Some(PhotometricInterpretation::BlackIsZero.to_u16()) {
        return Err(format!(
            "unsupported TIFF: two samples per pixel with photometric interpretation {photometric:?}"
        ));
    }
    let decoded_bytes = w as u64 * h as u64 * 2 * (bits as u64 / 8);
    check_size((w, h), decoded_bytes, bits > 8, max_pixels)?;
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = usize::try_from(alloc_limit(max_pixels)).unwrap_or(usize::MAX);
    let mut decoder = decoder.with_limits(limits);
    let orientation = decoder
        .find_tag_unsigned::<u8>(Tag::Orientation)
        .ok()
        .flatten()
        .and_then(image::metadata::Orientation::from_exif);
    let wrong_size =
        || format!("cannot decode TIFF: pixel data does not match {w}x{h} grey + alpha");
    let mut img = match decoder.read_image().map_err(bad)? {
        DecodingResult::U8(v) => DynamicImage::ImageLumaA8(
            ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, v).ok_or_else(wrong_size)?,
        ),
        DecodingResult::U16(v) => DynamicImage::ImageLumaA16(
            ImageBuffer::<LumaA<u16>, _>::from_raw(w, h, v).ok_or_else(wrong_size)?,
        ),
        _ => return Err(wrong_size()),
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tiff::encoder::colortype::ColorType as EncColorType;
    use tiff::encoder::TiffEncoder;
    use tiff::tags::SampleFormat;

    /// 8-bit grey + alpha, as Pillow writes mode "LA" (no such colour type in `tiff`'s encoder).
    struct GrayAlpha8;
    impl EncColorType for GrayAlpha8 {
        type Inner = u8;
        const TIFF_VALUE: PhotometricInterpretation = PhotometricInterpretation::BlackIsZero;
        const BITS_PER_SAMPLE: &'static [u16] = &[8, 8];
        const SAMPLE_FORMAT: &'static [SampleFormat] = &[SampleFormat::Uint; 2];
        fn horizontal_predict(row: &[u8], result: &mut Vec<u8>) {
            result.extend_from_slice(row);
        }
    }

    /// Writes a `w x h` grey + alpha TIFF whose pixel `i` is `(grey(i), alpha(i))`.
    pub(crate) fn write_grey_alpha_tiff(path: &Path, w: u32, h: u32, px: impl Fn(u32) -> [u8; 2]) {
        let data: Vec<u8> = (0..w * h).flat_map(&px).collect();
        let mut file = std::fs::File::create(path).unwrap();
        let mut enc = TiffEncoder::new(&mut file).unwrap();
        let mut image = enc.new_image::<GrayAlpha8>(w, h).unwrap();
        // ExtraSamples = 2: unassociated alpha.
        image.encoder().write_tag(Tag::ExtraSamples, 2u16).unwrap();
        image.write_data(&data).unwrap();
    }

    #[test]
    fn grey_alpha_tiff_decodes_where_the_image_crate_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("la.tif");
        write_grey_alpha_tiff(&p, 5, 3, |i| [(i * 10) as u8, 255 - i as u8]);
        let refused = image::open(&p).unwrap_err().to_string();
        assert!(refused.contains("Multiband"), "{refused}");
        let img = decode(&p, 1000).unwrap();
        assert_eq!((img.width(), img.height()), (5, 3));
        let la = img.into_luma_alpha8();
        assert_eq!(la.get_pixel(2, 1).0, [70, 248]);
        let e = decode(&p, 14).unwrap_err();
        assert!(e.contains("too many pixels: 5x3"), "{e}");
    }
}
