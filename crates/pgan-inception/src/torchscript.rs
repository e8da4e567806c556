//! Reading the tensors of a TorchScript archive (`torch.jit.save`) without PyTorch.
//!
//! A TorchScript file is a zip: `<name>/data.pkl` pickles the module tree
//! (`RecursiveScriptModule` objects built by `NEWOBJ` + `BUILD` with a dict of attributes),
//! `<name>/data/<key>` hold the raw little-endian storages and `<name>/code/` the TorchScript
//! source. burn-store's PyTorch reader parses such a pickle (its opcodes and
//! `torch._utils._rebuild_tensor_v2`) but only collects tensors from a plain state dict, so this
//! module walks the module objects itself: every tensor attribute is named by its attribute path
//! (`net.layers.conv.weight`), as `module.state_dict()` names it in PyTorch.
//!
//! Module attributes of type `List[int]` (such as a convolution's padding) are pickled as a
//! call of `torch.jit._pickle.build_intlist`, which burn-store's VM does not know and rejects.
//! Such scalar lists are not tensors, so before parsing, their GLOBAL opcodes are renamed to
//! `collections.OrderedDict`, which the VM builds (here: as an empty dict) and this reader then
//! ignores. Tensor lists (`build_tensorlist`) would hide tensors and are refused.
//!
//! burn-store's lazy loader fills a storage it cannot read with zeros, so before trusting the
//! tensors every storage file is read here (the zip reader checks each entry's CRC-32) and their
//! total size must equal the tensors' total size.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::DType;
use burn_store::pytorch::lazy_data::LazyDataSource;
use burn_store::pytorch::pickle_reader::{read_pickle_with_data, Object};
use burn_store::TensorSnapshot;

use crate::error::{InceptionError, Result};

/// One `f32` tensor read from an archive.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Every `f32` tensor attribute of the TorchScript module in `path`, by attribute path.
pub fn read_torchscript_tensors(path: &Path) -> Result<BTreeMap<String, NamedTensor>> {
    let bad = |message: String| InceptionError::TorchScript {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(bad(
                "not a regular file (a TorchScript .pt archive is)".into()
            ))
        }
        Err(e) => return Err(InceptionError::io(path, e)),
    }
    let source = Arc::new(
        LazyDataSource::from_zip(path).map_err(|e| bad(format!("not a zip archive ({e})")))?,
    );
    let storage_keys = source.keys();
    // Storages are `<archive name>/data/<key>`; the module pickle is `<archive name>/data.pkl`.
    let archive_name = storage_keys
        .iter()
        .find_map(|key| key.split_once("/data/").map(|(name, _)| name.to_owned()))
        .ok_or_else(|| bad("no <name>/data/ storages (not a TorchScript archive)".into()))?;
    let pickle_key = format!("{archive_name}/data.pkl");
    let pickle = source
        .read(&pickle_key)
        .map_err(|e| bad(format!("{pickle_key}: {e}")))?;
    let pickle = rename_scalar_list_builders(&pickle).map_err(bad)?;
    let root = read_pickle_with_data(&mut BufReader::new(pickle.as_slice()), source.clone())
        .map_err(|e| bad(format!("{pickle_key}: {e}")))?;

    let mut snapshots = Vec::new();
    collect(&root, &mut Vec::new(), &mut snapshots);
    if snapshots.is_empty() {
        return Err(bad("the module holds no tensors".into()));
    }

    // Every storage must be readable (CRC-checked) and together exactly as large as the tensors.
    let mut storage_bytes = 0usize;
    for key in &storage_keys {
        storage_bytes += source
            .read(key)
            .map_err(|e| bad(format!("{key}: {e}")))?
            .len();
    }
    let mut tensors = BTreeMap::new();
    let mut tensor_bytes = 0usize;
    for (name, snapshot) in snapshots {
        if snapshot.dtype != DType::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, only f32 is read",
                snapshot.dtype
            )));
        }
        // burn-store asserts (panics) on a shape without elements over a non-empty storage.
        if snapshot.shape.num_elements() == 0 {
            return Err(bad(format!(
                "tensor {name} has the shape {:?}, which holds no values",
                snapshot.shape.to_vec()
            )));
        }
        let data = snapshot
            .to_data()
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        let shape = data.shape.to_vec();
        let values = data
            .to_vec::<f32>()
            .map_err(|e| bad(format!("tensor {name}: {e:?}")))?;
        tensor_bytes += values.len() * 4;
        tensors.insert(name, NamedTensor { shape, values });
    }
    if tensor_bytes != storage_bytes {
        return Err(bad(format!(
            "its {} tensors take {tensor_bytes} bytes but its {} storages hold {storage_bytes} \
             (shared or truncated storages are not supported)",
            tensors.len(),
            storage_keys.len()
        )));
    }
    Ok(tensors)
}

/// TorchScript's builders of scalar-list attributes (`torch/jit/_pickle.py`).
const SCALAR_LIST_BUILDERS: [&str; 3] = ["build_intlist", "build_doublelist", "build_boollist"];

