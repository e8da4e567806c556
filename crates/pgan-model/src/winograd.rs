//! 3x3 "same" convolutions as Winograd F(2x2, 3x3) (Lavin & Gray 2016, "Fast Algorithms for
//! Convolutional Neural Networks", Sec. 4.1), forward and weight gradient, on NCHW `f32`
//! slices. [`crate::cpu_conv`] routes every 3x3 convolution of an even-sized image here.
//!
//! Each 2x2 output tile reads a 4x4 input patch `d`; with the 3x3 kernel `g`,
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, the element-wise product is 16
//! independent matrix products, `M[p] = U[p] · V[p]` (`[C_out, C_in] × [C_in, tiles]`), so the
//! multiplications per output fall from 9·C_in to 4·C_in: 2.25x fewer flops than im2col + gemm.
//! The weight gradient back-propagates through the same algebra: `∂U[p] = ∂M[p] · V[p]ᵀ` with
//! `∂M = A ∂Y Aᵀ`, then `∂g = Gᵀ ∂U G`. The input gradient is the forward pass with the flipped,
//! transposed kernel ([`input_grad`]).
//!
//! Tiles (over all images) run in chunks small enough for one chunk's `V` and `M` to stay in L2;
//! chunks run in parallel, each gemm on one thread.

use std::cell::RefCell;

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::cpu_conv::{sum_over_threads, ConvShape};

/// Positions of the 4x4 transformed tile.
const P: usize = 16;

/// Most tiles per chunk: at 128 channels one chunk's `V` is 16·128·128·4 B = 1 MiB, each of the
/// 16 products touching 1/16 of it.
const MAX_CHUNK: usize = 128;

/// Whether [`forward`] and [`weight_grad`] handle this shape: a 3x3 kernel on an image of even
/// height and width (every ProGAN layer from 4x4 up).
pub fn applies(s: &ConvShape) -> bool {
    s.k == 3 && s.h.is_multiple_of(2) && s.w.is_multiple_of(2) && s.h > 0 && s.w > 0
}

/// How the tiles are cut into chunks: whole rows of tiles (`w/2` tiles each), over all images.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    /// Tile rows per image.
    th: usize,
    /// Tiles per row.
    tw: usize,
    /// Tile rows in the batch.
    rows: usize,
    /// Tile rows per chunk.
    rows_per_chunk: usize,
}

impl Tiling {
    fn new(s: &ConvShape) -> Self {
        let (th, tw) = (s.h / 2, s.w / 2);
        let rows = s.n * th;
        // At least one chunk per thread where the batch allows.
        let rows_per_chunk = rows
            .div_ceil(rayon::current_num_threads())
            .clamp(1, (MAX_CHUNK / tw).max(1));
        Self {
            th,
            tw,
            rows,
            rows_per_chunk,
        }
    }

    fn chunks(&self) -> usize {
        self.rows.div_ceil(self.rows_per_chunk)
    }

    /// Tile rows `[start, end)` of chunk `c`.
    fn range(&self, c: usize) -> (usize, usize) {
        let start = c * self.rows_per_chunk;
        (start, (start + self.rows_per_chunk).min(self.rows))
    }

    /// One thread per chunk when there are enough chunks, else gemm's own threads.
    fn parallelism(&self) -> Parallelism {
        if self.chunks() >= rayon::current_num_threads() {
            Parallelism::None
        } else {
            Parallelism::Rayon(0)
        }
    }
}

/// A chunk's transformed tiles, `[16][channels][tiles]`. The 16 blocks are one cache line
/// further apart than their size: the transforms write all 16 at once, and at a power-of-two
/// block size those 16 streams fall in the same L1 set.
struct Blocks {
    data: Vec<f32>,
    /// Floats from one block to the next.
    stride: usize,
    /// Tiles per channel row.
    tiles: usize,
}

impl Blocks {
    fn new() -> Self {
        Self {
            data: Vec::new(),
            stride: 0,
            tiles: 0,
        }
    }

