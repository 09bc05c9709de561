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

/// Decodes the msgpack object at the front of `buf` and says how many bytes it took
/// (what follows it is left alone), nesting at most `max_depth` arrays and maps
/// deep. It reads the slice directly: every frame goes through it, and rmpv's
/// decoder, built on `io::Read`, costs several times as much. Safe on any bytes: a
/// length past the end is an error, and no container reserves room for more items
/// than bytes remain.
pub(crate) fn read_value(buf: &[u8], max_depth: usize) -> Result<(Value, usize), String> {
    let mut r = Reader {
        buf,
        at: 0,
        marker_at: 0,
    };
    let v = r.value(max_depth)?;
    Ok((v, r.at))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    /// Where the object being read starts.
    marker_at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(format!(
                "{n} bytes announced at offset {}, past the end",
                self.at
            ));
        };
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        self.marker_at = self.at;
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Value::from(marker),
            0xe0..=0xff => Value::from(marker as i8),
            0xc0 => Value::Nil,
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xcc => Value::from(self.be(1)?),
            0xcd => Value::from(self.be(2)?),
            0xce => Value::from(self.be(4)?),
            0xcf => Value::from(self.be(8)?),
            0xd0 => Value::from(self.be(1)? as u8 as i8),
            0xd1 => Value::from(self.be(2)? as u16 as i16),
            0xd2 => Value::from(self.be(4)? as u32 as i32),
            0xd3 => Value::from(self.be(8)? as i64),
            0xca => Value::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Value::F64(f64::from_bits(self.be(8)?)),
            0xa0..=0xbf => self.str(usize::from(marker & 0x1f))?,
            0xd9 => self.sized(1, Self::str)?,
            0xda => self.sized(2, Self::str)?,
            0xdb => self.sized(4, Self::str)?,
            0xc4 => self.sized(1, Self::bin)?,
            0xc5 => self.sized(2, Self::bin)?,
            0xc6 => self.sized(4, Self::bin)?,
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(n, depth)?
            }
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0xde => {
                let n = self.be(2)? as usize;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.map(n, depth)?
            }
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xc7 => self.sized(1, Self::ext)?,
            0xc8 => self.sized(2, Self::ext)?,
            0xc9 => self.sized(4, Self::ext)?,
            0xc1 => return Err("reserved marker 0xc1".into()),
        })
    }

    /// A length of `width` bytes, then what `then` reads of that length.
    fn sized(
        &mut self,
        width: usize,
        then: fn(&mut Self, usize) -> Result<Value, String>,
    ) -> Result<Value, String> {
        let n = self.be(width)? as usize;
        then(self, n)
    }

    fn str(&mut self, n: usize) -> Result<Value, String> {
        let start = self.marker_at;
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::from(s)),
            // A string that is not UTF-8 keeps its bytes, as rmpv keeps them: only
            // rmpv can build that Value, so it decodes this one.
            Err(_) => rmpv::decode::read_value(&mut &self.buf[start..]).map_err(|e| e.to_string()),
        }
    }

    fn bin(&mut self, n: usize) -> Result<Value, String> {
        Ok(Value::Binary(self.take(n)?.to_vec()))
    }

    fn ext(&mut self, n: usize) -> Result<Value, String> {
        let tag = self.take(1)?[0] as i8;
        Ok(Value::Ext(tag, self.take(n)?.to_vec()))
    }

    fn room(&self, n: usize) -> usize {
        n.min(self.buf.len() - self.at)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        let depth = depth.checked_sub(1).ok_or("nested too deep")?;
        let mut items = Vec::with_capacity(self.room(n));
        for _ in 0..n {
            items.push(self.value(depth)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        let depth = depth.checked_sub(1).ok_or("nested too deep")?;
        let mut pairs = Vec::with_capacity(self.room(n) / 2);
        for _ in 0..n {
            pairs.push((self.value(depth)?, self.value(depth)?));
        }
        Ok(Value::Map(pairs))
    }
}

/// Reads objects of known types off a slice, without building Values: for the
/// messages on the hot path, whose shape is known. Each read checks the type it
/// finds and says what it found otherwise; what it returns borrows the slice.
pub(crate) struct Cursor<'a>(Reader<'a>);

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor(Reader {
            buf,
            at: 0,
            marker_at: 0,
        })
    }

    /// Bytes read so far.
    pub(crate) fn at(&self) -> usize {
        self.0.at
    }

    fn marker(&mut self) -> Result<u8, String> {
        self.0.marker_at = self.0.at;
        Ok(self.0.take(1)?[0])
    }

    fn unexpected<T>(&self, marker: u8, wanted: &str) -> Result<T, String> {
        Err(format!(
            "{wanted} expected at offset {}, marker {marker:#04x} found",
            self.0.marker_at
        ))
    }

    /// An array's length; its items follow.
    pub(crate) fn array(&mut self) -> Result<usize, String> {
        match self.marker()? {
            m @ 0x90..=0x9f => Ok(usize::from(m & 0x0f)),
            0xdc => Ok(self.0.be(2)? as usize),
            0xdd => Ok(self.0.be(4)? as usize),
            m => self.unexpected(m, "an array"),
        }
    }

    /// A non-negative integer, of whichever width and signedness it was written
    /// with (as `Value::as_u64` takes one).
    pub(crate) fn uint(&mut self) -> Result<u64, String> {
        let m = self.marker()?;
        let signed =
            |v: i64, c: &Self| u64::try_from(v).or_else(|_| c.unexpected(m, "an unsigned integer"));
        match m {
            0x00..=0x7f => Ok(u64::from(m)),
            0xcc => self.0.be(1),
            0xcd => self.0.be(2),
            0xce => self.0.be(4),
            0xcf => self.0.be(8),
            0xd0 => signed(i64::from(self.0.be(1)? as u8 as i8), self),
            0xd1 => signed(i64::from(self.0.be(2)? as u16 as i16), self),
            0xd2 => signed(i64::from(self.0.be(4)? as u32 as i32), self),
            0xd3 => signed(self.0.be(8)? as i64, self),
            m => self.unexpected(m, "an unsigned integer"),
        }
    }

    /// A boolean.
    pub(crate) fn bool(&mut self) -> Result<bool, String> {
        match self.marker()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            m => self.unexpected(m, "a boolean"),
        }
    }

    /// Whether a nil comes next; it is read if so, and nothing is otherwise.
    pub(crate) fn nil(&mut self) -> bool {
        let nil = self.0.buf.get(self.0.at) == Some(&0xc0);
        if nil {
            self.0.at += 1;
        }
        nil
    }

    /// A binary's bytes, or a string's (as a record's data may come).
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let m = self.marker()?;
        let n = match m {
            0xc4 | 0xd9 => self.0.be(1)?,
            0xc5 | 0xda => self.0.be(2)?,
            0xc6 | 0xdb => self.0.be(4)?,
            0xa0..=0xbf => u64::from(m & 0x1f),
            m => return self.unexpected(m, "a binary or a string"),
        };
        self.0.take(n as usize)
    }

    /// A binary's bytes.
    pub(crate) fn bin(&mut self) -> Result<&'a [u8], String> {
        match self.0.buf.get(self.0.at) {
            Some(0xc4..=0xc6) => self.bytes(),
            _ => {
                let m = self.marker()?;
                self.unexpected(m, "a binary")
            }
        }
    }

    /// A UTF-8 string.
    pub(crate) fn str(&mut self) -> Result<&'a str, String> {
        match self.0.buf.get(self.0.at) {
            Some(0xa0..=0xbf | 0xd9..=0xdb) => std::str::from_utf8(self.bytes()?)
                .map_err(|_| "a string that is not UTF-8".to_string()),
            _ => {
                let m = self.marker()?;
                self.unexpected(m, "a string")
            }
        }
    }
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

    fn encoded(v: &Value) -> Vec<u8> {
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, v).unwrap();
        b
    }

    /// A small seeded generator (xorshift), so a failure names its seed.
    struct Dice(u64);
    impl Dice {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn any_value(d: &mut Dice, depth: usize) -> Value {
        let len = |d: &mut Dice| match d.below(4) {
            0 => d.below(16) as usize,
            1 => d.below(300) as usize,
            2 => [31, 32, 255, 256, 65535, 65536][d.below(6) as usize],
            _ => 0,
        };
        match d.below(if depth == 0 { 9 } else { 11 }) {
            0 => Value::Nil,
            1 => Value::Boolean(d.below(2) == 1),
            2 => Value::from(UINT_BOUNDARIES[d.below(11) as usize]),
            3 => {
                let bits = d.below(64);
                Value::from(-(d.below(1 << bits) as i64) - 1)
            }
            4 => Value::F32(d.below(1000) as f32 / 8.0),
            5 => Value::F64(-(d.below(1000) as f64) / 8.0),
            6 => Value::from("é".repeat(len(d) / 2)),
            7 => Value::Binary(vec![d.below(256) as u8; len(d)]),
            8 => Value::Ext(
                d.below(256) as u8 as i8,
                vec![7; [1, 2, 4, 8, 16, 3, 300][d.below(7) as usize]],
            ),
            9 => Value::Array((0..d.below(20)).map(|_| any_value(d, depth - 1)).collect()),
            _ => Value::Map(
                (0..d.below(18))
                    .map(|_| (any_value(d, depth - 1), any_value(d, depth - 1)))
                    .collect(),
            ),
        }
    }

    /// Every value rmpv writes reads back whole, with the bytes it took; every cut
    /// short copy is an error, not a panic or a wrong value.
    /// A cursor reads what rmpv wrote as the Value path reads it: a value of the
    /// type asked for comes back as `as_u64`, `as_slice` or `as_str` gives it, and
    /// any other is an error, on random values and at every integer width.
    #[test]
    fn a_cursor_reads_what_the_value_path_reads() {
        let mut d = Dice(0x5eed_c0de);
        let mut samples: Vec<Value> = UINT_BOUNDARIES.iter().map(|&n| Value::from(n)).collect();
        samples.extend([-1i64, i64::MIN, 5].map(Value::from));
        samples.extend([Value::Nil, Value::from(true), Value::from(false)]);
        samples.extend([
            Value::from("é"),
            Value::Binary(vec![1; 300]),
            Value::from("x".repeat(40000)),
        ]);
        samples.extend((0..3000).map(|_| any_value(&mut d, 2)));
        for v in &samples {
            let wire = encoded(v);
            let mut c = Cursor::new(&wire);
            let got = c.uint();
            assert_eq!(got.as_ref().ok(), v.as_u64().as_ref(), "{v:?}");
            assert!(got.is_err() || c.at() == wire.len());
            let mut c = Cursor::new(&wire);
            assert_eq!(
                c.bin().ok(),
                v.as_slice().filter(|_| matches!(v, Value::Binary(_))),
                "{v:?}"
            );
            let mut c = Cursor::new(&wire);
            assert_eq!(c.str().ok(), v.as_str(), "{v:?}");
            let mut c = Cursor::new(&wire);
            let bytes = v.as_slice().or_else(|| v.as_str().map(str::as_bytes));
            assert_eq!(c.bytes().ok(), bytes, "{v:?}");
            let mut c = Cursor::new(&wire);
            assert_eq!(c.array().ok(), v.as_array().map(Vec::len), "{v:?}");
            let mut c = Cursor::new(&wire);
            assert_eq!(c.bool().ok(), v.as_bool(), "{v:?}");
            let mut c = Cursor::new(&wire);
            assert_eq!(c.nil(), v.is_nil(), "{v:?}");
            assert_eq!(c.at(), usize::from(v.is_nil()));
            for cut in 0..wire.len().min(600) {
                let _ = Cursor::new(&wire[..cut]).uint();
                let _ = Cursor::new(&wire[..cut]).bytes();
            }
        }
    }

    #[test]
    fn read_value_reads_what_rmpv_writes() {
        for seed in 1..=300u64 {
            let mut d = Dice(seed * 0x9e37_79b9_7f4a_7c15);
            let v = any_value(&mut d, 3);
            let mut b = encoded(&v);
            let whole = b.len();
            b.extend_from_slice(&[0xc0, 0x01]); // the next object's bytes
            assert_eq!(read_value(&b, 8), Ok((v, whole)), "seed {seed}");
            if whole < 4096 {
                for cut in 0..whole {
                    assert!(
                        read_value(&b[..cut], 8).is_err(),
                        "seed {seed}, cut at {cut}"
                    );
                }
            }
        }
    }

    /// On arbitrary bytes it agrees with rmpv: the same value (compared by its
    /// encoding, which also covers NaN and non-UTF-8 strings) and length, or an
    /// error from both. (The reserved marker 0xc1 is left out: rmpv reads it as
    /// nil, this decoder refuses it, as the frame walk always has.)
    #[test]
    fn read_value_agrees_with_rmpv_on_any_bytes() {
        for seed in 1..=20_000u64 {
            let mut d = Dice(seed * 0x2545_f491_4f6c_dd1d);
            let bytes: Vec<u8> = (0..d.below(40))
                .map(|_| match d.below(3) {
                    0 => match d.below(256) as u8 {
                        0xc1 => 0xc0,
                        b => b,
                    },
                    1 => [0x91, 0x92, 0x81, 0xa3, 0xc4, 0xd9, 0xdc, 0xde, 0xd4, 0xc7]
                        [d.below(10) as usize],
                    _ => d.below(4) as u8,
                })
                .collect();
            let mut cursor = bytes.as_slice();
            let theirs = rmpv::decode::read_value(&mut cursor)
                .map(|v| (encoded(&v), bytes.len() - cursor.len()));
            let ours = read_value(&bytes, 64).map(|(v, n)| (encoded(&v), n));
            assert_eq!(ours.ok(), theirs.ok(), "seed {seed}: {bytes:02x?}");
        }
    }

    #[test]
    fn read_value_refuses_deep_nesting_and_huge_counts() {
        let deep = [vec![0x91u8; 9], vec![0xc0]].concat();
        assert!(read_value(&deep, 8).is_err());
        assert!(read_value(&deep, 9).is_ok());
        // An array announcing four billion items in five bytes allocates nothing
        // for them and fails at the end of the input.
        assert!(read_value(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0], 8).is_err());
        assert!(read_value(&[0xc1], 8).is_err());
    }

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
