//! Which convolution kernels the GPU backends run, chosen at run time by `PGAN_GPU_CONV`.
//!
//! - `implicit-gemm` (default): this crate's op, every pass (forward, input gradient, weight
//!   gradient) through cubek's implicit-GEMM kernels with the algorithm and tile kind named
//!   explicitly (default `simple_sync_cyclic` on `cmma` tiles, what burn's own
//!   `ConvStrategy::ImplicitGemm` picks). Where the device cannot run them (no tensor cores, e.g.
//!   wgpu's WGSL compiler or Mesa's lavapipe), that pass runs burn's autotuned convolution
//!   instead and [`crate::fallbacks`] counts it.
//! - `implicit-gemm:<algorithm>:<tile>`: the same with another cubek algorithm
//!   (`simple_sync_cyclic`, `simple_sync_strided`, `simple_sync_tilewise`, `simple_async_cyclic`,
//!   `simple_async_strided`, `simple_async_tma`, `specialized_async_cyclic`,
//!   `specialized_async_strided`, `specialized_tma`) and tile kind (`cmma`, `mma`).
//! - `autotune`: burn's own `conv2d` on `weight · scale` (its autotuner picks among direct,
//!   im2col and implicit-GEMM kernels per shape).
//!
//! `PGAN_GPU_FUSION=off` additionally runs the trainer on burn's GPU backend without its
//! operation fusion (see `pgan-train`'s backend dispatch); this crate's op works under both.

use std::fmt;

/// The environment variable that picks the GPU convolution.
pub const CONV_ENV: &str = "PGAN_GPU_CONV";

/// cubek's implicit-GEMM algorithms (the names of `cubek::convolution::ConvAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum GemmAlgorithm {
    SimpleSyncCyclic,
    SimpleSyncStrided,
    SimpleSyncTilewise,
    SimpleAsyncCyclic,
    SimpleAsyncStrided,
    SimpleAsyncTma,
    SpecializedAsyncCyclic,
    SpecializedAsyncStrided,
    SpecializedTma,
}

const ALGORITHMS: [(GemmAlgorithm, &str); 9] = [
    (GemmAlgorithm::SimpleSyncCyclic, "simple_sync_cyclic"),
    (GemmAlgorithm::SimpleSyncStrided, "simple_sync_strided"),
    (GemmAlgorithm::SimpleSyncTilewise, "simple_sync_tilewise"),
    (GemmAlgorithm::SimpleAsyncCyclic, "simple_async_cyclic"),
    (GemmAlgorithm::SimpleAsyncStrided, "simple_async_strided"),
    (GemmAlgorithm::SimpleAsyncTma, "simple_async_tma"),
    (
        GemmAlgorithm::SpecializedAsyncCyclic,
        "specialized_async_cyclic",
    ),
    (
        GemmAlgorithm::SpecializedAsyncStrided,
        "specialized_async_strided",
    ),
    (GemmAlgorithm::SpecializedTma, "specialized_tma"),
];

/// The matrix-unit instruction family of the GEMM tiles: `cmma` (wmma-style fragments) or `mma`
/// (register-level `mma.sync`). Both need tensor cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum TileKind {
    Cmma,
    Mma,
}

/// The convolution the GPU backends run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvChoice {
    /// burn's `conv2d` with its autotuner, on `weight · scale`.
    Autotune,
    /// This crate's op: cubek's implicit GEMM with this algorithm and tile kind.
    ImplicitGemm {
        /// The cubek algorithm.
        algorithm: GemmAlgorithm,
        /// The tile kind.
        tile: TileKind,
    },
}

impl Default for ConvChoice {
    /// The implicit GEMM that burn's `ConvStrategy::ImplicitGemm` launches.
    fn default() -> Self {
        ConvChoice::ImplicitGemm {
            algorithm: GemmAlgorithm::SimpleSyncCyclic,
            tile: TileKind::Cmma,
        }
    }
}

/// The element type of the implicit GEMM's operands (`run.precision` in pgan's config).
///
/// `Bf16` casts both operands of every convolution pass (forward: input and weight; input
/// gradient: output gradient and weight; weight gradient: input and output gradient) to bf16
/// in the copies the kernels read anyway, and accumulates and writes in f32 (cubek's
/// `MatmulElems::from_globals` with an f32 output accumulates in f32). Weights, their
/// gradients and everything outside the convolutions stay f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ConvPrecision {
    /// f32 operands (TF32 tensor cores where cubek picks them).
    #[default]
    F32,
    /// bf16 operands, f32 accumulation and outputs.
    Bf16,
}

