//! A record on the wire, `[kind, clock, flags, exptime, data]` and the meta marks
//! when there are any: what a coordinator replicates, a replace pushes, and a
//! server answers a read with.

use super::super::msgpack::{write_array_len, write_bin_len, write_uint, Cursor};
use super::{bad, uint, Bad};
use crate::cluster::hash_space::decode_addr;
use crate::record::{Kind, Marks, Record};
use rmpv::Value;
use std::net::SocketAddr;

/// [`record_to_value`], moving the record's bytes into the Value rather than
/// copying them.
fn record_into_value(r: Record) -> Value {
    let marked = r.marks != Marks::default();
    let mut a = vec![
        Value::from(r.kind as u8),
        Value::from(r.clock),
        Value::from(r.flags),
        Value::from(r.exptime),
        Value::Binary(r.data),
    ];
    if marked {
        a.push(Value::from(r.marks.to_bits()));
    }
    Value::Array(a)
}

pub fn record_to_value(r: &Record) -> Value {
    record_into_value(r.clone())
}

/// Appends what encoding [`record_to_value`] would, without building the Value.
pub fn encode_record(out: &mut Vec<u8>, r: &Record) {
    let marked = r.marks != Marks::default();
    write_array_len(out, if marked { 6 } else { 5 });
    write_uint(out, r.kind as u64);
    write_uint(out, r.clock);
    write_uint(out, r.flags as u64);
    write_uint(out, r.exptime as u64);
    write_bin_len(out, r.data.len());
    out.extend_from_slice(&r.data);
    if marked {
        write_uint(out, r.marks.to_bits() as u64);
    }
}

/// The params of a `Replicate` call, `[clk, key, record, whs_clock, coordinator]`,
/// encoded once for every replica of a write.
pub fn encode_replicate(
    clk: u64,
    key: &[u8],
    r: &Record,
    whs_clock: u64,
    coordinator: &std::net::SocketAddr,
) -> Vec<u8> {
    let addr = crate::cluster::hash_space::encode_addr(coordinator);
    let mut out = Vec::with_capacity(REPLICATE_HEAD_BYTES + key.len() + r.data.len());
    write_array_len(&mut out, 5);
    write_uint(&mut out, clk);
    write_bin_len(&mut out, key.len());
    out.extend_from_slice(key);
    encode_record(&mut out, r);
    write_uint(&mut out, whs_clock);
    write_bin_len(&mut out, addr.len());
    out.extend_from_slice(&addr);
    out
}

/// Room for everything in a `Replicate` call's params but the key and the data:
/// headers, three clocks, a record's small fields and an IPv6 address.
const REPLICATE_HEAD_BYTES: usize = 96;

pub fn record_from_value(v: &Value) -> Result<Record, Bad> {
    record_take(v.clone())
}

/// [`record_from_value`], taking the value's bytes rather than copying them: a
/// gateway hands them on to its client as they came.
pub fn record_take(v: Value) -> Result<Record, Bad> {
    let Value::Array(mut a) = v else {
        return Err(bad("record"));
    };
    let data = match a.get_mut(4) {
        Some(Value::Binary(b)) => std::mem::take(b),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        _ => return Err(bad("data")),
    };
    let kind = match uint(a.first(), "record kind")? {
        1 => Kind::Value,
        2 => Kind::Tombstone,
        _ => return Err(bad("record kind")),
    };
    let flags = uint(a.get(2), "flags")?;
    let exptime = uint(a.get(3), "exptime")?;
    Ok(Record {
        kind,
        clock: uint(a.get(1), "clock")?,
        flags: u32::try_from(flags).map_err(|_| bad("flags"))?,
        exptime: u32::try_from(exptime).map_err(|_| bad("exptime"))?,
        data,
        marks: match a.get(5) {
            None => Marks::default(),
            Some(m) => u8::try_from(uint(Some(m), "marks")?)
                .ok()
                .and_then(Marks::from_bits)
                .ok_or_else(|| bad("marks"))?,
        },
    })
}

/// `Replicate`'s params, read where they lie (see `rpc::request_at`): the
/// record's data is the one copy made.
#[derive(Debug, PartialEq)]
pub struct ReplicateParams<'a> {
    pub clk: u64,
    pub key: &'a [u8],
    pub record: Record,
    pub whs_clock: u64,
    pub coordinator: SocketAddr,
}

/// Reads `Replicate`'s params in the exact shape [`encode_replicate`] writes
/// them. Anything else is an error; the caller then reads them as Values, which
/// take every shape the Value path takes.
pub fn read_replicate(params: &[u8]) -> Result<ReplicateParams<'_>, Bad> {
    let mut c = Cursor::new(params);
    if c.array()? != 5 {
        return Err(bad("replicate params"));
    }
    let clk = c.uint()?;
    let key = c.bin()?;
    let record = read_record(&mut c)?;
    let whs_clock = c.uint()?;
    let coordinator = decode_addr(c.bin()?).ok_or_else(|| bad("address"))?;
    Ok(ReplicateParams {
        clk,
        key,
        record,
        whs_clock,
        coordinator,
    })
}

