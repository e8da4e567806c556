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

use crate::shape::{sum_over_threads, ConvShape};

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

    /// Lays the blocks out for `channels` rows of `tiles` each. The buffer only grows: every
    /// element a call reads is first written by the transforms, and shrinking it would make the
    /// next, wider layer zero-fill the regrown part again.
    fn resize(&mut self, channels: usize, tiles: usize) {
        self.tiles = tiles;
        self.stride = channels * tiles + 16;
        let len = P * self.stride;
        if self.data.len() < len {
            self.data.resize(len, 0.0);
        }
    }

    fn block(&self, p: usize) -> *const f32 {
        self.data[p * self.stride..].as_ptr()
    }

    fn block_mut(&mut self, p: usize) -> *mut f32 {
        self.data[p * self.stride..].as_mut_ptr()
    }

    /// Channel `c`'s row of tiles in each of the 16 blocks.
    fn channel_mut(&mut self, c: usize) -> [&mut [f32]; P] {
        let (offset, len) = (c * self.tiles, self.tiles);
        let mut blocks = self.data.chunks_exact_mut(self.stride);
        std::array::from_fn(|_| {
            let block = blocks.next().expect("16 blocks");
            &mut block[offset..][..len]
        })
    }
}

/// `U[p][o][c] = (G g_{o,c} Gᵀ)[p]`, `[16, C_out, C_in]`, from OIHW `weight`, with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`. One output channel at a time into a
/// `[16, C_in]` buffer, then copied out row by row: writing `U` in `(o, c)` order directly is 16
/// streams a power of two apart, which share one L1 set. `scale` multiplies the kernel (the
/// equalized learning rate's run-time constant), so the scaled weights are never materialised.
pub(crate) fn transform_filters(s: &ConvShape, weight: &[f32], scale: f32) -> Vec<f32> {
    let (co, ci) = (s.c_out, s.c_in);
    let mut u = vec![0f32; P * co * ci];
    let mut rows = vec![0f32; P * ci];
    for o in 0..co {
        for c in 0..ci {
            let g = &weight[(o * ci + c) * 9..][..9];
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
                    rows[(a * 4 + b) * ci + c] = scale * v;
                }
            }
        }
        for (p, row) in rows.chunks_exact(ci).enumerate() {
            u[(p * co + o) * ci..][..ci].copy_from_slice(row);
        }
    }
    u
}

/// The left operands of the 16 products: `U` as [`transform_filters`] returns it, or read as the
/// transformed filters of the flipped, transposed kernel (the input gradient). Flipping a 3x3
/// kernel reverses `G`'s columns, which swaps its rows 0 and 3 (`G J = Π G`), so
/// `G flip(g) Gᵀ = Π (G g Gᵀ) Πᵀ`: position `(a, b)` of the flipped kernel is position
/// `(σa, σb)` of the original, `σ = (3 1 2 0)`; the in ↔ out transposition is a change of strides.
#[derive(Clone, Copy)]
struct Filters<'a> {
    u: &'a [f32],
    flipped_transposed: bool,
}

impl Filters<'_> {
    /// `(pointer, column stride, row stride)` of `U[p]` as a `[rows, cols]` matrix, where the
    /// product has `rows` outputs and `cols` inputs.
    fn lhs(&self, p: usize, rows: usize, cols: usize) -> (*const f32, isize, isize) {
        if self.flipped_transposed {
            const SIGMA: [usize; 4] = [3, 1, 2, 0];
            let q = SIGMA[p / 4] * 4 + SIGMA[p % 4];
            // Stored as [16, cols, rows] (the forward's [C_out, C_in]).
            (self.u[q * rows * cols..].as_ptr(), rows as isize, 1)
        } else {
            (self.u[p * rows * cols..].as_ptr(), 1, cols as isize)
        }
    }
}

/// `(x0, x1, x2, x3) ← (x0 − x2, x1 + x2, x2 − x1, x1 − x3)` element-wise: `Bᵀ` applied along
/// one axis of the 4x4 patches of a row of tiles, in place.
fn bt_in_place(x0: &mut [f32], x1: &mut [f32], x2: &mut [f32], x3: &mut [f32]) {
    for (((a, b), c), d) in x0.iter_mut().zip(x1.iter_mut()).zip(x2.iter_mut()).zip(x3) {
        let (p0, p1, p2, p3) = (*a, *b, *c, *d);
        *a = p0 - p2;
        *b = p1 + p2;
        *c = p2 - p1;
        *d = p1 - p3;
    }
}

/// `(x0, x1) ← (x0 + x1 + x2, x1 − x2 − x3)` element-wise: `Aᵀ` along one axis, in place.
fn at_in_place(x0: &mut [f32], x1: &mut [f32], x2: &[f32], x3: &[f32]) {
    for (((a, b), &c), &d) in x0.iter_mut().zip(x1.iter_mut()).zip(x2).zip(x3) {
        let (p0, p1) = (*a, *b);
        *a = p0 + p1 + c;
        *b = p1 - c - d;
    }
}

