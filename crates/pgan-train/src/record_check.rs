//! What a checkpoint's record file holds, checked before burn's loader sees it: burn 0.21 takes
//! a tensor's dtype, shape and bytes as written, so a record whose checksums were recomputed
//! after an edit (a shortened byte buffer, another rank, `F64` over `F32` bytes) panicked in
//! the loader or later in a kernel, or loaded wrong weights without a word. Here every tensor
//! must be `F32` with exactly the bytes its shape needs, and a network's tensors must come in
//! the network's own order and shapes (an optimizer's moments: the rank their entry names).

use std::path::Path;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Result, TrainError};

/// One tensor of a record: where it is (its path of map keys and list indices), its shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordTensor {
    /// Map keys and list indices from the record's item down to the tensor.
    pub path: Vec<String>,
    /// Its shape as written.
    pub shape: Vec<usize>,
}

/// The tensors of the record file `file` (MessagePack as burn's named recorder writes it), in
/// the file's order, each checked: `F32`, a shape of at least one dimension, and exactly
/// `4 x product(shape)` bytes; in an optimizer's record (`.../RankN/...`), N dimensions.
pub(crate) fn tensors(file: &Path) -> Result<Vec<RecordTensor>> {
    let bad = |message: String| TrainError::Checkpoint {
        path: file.to_path_buf(),
        message: format!("damaged record: {message}"),
    };
    let bytes = pgan_data::read_regular_file(file).map_err(|e| bad(format!("cannot read: {e}")))?;
    let root: Node = rmp_serde::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let Node::Map(fields) = root else {
        return Err(bad("not a map of metadata and item".into()));
    };
    let Some((_, item)) = fields.into_iter().find(|(key, _)| key == "item") else {
        return Err(bad("no item".into()));
    };
    let mut found = Vec::new();
    collect(item, &mut Vec::new(), &mut found).map_err(bad)?;
    Ok(found)
}

/// Checks that a network's record holds `expected` (its parameter shapes in visiting order,
/// which is the record's field order): the count and every shape.
pub(crate) fn check_order(found: &[RecordTensor], expected: &[Vec<usize>]) -> Option<String> {
    if found.len() != expected.len() {
        return Some(format!(
            "{} parameters in the weights, {} by the configuration",
            found.len(),
            expected.len()
        ));
    }
    found
        .iter()
        .zip(expected)
        .enumerate()
        .find(|(_, (f, e))| f.shape != **e)
        .map(|(k, (f, e))| {
            format!(
                "parameter {k} ({}) is {:?} in the weights, {e:?} by the configuration",
                f.path.join("."),
                f.shape
            )
        })
}

/// How many distinct list indices the record has under the field `list` at its top (a
/// network's per-stage lists).
pub(crate) fn list_len(found: &[RecordTensor], list: &str) -> usize {
    let mut indices: Vec<&str> = found
        .iter()
        .filter(|t| t.path.first().is_some_and(|p| p == list))
        .filter_map(|t| t.path.get(1).map(String::as_str))
        .collect();
    indices.sort_unstable();
    indices.dedup();
    indices.len()
}

fn collect(
    node: Node,
    path: &mut Vec<String>,
    found: &mut Vec<RecordTensor>,
) -> std::result::Result<(), String> {
    match node {
        Node::Map(fields) => {
            if fields.iter().any(|(k, _)| k == "bytes") && fields.iter().any(|(k, _)| k == "shape")
            {
                let shape = tensor_shape(&fields, path)?;
                found.push(RecordTensor {
                    path: path.clone(),
                    shape,
                });
                return Ok(());
            }
            // burn's loader panics on a parameter id it cannot decode.
            if fields.iter().any(|(k, _)| k == "param") {
                if let Some((_, Node::Text(id))) = fields.iter().find(|(k, _)| k == "id") {
                    check_id(id, path)?;
                }
            }
            for (key, value) in fields {
                path.push(key);
                collect(value, path, found)?;
                path.pop();
            }
        }
        Node::List(items) => {
            for (i, value) in items.into_iter().enumerate() {
                path.push(i.to_string());
                collect(value, path, found)?;
                path.pop();
            }
        }
        Node::Bytes(_) | Node::Text(_) | Node::Int(_) | Node::Other => {}
    }
    Ok(())
}

/// An error unless `id` is a parameter id burn can decode (`at` says where it is).
pub(crate) fn check_id(id: &str, at: &[String]) -> std::result::Result<(), String> {
    // burn writes 8 bytes as 13 lowercase base32hex characters; its decoder panics on a longer
    // string (more bytes than its buffer), so the form is checked before it is called.
    let written_form = id.len() == PARAM_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b));
    if written_form && burn::module::ParamId::try_deserialize(id).is_some() {
        return Ok(());
    }
    Err(format!(
        "{}: parameter id '{id}' is not one burn writes",
        at.join(".")
    ))
}

/// Characters of a parameter id as burn writes it: 64 bits in base32.
const PARAM_ID_LEN: usize = 13;

