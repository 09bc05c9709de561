//! A `Get` between cluster nodes, `[key, as_stored, rhs_clock]`: what a gateway
//! asks a server for on every read, so the server reads it where it lies.

use super::super::msgpack::{write_array_len, write_bin_len, write_uint, Cursor};
use super::{bad, Bad};

/// Appends the params of a `Get`, `[key, as_stored, rhs_clock]`.
pub fn encode_get_params(out: &mut Vec<u8>, key: &[u8], as_stored: bool, rhs_clock: u64) {
    write_array_len(out, 3);
    write_bin_len(out, key.len());
    out.extend_from_slice(key);
    out.push(if as_stored { 0xc3 } else { 0xc2 });
    write_uint(out, rhs_clock);
}

/// A `Get`'s params, borrowed from the frame they came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetParams<'a> {
    pub key: &'a [u8],
    /// The record as stored, tombstones and all (a coordinator new to the key).
    pub as_stored: bool,
    /// The ClockTime of the rhs the caller routes reads by.
    pub rhs_clock: u64,
}

/// Reads a `Get`'s params in the exact shape [`encode_get_params`] writes them.
/// Anything else is an error; the caller then reads them as Values, which take
/// every shape the Value path takes (a pull's `[key, true]`, say).
pub fn read_get(params: &[u8]) -> Result<GetParams<'_>, Bad> {
    let mut c = Cursor::new(params);
    if c.array()? != 3 {
        return Err(bad("get params"));
    }
    let key = c.bin()?;
    let as_stored = c.bool()?;
    let rhs_clock = c.uint()?;
    if c.at() != params.len() {
        return Err(bad("get params: bytes after the last"));
    }
    Ok(GetParams {
        key,
        as_stored,
        rhs_clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_reads_back_as_written_and_nothing_else_does() {
        for (key, as_stored, clock) in [
            (&b"k"[..], false, 0u64),
            (&b"\x00\xffkey"[..], true, u64::MAX),
            (&[7u8; 300][..], false, 1 << 40),
        ] {
            let mut out = Vec::new();
            encode_get_params(&mut out, key, as_stored, clock);
            assert_eq!(
                read_get(&out),
                Ok(GetParams {
                    key,
                    as_stored,
                    rhs_clock: clock
                })
            );
            // Every cut of it is refused, and so are bytes after it.
            for cut in 0..out.len() {
                assert!(read_get(&out[..cut]).is_err(), "{cut} of {}", out.len());
            }
            let mut longer = out.clone();
            longer.push(0xc0);
            assert!(read_get(&longer).is_err());
        }
        // Shapes the Value path takes, and this one does not.
        let value = |v: rmpv::Value| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &v).unwrap();
            out
        };
        use rmpv::Value as V;
        for v in [
            V::Array(vec![V::Binary(b"k".to_vec()), V::Boolean(true)]),
            V::Array(vec![V::String("k".into()), V::Boolean(false), V::from(1)]),
            V::Array(vec![V::Binary(b"k".to_vec()), V::Nil, V::from(1)]),
            V::Nil,
        ] {
            assert!(read_get(&value(v.clone())).is_err(), "{v:?}");
        }
    }
}
