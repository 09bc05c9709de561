//! The messages between kumo nodes, on top of msgpack-rpc ([`super::rpc`]). Each
//! method name is a constant here, and each composite value has one encoder and one
//! decoder, so every role speaks it the same way.
//!
//! | to       | method              | params                                   | result                  |
//! |----------|---------------------|------------------------------------------|-------------------------|
//! | manager  | `KeepAlive`         | `[clk, addr, whs, rhs, stream_port, incarnation, replace_id, store_full, lost_data, flush_point]` (a server) | `[whs, rhs, flush_point]` |
//! | manager  | `HashSpaceRequest`  | `[whs_clock, rhs_clock, wait_ms]`        | `[whs, rhs]`            |
//! | manager  | `HashSpaceSync`     | `[clk, whs, rhs]` (the partner)          | bool: adopted anything  |
//! | manager  | `GetNodesInfo`      | `[]`                                     | map, see `NodesInfo`    |
//! | manager  | `AttachNewServers`  | `[replace]`                              | bool: changed           |
//! | manager  | `DetachFaultServers`| `[replace]`                              | bool: changed           |
//! | manager  | `SetAutoReplace`    | `[enable]`                               | bool: the old setting   |
//! | manager  | `StartReplace`      | `[full]`                                 | bool: started           |
//! | manager  | `ReplaceCopyEnd`    | `[clk, id, addr, records, bytes, failed]`| true                    |
//! | manager  | `ReplaceDeleteEnd`  | `[clk, id, addr, erased, 0, failed]`     | true                    |
//! | manager  | `CreateBackup`      | `[suffix]`                               | `[[addr, path or error]...]` |
//! | manager  | `ReportUnreachable` | `[server addr or gateway id, [addr...]]` | nil                     |
//! | server   | `KeepAlive`         | `[clk]`                                  | nil                     |
//! | server   | `ReplaceCopyStart`  | `[clk, id, manager, whs, rhs, full, [[addr, stream_port]...]]` | true |
//! | server   | `ReplaceDeleteStart`| `[clk, id, manager, whs]`                | true                    |
//! | server   | `CreateBackup`      | `[suffix]`                               | the backup's path       |
//! | stream   | `ReplacePush`       | `[clk, id, records]`                     | records applied         |
//! | server   | `HashSpaceSync`     | `[clk, whs, rhs]`                        | bool: adopted anything  |
//! | server   | `Get`               | `[key, as_stored, rhs_clock]`            | record or nil           |
//! | server   | `Write`             | `[key, op, arg, flags, exptime, data, async, budget_ms]` | `[outcome, n, clock]` |
//! | server   | `Replicate`         | `[clk, key, record, whs_clock, coordinator]` | bool: applied       |
//! | server   | `GetStatus`         | `[name]`                                 | the value               |
//! | server   | `Clock`             | `[]`                                     | a fresh ClockTime       |
//! | server   | `FlushAll`          | `[point]`                                | true                    |
//! | server   | `SetConfig`         | `[name, value]`                          | nil                     |
//!
//! `clk` is the sender's Lamport counter, merged by the receiver. A hash space is
//! [`HashSpace::to_value`]. A record is `[kind, clock, flags, exptime, data]`.
//! `ReplacePush`'s `records` is one binary: records in the store's own format
//! ([`crate::store::record`]), back to back, each with its checksum, as they lie
//! in the sender's segments.
//! A server refusing a request because the sender's hash space is out of date answers
//! the error `[OBSOLETE, whs, rhs]` with its own tables, so a gateway can catch up
//! even while every manager is down.

use crate::cluster::hash_space::{decode_addr, encode_addr, HashSpace};
use crate::cluster::write::{Meta, Op, Outcome, Write};
use crate::record::Record;
use rmpv::Value;
use std::net::SocketAddr;

