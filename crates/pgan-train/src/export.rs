//! `pgan export`: one network of a checkpoint as a `.safetensors` file, for use outside pgan
//! (PyTorch, JAX, another burn program).
//!
//! Tensor names are the module paths (`blocks.3.conv1.weight`, `to_rgb.5.bias`...). Weights are
//! stored as pgan holds them: with the equalized learning rate (Karras et al. 2018, sec. 4.1)
//! they are N(0, 1)-scaled and multiplied by `gain / sqrt(fan_in)` at run time, so a consumer
//! must apply the same scale. The file's metadata says so and carries the model configuration
//! and the schedule position (stage, alpha) the network was saved at.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::module::Module;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use serde::Serialize;

use crate::checkpoint::{self, load_generator, TrainState};
use crate::error::{Result, TrainError};

/// Which network of a checkpoint to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ExportNet {
    /// The EMA generator (`Gs` in the official code): the one to sample from.
    GeneratorEma,
    /// The raw generator.
    Generator,
    /// The discriminator.
    Discriminator,
}

impl std::str::FromStr for ExportNet {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "g-ema" | "g_ema" | "gs" => Ok(Self::GeneratorEma),
            "g" | "generator" => Ok(Self::Generator),
            "d" | "discriminator" => Ok(Self::Discriminator),
            other => Err(format!(
                "unknown network '{other}' (expected g-ema, g or d)"
            )),
        }
    }
}

impl ExportNet {
    fn name(self) -> &'static str {
        match self {
            Self::GeneratorEma => "g_ema",
            Self::Generator => "g",
            Self::Discriminator => "d",
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// The checkpoint it came from.
    pub checkpoint: PathBuf,
    /// Number of tensors.
    pub tensors: usize,
    /// Number of scalar parameters.
    pub parameters: usize,
    /// File size.
    pub bytes: u64,
}

/// Writes `net` of the checkpoint at `source` (a checkpoint folder or a run directory, meaning
/// its latest checkpoint) to `out`, atomically.
pub fn export_safetensors(source: &Path, net: ExportNet, out: &Path) -> Result<ExportSummary> {
    let ckpt = checkpoint::resolve_checkpoint(source)?;
    let device = Default::default();
    let loaded = load_generator::<Flex>(&ckpt, net == ExportNet::Generator, &device)?;
    let (bytes, tensors, parameters) = match net {
        ExportNet::GeneratorEma | ExportNet::Generator => {
            serialize(&loaded.generator, net, &loaded.state, &ckpt)?
        }
        ExportNet::Discriminator => {
            let d = checkpoint::load_module(
                loaded.model.init_discriminator::<Flex>(&device),
                &ckpt,
                checkpoint::DISCRIMINATOR,
                &device,
            )?;
            serialize(&d, net, &loaded.state, &ckpt)?
        }
    };
    crate::fsutil::write_atomic(out, &bytes).map_err(crate::error::io_err(out, "write"))?;
    Ok(ExportSummary {
        path: out.to_path_buf(),
        checkpoint: ckpt,
        tensors,
        parameters,
        bytes: bytes.len() as u64,
    })
}

fn serialize<M: Module<Flex>>(
    module: &M,
    net: ExportNet,
    state: &TrainState,
    ckpt: &Path,
) -> Result<(Vec<u8>, usize, usize)> {
    let failed = |message: String| TrainError::Checkpoint {
        path: ckpt.to_path_buf(),
        message,
    };
    let mut store = SafetensorsStore::from_bytes(None)
        .metadata("pgan.network", net.name())
        .metadata("pgan.model", state.model.to_string())
        .metadata("pgan.stage", state.stage.to_string())
        .metadata("pgan.alpha", state.alpha.to_string())
        .metadata(
            "pgan.kimg",
            (state.images_shown as f64 / 1000.0).to_string(),
        )
        .metadata(
            "pgan.weight_scale",
            "equalized learning rate: multiply each weight by gain/sqrt(fan_in) at run time",
        )
        .metadata(
            "pgan.layout",
            "convolution weights [out, in, kh, kw]; dense weights [in, out] (y = x W + b)",
        );
    // burn-store reads every weight here.
    crate::host_read::count_read();
    module
        .save_into(&mut store)
        .map_err(|e| failed(format!("cannot serialize {}: {e}", net.name())))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| failed(format!("cannot serialize {}: {e}", net.name())))?;
    let bytes = with_sorted_header(&bytes).map_err(failed)?;
    let tensors = module.collect(None, None, false).len();
    Ok((bytes, tensors, module.num_params()))
}

/// The safetensors file `bytes` with its JSON header's keys (tensor names, metadata) in sorted
/// order. burn-store writes the metadata in hash order, which differs from run to run: sorted,
/// one checkpoint always exports to the same bytes (checksums, caches, diffs). The tensor data
/// is left as it is; the header is padded with spaces to keep it 8-byte aligned, as the format
/// allows.
fn with_sorted_header(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    let bad = |what: &str| format!("burn-store wrote a malformed safetensors {what}");
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or_else(|| bad("file"))?;
    let header = bytes.get(8..8 + len).ok_or_else(|| bad("header length"))?;
    let sorted: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(&format!("header ({e})")))?;
    let sorted: BTreeMap<String, serde_json::Value> = sorted
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::Object(map) => {
                let map: BTreeMap<String, serde_json::Value> = map.into_iter().collect();
                (key, serde_json::to_value(map).expect("a map serialises"))
            }
            other => (key, other),
        })
        .collect();
    let mut json = serde_json::to_vec(&sorted).expect("a map serialises");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}
