//! Kernel throughput: crop + resize, and each CPU colour op on a 224x224 view.
//!
//! `cargo bench -p regioncl-augment --bench ops`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regioncl_augment::{
    BlurScratch, ColorJitter, CropBox, Interpolation, KeyedRng, Normalize, Resizer, RgbImage,
    ViewOutput, ViewParams, ViewScratch, adjust_brightness, adjust_contrast, adjust_hue,
    adjust_saturation, gaussian_blur, hwc_to_chw_f32, render_view, rgb_to_grayscale, solarize,
};

const SIZE: u32 = 224;
const PIXELS: u64 = (SIZE * SIZE) as u64;

/// A smooth, photo-like test image (gradients plus noise), `w` x `h`.
fn photo(w: u32, h: u32) -> RgbImage {
    let mut rng = KeyedRng::new(&[1]);
    let data = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            let n = rng.below(24) as u32;
            [(x * 200 / w + n) as u8, (y * 200 / h + n) as u8, ((x + y) * 100 / (w + h) + n) as u8]
        })
        .collect();
    RgbImage::from_vec(w, h, data)
}

fn view_f32() -> Vec<f32> {
    let img = photo(SIZE, SIZE);
    let mut chw = vec![0f32; (3 * PIXELS) as usize];
    hwc_to_chw_f32(img.as_bytes(), &mut chw);
    chw
}

fn resize(c: &mut Criterion) {
    let src = photo(500, 375);
    let mut g = c.benchmark_group("resize");
    g.throughput(Throughput::Elements(PIXELS));
    let mut resizer = Resizer::new();
    let mut dst = vec![0u8; (PIXELS * 3) as usize];
    for (name, crop) in [
        ("crop 300x260 -> 224", CropBox { x: 40.0, y: 30.0, w: 300.0, h: 260.0 }),
        ("crop 500x375 -> 224", CropBox { x: 0.0, y: 0.0, w: 500.0, h: 375.0 }),
        ("crop 120x100 -> 224 (upscale)", CropBox { x: 10.0, y: 10.0, w: 120.0, h: 100.0 }),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                resizer
                    .resize_crop(
                        &src,
                        black_box(&crop),
                        &mut dst,
                        SIZE,
                        SIZE,
                        Interpolation::Bilinear,
                        true,
                    )
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn color(c: &mut Criterion) {
    let base = view_f32();
    let mut g = c.benchmark_group("color 224x224");
    g.throughput(Throughput::Elements(PIXELS));
    let mut img = base.clone();
    let mut bench = |name: &str, f: &mut dyn FnMut(&mut [f32])| {
        g.bench_function(name, |b| {
            b.iter(|| {
                img.copy_from_slice(&base);
                f(black_box(&mut img));
            })
        });
    };
    bench("copy (baseline of the rows below)", &mut |_| {});
    bench("brightness", &mut |x| adjust_brightness(x, 1.3));
    bench("contrast", &mut |x| adjust_contrast(x, 0.7));
    bench("saturation", &mut |x| adjust_saturation(x, 1.2));
    bench("hue", &mut |x| adjust_hue(x, 0.07));
    bench("grayscale", &mut |x| rgb_to_grayscale(x));
    let mut scratch = BlurScratch::new();
    bench("gaussian blur sigma 1.0", &mut |x| gaussian_blur(x, SIZE, SIZE, 1.0, &mut scratch));
    bench("gaussian blur sigma 2.0", &mut |x| gaussian_blur(x, SIZE, SIZE, 2.0, &mut scratch));
    bench("solarize", &mut |x| solarize(x, 0.5));
    bench("normalize", &mut |x| Normalize::IMAGENET.apply(x));
    g.finish();
}

fn view(c: &mut Criterion) {
    let src = photo(500, 375);
    let crop = CropBox { x: 40.0, y: 30.0, w: 300.0, h: 260.0 };
    let mut g = c.benchmark_group("render_view 224");
    g.throughput(Throughput::Elements(PIXELS));
    let mut scratch = ViewScratch::new();
    let geometry = ViewParams { flip: true, ..ViewParams::crop_only(Default::default()) };
    let full = ViewParams {
        jitter: Some(ColorJitter {
            brightness: 1.2,
            contrast: 0.8,
            saturation: 1.3,
            hue: 0.05,
            order: [2, 0, 3, 1],
        }),
        grayscale: false,
        blur_sigma: Some(1.05),
        ..geometry
    };
    let mut u8_out = vec![0u8; (PIXELS * 3) as usize];
    g.bench_function("u8 geometry only", |b| {
        b.iter(|| {
            let out = ViewOutput::U8Hwc { pixels: &mut u8_out, width: SIZE, height: SIZE };
            render_view(&src, &crop, &geometry, out, &mut scratch).unwrap()
        })
    });
    let mut f32_out = vec![0f32; (PIXELS * 3) as usize];
    g.bench_function("f32 jitter + blur 1.05 + normalize", |b| {
        b.iter(|| {
            let out = ViewOutput::F32Chw {
                pixels: &mut f32_out,
                width: SIZE,
                height: SIZE,
                normalize: Normalize::IMAGENET,
            };
            render_view(&src, &crop, &full, out, &mut scratch).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, resize, color, view);
criterion_main!(benches);