pub const KEEP_ALIVE: &str = "KeepAlive";
pub const HASH_SPACE_REQUEST: &str = "HashSpaceRequest";
pub const HASH_SPACE_SYNC: &str = "HashSpaceSync";
pub const GET_NODES_INFO: &str = "GetNodesInfo";
pub const ATTACH: &str = "AttachNewServers";
pub const DETACH: &str = "DetachFaultServers";
pub const SET_AUTO_REPLACE: &str = "SetAutoReplace";
pub const GET: &str = "Get";
pub const WRITE: &str = "Write";
pub const REPLICATE: &str = "Replicate";
pub const GET_STATUS: &str = "GetStatus";
pub const SET_CONFIG: &str = "SetConfig";
pub const START_REPLACE: &str = "StartReplace";
pub const REPLACE_COPY_START: &str = "ReplaceCopyStart";
pub const REPLACE_COPY_END: &str = "ReplaceCopyEnd";
pub const REPLACE_DELETE_START: &str = "ReplaceDeleteStart";
pub const REPLACE_DELETE_END: &str = "ReplaceDeleteEnd";
pub const REPLACE_PUSH: &str = "ReplacePush";
pub const CREATE_BACKUP: &str = "CreateBackup";
/// A node tells the managers which servers it cannot reach (see
/// `cluster::partition` for what a manager makes of it).
pub const REPORT_UNREACHABLE: &str = "ReportUnreachable";
/// A fresh stamp of a server's clock, for a flush point.
pub const CLOCK: &str = "Clock";
/// Hide every record stamped before a point (`cluster::flush`).
pub const FLUSH_ALL: &str = "FlushAll";

/// The error a server answers when the caller routed by an out-of-date hash space.
pub const OBSOLETE: &str = "obsolete hash space";
/// The error of a server asked to run a replace older than the one it runs.
pub const SUPERSEDED: &str = "superseded by a newer replace";
/// The error of a server that has no hash space yet.
pub const NOT_READY: &str = "server not ready";
/// A server's store is out of space: the write was not kept. memcached's own words
/// for a store it cannot keep, so a client sees what it would from memcached.
pub const STORE_FULL: &str = "out of memory storing object";
/// A server's store failed otherwise (an I/O error, a damaged record); the
/// server's log says where.
pub const STORE_FAILED: &str = "store error on the server";
/// A write could not be completed within the time its caller gave it: some owner
/// did not answer in time. The key is undefined, as after any failed write.
pub const DEADLINE: &str = "deadline passed before every owner stored the write";

/// Why a message could not be decoded; it becomes the error reply.
pub type Bad = String;

fn bad(what: &str) -> Bad {
    format!("bad parameters: {what}")
}

fn uint(v: Option<&Value>, what: &str) -> Result<u64, Bad> {
    v.and_then(Value::as_u64).ok_or_else(|| bad(what))
}

fn bytes<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a [u8], Bad> {
    match v {
        Some(Value::Binary(b)) => Ok(b),
        Some(Value::String(s)) => Ok(s.as_bytes()),
        _ => Err(bad(what)),
    }
}

mod get;
pub use get::{encode_get_params, read_get, GetParams};
mod record;
pub use record::{
    encode_record, encode_replicate, read_replicate, record_from_value, record_take,
    record_to_value, ReplicateParams,
};

/// The counter every cluster message starts with.
pub fn clk(params: &[Value]) -> Option<u32> {
    params.first().and_then(Value::as_u64).map(|c| c as u32)
}

/// A pair of hash spaces, `[whs, rhs]`.
pub fn spaces_to_value(whs: &HashSpace, rhs: &HashSpace) -> Value {
    Value::Array(vec![whs.to_value(), rhs.to_value()])
}

pub fn spaces_from_value(v: &Value) -> Result<(HashSpace, HashSpace), Bad> {
    spaces_from(v.as_array().map(|a| a.as_slice()).unwrap_or(&[]))
}

/// `[whs, rhs, ...]` at the front of `a`.
pub fn spaces_from(a: &[Value]) -> Result<(HashSpace, HashSpace), Bad> {
    let w = a
        .first()
        .and_then(HashSpace::from_value)
        .ok_or_else(|| bad("whs"))?;
    let r = a
        .get(1)
        .and_then(HashSpace::from_value)
        .ok_or_else(|| bad("rhs"))?;
    Ok((w, r))
}

/// The `OBSOLETE` error with the refusing server's tables.
pub fn obsolete_error(whs: &HashSpace, rhs: &HashSpace) -> Value {
    Value::Array(vec![Value::from(OBSOLETE), whs.to_value(), rhs.to_value()])
}

/// The tables carried by an `OBSOLETE` error, if `err` is one.
pub fn obsolete_tables(err: &Value) -> Option<(HashSpace, HashSpace)> {
    let a = err.as_array()?;
    if a.first()?.as_str()? != OBSOLETE {
        return None;
    }
    spaces_from(&a[1..]).ok()
}

/// A coordinated write of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    pub key: Vec<u8>,
    pub write: Write,
    /// Answer once the coordinator has stored it, without waiting for replicas.
    pub no_wait: bool,
    /// Milliseconds the caller gives the write, counted from its arrival; None
    /// from a caller that sets no deadline (the server's own limit applies).
    pub budget_ms: Option<u64>,
}

