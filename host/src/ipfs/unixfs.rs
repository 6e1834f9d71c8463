//! Verifying blocks against their CIDs, and decoding dag-pb nodes and UnixFS data.
//!
//! Only what UnixFS files and directories need is decoded: a dag-pb `PBNode` (its links and
//! data) holding a UnixFS `Data` message of type raw, file or directory, and raw-codec
//! leaves. Anything else (HAMT-sharded directories, symlinks, other codecs) is refused as an
//! unexpected node type.

use cid::Cid;
use sha2::{Digest, Sha256};

/// The multicodec of dag-pb (every CIDv0, and CIDv1 directories and files).
pub const DAG_PB: u64 = 0x70;
/// The multicodec of raw leaves.
pub const RAW: u64 = 0x55;
const SHA2_256: u64 = 0x12;
const IDENTITY: u64 = 0x00;

/// Why a block could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    /// The bytes do not hash to the CID's digest.
    #[error("the block's bytes do not match its CID")]
    Mismatch,
    /// The CID uses a hash function ww does not verify.
    #[error("unsupported hash function 0x{0:x} (ww verifies sha2-256)")]
    UnsupportedHash(u64),
    /// The block is not a UnixFS node ww can use; what it is.
    #[error("unexpected node type: {0}")]
    Unexpected(String),
    /// The block claims to be dag-pb or UnixFS but does not decode.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Checks that `bytes` are what `cid` names.
pub fn verify(cid: &Cid, bytes: &[u8]) -> Result<(), BlockError> {
    let hash = cid.hash();
    match hash.code() {
        SHA2_256 => {
            let digest = Sha256::digest(bytes);
            if hash.digest() == digest.as_slice() {
                Ok(())
            } else {
                Err(BlockError::Mismatch)
            }
        }
        IDENTITY if hash.digest() == bytes => Ok(()),
        IDENTITY => Err(BlockError::Mismatch),
        code => Err(BlockError::UnsupportedHash(code)),
    }
}

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The child's CID.
    pub cid: Cid,
    /// The entry's name (directories), empty for file chunks.
    pub name: String,
}

/// A decoded UnixFS node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// File content: `data` first, then the children in order. `size` is the declared total
    /// (if any); `mode` the declared permission bits (if any).
    File {
        /// Bytes held in this node itself.
        data: Vec<u8>,
        /// The chunks that follow, in order.
        children: Vec<Link>,
        /// The declared total size.
        size: Option<u64>,
        /// The declared Unix mode.
        mode: Option<u32>,
    },
    /// A directory: its entries.
    Directory(Vec<Link>),
}

/// Decodes a verified block named by `cid`.
pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<Node, BlockError> {
    match cid.codec() {
        RAW => Ok(Node::File {
            data: bytes.to_vec(),
            children: Vec::new(),
            size: Some(bytes.len() as u64),
            mode: None,
        }),
        DAG_PB => decode_dag_pb(bytes),
        codec => Err(BlockError::Unexpected(format!(
            "codec 0x{codec:x} (ww reads dag-pb and raw blocks)"
        ))),
    }
}

fn decode_dag_pb(bytes: &[u8]) -> Result<Node, BlockError> {
    const PB: &str = "dag-pb node";
    let mut links = Vec::new();
    let mut data = None;
    for field in Fields(bytes) {
        match field.map_err(|()| BlockError::Malformed(PB))? {
            (2, Value::Bytes(link)) => links.push(decode_link(link)?),
            (1, Value::Bytes(d)) => data = Some(d),
            _ => return Err(BlockError::Malformed(PB)),
        }
    }
    let data =
        data.ok_or_else(|| BlockError::Unexpected("a dag-pb node without UnixFS data".into()))?;
    const FS: &str = "UnixFS data";
    let mut kind = None;
    let mut content: &[u8] = &[];
    let mut size = None;
    let mut mode = None;
    for field in Fields(data) {
        match field.map_err(|()| BlockError::Malformed(FS))? {
            (1, Value::Varint(k)) => kind = Some(k),
            (2, Value::Bytes(d)) => content = d,
            (3, Value::Varint(s)) => size = Some(s),
            (7, Value::Varint(m)) => mode = Some(m as u32),
            // blocksizes, hashType, fanout, mtime: not needed to rebuild the content.
            (4..=6 | 8, _) => {}
            _ => return Err(BlockError::Malformed(FS)),
        }
    }
    match kind {
        // Raw (0) and File (2) carry content the same way.
        Some(0 | 2) => Ok(Node::File {
            data: content.to_vec(),
            children: links,
            size,
            mode,
        }),
        Some(1) => Ok(Node::Directory(links)),
        Some(3) => Err(BlockError::Unexpected("UnixFS metadata".into())),
        Some(4) => Err(BlockError::Unexpected("a UnixFS symlink".into())),
        Some(5) => Err(BlockError::Unexpected(
            "a HAMT-sharded directory (not supported yet)".into(),
        )),
        Some(k) => Err(BlockError::Unexpected(format!("UnixFS type {k}"))),
        None => Err(BlockError::Malformed(FS)),
    }
}

