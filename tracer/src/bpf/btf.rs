//! Member offsets of kernel structs, read from the running kernel's BTF.
//!
//! Rust eBPF emits no CO-RE relocations yet, so the agent looks up the few
//! offsets its programs need (`struct sock_common`, `struct sock`,
//! `struct task_struct`) in `/sys/kernel/btf/vmlinux` and hands them over
//! as a read-only global.
//! This is a deliberately small reader of the BTF format
//! (Documentation/bpf/btf.rst): it walks the type section once and resolves
//! members through anonymous structs and unions.
use std::collections::HashMap;

use tracer_common::SockOffsets;

/// Why offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("cannot read kernel BTF at {path}: {source}; the kernel needs CONFIG_DEBUG_INFO_BTF=y")]
    Read {
        /// The path tried.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not BTF, or truncated.
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    /// A struct the programs need is not there.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    /// A member the programs need is not there, or is a bitfield.
    #[error("kernel BTF has no usable member {1} in struct {0}; this kernel is too old or unusual")]
    NoMember(String, String),
    /// A field the programs load in whole words is not aligned for it.
    #[error(
        "sock_common.{0} sits at byte {1} on this kernel, not aligned as the kernel programs need"
    )]
    Layout(&'static str, u32),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield: bool,
}

struct Type {
    kind: u32,
    /// For typedef/const/volatile/...: the referenced type.
    target: u32,
    /// For struct/union: index of the first member in `Btf::members`.
    first_member: usize,
    vlen: usize,
}