impl WriteRequest {
    /// The parameters, the value last:
    /// `[key, op, op argument, flags, exptime, no_wait, budget_ms, meta, data]`.
    pub fn to_params(&self) -> Vec<Value> {
        let mut p = self.head_params(self.budget_ms);
        p.push(Value::Binary(self.write.data.to_vec()));
        p
    }

    /// Appends the encoding of [`WriteRequest::to_params`] but for the value's bytes,
    /// giving the write `budget_ms` from its arrival: everything up to the value's
    /// length, so that the caller sends the value right after from where it is
    /// (`Peer::call_with_tail`), and a large one is not copied.
    pub fn encode_params_head(&self, out: &mut Vec<u8>, budget_ms: Option<u64>) {
        use super::msgpack::{write_array_len, write_bin_len, write_uint, write_value};
        let (code, arg) = self.write.op.encode();
        write_array_len(out, 9);
        write_bin_len(out, self.key.len());
        out.extend_from_slice(&self.key);
        write_uint(out, u64::from(code));
        write_uint(out, arg);
        write_uint(out, u64::from(self.write.flags));
        write_uint(out, u64::from(self.write.exptime));
        out.push(if self.no_wait { 0xc3 } else { 0xc2 });
        match budget_ms {
            Some(ms) => write_uint(out, ms),
            None => out.push(0xc0),
        }
        write_value(out, &meta_to_value(&self.write.meta));
        write_bin_len(out, self.write.data.len());
    }

    fn head_params(&self, budget_ms: Option<u64>) -> Vec<Value> {
        let (code, arg) = self.write.op.encode();
        vec![
            Value::Binary(self.key.clone()),
            Value::from(code),
            Value::from(arg),
            Value::from(self.write.flags),
            Value::from(self.write.exptime),
            Value::from(self.no_wait),
            budget_ms.map(Value::from).unwrap_or(Value::Nil),
            meta_to_value(&self.write.meta),
        ]
    }

    /// Reads a write's params where they lie, in the shape a gateway writes for a
    /// classic command (no meta options). Anything else is an error; the caller
    /// then reads them as Values with [`WriteRequest::from_params`], which takes
    /// every shape.
    pub fn read_params(params: &[u8]) -> Result<WriteRequest, Bad> {
        let mut c = super::msgpack::Cursor::new(params);
        if c.array()? != 9 {
            return Err(bad("write params"));
        }
        let key = c.bytes()?.to_vec();
        let (code, arg) = (c.uint()?, c.uint()?);
        let op = Op::decode(code, arg).ok_or_else(|| bad("op"))?;
        let flags = u32::try_from(c.uint()?).map_err(|_| bad("flags"))?;
        let exptime = u32::try_from(c.uint()?).map_err(|_| bad("exptime"))?;
        let no_wait = c.bool()?;
        let budget_ms = if c.nil() { None } else { Some(c.uint()?) };
        if !c.nil() {
            return Err(bad("meta"));
        }
        let data = c.bytes()?.to_vec();
        Ok(WriteRequest {
            key,
            write: Write {
                op,
                flags,
                exptime,
                data: std::sync::Arc::new(data),
                meta: Meta::default(),
            },
            no_wait,
            budget_ms,
        })
    }

    /// Decodes a write, taking its value out of the params rather than copying it.
    pub fn from_params(p: &mut [Value]) -> Result<WriteRequest, Bad> {
        let data = match p.get_mut(8) {
            Some(Value::Binary(b)) => std::mem::take(b),
            Some(Value::String(s)) => s.as_bytes().to_vec(),
            _ => return Err(bad("data")),
        };
        let op = Op::decode(uint(p.get(1), "op")?, uint(p.get(2), "op argument")?)
            .ok_or_else(|| bad("op"))?;
        Ok(WriteRequest {
            key: bytes(p.first(), "key")?.to_vec(),
            write: Write {
                op,
                flags: u32::try_from(uint(p.get(3), "flags")?).map_err(|_| bad("flags"))?,
                exptime: u32::try_from(uint(p.get(4), "exptime")?).map_err(|_| bad("exptime"))?,
                data: std::sync::Arc::new(data),
                meta: meta_from_value(p.get(7))?,
            },
            no_wait: p
                .get(5)
                .and_then(Value::as_bool)
                .ok_or_else(|| bad("async"))?,
            budget_ms: p.get(6).and_then(Value::as_u64),
        })
    }
}