/// The pickle with every `GLOBAL torch.jit._pickle build_<scalar>list` renamed to
/// `GLOBAL collections OrderedDict` (see the module docs); an error for any other
/// `torch.jit._pickle` global.
fn rename_scalar_list_builders(pickle: &[u8]) -> std::result::Result<Vec<u8>, String> {
    const MODULE: &[u8] = b"ctorch.jit._pickle\n";
    let mut out = Vec::with_capacity(pickle.len());
    let mut rest = pickle;
    while let Some(at) = find(rest, MODULE) {
        out.extend_from_slice(&rest[..at]);
        let after = &rest[at + MODULE.len()..];
        let end = find(after, b"\n").ok_or("truncated GLOBAL opcode")?;
        let name = String::from_utf8_lossy(&after[..end]);
        if !SCALAR_LIST_BUILDERS.contains(&name.as_ref()) {
            return Err(format!(
                "unsupported TorchScript attribute builder torch.jit._pickle.{name}"
            ));
        }
        out.extend_from_slice(b"ccollections\nOrderedDict\n");
        rest = &after[end + 1..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Walks modules (`BUILD` of a `NEWOBJ`, whose state is the attribute dict) and dicts, naming
/// each tensor by the attribute path that leads to it.
fn collect<'a>(
    object: &'a Object,
    path: &mut Vec<&'a str>,
    out: &mut Vec<(String, TensorSnapshot)>,
) {
    match object {
        Object::Build { args, .. } => collect(args, path, out),
        Object::Dict(entries) => {
            for (key, value) in entries {
                path.push(key);
                collect(value, path, out);
                path.pop();
            }
        }
        Object::TorchParam(snapshot) => out.push((path.join("."), snapshot.clone())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tiny_torchscript.pt`: a TorchScript module made by `make_tiny_torchscript.py` (a
    /// submodule with a 2x3 weight 0..5, a bias [0.5, -0.5] and a `List[int]` attribute, a
    /// top-level 4-vector 10..13).
    ///
    /// Found through cargo's run-time `CARGO_MANIFEST_DIR`, the checkout under test: a target
    /// directory shared by several checkouts may hold a binary compiled in another one.
    fn tiny() -> std::path::PathBuf {
        let root = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        Path::new(&root).join("testdata/tiny_torchscript.pt")
    }

    #[test]
    fn reads_every_tensor_of_a_torchscript_module_by_attribute_path() {
        let tensors = read_torchscript_tensors(&tiny()).unwrap();
        let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
        assert_eq!(names, ["inner.bias", "inner.weight", "scale"]);
        assert_eq!(tensors["inner.weight"].shape, [2, 3]);
        assert_eq!(
            tensors["inner.weight"].values,
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(tensors["inner.bias"].values, [0.5, -0.5]);
        assert_eq!(tensors["scale"].shape, [4]);
        assert_eq!(tensors["scale"].values, [10.0, 11.0, 12.0, 13.0]);
    }

    #[test]
    fn a_missing_or_damaged_archive_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing.pt");
        let err = read_torchscript_tensors(&missing).unwrap_err().to_string();
        assert!(err.contains("nothing.pt"), "{err}");

        let not_zip = dir.path().join("text.pt");
        std::fs::write(&not_zip, b"hello").unwrap();
        let err = read_torchscript_tensors(&not_zip).unwrap_err().to_string();
        assert!(
            err.contains("text.pt") && err.contains("not a zip"),
            "{err}"
        );

        // Flip bytes inside the stored data of one tensor: the zip CRC check fails.
        let bytes = std::fs::read(tiny()).unwrap();
        let needle = 10.0f32.to_le_bytes();
        let at = bytes
            .windows(4)
            .position(|w| w == needle)
            .expect("the scale tensor's bytes are stored uncompressed");
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xff;
        let path = dir.path().join("damaged.pt");
        std::fs::write(&path, damaged).unwrap();
        let err = read_torchscript_tensors(&path).unwrap_err().to_string();
        assert!(err.contains("damaged.pt"), "{err}");

        // A folder is not "no such file".
        let err = read_torchscript_tensors(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    /// A pickle whose first tensor has the shape (0,), its zip entry's CRC-32 made right again:
    /// burn-store would panic reading it.
    #[test]
    fn a_tensor_shape_without_values_is_an_error_not_a_panic() {
        let mut bytes = std::fs::read(tiny()).unwrap();
        let name = b"tiny_torchscript/data.pkl";
        let entry = |signature: &[u8], name_at: usize| {
            (0..bytes.len() - name_at)
                .find(|&i| {
                    bytes[i..].starts_with(signature) && bytes[i + name_at..].starts_with(name)
                })
                .expect("data.pkl's zip headers")
        };
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as usize;
        // The local header (`PK\x03\x04`): name length at +26, extra length at +28, then the
        // name, the extra field and the stored bytes. Their size is in the central directory's
        // entry (`PK\x01\x02`, size at +20, name at +46): torch writes data descriptors.
        let local = entry(b"PK\x03\x04", 30);
        let central = entry(b"PK\x01\x02", 46);
        let size = u32::from_le_bytes(bytes[central + 20..central + 24].try_into().unwrap());
        let start = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        let pickle = start..start + size as usize;
        let old_crc = crc32fast::hash(&bytes[pickle.clone()]);
        // The shape tuple `(4,)` is `( K\x04 t` in the pickle.
        let at = find(&bytes[pickle.clone()], b"(K\x04t").expect("a shape (4,)") + start + 2;
        bytes[at] = 0;
        let new_crc = crc32fast::hash(&bytes[pickle]).to_le_bytes();
        // The CRC-32 stands in the data descriptor and in the central directory.
        let old_crc = old_crc.to_le_bytes();
        let places: Vec<usize> = (0..bytes.len() - 4)
            .filter(|&i| bytes[i..i + 4] == old_crc)
            .collect();
        assert_eq!(places.len(), 2);
        for i in places {
            bytes[i..i + 4].copy_from_slice(&new_crc);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shape0.pt");
        std::fs::write(&path, bytes).unwrap();
        let err = read_torchscript_tensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("shape0.pt") && err.contains("holds no values"),
            "{err}"
        );
    }
}
