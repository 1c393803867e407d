//! One image file to the model's input: decode, convert to RGB, resize, centre crop.
//!
//! The steps are torchvision's `Image.open(f).convert("RGB")`, `Resize(resize)` (the
//! shorter side, bilinear) and `CenterCrop(side)`; a crop larger than the image pads
//! it with black, as torchvision's `center_crop` does.

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use std::path::Path;

/// An image file that cannot be decoded: the message says why.
pub fn decode(path: &Path) -> Result<RgbImage, String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let img = reader
        .decode()
        .map_err(|e| format!("not a readable PNG or JPEG image: {e}"))?;
    Ok(to_rgb(img))
}

/// Grey and grey+alpha are copied to three channels; alpha is dropped (PIL's
/// `convert("RGB")`).
fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// `img` with its shorter side scaled to `short` (the longer one as torchvision's
/// `Resize(int)` computes it: truncated), bilinear.
pub fn resize_shorter(img: &RgbImage, short: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (nw, nh) = if w <= h {
        (short, short * h / w)
    } else {
        (short * w / h, short)
    };
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    image::imageops::resize(img, nw as u32, nh as u32, FilterType::Triangle)
}

/// The `side` x `side` centre of `img` as CHW bytes (R plane, G, B); where the image is
/// smaller than the crop, the missing rows and columns are black.
pub fn centre_crop_chw(img: &RgbImage, side: usize) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // torchvision pads (side - size) // 2 before and the rest after, then crops at
    // round((size - side) / 2) with Python's round (ties to even).
    let offset = |size: usize| -> isize {
        if size < side {
            -(((side - size) / 2) as isize)
        } else {
            ((size - side) as f64 / 2.0).round_ties_even() as isize
        }
    };
    let (oy, ox) = (offset(h), offset(w));
    let mut out = vec![0u8; 3 * side * side];
    for y in 0..side {
        let sy = y as isize + oy;
        if sy < 0 || sy >= h as isize {
            continue;
        }
        for x in 0..side {
            let sx = x as isize + ox;
            if sx < 0 || sx >= w as isize {
                continue;
            }
            let p = img.get_pixel(sx as u32, sy as u32).0;
            for (c, &v) in p.iter().enumerate() {
                out[(c * side + y) * side + x] = v;
            }
        }
    }
    out
}

/// The file at `path` as the model's `side` x `side` input (CHW bytes), with its size
/// before any resize.
pub fn prepare(path: &Path, side: usize, resize: Option<usize>) -> Result<Prepared, String> {
    let img = decode(path)?;
    let size = (img.width() as usize, img.height() as usize);
    let pixels = match resize {
        Some(short) => centre_crop_chw(&resize_shorter(&img, short), side),
        None => centre_crop_chw(&img, side),
    };
    Ok(Prepared { size, pixels })
}

/// One prepared image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Width and height of the file's image.
    pub size: (usize, usize),
    pub pixels: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(10 * y + x) as u8, x as u8, y as u8])
        })
    }

    #[test]
    fn crop_of_a_smaller_image_pads_it_evenly_with_black() {
        // torchvision: CenterCrop(6) of a 3x4 (w x h) image pads left 1, right 2, top 1,
        // bottom 1; pixel (x, y) lands at (x + 1, y + 1).
        let out = centre_crop_chw(&ramp(3, 4), 6);
        let at = |c: usize, y: usize, x: usize| out[(c * 6 + y) * 6 + x];
        assert_eq!(at(0, 0, 0), 0);
        assert_eq!(at(0, 1, 1), 0); // source (0, 0) is 0 too
        assert_eq!(at(0, 2, 3), 12); // source x 2, y 1
        assert_eq!(at(1, 2, 3), 2);
        assert_eq!(at(2, 4, 1), 3);
        assert_eq!(at(0, 5, 5), 0);
        assert_eq!(at(0, 4, 4), 0); // x 4 is right padding
    }

    #[test]
    fn crop_of_a_larger_image_rounds_half_offsets_to_even() {
        // 9 - 4 = 5: offset round(2.5) = 2 (Python), not 3.
        let out = centre_crop_chw(&ramp(9, 9), 4);
        assert_eq!(out[0], 22); // source (2, 2)
        // 8 - 4 = 4: offset 2; 7 - 4 = 3: round(1.5) = 2.
        assert_eq!(centre_crop_chw(&ramp(8, 7), 4)[0], 22);
    }

    #[test]
    fn resize_scales_the_shorter_side_and_truncates_the_longer() {
        let img = ramp(30, 20);
        let r = resize_shorter(&img, 10);
        assert_eq!((r.width(), r.height()), (15, 10));
        // 7 x 3 to short side 2: long = 2 * 7 / 3 = 4 (truncated).
        let r = resize_shorter(&ramp(7, 3), 2);
        assert_eq!((r.width(), r.height()), (4, 2));
        // A uniform image stays uniform.
        let flat = RgbImage::from_pixel(40, 50, image::Rgb([7, 8, 9]));
        assert!(resize_shorter(&flat, 16).pixels().all(|p| p.0 == [7, 8, 9]));
    }

    #[test]
    fn grey_and_alpha_images_become_rgb() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 2, image::Luma([9])));
        assert_eq!(to_rgb(grey).get_pixel(1, 1).0, [9, 9, 9]);
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            1,
            1,
            image::Rgba([1, 2, 3, 0]),
        ));
        assert_eq!(to_rgb(rgba).get_pixel(0, 0).0, [1, 2, 3]);
    }
}