    fn resize(&mut self, channels: usize, tiles: usize) {
        self.tiles = tiles;
        self.stride = channels * tiles + 16;
        self.data.resize(P * self.stride, 0.0);
    }

    fn block(&self, p: usize) -> *const f32 {
        self.data[p * self.stride..].as_ptr()
    }

    fn block_mut(&mut self, p: usize) -> *mut f32 {
        self.data[p * self.stride..].as_mut_ptr()
    }

    /// The `len` tiles from `at` of channel `c`, in each of the 16 blocks.
    fn rows_mut(&mut self, c: usize, at: usize, len: usize) -> [&mut [f32]; P] {
        let offset = c * self.tiles + at;
        let mut blocks = self.data.chunks_exact_mut(self.stride);
        std::array::from_fn(|_| {
            let block = blocks.next().expect("16 blocks");
            &mut block[offset..][..len]
        })
    }

    /// The same, read-only.
    fn rows(&self, c: usize, at: usize, len: usize) -> [&[f32]; P] {
        let offset = c * self.tiles + at;
        std::array::from_fn(|p| &self.data[p * self.stride + offset..][..len])
    }
}

/// `U[p][o][c] = (G g_{o,c} Gᵀ)[p]`, `[16, C_out, C_in]`, with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
/// `kernel(o, c)` is the 3x3 kernel from input channel `c` to output channel `o`, row-major.
fn transform_filters(s: &ConvShape, kernel: impl Fn(usize, usize) -> [f32; 9]) -> Vec<f32> {
    let (co, ci) = (s.c_out, s.c_in);
    let mut u = vec![0f32; P * co * ci];
    for o in 0..co {
        for c in 0..ci {
            let g = kernel(o, c);
            // G g: 4 rows of 3.
            let mut gg = [[0f32; 3]; 4];
            for x in 0..3 {
                let (g0, g1, g2) = (g[x], g[3 + x], g[6 + x]);
                gg[0][x] = g0;
                gg[1][x] = 0.5 * (g0 + g1 + g2);
                gg[2][x] = 0.5 * (g0 - g1 + g2);
                gg[3][x] = g2;
            }
            for (a, row) in gg.iter().enumerate() {
                let t = [
                    row[0],
                    0.5 * (row[0] + row[1] + row[2]),
                    0.5 * (row[0] - row[1] + row[2]),
                    row[2],
                ];
                for (b, v) in t.into_iter().enumerate() {
                    u[((a * 4 + b) * co + o) * ci + c] = v;
                }
            }
        }
    }
    u
}

/// One image row split into its even and odd columns of the zero-padded row (padded column
/// `2k` is image column `2k − 1`): `even[k] = x[2k − 1]`, `odd[k] = x[2k]`, `k ∈ [0, w/2]`.
fn split_row(plane: &[f32], w: usize, y: isize, even: &mut [f32], odd: &mut [f32]) {
    let tw = w / 2;
    if y < 0 || y as usize * w >= plane.len() {
        even.fill(0.0);
        odd.fill(0.0);
        return;
    }
    let row = &plane[y as usize * w..][..w];
    even[0] = 0.0;
    odd[tw] = 0.0;
    for ((pair, o), e) in row.chunks_exact(2).zip(&mut odd[..tw]).zip(&mut even[1..]) {
        *o = pair[0];
        *e = pair[1];
    }
}

/// `Bᵀ d` on whole rows: `t = (d0 − d2, d1 + d2, d2 − d1, d1 − d3)`, element-wise.
fn rows_times_bt(d: &[f32], t: &mut [f32], len: usize) {
    let (d0, d1, d2, d3) = (
        &d[..len],
        &d[len..2 * len],
        &d[2 * len..3 * len],
        &d[3 * len..4 * len],
    );
    let (t0, rest) = t.split_at_mut(len);
    let (t1, rest) = rest.split_at_mut(len);
    let (t2, t3) = rest.split_at_mut(len);
    let t3 = &mut t3[..len];
    for k in 0..len {
        t0[k] = d0[k] - d2[k];
        t1[k] = d1[k] + d2[k];
        t2[k] = d2[k] - d1[k];
        t3[k] = d1[k] - d3[k];
    }
}

