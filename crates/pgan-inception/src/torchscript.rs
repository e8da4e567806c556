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
//! burn-store's lazy loader fills a storage it cannot read with zeros (a missing key, an offset
//! or a shape past its end), and reads a zip entry whole, whatever it inflates to. So the
//! archive is checked here before it is trusted: the tensors' sizes (checked arithmetic, within
//! [`MAX_TENSOR_BYTES`]) must equal the storages' declared sizes before any storage is read;
//! each storage is read only up to its declared size (the zip reader checks its CRC-32); and
//! every tensor's values must be one whole storage's bytes, each storage used once. Before
//! burn-store's VM builds the pickle, [`crate::pickle_bounds`] refuses one nested or copied
//! beyond what the VM's process survives.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
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

/// The most bytes of tensors an archive may hold: far above the FID Inception network's
/// (about 95 MB of `f32`), far below what a crafted shape or a zip bomb would claim.
pub const MAX_TENSOR_BYTES: u64 = 2 << 30;

/// The largest module pickle read (the Inception network's is about 100 KB): each of its bytes
/// may become one of burn-store's pickle objects, so this bounds what its VM builds.
const MAX_PICKLE_BYTES: u64 = 4 << 20;

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
    let file = std::fs::File::open(path).map_err(|e| InceptionError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| bad(format!("not a zip archive ({e})")))?;
    // Storages are `<archive name>/data/<key>`; the module pickle is `<archive name>/data.pkl`.
    let mut declared = BTreeMap::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        declared.insert(entry.name().to_owned(), entry.size());
    }
    let archive_name = declared
        .keys()
        .find_map(|key| {
            key.strip_suffix("/data.pkl")
                .filter(|name| !name.is_empty() && !name.contains('/'))
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            bad("no <name>/data.pkl module pickle (not a TorchScript archive)".into())
        })?;
    let storage_prefix = format!("{archive_name}/data/");
    let storages: Vec<(String, u64)> = declared
        .iter()
        .filter(|(key, _)| key.starts_with(&storage_prefix))
        .map(|(key, &size)| (key.clone(), size))
        .collect();
    let pickle_key = format!("{archive_name}/data.pkl");
    let pickle = read_entry(&mut archive, &pickle_key, MAX_PICKLE_BYTES).map_err(bad)?;
    let pickle = rename_scalar_list_builders(&pickle).map_err(bad)?;
    crate::pickle_bounds::check(&pickle).map_err(|e| bad(format!("{pickle_key}: {e}")))?;
    let source = Arc::new(
        LazyDataSource::from_zip(path).map_err(|e| bad(format!("not a zip archive ({e})")))?,
    );
    let root = read_pickle_with_data(&mut BufReader::new(pickle.as_slice()), source)
        .map_err(|e| bad(format!("{pickle_key}: {e}")))?;

    let mut snapshots = Vec::new();
    collect(&root, &mut Vec::new(), &mut snapshots);
    if snapshots.is_empty() {
        return Err(bad("the module holds no tensors".into()));
    }

    // The sizes first, from the pickle's shapes and the zip's directory: nothing is read yet.
    let mut tensor_bytes = 0u64;
    for (name, snapshot) in &snapshots {
        if snapshot.dtype != DType::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, only f32 is read",
                snapshot.dtype
            )));
        }
        let shape = snapshot.shape.to_vec();
        let bytes = shape
            .iter()
            .try_fold(4u64, |n, &d| n.checked_mul(d as u64))
            .filter(|&n| n <= MAX_TENSOR_BYTES);
        match bytes {
            // burn-store asserts (panics) on a shape without elements over a non-empty storage.
            Some(0) => {
                return Err(bad(format!(
                    "tensor {name} has the shape {shape:?}, which holds no values"
                )))
            }
            Some(n) => tensor_bytes = tensor_bytes.saturating_add(n),
            None => {
                return Err(bad(format!(
                    "tensor {name} has the shape {shape:?}, more than the {} GiB an archive may \
                     hold",
                    MAX_TENSOR_BYTES >> 30
                )))
            }
        }
    }
    // A zip64 entry may declare up to 2^64 - 1 bytes: summed without overflow, and the total
    // within the limit before it is compared.
    let limit = |what: &str| {
        bad(format!(
            "its {what} more than the {} GiB an archive may hold",
            MAX_TENSOR_BYTES >> 30
        ))
    };
    let storage_bytes = storages
        .iter()
        .try_fold(0u64, |sum, (_, size)| sum.checked_add(*size))
        .filter(|&sum| sum <= MAX_TENSOR_BYTES)
        .ok_or_else(|| limit(&format!("{} storages declare", storages.len())))?;
    if tensor_bytes > MAX_TENSOR_BYTES {
        return Err(limit(&format!("{} tensors take", snapshots.len())));
    }
    if tensor_bytes != storage_bytes {
        return Err(bad(format!(
            "its {} tensors take {tensor_bytes} bytes but its {} storages hold {storage_bytes} \
             (shared or truncated storages are not supported)",
            snapshots.len(),
            storages.len(),
        )));
    }
    // Each storage read up to its declared size (CRC-checked), remembered by its bytes.
    let mut unused: HashMap<(usize, u32), usize> = HashMap::new();
    for (key, size) in &storages {
        let bytes = read_entry(&mut archive, key, *size).map_err(bad)?;
        *unused
            .entry((bytes.len(), crc32fast::hash(&bytes)))
            .or_default() += 1;
    }
    let mut tensors = BTreeMap::new();
    for (name, snapshot) in snapshots {
        let data = snapshot
            .to_data()
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        let shape = data.shape.to_vec();
        let values = data
            .to_vec::<f32>()
            .map_err(|e| bad(format!("tensor {name}: {e:?}")))?;
        // A storage burn-store could not read comes back as zeros: the values must be one whole
        // storage's.
        let mut hasher = crc32fast::Hasher::new();
        for v in &values {
            hasher.update(&v.to_le_bytes());
        }
        let found = unused
            .get_mut(&(values.len() * 4, hasher.finalize()))
            .filter(|count| **count > 0);
        match found {
            Some(count) => *count -= 1,
            None => {
                return Err(bad(format!(
                    "tensor {name}'s values are not one whole storage of the archive (a storage \
                     missing, or an offset or shape past its end)"
                )))
            }
        }
        tensors.insert(name, NamedTensor { shape, values });
    }
    Ok(tensors)
}