/// The process-wide operand precision the GPU convolution uses; set once by the trainer at
/// startup, after its config check (only CUDA accepts bf16 there).
static PRECISION_BF16: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the operand precision of every later GPU convolution in this process.
pub fn set_conv_precision(precision: ConvPrecision) {
    PRECISION_BF16.store(
        precision == ConvPrecision::Bf16,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The operand precision of the GPU convolution ([`set_conv_precision`]; f32 unless set).
pub fn conv_precision() -> ConvPrecision {
    if PRECISION_BF16.load(std::sync::atomic::Ordering::Relaxed) {
        ConvPrecision::Bf16
    } else {
        ConvPrecision::F32
    }
}

/// A `PGAN_GPU_CONV` value that names no convolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvChoiceError(String);

impl fmt::Display for ConvChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvChoiceError {}

impl std::str::FromStr for ConvChoice {
    type Err = ConvChoiceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: String| {
            ConvChoiceError(format!(
                "{CONV_ENV}={text:?}: {why}; expected `autotune`, `implicit-gemm` or \
                 `implicit-gemm:<algorithm>:<cmma|mma>` with <algorithm> one of {}",
                ALGORITHMS.map(|(_, n)| n).join(", ")
            ))
        };
        let mut parts = text.trim().split(':');
        match parts.next().unwrap_or("") {
            "autotune" if parts.next().is_none() => Ok(ConvChoice::Autotune),
            "implicit-gemm" => {
                let (algorithm, tile) = match (parts.next(), parts.next(), parts.next()) {
                    (None, _, _) => return Ok(ConvChoice::default()),
                    (Some(a), Some(t), None) => (a, t),
                    _ => return Err(err("give both an algorithm and a tile kind".into())),
                };
                let algorithm = ALGORITHMS
                    .iter()
                    .find(|(_, name)| *name == algorithm)
                    .map(|(a, _)| *a)
                    .ok_or_else(|| err(format!("unknown algorithm {algorithm:?}")))?;
                let tile = match tile {
                    "cmma" => TileKind::Cmma,
                    "mma" => TileKind::Mma,
                    other => return Err(err(format!("unknown tile kind {other:?}"))),
                };
                Ok(ConvChoice::ImplicitGemm { algorithm, tile })
            }
            _ => Err(err("unknown convolution".into())),
        }
    }
}

/// The name `PGAN_GPU_CONV` uses for an algorithm.
pub fn algorithm_name(algorithm: GemmAlgorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(a, _)| *a == algorithm)
        .map(|(_, n)| *n)
        .expect("every algorithm is listed")
}

/// The name `PGAN_GPU_CONV` uses for a tile kind.
pub fn tile_name(tile: TileKind) -> &'static str {
    match tile {
        TileKind::Cmma => "cmma",
        TileKind::Mma => "mma",
    }
}

impl fmt::Display for ConvChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvChoice::Autotune => f.write_str("autotune"),
            ConvChoice::ImplicitGemm { algorithm, tile } => write!(
                f,
                "implicit-gemm:{}:{}",
                algorithm_name(*algorithm),
                tile_name(*tile)
            ),
        }
    }
}

impl ConvChoice {
    /// The choice in `PGAN_GPU_CONV` (the default when unset), read once per process.
    pub fn from_env() -> Result<ConvChoice, ConvChoiceError> {
        static CHOICE: std::sync::OnceLock<Result<ConvChoice, ConvChoiceError>> =
            std::sync::OnceLock::new();
        CHOICE
            .get_or_init(|| match std::env::var(CONV_ENV) {
                Ok(text) if !text.trim().is_empty() => text.parse(),
                _ => Ok(ConvChoice::default()),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_back() {
        for text in [
            "autotune",
            "implicit-gemm:simple_sync_cyclic:cmma",
            "implicit-gemm:simple_async_tma:mma",
            "implicit-gemm:specialized_tma:cmma",
        ] {
            let choice: ConvChoice = text.parse().unwrap();
            assert_eq!(choice.to_string(), text);
        }
        assert_eq!(
            "implicit-gemm".parse::<ConvChoice>().unwrap(),
            ConvChoice::default()
        );
    }

    #[test]
    fn a_bad_choice_names_the_variable_and_the_options() {
        for text in [
            "direct",
            "implicit-gemm:fast",
            "implicit-gemm:simple_sync_cyclic:wmma",
            "autotune:x",
        ] {
            let err = text.parse::<ConvChoice>().unwrap_err().to_string();
            assert!(
                err.contains(CONV_ENV) && err.contains("simple_sync_cyclic") && err.contains(text),
                "{err}"
            );
        }
    }
}
