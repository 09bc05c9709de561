//! msgpack's encodings as kumo writes them, field by field: the rpc envelope and the
//! cluster messages that are encoded in place rather than built as Values first.
//! The rpc envelope is written this way so that params (a value of up to 64 MiB)
//! are encoded in place rather than copied into one Value first. Each header takes
//! its shortest form, as every encoder writes it.

use rmpv::Value;

pub(crate) fn write_bin_len(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=0xff => out.extend_from_slice(&[0xc4, n as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc6);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

pub(crate) fn write_array_len(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=15 => out.push(0x90 | n as u8),
        16..=0xffff => {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdd);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

pub(crate) fn write_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => out.push(0xa0 | n as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) {
    // Writing to a Vec cannot fail; the expect documents that, it never fires.
    rmpv::encode::write_value(out, v).expect("Vec write");
}

/// Values on each side of every width msgpack gives an unsigned integer: the
/// encoders here and those built on them are checked against rmpv at each.
#[cfg(test)]
pub(crate) const UINT_BOUNDARIES: [u64; 11] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written headers are the ones rmpv writes for the same values, at
    /// every size boundary.
    #[test]
    fn headers_match_rmpv_at_every_boundary() {
        use rmpv::Value;
        let by_rmpv = |v: &Value| {
            let mut b = Vec::new();
            rmpv::encode::write_value(&mut b, v).unwrap();
            b
        };
        for n in UINT_BOUNDARIES {
            let mut b = Vec::new();
            write_uint(&mut b, n);
            assert_eq!(b, by_rmpv(&Value::from(n)), "uint {n}");
        }
        for n in [0usize, 15, 16, 0xffff, 0x1_0000] {
            let mut b = Vec::new();
            write_array_len(&mut b, n);
            let full = by_rmpv(&Value::Array(vec![Value::Nil; n]));
            assert_eq!(b, full[..full.len() - n], "array of {n}");
        }
        for len in [0usize, 31, 32, 0xff, 0x100, 0xffff, 0x1_0000] {
            let s = "y".repeat(len);
            let mut b = Vec::new();
            write_str(&mut b, &s);
            assert_eq!(b, by_rmpv(&Value::from(s.as_str())), "str of {len}");
        }
    }
}
