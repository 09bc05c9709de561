//! Output as the write path holds it: a chain of pieces, each either bytes of its
//! own or a value shared with whoever else holds it (a write kept for its retries,
//! a value read from a server). A large value is so never copied on its way from
//! one socket to another: the connection's queue holds a reference to it, and
//! `writev` sends it from where it already is.
//!
//! Small bytes are gathered into one owned piece, so that a burst of short replies
//! is still one buffer and one system call.

use std::sync::Arc;

/// A value at least this long is queued by reference; a shorter one is copied, as
/// a copy of a few KiB costs less than a separate piece to send.
pub const SHARE_MIN_BYTES: usize = 16 << 10;

/// A shared value: the bytes of a large value, held once.
pub type Shared = Arc<Vec<u8>>;

/// One piece of output.
#[derive(Debug, Clone)]
pub enum Piece {
    Own(Vec<u8>),
    Shared(Shared),
}

impl Piece {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Piece::Own(v) => v,
            Piece::Shared(v) => v,
        }
    }
}

/// Output bytes in order, as pieces.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pieces: Vec<Piece>,
    len: usize,
}

impl Chain {
    pub fn new() -> Chain {
        Chain::default()
    }

    /// Owned bytes, appended to the last owned piece where there is one.
    pub fn bytes(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        if let Some(Piece::Own(last)) = self.pieces.last_mut() {
            last.extend_from_slice(b);
        } else {
            self.pieces.push(Piece::Own(b.to_vec()));
        }
    }

    /// Owned bytes already in a buffer of their own: kept as they are when they
    /// begin the chain or follow a shared piece, so building a reply in one
    /// buffer costs no second copy.
    pub fn own(&mut self, b: Vec<u8>) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        match self.pieces.last_mut() {
            Some(Piece::Own(last)) => last.extend_from_slice(&b),
            _ => self.pieces.push(Piece::Own(b)),
        }
    }

    /// A value: shared if it is long (see [`SHARE_MIN_BYTES`]), else copied.
    pub fn shared(&mut self, v: &Shared) {
        if v.len() < SHARE_MIN_BYTES {
            return self.bytes(v);
        }
        self.len += v.len();
        self.pieces.push(Piece::Shared(v.clone()));
    }

    /// A value of one's own: shared from here on if it is long (see
    /// [`SHARE_MIN_BYTES`]), else copied, with no shared buffer made for it.
    pub fn value(&mut self, v: Vec<u8>) {
        if v.len() < SHARE_MIN_BYTES {
            return self.bytes(&v);
        }
        self.shared(&Arc::new(v));
    }

    /// One piece, after what is here.
    pub fn push(&mut self, p: Piece) {
        match p {
            Piece::Own(b) => self.own(b),
            Piece::Shared(v) => {
                self.len += v.len();
                self.pieces.push(Piece::Shared(v));
            }
        }
    }

    /// Everything in `other`, after what is here.
    pub fn append(&mut self, other: Chain) {
        for p in other.pieces {
            self.push(p);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn into_pieces(self) -> Vec<Piece> {
        self.pieces
    }

    /// The bytes as one buffer (tests, and callers that must see them whole).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for p in &self.pieces {
            out.extend_from_slice(p.bytes());
        }
        out
    }
}

impl From<Vec<u8>> for Chain {
    fn from(v: Vec<u8>) -> Chain {
        let len = v.len();
        let pieces = if v.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Own(v)]
        };
        Chain { pieces, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bytes_gather_and_large_values_are_shared_not_copied() {
        let big: Shared = Arc::new(vec![7u8; SHARE_MIN_BYTES]);
        let small: Shared = Arc::new(b"tiny".to_vec());
        let mut c = Chain::new();
        c.bytes(b"VALUE k 0 4\r\n");
        c.shared(&small);
        c.bytes(b"\r\n");
        c.bytes(b"VALUE b 0 16384\r\n");
        c.shared(&big);
        c.bytes(b"\r\nEND\r\n");
        let pieces = c.clone().into_pieces();
        assert_eq!(pieces.len(), 3, "owned, the shared value, owned");
        assert!(matches!(&pieces[1], Piece::Shared(v) if Arc::ptr_eq(v, &big)));
        assert_eq!(Arc::strong_count(&big), 3, "held by reference");
        let whole = c.to_vec();
        assert_eq!(whole.len(), c.len());
        assert!(whole.starts_with(b"VALUE k 0 4\r\ntiny\r\nVALUE b"));
        assert!(whole.ends_with(b"\x07\x07\r\nEND\r\n"));

        let mut joined = Chain::from(b"a".to_vec());
        joined.append(c);
        assert_eq!(joined.len(), whole.len() + 1);
        assert_eq!(
            joined.into_pieces().len(),
            3,
            "owned bytes join across chains"
        );
        assert!(Chain::from(Vec::new()).is_empty());
    }
}
