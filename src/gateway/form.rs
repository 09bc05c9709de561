//! How an answer is worded: the command core (pipeline, multi-gets, writes) runs the
//! same for every protocol, and hands its results here with the [`Form`] the
//! request came in, which the codecs of `proto/` turn into bytes.

use crate::cluster::write::{Op, Outcome};
use crate::net::chain::{Chain, SHARE_MIN_BYTES};
use crate::proto::membin::{self, Status, To};
use crate::proto::memtext;

/// Room for the longest outcome line a text write answers, so it takes one
/// allocation.
const OUTCOME_LINE_CAPACITY: usize = 64;

/// The protocol an answer goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The text protocol; `silent` is noreply (nothing at all is said).
    Text { silent: bool },
    /// The binary protocol: the request's opcode and opaque, and whether GETK
    /// and GATK name the key.
    Binary { to: To, with_key: bool },
}

impl Form {
    pub fn text() -> Form {
        Form::Text { silent: false }
    }

    /// Says nothing about any outcome (noreply): the write need not wait for its
    /// replicas.
    pub fn is_silent(&self) -> bool {
        matches!(self, Form::Text { silent: true })
    }

    /// The answer to a write of `op`: its outcome and the version stored (`cas`),
    /// or why it failed.
    pub fn write(&self, op: Op, r: Result<(Outcome, u64), &str>) -> Vec<u8> {
        match *self {
            Form::Text { silent: true } => Vec::new(),
            Form::Text { silent: false } => match r {
                Ok((o, _)) => {
                    let mut b = Vec::with_capacity(OUTCOME_LINE_CAPACITY);
                    memtext::push_outcome_line(&mut b, o);
                    b
                }
                Err(e) => format!("SERVER_ERROR {e}\r\n").into_bytes(),
            },
            Form::Binary { to, .. } => {
                let (o, cas) = match r {
                    Ok(a) => a,
                    Err(e) => return failure(to, e),
                };
                let status = match (op, o) {
                    (_, Outcome::Stored | Outcome::Deleted | Outcome::Touched) => Status::Ok,
                    (_, Outcome::Number(n) | Outcome::Made(n)) => {
                        if to.quiet {
                            return Vec::new();
                        }
                        return membin::response(to, Status::Ok, cas, &[], &[], &n.to_be_bytes());
                    }
                    // memcached words a refused add as the key existing, and a
                    // refused replace as it missing.
                    (Op::Add, Outcome::NotStored) => Status::Exists,
                    (Op::Replace, Outcome::NotStored) => Status::NotFound,
                    (_, Outcome::NotStored) => Status::NotStored,
                    (_, Outcome::Exists) => Status::Exists,
                    (_, Outcome::NotFound) => Status::NotFound,
                    (_, Outcome::NonNumeric) => Status::NonNumeric,
                    (_, Outcome::Fetched { .. }) => Status::Ok,
                };
                // memcached gives a delete's answer no version: the item is gone.
                let cas = if op == Op::Delete { 0 } else { cas };
                match status {
                    Status::Ok if to.quiet => Vec::new(),
                    Status::Ok => membin::response(to, Status::Ok, cas, &[], &[], &[]),
                    s => membin::error(to, s),
                }
            }
        }
    }

    /// A get's hit, its value by reference (see `net::chain`).
    pub fn value(&self, key: &[u8], flags: u32, data: Vec<u8>, cas: u64, with_cas: bool) -> Chain {
        let mut c = Chain::new();
        match *self {
            Form::Text { .. } => {
                // One buffer for the line, a short value and its end; a long
                // value goes by reference between them.
                let inline = if data.len() < SHARE_MIN_BYTES {
                    data.len()
                } else {
                    0
                };
                let mut head = Vec::with_capacity(
                    memtext::VALUE_HEAD_MAX + key.len() + inline + memtext::VALUE_END.len(),
                );
                memtext::push_value_head(
                    &mut head,
                    key,
                    flags,
                    data.len(),
                    with_cas.then_some(cas),
                );
                c.own(head);
                c.value(data);
                c.bytes(memtext::VALUE_END);
            }
            Form::Binary { to, with_key } => {
                let key = with_key.then_some(key);
                let (head, with_value) =
                    membin::value_response_head(to, key, flags, data.len(), cas);
                c.bytes(&head);
                if with_value {
                    c.value(data);
                }
            }
        }
        c
    }