/// A record as [`encode_record`] writes it, checked as [`record_take`] checks one.
fn read_record(c: &mut Cursor) -> Result<Record, Bad> {
    let n = c.array()?;
    if !(5..=6).contains(&n) {
        return Err(bad("record"));
    }
    let kind = match c.uint()? {
        1 => Kind::Value,
        2 => Kind::Tombstone,
        _ => return Err(bad("record kind")),
    };
    let clock = c.uint()?;
    let flags = u32::try_from(c.uint()?).map_err(|_| bad("flags"))?;
    let exptime = u32::try_from(c.uint()?).map_err(|_| bad("exptime"))?;
    let data = c.bytes()?.to_vec();
    let marks = match n {
        6 => u8::try_from(c.uint()?)
            .ok()
            .and_then(Marks::from_bits)
            .ok_or_else(|| bad("marks"))?,
        _ => Marks::default(),
    };
    Ok(Record {
        kind,
        clock,
        flags,
        exptime,
        data,
        marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct encoders write the bytes rmpv writes for the Values they stand
    /// for, across every width of every field.
    /// `Replicate`'s params read in place are what the Value path reads from the
    /// same bytes, across every width of every field; a record the Value path
    /// refuses is refused.
    #[test]
    fn replicate_params_read_in_place_as_the_values_read() {
        let widths = crate::proto::msgpack::UINT_BOUNDARIES;
        let coordinator: SocketAddr = "127.0.0.1:19800".parse().unwrap();
        let mut n = 0u64;
        for &clock in &widths {
            for &small in &widths {
                n += 1;
                let r = Record {
                    kind: [Kind::Value, Kind::Tombstone][(n % 2) as usize],
                    clock,
                    flags: small as u32,
                    exptime: (small as u32).rotate_left(n as u32 % 32),
                    data: vec![n as u8; (small % 70_000) as usize],
                    marks: Marks::from_bits((n % 8) as u8).unwrap_or_default(),
                };
                let key = vec![b'k'; (n % 250) as usize + 1];
                let wire = encode_replicate(small, &key, &r, clock, &coordinator);
                let got = read_replicate(&wire).unwrap();
                let (Value::Array(v), _) = crate::proto::msgpack::read_value(&wire, 8).unwrap()
                else {
                    panic!("not an array")
                };
                assert_eq!(got.clk, v[0].as_u64().unwrap());
                assert_eq!(got.key, v[1].as_slice().unwrap());
                assert_eq!(got.record, record_from_value(&v[2]).unwrap(), "{r:?}");
                assert_eq!(got.whs_clock, v[3].as_u64().unwrap());
                assert_eq!(Ok(got.coordinator), super::super::addr_from_value(v.get(4)));
            }
        }
        // Refused both ways: an erase, flags past 32 bits, unknown mark bits.
        let good = Record::value(1, 2, 3, b"v".to_vec());
        // [kind, clock 1, flags, exptime 0, no data] and the marks, if any.
        let record = |kind: u64, flags: u64, marks: Option<u64>| {
            let mut r = vec![
                kind.into(),
                1.into(),
                flags.into(),
                0.into(),
                Value::Binary(vec![]),
            ];
            r.extend(marks.map(Value::from));
            Value::Array(r)
        };
        let bad_records = [
            record(3, 0, None),
            record(1, 1 << 40, None),
            record(1, 0, Some(0xf0)),
        ];
        for rec in bad_records {
            let params = Value::Array(vec![
                1.into(),
                Value::Binary(b"k".to_vec()),
                rec.clone(),
                1.into(),
                Value::Binary(crate::cluster::hash_space::encode_addr(&coordinator)),
            ]);
            let mut wire = Vec::new();
            rmpv::encode::write_value(&mut wire, &params).unwrap();
            assert!(read_replicate(&wire).is_err(), "{rec:?}");
            assert!(record_from_value(&rec).is_err(), "{rec:?}");
        }
        assert!(read_replicate(&encode_replicate(1, b"k", &good, 1, &coordinator)).is_ok());
    }

    #[test]
    fn records_encode_as_their_values_do() {
        let widths = crate::proto::msgpack::UINT_BOUNDARIES;
        let mut n = 0u64;
        for &clock in &widths {
            for &small in &widths[..9] {
                for len in [0usize, 1, 31, 32, 255, 256, 65535, 65536] {
                    n += 1;
                    let r = Record {
                        kind: [Kind::Value, Kind::Tombstone, Kind::Erase][(n % 3) as usize],
                        clock,
                        flags: small as u32,
                        exptime: (small as u32).rotate_left(n as u32 % 32),
                        data: vec![n as u8; len],
                        marks: Marks::from_bits((n % 8) as u8).unwrap_or_default(),
                    };
                    assert_eq!(record_into_value(r.clone()), record_to_value(&r));
                    let mut want = Vec::new();
                    rmpv::encode::write_value(&mut want, &record_to_value(&r)).unwrap();
                    let mut got = Vec::new();
                    encode_record(&mut got, &r);
                    assert_eq!(got, want, "{r:?}");
                }
            }
        }
    }
}