/// A parsed BTF blob: just enough to find struct member offsets.
pub struct Btf {
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

/// The bytes of a BTF file, read once for both this parser and aya's.
pub fn read(path: &str) -> Result<Vec<u8>, BtfError> {
    std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.to_string(),
        source,
    })
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Read and parse `/sys/kernel/btf/vmlinux`, or another file.
    pub fn from_file(path: &str) -> Result<Btf, BtfError> {
        Btf::parse(&read(path)?)
    }

    /// Parse a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed(
                "bad magic (only little-endian BTF is supported)",
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_sec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut btf = Btf {
            // Type id 0 is `void`.
            types: vec![Type {
                kind: 0,
                target: 0,
                first_member: 0,
                vlen: 0,
            }],
            members: Vec::new(),
            strings,
            structs_by_name: HashMap::new(),
        };
        let mut pos = 0;
        while pos < types_sec.len() {
            let name_off = u32_at(types_sec, pos)?;
            let info = u32_at(types_sec, pos + 4)?;
            let size_or_type = u32_at(types_sec, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let first_member = btf.members.len();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let raw_off = u32_at(types_sec, m + 8)?;
                        let (bit_offset, bitfield) = if kind_flag {
                            (raw_off & 0xff_ffff, raw_off >> 24 != 0)
                        } else {
                            (raw_off, false)
                        };
                        btf.members.push(Member {
                            name_off: u32_at(types_sec, m)?,
                            type_id: u32_at(types_sec, m + 4)?,
                            bit_offset,
                            bitfield,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            pos += extra;
            let id = btf.types.len() as u32;
            if kind == KIND_STRUCT && name_off != 0 {
                let name = btf.str_at(name_off).to_string();
                btf.structs_by_name.entry(name).or_insert(id);
            }
            btf.types.push(Type {
                kind,
                target: size_or_type,
                first_member,
                vlen,
            });
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Follow typedef/const/volatile/restrict/type_tag to the real type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.target
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in struct `strukt`, looking through anonymous
    /// structs and unions. Bitfields are refused.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        self.find_member(id, member, 0)
            .ok_or_else(|| BtfError::NoMember(strukt.to_string(), member.to_string()))
    }

    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &self.members[t.first_member..t.first_member + t.vlen] {
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id);
                if let Some(off) = self.find_member(inner, name, depth + 1) {
                    return Some(m.bit_offset / 8 + off);
                }
            } else if self.str_at(m.name_off) == name {
                if m.bitfield || m.bit_offset % 8 != 0 {
                    return None;
                }
                return Some(m.bit_offset / 8);
            }
        }
        None
    }

    /// Every offset the kernel programs need.
    pub fn sock_offsets(&self) -> Result<SockOffsets, BtfError> {
        let sc = |m: &str| self.member_offset("sock_common", m);
        let common = self.member_offset("sock", "__sk_common")?;
        Ok(SockOffsets {
            magic: SockOffsets::MAGIC,
            skc_daddr: sc("skc_daddr")?,
            skc_rcv_saddr: sc("skc_rcv_saddr")?,
            skc_dport: sc("skc_dport")?,
            skc_num: sc("skc_num")?,
            skc_family: sc("skc_family")?,
            skc_state: sc("skc_state")?,
            skc_v6_daddr: sc("skc_v6_daddr")?,
            skc_v6_rcv_saddr: sc("skc_v6_rcv_saddr")?,
            sk_protocol: self.member_offset("sock", "sk_protocol")?,
            inet_sport: self.member_offset("inet_sock", "inet_sport")?,
            // `possible_net_t` is a one-pointer struct: the `struct net *`
            // sits at the start of `skc_net`.
            skc_net: sc("skc_net")?,
            net_inum: self.member_offset("net", "ns")? + self.member_offset("ns_common", "inum")?,
            // Optional: without it the programs read the inode on every
            // event (see `net_cookie` in tracer_common::SockOffsets).
            net_cookie: self.member_offset("net", "net_cookie").unwrap_or(0),
            skc_cookie: sc("skc_cookie")?,
            sk_err: self.member_offset("sock", "sk_err")?,
            task_tgid: self.member_offset("task_struct", "tgid")?,
            task_pid: self.member_offset("task_struct", "pid")?,
            task_comm: self.member_offset("task_struct", "comm")?,
            skb_dev: self.member_offset("sk_buff", "dev")?,
            dev_nd_net: self.member_offset("net_device", "nd_net")?,
        })
        .and_then(|mut o| {
            // sock_common is the first member of struct sock; keep offsets
            // relative to the socket pointer in case that ever changes.
            for f in [
                &mut o.skc_daddr,
                &mut o.skc_rcv_saddr,
                &mut o.skc_dport,
                &mut o.skc_num,
                &mut o.skc_family,
                &mut o.skc_state,
                &mut o.skc_v6_daddr,
                &mut o.skc_v6_rcv_saddr,
                &mut o.skc_net,
                &mut o.skc_cookie,
            ] {
                *f += common;
            }
            // The programs load each field with one aligned load of its
            // own size; the IPv6 addresses as two 8-byte words. (`comm` is
            // read as two words wherever it sits: a BTF load need not be
            // aligned on the architectures that run tracer.)
            for (name, at, align) in [
                ("skc_daddr", o.skc_daddr, 4),
                ("skc_rcv_saddr", o.skc_rcv_saddr, 4),
                ("skc_v6_daddr", o.skc_v6_daddr, 8),
                ("skc_v6_rcv_saddr", o.skc_v6_rcv_saddr, 8),
                ("skc_net", o.skc_net, 8),
                ("skc_cookie", o.skc_cookie, 8),
                ("net_cookie", o.net_cookie, 8),
                ("task_tgid", o.task_tgid, 4),
                ("task_pid", o.task_pid, 4),
                ("skb_dev", o.skb_dev, 8),
                ("dev_nd_net", o.dev_nd_net, 8),
            ] {
                if at % align != 0 {
                    return Err(BtfError::Layout(name, at));
                }
            }
            Ok(o)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(matches!(Btf::parse(b"nope"), Err(BtfError::Malformed(_))));
        let mut hdr = vec![0x9f, 0xeb, 1, 0];
        hdr.extend_from_slice(&24u32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&1000u32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(Btf::parse(&hdr), Err(BtfError::Malformed(_))));
    }

    /// The running kernel's own BTF, where there is one.
    #[test]
    fn reads_sock_common_from_vmlinux() {
        let path = "/sys/kernel/btf/vmlinux";
        if !std::path::Path::new(path).exists() {
            eprintln!("skipped: no {path}");
            return;
        }
        let btf = Btf::from_file(path).expect("parses vmlinux BTF");
        let o = btf.sock_offsets().expect("finds sock offsets");
        // These have been stable for years on 64-bit kernels: the union of
        // addresses opens sock_common, and the IPv6 addresses follow later.
        assert_eq!(o.skc_daddr, 0);
        assert_eq!(o.skc_rcv_saddr, 4);
        assert_eq!(o.skc_dport, 12);
        assert_eq!(o.skc_num, 14);
        assert_eq!(o.skc_family, 16);
        assert_eq!(o.skc_state, 18);
        assert!(o.skc_v6_daddr > o.skc_state && o.skc_v6_rcv_saddr == o.skc_v6_daddr + 16);
        assert!(o.sk_protocol > o.skc_v6_rcv_saddr);
        assert!(o.skc_net > o.skc_state && o.skc_net < o.skc_v6_daddr);
        assert!(o.net_inum > 0);
        // The programs read the cookie instead of the inode because it
        // sits on another cache line than the namespace's reference count.
        assert!(o.net_cookie > 0 && o.net_cookie / 64 != o.net_inum / 64);
        assert!(
            o.task_tgid == o.task_pid + 4,
            "pid and tgid sit side by side"
        );
        assert!(o.task_comm > o.task_tgid);
        assert!(matches!(
            btf.member_offset("sock_common", "no_such_field"),
            Err(BtfError::NoMember(..))
        ));
    }
}