/// The meta protocol's part of a write: nil for a classic command, else
/// `[compare, invalidate, vivify, initial, ttl, recache_before, return_record]`
/// with nil for an absent option.
fn meta_to_value(m: &Meta) -> Value {
    if *m == Meta::default() {
        return Value::Nil;
    }
    let opt = |v: Option<u64>| v.map(Value::from).unwrap_or(Value::Nil);
    Value::Array(vec![
        opt(m.compare),
        Value::from(m.invalidate),
        opt(m.vivify.map(u64::from)),
        Value::from(m.initial),
        opt(m.ttl.map(u64::from)),
        opt(m.recache_before.map(u64::from)),
        Value::from(m.return_record),
        Value::from(m.key_binary),
    ])
}

fn meta_from_value(v: Option<&Value>) -> Result<Meta, Bad> {
    let a = match v {
        None | Some(Value::Nil) => return Ok(Meta::default()),
        Some(v) => v.as_array().ok_or_else(|| bad("meta"))?,
    };
    let opt = |i: usize, what| match a.get(i) {
        None | Some(Value::Nil) => Ok(None),
        v => uint(v, what).map(Some),
    };
    let time = |i: usize, what| {
        opt(i, what)?
            .map(|t| u32::try_from(t).map_err(|_| bad(what)))
            .transpose()
    };
    let flag = |i: usize, what| a.get(i).and_then(Value::as_bool).ok_or_else(|| bad(what));
    Ok(Meta {
        compare: opt(0, "meta compare")?,
        invalidate: flag(1, "meta invalidate")?,
        vivify: time(2, "meta vivify")?,
        initial: uint(a.get(3), "meta initial")?,
        ttl: time(4, "meta ttl")?,
        recache_before: time(5, "meta recache")?,
        return_record: flag(6, "meta return")?,
        key_binary: flag(7, "meta key_binary")?,
    })
}

/// The reply to `Write`: the outcome, the version now stored (the CAS value), and
/// the item as it now is when the write asked for it.
pub fn outcome_to_value(o: Outcome, clock: u64, rec: Option<&Record>) -> Value {
    let (code, n) = o.code();
    let mut a = vec![Value::from(code), Value::from(n), Value::from(clock)];
    if let Some(r) = rec {
        a.push(record_to_value(r));
    }
    Value::Array(a)
}

/// What a write answered: the outcome, the CAS value, and the item if asked for.
pub type WriteAnswer = (Outcome, u64, Option<Record>);

pub fn outcome_from_value(v: &Value) -> Result<WriteAnswer, Bad> {
    let a = v.as_array().ok_or_else(|| bad("outcome"))?;
    let o = Outcome::from_code(uint(a.first(), "outcome")?, uint(a.get(1), "outcome")?)
        .ok_or_else(|| bad("outcome"))?;
    let rec = a.get(3).map(record_from_value).transpose()?;
    Ok((o, uint(a.get(2), "clock")?, rec))
}

pub fn addr_to_value(a: &SocketAddr) -> Value {
    Value::Binary(encode_addr(a))
}

pub fn addr_from_value(v: Option<&Value>) -> Result<SocketAddr, Bad> {
    match v {
        Some(Value::Binary(b)) => decode_addr(b).ok_or_else(|| bad("address")),
        _ => Err(bad("address")),
    }
}

/// What `GetNodesInfo` answers: the manager's view for kumoctl, kumostat -m and
/// kumohash -m.
#[derive(Debug, Clone, PartialEq)]
pub struct NodesInfo {
    pub whs: HashSpace,
    pub rhs: HashSpace,
    /// Servers that keep in touch with the manager but are not attached.
    pub newcomers: Vec<SocketAddr>,
    pub auto_replace: bool,
    /// The replace this manager runs, if any.
    pub replace: Option<ReplaceProgress>,
    /// Servers whose store said, in its last keepalive, that its disk is full.
    pub store_full: Vec<SocketAddr>,
}

/// How far a running replace has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceProgress {
    /// "copying" or "deleting".
    pub phase: String,
    pub full: bool,
    pub servers: u64,
    pub done: u64,
    pub records: u64,
    pub bytes: u64,
}

impl ReplaceProgress {
    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            Value::from(self.phase.as_str()),
            Value::from(self.full),
            Value::from(self.servers),
            Value::from(self.done),
            Value::from(self.records),
            Value::from(self.bytes),
        ])
    }

    pub fn from_value(v: &Value) -> Option<ReplaceProgress> {
        let a = v.as_array()?;
        Some(ReplaceProgress {
            phase: a.first()?.as_str()?.to_string(),
            full: a.get(1)?.as_bool()?,
            servers: a.get(2)?.as_u64()?,
            done: a.get(3)?.as_u64()?,
            records: a.get(4)?.as_u64()?,
            bytes: a.get(5)?.as_u64()?,
        })
    }
}

