//! One version of one key, as the store keeps it, the cluster logic decides on it
//! and the wire carries it: a leaf that every layer may use. Its form on disk is
//! `store::record`; on the wire, `proto::cluster`.

/// The longest key the store accepts: the 8-byte hash plus memcached's 250-byte key,
/// with room for internal prefixes.
pub const KEY_SIZE_MAX: usize = 1024;
/// The largest data of one record. The gateway's `-I` limit (1 MiB by default) sits
/// below this; the store refuses more so a corrupt length cannot ask for gigabytes.
pub const DATA_SIZE_MAX: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Value = 1,
    Tombstone = 2,
    Erase = 3,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Value),
            2 => Some(Kind::Tombstone),
            3 => Some(Kind::Erase),
            _ => None,
        }
    }
}

/// The meta protocol's marks on a value: memcached keeps them beside the item,
/// and so does kumo, so that they survive restarts and travel with the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// `md <key> I`: the value is stale and should be recached (`X` in `mg`).
    pub stale: bool,
    /// A client has been told it won the right to recache it (`W`, then `Z`).
    pub token_sent: bool,
    /// The key came in base64 (`ms <key> b`); `mg ... k` shows it so again.
    pub key_binary: bool,
}

impl Marks {
    /// Bits of the marks that exist; any other bit in a stored byte is corruption.
    pub const BITS: u8 = 0b111;

    pub fn to_bits(self) -> u8 {
        u8::from(self.stale) | u8::from(self.token_sent) << 1 | u8::from(self.key_binary) << 2
    }

    pub fn from_bits(b: u8) -> Option<Marks> {
        (b & !Marks::BITS == 0).then_some(Marks {
            stale: b & 1 != 0,
            token_sent: b & 2 != 0,
            key_binary: b & 4 != 0,
        })
    }
}

/// One version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub clock: u64,
    pub flags: u32,
    pub exptime: u32,
    pub data: Vec<u8>,
    pub marks: Marks,
}

impl Record {
    pub fn value(clock: u64, flags: u32, exptime: u32, data: Vec<u8>) -> Record {
        Record {
            kind: Kind::Value,
            clock,
            flags,
            exptime,
            data,
            marks: Marks::default(),
        }
    }
    /// What the store's index knows of a record without reading it: its kind,
    /// clock and exptime; flags, data and marks are left empty. Enough for the
    /// writes that decide on no more (`cluster::write::Write::decides_on_header`).
    pub fn header(kind: Kind, clock: u64, exptime: u32) -> Record {
        Record {
            kind,
            clock,
            flags: 0,
            exptime,
            data: Vec::new(),
            marks: Marks::default(),
        }
    }
    pub fn tombstone(clock: u64) -> Record {
        Record {
            kind: Kind::Tombstone,
            clock,
            flags: 0,
            exptime: 0,
            data: Vec::new(),
            marks: Marks::default(),
        }
    }
    pub fn is_value(&self) -> bool {
        self.kind == Kind::Value
    }
}

/// Whether an item with `exptime` (absolute unix seconds, 0 = never) is gone at
/// `now`: memcached's rule, which the servers' reads and the store's counting and
/// reclaiming share.
pub fn is_expired(exptime: u32, now: u32) -> bool {
    exptime != 0 && exptime <= now
}

/// Checks sizes; the error names the limit.
pub fn check_sizes(key: &[u8], data_len: usize) -> Result<(), String> {
    if key.is_empty() || key.len() > KEY_SIZE_MAX {
        return Err(format!(
            "key of {} bytes is outside 1..={KEY_SIZE_MAX}",
            key.len()
        ));
    }
    if data_len > DATA_SIZE_MAX {
        return Err(format!("data of {data_len} bytes exceeds {DATA_SIZE_MAX}"));
    }
    Ok(())
}
