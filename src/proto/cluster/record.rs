//! A record on the wire, `[kind, clock, flags, exptime, data]` and the meta marks
//! when there are any: what a coordinator replicates, a replace pushes, and a
//! server answers a read with.

use super::super::msgpack::{write_array_len, write_bin_len, write_uint};
use super::{bad, uint, Bad};
use crate::record::{Kind, Marks, Record};
use rmpv::Value;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct encoders write the bytes rmpv writes for the Values they stand
    /// for, across every width of every field.
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