/// `· B` on a row of tiles, from the row's even and odd columns (`tw + 1` each): tile `k`'s
/// columns are `(e[k], o[k], e[k + 1], o[k + 1])`.
fn row_times_b(e: &[f32], o: &[f32], out: [&mut [f32]; 4], tw: usize) {
    let (e0, e1, o0, o1) = (&e[..tw], &e[1..=tw], &o[..tw], &o[1..=tw]);
    let [b0, b1, b2, b3] = out;
    let (b0, b1, b2, b3) = (&mut b0[..tw], &mut b1[..tw], &mut b2[..tw], &mut b3[..tw]);
    for k in 0..tw {
        b0[k] = e0[k] - e1[k];
        b1[k] = o0[k] + e1[k];
        b2[k] = e1[k] - o0[k];
        b3[k] = o0[k] - o1[k];
    }
}

/// `V[p][c][j] = (Bᵀ d B)[p]` for the tile rows `[r0, r1)` of `x`, with
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`; `d` is the 4x4 patch at
/// `(2·ty − 1, 2·tx − 1)`, zero outside the image. A whole row of tiles at a time: `Bᵀ d` is
/// four element-wise row combinations, `· B` the same on even and odd columns.
fn transform_inputs(
    s: &ConvShape,
    t: &Tiling,
    x: &[f32],
    (r0, r1): (usize, usize),
    v: &mut Blocks,
) {
    let (w, hw, ci, tw) = (s.w, s.h * s.w, s.c_in, t.tw);
    let len = tw + 1;
    let mut even = vec![0f32; 4 * len];
    let mut odd = vec![0f32; 4 * len];
    let mut te = vec![0f32; 4 * len];
    let mut to = vec![0f32; 4 * len];
    for c in 0..ci {
        for r in r0..r1 {
            let (image, ty) = (r / t.th, r % t.th);
            let plane = &x[(image * ci + c) * hw..][..hw];
            for q in 0..4 {
                let y = 2 * ty as isize - 1 + q as isize;
                split_row(
                    plane,
                    w,
                    y,
                    &mut even[q * len..][..len],
                    &mut odd[q * len..][..len],
                );
            }
            rows_times_bt(&even, &mut te, len);
            rows_times_bt(&odd, &mut to, len);
            let [o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11, o12, o13, o14, o15] =
                v.rows_mut(c, (r - r0) * tw, tw);
            for (a, out) in [
                [o0, o1, o2, o3],
                [o4, o5, o6, o7],
                [o8, o9, o10, o11],
                [o12, o13, o14, o15],
            ]
            .into_iter()
            .enumerate()
            {
                row_times_b(&te[a * len..][..len], &to[a * len..][..len], out, tw);
            }
        }
    }
}

/// `∂M[p][o][j] = (A ∂Y Aᵀ)[p]` for the tile rows `[r0, r1)` of the output gradient, with
/// `A = [[1, 0], [1, 1], [1, −1], [0, −1]]`.
fn transform_output_grads(
    s: &ConvShape,
    t: &Tiling,
    grad: &[f32],
    (r0, r1): (usize, usize),
    dm: &mut Blocks,
) {
    let (w, hw, co, tw) = (s.w, s.h * s.w, s.c_out, t.tw);
    for o in 0..co {
        for r in r0..r1 {
            let (image, ty) = (r / t.th, r % t.th);
            let plane = &grad[(image * co + o) * hw..][..hw];
            let (y0, y1) = (&plane[2 * ty * w..][..w], &plane[(2 * ty + 1) * w..][..w]);
            let out = dm.rows_mut(o, (r - r0) * tw, tw);
            for k in 0..tw {
                let (e0, o0, e1, o1) = (y0[2 * k], y0[2 * k + 1], y1[2 * k], y1[2 * k + 1]);
                // A ∂Y: 4 rows of 2, then each row (qe, qo) · Aᵀ.
                let ay = [[e0, o0], [e0 + e1, o0 + o1], [e0 - e1, o0 - o1], [-e1, -o1]];
                for (a, [qe, qo]) in ay.into_iter().enumerate() {
                    out[a * 4][k] = qe;
                    out[a * 4 + 1][k] = qe + qo;
                    out[a * 4 + 2][k] = qe - qo;
                    out[a * 4 + 3][k] = -qo;
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's two chunk buffers, kept between calls: at the sizes here a fresh buffer
    /// costs page faults and a memset on every call.
    static SCRATCH: RefCell<(Blocks, Blocks)> = RefCell::new((Blocks::new(), Blocks::new()));
}

/// Runs `f` on this thread's scratch buffers, or on fresh ones when they are in use (a rayon
/// thread waiting inside a multi-threaded gemm may pick up another chunk).
fn with_scratch<R>(f: impl FnOnce(&mut Blocks, &mut Blocks) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut pair) => {
            let (a, b) = &mut *pair;
            f(a, b)
        }
        Err(_) => f(&mut Blocks::new(), &mut Blocks::new()),
    })
}

/// A pointer the chunks write through: each output pixel belongs to exactly one tile.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: chunks write disjoint elements (see `forward`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` floats in (a method, so closures capture the whole `SharedOut`).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `y = conv(x, weight) + bias` for a shape [`applies`] accepts; NCHW / OIHW, row-major.
pub fn forward(s: ConvShape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let u = transform_filters(&s, |o, c| {
        weight[(o * s.c_in + c) * 9..][..9]
            .try_into()
            .expect("9 taps")
    });
    forward_transformed(s, x, &u, bias)
}