fn decode_link(bytes: &[u8]) -> Result<Link, BlockError> {
    const L: &str = "dag-pb link";
    let mut cid = None;
    let mut name = String::new();
    for field in Fields(bytes) {
        match field.map_err(|()| BlockError::Malformed(L))? {
            (1, Value::Bytes(h)) => {
                cid = Some(Cid::try_from(h).map_err(|_| BlockError::Malformed(L))?);
            }
            (2, Value::Bytes(n)) => {
                name = String::from_utf8(n.to_vec()).map_err(|_| BlockError::Malformed(L))?;
            }
            (3, Value::Varint(_)) => {}
            _ => return Err(BlockError::Malformed(L)),
        }
    }
    Ok(Link {
        cid: cid.ok_or(BlockError::Malformed(L))?,
        name,
    })
}

/// A protobuf field's value: only the wire types dag-pb and UnixFS use.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of a protobuf message, in order; `Err(())` on malformed input.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.0)?;
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut self.0)?),
                2 => {
                    let len = usize::try_from(varint(&mut self.0)?).map_err(|_| ())?;
                    if len > self.0.len() {
                        return Err(());
                    }
                    let (bytes, rest) = self.0.split_at(len);
                    self.0 = rest;
                    Value::Bytes(bytes)
                }
                _ => return Err(()),
            };
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

fn varint(input: &mut &[u8]) -> Result<u64, ()> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Appends a protobuf field.
    pub fn field(out: &mut Vec<u8>, number: u64, value: &[u8]) {
        put_varint(out, number << 3 | 2);
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }

    pub fn varint_field(out: &mut Vec<u8>, number: u64, value: u64) {
        put_varint(out, number << 3);
        put_varint(out, value);
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A dag-pb node: links then UnixFS data of `kind` with `content`.
    pub fn node(kind: u64, content: &[u8], links: &[(Cid, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (cid, name) in links {
            let mut link = Vec::new();
            field(&mut link, 1, &cid.to_bytes());
            field(&mut link, 2, name.as_bytes());
            varint_field(&mut link, 3, 1);
            field(&mut out, 2, &link);
        }
        let mut data = Vec::new();
        varint_field(&mut data, 1, kind);
        if !content.is_empty() {
            field(&mut data, 2, content);
        }
        varint_field(&mut data, 3, content.len() as u64);
        field(&mut out, 1, &data);
        out
    }

    #[test]
    fn decodes_the_go_ipfs_empty_directory() {
        // `ipfs object new unixfs-dir`: QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn.
        let cid = Cid::try_from("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn").unwrap();
        let bytes = [0x0a, 0x02, 0x08, 0x01];
        verify(&cid, &bytes).unwrap();
        assert_eq!(decode(&cid, &bytes).unwrap(), Node::Directory(vec![]));
        assert_eq!(
            verify(&cid, &[0x0a, 0x02, 0x08, 0x02]),
            Err(BlockError::Mismatch)
        );
    }

    #[test]
    fn decodes_files_directories_and_raw_leaves() {
        let leaf = Cid::new_v1(
            RAW,
            cid::multihash::Multihash::wrap(0x12, &[0; 32]).unwrap(),
        );
        let file = node(2, b"", &[(leaf, "")]);
        let file_cid =
            Cid::new_v0(cid::multihash::Multihash::wrap(0x12, &[1; 32]).unwrap()).unwrap();
        match decode(&file_cid, &file).unwrap() {
            Node::File { data, children, .. } => {
                assert!(data.is_empty());
                assert_eq!(
                    children,
                    [Link {
                        cid: leaf,
                        name: String::new()
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
        let dir = node(1, b"", &[(file_cid, "main.wasm")]);
        assert_eq!(
            decode(&file_cid, &dir).unwrap(),
            Node::Directory(vec![Link {
                cid: file_cid,
                name: "main.wasm".into()
            }])
        );
        assert_eq!(
            decode(&leaf, b"hello").unwrap(),
            Node::File {
                data: b"hello".to_vec(),
                children: vec![],
                size: Some(5),
                mode: None
            }
        );
    }

    #[test]
    fn refuses_other_node_types() {
        let cid = Cid::new_v0(cid::multihash::Multihash::wrap(0x12, &[1; 32]).unwrap()).unwrap();
        for kind in [3, 4, 5, 9] {
            assert!(matches!(
                decode(&cid, &node(kind, b"", &[])),
                Err(BlockError::Unexpected(_))
            ));
        }
        let cbor = Cid::new_v1(0x71, *cid.hash());
        assert!(matches!(
            decode(&cbor, b"\xa0"),
            Err(BlockError::Unexpected(_))
        ));
        assert_eq!(
            decode(&cid, b"\xff"),
            Err(BlockError::Malformed("dag-pb node"))
        );
        assert!(matches!(decode(&cid, &[]), Err(BlockError::Unexpected(_))));
    }
}