impl NodesInfo {
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("whs"), self.whs.to_value()),
            (Value::from("rhs"), self.rhs.to_value()),
            (
                Value::from("newcomers"),
                Value::Array(self.newcomers.iter().map(addr_to_value).collect()),
            ),
            (Value::from("auto_replace"), Value::from(self.auto_replace)),
            (
                Value::from("replace"),
                self.replace
                    .as_ref()
                    .map(ReplaceProgress::to_value)
                    .unwrap_or(Value::Nil),
            ),
            (
                Value::from("store_full"),
                Value::Array(self.store_full.iter().map(addr_to_value).collect()),
            ),
        ])
    }

    pub fn from_value(v: &Value) -> Result<NodesInfo, Bad> {
        let map = v.as_map().ok_or_else(|| bad("nodes info"))?;
        let field = |name: &str| {
            map.iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v)
        };
        let space = |name: &str| {
            field(name)
                .and_then(HashSpace::from_value)
                .ok_or_else(|| bad(name))
        };
        let newcomers = field("newcomers")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("newcomers"))?
            .iter()
            .map(|a| addr_from_value(Some(a)))
            .collect::<Result<_, _>>()?;
        Ok(NodesInfo {
            whs: space("whs")?,
            rhs: space("rhs")?,
            newcomers,
            auto_replace: field("auto_replace")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            replace: field("replace").and_then(ReplaceProgress::from_value),
            // Absent from older managers: nothing known to be full.
            store_full: field("store_full")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| addr_from_value(Some(x)).ok())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::clock::ClockTime;
    use crate::cluster::hash_space::Node;

    #[test]
    fn writes_records_and_outcomes_round_trip() {
        let req = WriteRequest {
            key: b"k".to_vec(),
            write: Write::plain(Op::Cas(77), u32::MAX, 5, b"\r\n".to_vec()),
            no_wait: true,
            budget_ms: Some(800),
        };
        assert_eq!(
            WriteRequest::from_params(&mut req.to_params()),
            Ok(req.clone())
        );
        let unbounded = WriteRequest {
            budget_ms: None,
            ..req
        };
        assert_eq!(
            WriteRequest::from_params(&mut unbounded.to_params()),
            Ok(unbounded.clone())
        );
        let mut with_meta = unbounded;
        with_meta.write.meta = Meta {
            compare: Some(3),
            invalidate: true,
            vivify: Some(0),
            initial: 7,
            ttl: None,
            recache_before: Some(u32::MAX),
            return_record: true,
            key_binary: true,
        };
        assert_eq!(
            WriteRequest::from_params(&mut with_meta.to_params()),
            Ok(with_meta)
        );
        let mut r = Record::value(9, 1, 2, b"x".to_vec());
        assert_eq!(record_from_value(&record_to_value(&r)), Ok(r.clone()));
        r.marks.stale = true;
        assert_eq!(record_from_value(&record_to_value(&r)), Ok(r.clone()));
        assert_eq!(
            outcome_from_value(&outcome_to_value(
                Outcome::Fetched { won: true },
                9,
                Some(&r)
            )),
            Ok((Outcome::Fetched { won: true }, 9, Some(r)))
        );
        let t = Record::tombstone(9);
        assert_eq!(record_from_value(&record_to_value(&t)), Ok(t));
        assert_eq!(
            outcome_from_value(&outcome_to_value(Outcome::Number(3), 8, None)),
            Ok((Outcome::Number(3), 8, None))
        );
        assert!(WriteRequest::from_params(&mut [Value::from(1)]).is_err());
        assert!(record_from_value(&Value::Array(vec![Value::from(3)])).is_err());
    }

    #[test]
    fn obsolete_errors_carry_the_tables() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let hs = HashSpace::new(
            vec![Node {
                addr: a,
                active: true,
            }],
            ClockTime(5),
        );
        let e = obsolete_error(&hs, &HashSpace::empty());
        assert_eq!(obsolete_tables(&e), Some((hs.clone(), HashSpace::empty())));
        assert_eq!(obsolete_tables(&Value::from("other")), None);
        let replace = Some(ReplaceProgress {
            phase: "copying".into(),
            full: false,
            servers: 3,
            done: 1,
            records: 9,
            bytes: 99,
        });
        let mut info = NodesInfo {
            whs: hs.clone(),
            rhs: hs,
            newcomers: vec![a],
            auto_replace: true,
            replace,
            store_full: vec![a],
        };
        assert_eq!(NodesInfo::from_value(&info.to_value()), Ok(info.clone()));
        info.replace = None;
        assert_eq!(NodesInfo::from_value(&info.to_value()), Ok(info));
    }
}