/// `∂L/∂x` from `∂L/∂y` for a shape [`applies`] accepts: the forward pass from `c_out` back to
/// `c_in` channels with the kernel transposed (in ↔ out) and flipped, folded into the filter
/// transform.
pub fn input_grad(s: ConvShape, grad: &[f32], weight: &[f32]) -> Vec<f32> {
    let t = s.transposed();
    let u = transform_filters(&t, |o, c| {
        let mut g: [f32; 9] = weight[(c * s.c_in + o) * 9..][..9]
            .try_into()
            .expect("9 taps");
        g.reverse();
        g
    });
    forward_transformed(t, grad, &u, None)
}

/// The forward pass with the filters already transformed (`U`, `[16, C_out, C_in]`).
fn forward_transformed(s: ConvShape, x: &[f32], u: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    debug_assert!(applies(&s));
    let (co, ci, w, hw) = (s.c_out, s.c_in, s.w, s.h * s.w);
    let mut y = vec![0f32; s.n * co * hw];
    if y.is_empty() {
        return y;
    }
    let t = Tiling::new(&s);
    let (par, tw) = (t.parallelism(), t.tw);
    let out = SharedOut(y.as_mut_ptr());
    (0..t.chunks()).into_par_iter().for_each(|chunk| {
        with_scratch(|v, m| {
            let rows = t.range(chunk);
            let nt = (rows.1 - rows.0) * tw;
            v.resize(ci, nt);
            m.resize(co, nt);
            transform_inputs(&s, &t, x, rows, v);
            for p in 0..P {
                // SAFETY: M[p] is [co, nt], U[p] [co, ci], V[p] [ci, nt], row-major, inside
                // their buffers (`Blocks::resize`); none overlap.
                unsafe {
                    gemm(
                        co,
                        nt,
                        ci,
                        m.block_mut(p),
                        1,
                        nt as isize,
                        false,
                        u.as_ptr().add(p * co * ci),
                        1,
                        ci as isize,
                        v.block(p),
                        1,
                        nt as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            }
            // Y = Aᵀ M A, with Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]: a row of tiles at a time.
            for o in 0..co {
                let b0 = bias.map_or(0.0, |b| b[o]);
                for r in rows.0..rows.1 {
                    let (image, ty) = (r / t.th, r % t.th);
                    let mm = m.rows(o, (r - rows.0) * tw, tw);
                    let plane = (image * co + o) * hw + 2 * ty * w;
                    // SAFETY: output rows 2ty and 2ty + 1 of plane (image, o) lie inside y,
                    // and only this tile row writes them.
                    let (line0, line1) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(out.at(plane), w),
                            std::slice::from_raw_parts_mut(out.at(plane + w), w),
                        )
                    };
                    for k in 0..tw {
                        let at = |p: usize| mm[p][k];
                        // The two rows of Aᵀ M, then each · A.
                        let r0: [f32; 4] = std::array::from_fn(|b| at(b) + at(4 + b) + at(8 + b));
                        let r1: [f32; 4] =
                            std::array::from_fn(|b| at(4 + b) - at(8 + b) - at(12 + b));
                        line0[2 * k] = r0[0] + r0[1] + r0[2] + b0;
                        line0[2 * k + 1] = r0[1] - r0[2] - r0[3] + b0;
                        line1[2 * k] = r1[0] + r1[1] + r1[2] + b0;
                        line1[2 * k + 1] = r1[1] - r1[2] - r1[3] + b0;
                    }
                }
            }
        })
    });
    y
}