/// Entry `key` of `archive`, read whole if it inflates to at most `limit` bytes and to the
/// size its directory entry declares (the zip reader checks the CRC-32 at its end).
fn read_entry<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    key: &str,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let entry = archive.by_name(key).map_err(|e| format!("{key}: {e}"))?;
    let declared = entry.size();
    if declared > limit {
        return Err(format!(
            "{key}: declares {declared} bytes, more than the {limit} it may hold"
        ));
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    entry
        .take(declared + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{key}: {e}"))?;
    if bytes.len() as u64 != declared {
        return Err(format!(
            "{key}: inflates to {}{} bytes, not the {declared} its directory entry declares",
            bytes.len(),
            if bytes.len() as u64 > declared {
                " or more"
            } else {
                ""
            }
        ));
    }
    Ok(bytes)
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

    /// `tiny()` written again into `dir` as `name`, its module pickle with `from` replaced by
    /// `to` (entries stored, CRC-32s and sizes right).
    fn edited(dir: &Path, name: &str, from: &[u8], to: &[u8]) -> std::path::PathBuf {
        use std::io::Write;
        let mut archive = zip::ZipArchive::new(std::fs::File::open(tiny()).unwrap()).unwrap();
        let path = dir.join(name);
        let mut out = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            if entry.name().ends_with("/data.pkl") {
                let at = find(&bytes, from).expect("the bytes to edit");
                bytes.splice(at..at + from.len(), to.iter().copied());
            }
            out.start_file(entry.name(), stored).unwrap();
            out.write_all(&bytes).unwrap();
        }
        out.finish().unwrap();
        path
    }

    /// The `scale` tensor's storage id, offset and shape `(4,)` in `tiny()`'s pickle.
    const SCALE: &[u8] =
        b"X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x04tQq\x07K\x00(K\x04t";

    fn scale_with(key: u8, offset: u8, shape: &[u8]) -> Vec<u8> {
        let mut bytes = SCALE[..SCALE.len() - 4].to_vec();
        bytes[5] = key;
        *bytes.last_mut().unwrap() = offset;
        bytes.push(b'(');
        bytes.extend_from_slice(shape);
        bytes.push(b't');
        bytes
    }

    fn error_of(path: &Path) -> String {
        let err = read_torchscript_tensors(path).unwrap_err().to_string();
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(err.contains(name.as_ref()), "{err}");
        err
    }

    /// burn-store's VM drops nested objects recursively and its memo copies deeply: a list
    /// nested 200,000 deep (400 KB) aborted the process with a stack overflow.
    #[test]
    fn a_pickle_nested_or_copied_beyond_the_bounds_is_an_error_not_an_abort() {
        let dir = tempfile::tempdir().unwrap();
        let mut nested = vec![b']'; 200_000];
        nested.extend(std::iter::repeat_n(b'a', 199_999));
        nested.extend_from_slice(SCALE);
        let path = edited(dir.path(), "nested.pt", SCALE, &nested);
        let err = error_of(&path);
        assert!(
            err.contains("data.pkl: its objects nest more than"),
            "{err}"
        );
        let mut bomb = vec![b']', b'r', 0, 0, 1, 0];
        for _ in 0..64 {
            bomb.extend_from_slice(&[b'j', 0, 0, 1, 0, b'j', 0, 0, 1, 0, 0x86, b'r', 0, 0, 1, 0]);
        }
        bomb.extend_from_slice(SCALE);
        let path = edited(dir.path(), "bomb.pt", SCALE, &bomb);
        let err = error_of(&path);
        assert!(err.contains("data.pkl: it copies more than"), "{err}");
    }

    #[test]
    fn the_editing_keeps_an_archive_readable() {
        let dir = tempfile::tempdir().unwrap();
        let same = edited(dir.path(), "same.pt", SCALE, &scale_with(b'0', 0, b"K\x04"));
        assert_eq!(
            read_torchscript_tensors(&same).unwrap(),
            read_torchscript_tensors(&tiny()).unwrap()
        );
    }

    /// burn-store would panic reading a shape without values, or one whose element count
    /// overflows; it would allocate what a shape claims.
    #[test]
    fn a_shape_without_values_or_beyond_the_storages_is_an_error_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let empty = edited(
            dir.path(),
            "shape0.pt",
            SCALE,
            &scale_with(b'0', 0, b"K\x00"),
        );
        assert!(error_of(&empty).contains("holds no values"));
        let max = b"J\xff\xff\xff\x7f";
        let overflow = edited(
            dir.path(),
            "overflow.pt",
            SCALE,
            &scale_with(b'0', 0, &[&max[..], max, max].concat()),
        );
        assert!(error_of(&overflow).contains("more than the 2 GiB"));
        // 1 GiB claimed over a 16-byte storage: refused from the sizes alone.
        let big = edited(
            dir.path(),
            "big.pt",
            SCALE,
            &scale_with(b'0', 0, b"J\x00\x00\x00\x10"),
        );
        let err = error_of(&big);
        assert!(
            err.contains("take 1073741856 bytes but its 3 storages hold 48"),
            "{err}"
        );
    }

    /// Sizes that balance, but burn-store would fill the values with zeros.
    #[test]
    fn a_tensor_not_read_from_one_whole_storage_is_an_error_not_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let missing = edited(
            dir.path(),
            "missing.pt",
            SCALE,
            &scale_with(b'9', 0, b"K\x04"),
        );
        assert!(error_of(&missing).contains("tensor scale's values are not one whole storage"));
        let past_end = edited(
            dir.path(),
            "offset.pt",
            SCALE,
            &scale_with(b'0', 2, b"K\x04"),
        );
        assert!(error_of(&past_end).contains("tensor scale's values are not one whole storage"));
    }
}