/// `(x0, x1, x2, x3) ← (x0, x0 + x1, x0 − x1, −x1)` element-wise: `A` along one axis, in place.
fn a_in_place(x0: &mut [f32], x1: &mut [f32], x2: &mut [f32], x3: &mut [f32]) {
    for (((a, b), c), d) in x0.iter_mut().zip(x1.iter_mut()).zip(x2.iter_mut()).zip(x3) {
        let (p0, p1) = (*a, *b);
        *b = p0 + p1;
        *c = p0 - p1;
        *d = -p1;
    }
}

/// The 16 rows of one channel as named slices, for the in-place steps above.
macro_rules! sixteen {
    ($rows:expr) => {{
        let [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15] = $rows;
        [
            [r0, r1, r2, r3],
            [r4, r5, r6, r7],
            [r8, r9, r10, r11],
            [r12, r13, r14, r15],
        ]
    }};
}

/// `V[p][c][j] = (Bᵀ d B)[p]` for the tile rows `[r0, r1)` of `x`, with
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`; `d` is the 4x4 patch at
/// `(2·ty − 1, 2·tx − 1)`, zero outside the image. Per channel, each patch row `q` is copied
/// into `V` already multiplied by `B` (`d B`: element `(q, b)` of tile `j` at `V[4q + b][c][j]`),
/// then `Bᵀ` is applied in place down the patch columns along whole rows of tiles: one long
/// element-wise loop per column, which vectorises even when an image row holds only 2 tiles.
fn transform_inputs(
    s: &ConvShape,
    t: &Tiling,
    x: &[f32],
    (r0, r1): (usize, usize),
    v: &mut Blocks,
) {
    let (h, w, hw, ci, tw) = (s.h, s.w, s.h * s.w, s.c_in, t.tw);
    for c in 0..ci {
        let mut d = sixteen!(v.channel_mut(c));
        for r in r0..r1 {
            let (image, ty) = (r / t.th, r % t.th);
            let plane = &x[(image * ci + c) * hw..][..hw];
            let at = (r - r0) * tw;
            for (q, [d0, d1, d2, d3]) in d.iter_mut().enumerate() {
                let (d0, d1, d2, d3) = (
                    &mut d0[at..at + tw],
                    &mut d1[at..at + tw],
                    &mut d2[at..at + tw],
                    &mut d3[at..at + tw],
                );
                // Patch row q of tile row ty is image row 2·ty − 1 + q.
                let y = (2 * ty + q).wrapping_sub(1);
                if y >= h {
                    for row in [d0, d1, d2, d3] {
                        row.fill(0.0);
                    }
                    continue;
                }
                // Patch columns (p0, p1, p2, p3) = 2k − 1, 2k, 2k + 1, 2k + 2 of tile k, times B
                // on the way in: (p0 − p2, p1 + p2, p2 − p1, p1 − p3), as `bt_in_place` does,
                // which saves a pass over V.
                let row = &plane[y * w..][..w];
                for k in 0..tw {
                    let p0 = if k > 0 { row[2 * k - 1] } else { 0.0 };
                    let (p1, p2) = (row[2 * k], row[2 * k + 1]);
                    let p3 = if k + 1 < tw { row[2 * k + 2] } else { 0.0 };
                    d0[k] = p0 - p2;
                    d1[k] = p1 + p2;
                    d2[k] = p2 - p1;
                    d3[k] = p1 - p3;
                }
            }
        }
        // Bᵀ (d B): down each patch column b.
        for b in 0..4 {
            let [q0, q1, q2, q3] = &mut d;
            bt_in_place(q0[b], q1[b], q2[b], q3[b]);
        }
    }
}

/// `∂M[p][o][j] = (A ∂Y Aᵀ)[p]` for the tile rows `[r0, r1)` of the output gradient, with
/// `A = [[1, 0], [1, 1], [1, −1], [0, −1]]`: each tile's 2x2 block copied to positions
/// `(0, 0), (0, 1), (1, 0), (1, 1)`, then `A` applied in place down both columns and along all
/// four rows, as in [`transform_inputs`].
fn transform_output_grads(
    s: &ConvShape,
    t: &Tiling,
    grad: &[f32],
    (r0, r1): (usize, usize),
    dm: &mut Blocks,
) {
    let (w, hw, co, tw) = (s.w, s.h * s.w, s.c_out, t.tw);
    for o in 0..co {
        let mut d = sixteen!(dm.channel_mut(o));
        for r in r0..r1 {
            let (image, ty) = (r / t.th, r % t.th);
            let plane = &grad[(image * co + o) * hw..][..hw];
            let at = (r - r0) * tw;
            for (q, [e, od, _, _]) in d.iter_mut().take(2).enumerate() {
                let row = &plane[(2 * ty + q) * w..][..w];
                let (e, od) = (&mut e[at..at + tw], &mut od[at..at + tw]);
                for ((pair, e), od) in row.chunks_exact(2).zip(e.iter_mut()).zip(od.iter_mut()) {
                    *e = pair[0];
                    *od = pair[1];
                }
            }
        }
        for b in 0..2 {
            let [q0, q1, q2, q3] = &mut d;
            a_in_place(q0[b], q1[b], q2[b], q3[b]);
        }
        for [e0, e1, e2, e3] in &mut d {
            a_in_place(e0, e1, e2, e3);
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

/// `y = conv(x, scale · weight) + bias` for a shape [`applies`] accepts; NCHW / OIHW, row-major.
pub fn forward(
    s: ConvShape,
    x: &[f32],
    weight: &[f32],
    scale: f32,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    forward_with_filters(s, x, &transform_filters(&s, weight, scale), bias)
}

/// [`forward`] with the filters already transformed by [`transform_filters`] (which
/// [`crate::filter_cache`] keeps per weight tensor).
pub(crate) fn forward_with_filters(
    s: ConvShape,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let filters = Filters {
        u,
        flipped_transposed: false,
    };
    forward_transformed(s, x, filters, bias)
}

/// `∂L/∂x` from `∂L/∂y` for a shape [`applies`] accepts: the forward pass from `c_out` back to
/// `c_in` channels with the kernel transposed (in ↔ out) and flipped, read from the forward's
/// transformed filters ([`Filters`]).
pub fn input_grad(s: ConvShape, grad: &[f32], weight: &[f32], scale: f32) -> Vec<f32> {
    input_grad_with_filters(s, grad, &transform_filters(&s, weight, scale))
}

/// [`input_grad`] from the forward's transformed filters `u`.
pub(crate) fn input_grad_with_filters(s: ConvShape, grad: &[f32], u: &[f32]) -> Vec<f32> {
    let filters = Filters {
        u,
        flipped_transposed: true,
    };
    forward_transformed(s.transposed(), grad, filters, None)
}

/// The forward pass with the filters already transformed.
fn forward_transformed(
    s: ConvShape,
    x: &[f32],
    filters: Filters<'_>,
    bias: Option<&[f32]>,
) -> Vec<f32> {
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
                let (lhs, lhs_cs, lhs_rs) = filters.lhs(p, co, ci);
                // SAFETY: M[p] is [co, nt], U[p] [co, ci] (strides from `Filters::lhs`), V[p]
                // [ci, nt], row-major, inside their buffers (`Blocks::resize`); none overlap.
                unsafe {
                    gemm(
                        co,
                        nt,
                        ci,
                        m.block_mut(p),
                        1,
                        nt as isize,
                        false,
                        lhs,
                        lhs_cs,
                        lhs_rs,
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
            // Y = Aᵀ M A, with Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], in place on M: down each
            // column, then along the first two rows; Y's 2x2 tile is then at positions
            // (0, 0), (0, 1), (1, 0), (1, 1).
            for o in 0..co {
                let b0 = bias.map_or(0.0, |b| b[o]);
                let [mut r0, mut r1, r2, r3] = sixteen!(m.channel_mut(o));
                for b in 0..4 {
                    at_in_place(r0[b], r1[b], r2[b], r3[b]);
                }
                for [e0, e1, e2, e3] in [&mut r0, &mut r1] {
                    at_in_place(e0, e1, e2, e3);
                }
                let [y00, y01, ..] = &r0;
                let [y10, y11, ..] = &r1;
                for r in rows.0..rows.1 {
                    let (image, ty) = (r / t.th, r % t.th);
                    let at = (r - rows.0) * tw;
                    let plane = (image * co + o) * hw + 2 * ty * w;
                    // SAFETY: output rows 2ty and 2ty + 1 of plane (image, o) lie inside y,
                    // and only this tile row writes them.
                    let (line0, line1) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(out.at(plane), w),
                            std::slice::from_raw_parts_mut(out.at(plane + w), w),
                        )
                    };
                    for (k, (top, bottom)) in line0
                        .chunks_exact_mut(2)
                        .zip(line1.chunks_exact_mut(2))
                        .enumerate()
                    {
                        top[0] = y00[at + k] + b0;
                        top[1] = y01[at + k] + b0;
                        bottom[0] = y10[at + k] + b0;
                        bottom[1] = y11[at + k] + b0;
                    }
                }
            }
        })
    });
    y
}

/// `∂L/∂w` (`[C_out, C_in, 3, 3]`) of `conv(x, scale · w)` from the input and `∂L/∂y`, for a
/// shape [`applies`] accepts.
pub fn weight_grad(s: ConvShape, x: &[f32], grad: &[f32], scale: f32) -> Vec<f32> {
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
                            scale,
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
    // ∂g = Gᵀ ∂U G, one output channel at a time from a `[16, C_in]` copy of its rows of ∂U
    // (reading ∂U in `(o, c)` order directly is 16 streams in one L1 set).
    let mut dw = vec![0f32; co * ci * 9];
    let mut rows = vec![0f32; P * ci];
    for o in 0..co {
        for (p, row) in rows.chunks_exact_mut(ci).enumerate() {
            row.copy_from_slice(&du[(p * co + o) * ci..][..ci]);
        }
        for c in 0..ci {
            let at = |a: usize, b: usize| rows[(a * 4 + b) * ci + c];
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