/// `∂L/∂w` (`[C_out, C_in, 3, 3]`) from the input and `∂L/∂y`, for a shape [`applies`] accepts.
pub fn weight_grad(s: ConvShape, x: &[f32], grad: &[f32]) -> Vec<f32> {
    debug_assert!(applies(&s));
    let (co, ci) = (s.c_out, s.c_in);
    let t = Tiling::new(&s);
    if t.rows == 0 {
        return vec![0f32; co * ci * 9];
    }
    let par = t.parallelism();
    // Chunks [first, last) accumulated into one ∂U ([16, co, ci]).
    let accumulate = |first: usize, last: usize| {
        let mut du = vec![0f32; P * co * ci];
        with_scratch(|v, dm| {
            for chunk in first..last {
                let rows = t.range(chunk);
                let nt = (rows.1 - rows.0) * t.tw;
                v.resize(ci, nt);
                dm.resize(co, nt);
                transform_inputs(&s, &t, x, rows, v);
                transform_output_grads(&s, &t, grad, rows, dm);
                for p in 0..P {
                    // SAFETY: ∂U[p] is [co, ci] row-major; ∂M[p] [co, nt] row-major; V[p] [ci, nt]
                    // row-major, read as its transpose [nt, ci]; all inside their buffers.
                    unsafe {
                        gemm(
                            co,
                            ci,
                            nt,
                            du.as_mut_ptr().add(p * co * ci),
                            1,
                            ci as isize,
                            chunk > first,
                            dm.block(p),
                            1,
                            nt as isize,
                            v.block(p),
                            nt as isize,
                            1,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            par,
                        );
                    }
                }
            }
        });
        du
    };
    let chunks = t.chunks();
    let du = if matches!(par, Parallelism::Rayon(_)) {
        accumulate(0, chunks)
    } else {
        sum_over_threads(chunks, accumulate)
    };
    // ∂g = Gᵀ ∂U G.
    let mut dw = vec![0f32; co * ci * 9];
    for o in 0..co {
        for c in 0..ci {
            let at = |a: usize, b: usize| du[((a * 4 + b) * co + o) * ci + c];
            // Gᵀ ∂U: 3 rows of 4.
            let gu: [[f32; 4]; 3] = [
                std::array::from_fn(|b| at(0, b) + 0.5 * (at(1, b) + at(2, b))),
                std::array::from_fn(|b| 0.5 * (at(1, b) - at(2, b))),
                std::array::from_fn(|b| 0.5 * (at(1, b) + at(2, b)) + at(3, b)),
            ];
            let g = &mut dw[(o * ci + c) * 9..][..9];
            for (ky, r) in gu.iter().enumerate() {
                g[ky * 3] = r[0] + 0.5 * (r[1] + r[2]);
                g[ky * 3 + 1] = 0.5 * (r[1] - r[2]);
                g[ky * 3 + 2] = 0.5 * (r[1] + r[2]) + r[3];
            }
        }
    }
    dw
}