/// The shape of the tensor whose fields are `fields`, after its checks.
fn tensor_shape(
    fields: &[(String, Node)],
    path: &[String],
) -> std::result::Result<Vec<usize>, String> {
    let at = path.join(".");
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let dtype = match field("dtype") {
        Some(Node::Text(t)) => t.as_str(),
        _ => return Err(format!("{at}: no dtype")),
    };
    if dtype != "F32" {
        return Err(format!("{at}: dtype {dtype}, pgan writes F32"));
    }
    let shape = match field("shape") {
        Some(Node::List(dims)) => dims
            .iter()
            .map(|d| match d {
                Node::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| format!("{at}: a shape that is not a list of sizes"))?,
        _ => return Err(format!("{at}: no shape")),
    };
    if shape.is_empty() {
        return Err(format!("{at}: a shape of no dimensions"));
    }
    let Some(Node::Bytes(len)) = field("bytes") else {
        return Err(format!("{at}: no bytes"));
    };
    let needed = shape
        .iter()
        .try_fold(4usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("{at}: shape {shape:?} is too large"))?;
    if *len != needed {
        return Err(format!(
            "{at}: shape {shape:?} needs {needed} bytes, the record holds {len}"
        ));
    }
    // An optimizer's state names each tensor's rank (`Rank4`); burn builds the tensor with it.
    if let Some(rank) = path
        .iter()
        .find_map(|p| p.strip_prefix("Rank").and_then(|r| r.parse::<usize>().ok()))
    {
        if rank != shape.len() {
            return Err(format!("{at}: shape {shape:?} in an entry of rank {rank}"));
        }
    }
    Ok(shape)
}

/// A MessagePack value as far as the checks need it: byte buffers by their length only (read
/// in place, never copied).
enum Node {
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
    Bytes(usize),
    Text(String),
    Int(i128),
    Other,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a MessagePack value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Node, E> {
        Ok(Node::Text(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Node, E> {
        Ok(Node::Bytes(v.len()))
    }
    fn visit_unit<E>(self) -> std::result::Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_none<E>(self) -> std::result::Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<Node, Node>()? {
            let key = match key {
                Node::Text(t) => t,
                Node::Int(n) => n.to_string(),
                _ => String::from("?"),
            };
            fields.push((key, value));
        }
        Ok(Node::Map(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{load_module, save_module};
    use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

    type B = burn::backend::Flex;

    impl Serialize for Node {
        /// Byte buffers come back as zeros of their length (finite weights).
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            match self {
                Node::Map(fields) => {
                    let mut map = s.serialize_map(Some(fields.len()))?;
                    for (k, v) in fields {
                        map.serialize_entry(k, v)?;
                    }
                    map.end()
                }
                Node::List(items) => {
                    let mut seq = s.serialize_seq(Some(items.len()))?;
                    for item in items {
                        seq.serialize_element(item)?;
                    }
                    seq.end()
                }
                Node::Bytes(n) => s.serialize_bytes(&vec![0u8; *n]),
                Node::Text(t) => s.serialize_str(t),
                Node::Int(n) => s.serialize_i64(*n as i64),
                Node::Other => s.serialize_unit(),
            }
        }
    }

    /// The first map in `node` (depth first) that has the field `key`: a tensor's (`bytes`) or a
    /// parameter's (`param`).
    fn first_with<'a>(node: &'a mut Node, key: &str) -> Option<&'a mut Vec<(String, Node)>> {
        match node {
            Node::Map(fields) => {
                if fields.iter().any(|(k, _)| k == key) {
                    return Some(fields);
                }
                fields.iter_mut().find_map(|(_, v)| first_with(v, key))
            }
            Node::List(items) => items.iter_mut().find_map(|v| first_with(v, key)),
            _ => None,
        }
    }

    fn first_tensor(node: &mut Node) -> Option<&mut Vec<(String, Node)>> {
        first_with(node, "bytes")
    }

    fn first_param(node: &mut Node) -> Option<&mut Vec<(String, Node)>> {
        first_with(node, "param")
    }

    fn field<'a>(fields: &'a mut [(String, Node)], name: &str) -> &'a mut Node {
        &mut fields.iter_mut().find(|(k, _)| k == name).unwrap().1
    }

    fn rewrite(file: &Path, edit: impl FnOnce(&mut Node)) {
        let mut root: Node = rmp_serde::from_slice(&std::fs::read(file).unwrap()).unwrap();
        edit(&mut root);
        std::fs::write(file, rmp_serde::to_vec(&root).unwrap()).unwrap();
    }

    /// An 8x8 model of 8 features: records of a few KiB.
    fn tiny_model() -> pgan_model::ModelConfig {
        pgan_model::ModelConfig::cpu_small(8)
            .with_latent_dim(8)
            .with_fmap_base(16)
            .with_fmap_max(8)
    }

    /// Edited records whose checksums would have been recomputed: each is an error naming the
    /// file and the tensor, never a panic in burn's loader or a kernel, nor wrong weights.
    #[test]
    fn records_edited_inside_are_errors_before_burn_reads_them() {
        let device = Default::default();
        let model = tiny_model();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("generator.mpk");
        let fresh = || model.init_generator::<B>(&device);
        let load = || load_module(fresh(), dir.path(), "generator", &device);
        type Edit = Box<dyn Fn(&mut Node)>;
        let edits: Vec<(Edit, &str)> = vec![
            (Box::new(|_| {}), ""),
            (
                Box::new(|root| {
                    *field(first_tensor(root).unwrap(), "bytes") = Node::Bytes(100);
                }),
                "input.dense.weight.param: shape [8, 128] needs 4096 bytes, the record holds 100",
            ),
            (
                Box::new(|root| {
                    *field(first_tensor(root).unwrap(), "dtype") = Node::Text("F64".into());
                }),
                "input.dense.weight.param: dtype F64, pgan writes F32",
            ),
            (
                Box::new(|root| {
                    let t = first_tensor(root).unwrap();
                    *field(t, "shape") = Node::List(Vec::new());
                }),
                "input.dense.weight.param: a shape of no dimensions",
            ),
            (
                Box::new(|root| {
                    let t = first_tensor(root).unwrap();
                    *field(t, "shape") =
                        Node::List([8, 8, 16].into_iter().map(Node::Int).collect());
                }),
                "parameter 0 (input.dense.weight.param) is [8, 8, 16] in the weights, [8, 128] \
                 by the configuration",
            ),
            (
                Box::new(|root| {
                    *field(first_param(root).unwrap(), "id") = Node::Text("not-an-id!".into());
                }),
                "input.dense.weight: parameter id 'not-an-id!' is not one burn writes",
            ),
            // burn's own decoder panics on an id of more than 8 bytes.
            (
                Box::new(|root| {
                    *field(first_param(root).unwrap(), "id") =
                        Node::Text("0123456789abcdefghij".into());
                }),
                "parameter id '0123456789abcdefghij' is not one burn writes",
            ),
        ];
        for (edit, said) in edits {
            save_module(fresh(), dir.path(), "generator").unwrap();
            rewrite(&file, edit);
            match load() {
                Ok(_) => assert_eq!(said, "", "loaded"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains(said) && !said.is_empty(), "{e}");
                    assert!(e.contains(&file.display().to_string()), "{e}");
                }
            }
        }
    }

    /// An optimizer's moment whose shape is not the rank its entry names is refused.
    #[test]
    fn an_optimizer_moment_of_another_rank_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("optim.mpk");
        let tensor = |shape: Vec<i128>, bytes| {
            Node::Map(vec![
                ("bytes".into(), Node::Bytes(bytes)),
                (
                    "shape".into(),
                    Node::List(shape.into_iter().map(Node::Int).collect()),
                ),
                ("dtype".into(), Node::Text("F32".into())),
            ])
        };
        let record = |moment| {
            Node::Map(vec![
                ("metadata".into(), Node::Other),
                (
                    "item".into(),
                    Node::Map(vec![(
                        "lvoc2jtovll1c".into(),
                        Node::Map(vec![(
                            "V1".into(),
                            Node::Map(vec![(
                                "Rank2".into(),
                                Node::Map(vec![("moment_1".into(), moment)]),
                            )]),
                        )]),
                    )]),
                ),
            ])
        };
        std::fs::write(
            &file,
            rmp_serde::to_vec(&record(tensor(vec![2, 3], 24))).unwrap(),
        )
        .unwrap();
        assert_eq!(tensors(&file).unwrap()[0].shape, vec![2, 3]);
        std::fs::write(
            &file,
            rmp_serde::to_vec(&record(tensor(vec![6], 24))).unwrap(),
        )
        .unwrap();
        let err = tensors(&file).unwrap_err().to_string();
        assert!(
            err.contains("lvoc2jtovll1c.V1.Rank2.moment_1: shape [6] in an entry of rank 2"),
            "{err}"
        );
    }

    /// A network of NaN weights (pgan never writes one) is refused, naming the file.
    #[test]
    fn non_finite_weights_are_refused() {
        let device = Default::default();
        let model = tiny_model();
        let dir = tempfile::tempdir().unwrap();
        struct Nan;
        impl burn::module::ModuleMapper<B> for Nan {
            fn map_float<const D: usize>(
                &mut self,
                param: burn::module::Param<burn::tensor::Tensor<B, D>>,
            ) -> burn::module::Param<burn::tensor::Tensor<B, D>> {
                param.map(|t| t.mul_scalar(f32::NAN))
            }
        }
        use burn::module::Module as _;
        let poisoned = model.init_generator::<B>(&device).map(&mut Nan);
        save_module(poisoned, dir.path(), "generator").unwrap();
        let err = load_module(
            model.init_generator::<B>(&device),
            dir.path(),
            "generator",
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds non-finite weights"), "{err}");
        assert!(err.contains("generator.mpk"), "{err}");
    }
}