    /// A get's miss: nothing in text (the END says it), an error or nothing in
    /// binary.
    pub fn miss(&self, key: &[u8]) -> Vec<u8> {
        match *self {
            Form::Text { .. } => Vec::new(),
            Form::Binary { to, with_key } => membin::miss_response(to, with_key.then_some(key)),
        }
    }

    /// A request that could not be run (`e` says why).
    pub fn error(&self, e: &str) -> Vec<u8> {
        match *self {
            Form::Text { .. } => format!("SERVER_ERROR {e}\r\n").into_bytes(),
            Form::Binary { to, .. } => failure(to, e),
        }
    }

    /// `OK` (flush_all, verbosity).
    pub fn ok(&self) -> Vec<u8> {
        match *self {
            Form::Text { silent: true } => Vec::new(),
            Form::Text { silent: false } => b"OK\r\n".to_vec(),
            Form::Binary { to, .. } if to.quiet => Vec::new(),
            Form::Binary { to, .. } => membin::response(to, Status::Ok, 0, &[], &[], &[]),
        }
    }
}

impl Form {
    /// A `stats` answer (the text protocol's STAT lines): as is in text, one
    /// packet per statistic and an empty one to end in binary; a group the
    /// gateway does not have is a miss.
    pub fn stats(&self, text: Vec<u8>) -> Vec<u8> {
        let Form::Binary { to, .. } = *self else {
            return text;
        };
        let mut out = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(stat) = line.strip_prefix(b"STAT ") {
                let (k, v) = match stat.iter().position(|&b| b == b' ') {
                    Some(i) => (&stat[..i], &stat[i + 1..]),
                    None => (stat, &b""[..]),
                };
                out.extend(membin::response(to, Status::Ok, 0, &[], k, v));
            } else if line == b"ERROR" {
                return membin::error(to, Status::NotFound);
            }
        }
        out.extend(membin::response(to, Status::Ok, 0, &[], &[], &[]));
        out
    }
}

/// The cluster could not answer: binary clients get a temporary failure with the
/// reason, and a full store memcached's out of memory.
fn failure(to: To, e: &str) -> Vec<u8> {
    if e == crate::proto::cluster::STORE_FULL {
        return membin::error(to, Status::OutOfMemory);
    }
    membin::response(to, Status::TemporaryFailure, 0, &[], &[], e.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::membin::op;

    fn status(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[6], packet[7]])
    }

    /// Outcomes in binary: memcached's statuses, quiet success silent, a full store
    /// out of memory, another failure a temporary one that says why.
    #[test]
    fn binary_answers_follow_memcached() {
        let to = To {
            opcode: op::ADD,
            opaque: 1,
            quiet: false,
        };
        let f = Form::Binary {
            to,
            with_key: false,
        };
        assert_eq!(status(&f.write(Op::Add, Ok((Outcome::NotStored, 0)))), 0x02);
        assert_eq!(
            status(&f.write(Op::Replace, Ok((Outcome::NotStored, 0)))),
            0x01
        );
        assert_eq!(
            status(&f.write(Op::Append, Ok((Outcome::NotStored, 0)))),
            0x05
        );
        let ok = f.write(Op::Delete, Ok((Outcome::Deleted, 9)));
        assert_eq!(
            (status(&ok), &ok[16..24]),
            (0, &[0u8; 8][..]),
            "a delete has no CAS"
        );
        let full = f.write(Op::Set, Err(crate::proto::cluster::STORE_FULL));
        assert_eq!(status(&full), 0x82);
        let late = f.write(Op::Set, Err("deadline passed"));
        assert_eq!(status(&late), 0x86);
        assert_eq!(&late[24..], b"deadline passed");
        let quiet = Form::Binary {
            to: To { quiet: true, ..to },
            with_key: false,
        };
        assert!(quiet.write(Op::Set, Ok((Outcome::Stored, 3))).is_empty());
        assert!(!quiet.write(Op::Add, Ok((Outcome::NotStored, 0))).is_empty());
        let n = f.write(Op::Incr(1), Ok((Outcome::Number(258), 4)));
        assert_eq!(&n[24..], &258u64.to_be_bytes());
    }
}
