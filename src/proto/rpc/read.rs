//! Reading frames: where a msgpack object ends in a byte stream (a walk that never
//! allocates), decoding it, and [`FrameReader`], which gathers a large frame into a
//! buffer of its own and decodes its value in place.

use super::{message_from_value, DecodeError, Decoded, Message};
use super::{FRAME_DEPTH_MAX, FRAME_ENVELOPE_MAX, FRAME_SIZE_MAX};
use rmpv::Value;

/// Returns the length of the msgpack object at the front of `buf`, `Ok(None)` if it is
/// not all there yet, or an error if it is malformed or announces more than `max` bytes.
/// Never allocates and never recurses.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    walk(buf, max).map(|w| w.end)
}

/// What a walk over the front of a byte stream learned of the object there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Walk {
    /// Its length, once all of it is there.
    pub(super) end: Option<usize>,
    /// Bytes it is known to take at least, while it is not all there.
    need: usize,
    /// The largest binary in it: where its header starts, its bytes start, and
    /// how many there are.
    largest_bin: Option<(usize, usize, usize)>,
    /// It holds an ext of [`MARK_EXT`]'s type.
    marked: bool,
}

/// The ext type [`decode_owned`] marks the place of a binary with while it decodes
/// the rest; kumo never sends it.
const MARK_EXT: u8 = 0x7f;

pub(super) fn walk(buf: &[u8], max: usize) -> Result<Walk, DecodeError> {
    Walker::default().walk(buf, max)
}

/// A walk that can be taken up again where it stopped: a frame of many small items
/// that arrives a piece at a time is walked once in all, not once per piece.
/// Between calls the buffer may only grow at its end, its front unchanged.
#[derive(Debug)]
pub(super) struct Walker {
    /// `open[d]` counts the items still to read at nesting depth d.
    open: [u64; FRAME_DEPTH_MAX + 1],
    depth: usize,
    /// Where the first item not yet walked starts.
    pub(super) pos: usize,
    found: Walk,
}

impl Default for Walker {
    fn default() -> Self {
        let mut open = [0u64; FRAME_DEPTH_MAX + 1];
        open[0] = 1;
        Walker {
            open,
            depth: 0,
            pos: 0,
            found: Walk::default(),
        }
    }
}

impl Walker {
    /// Walks on over `buf` from where the last call stopped. An item not all there
    /// is left unwalked, so the next call starts at its marker again.
    pub(super) fn walk(&mut self, buf: &[u8], max: usize) -> Result<Walk, DecodeError> {
        let (open, w) = (&mut self.open, &mut self.found);
        let mut depth = self.depth;
        let mut pos = self.pos;
        let incomplete = loop {
            while open[depth] == 0 {
                if depth == 0 {
                    (w.end, w.need) = (Some(pos), 0);
                    (self.depth, self.pos) = (0, pos);
                    return Ok(*w);
                }
                depth -= 1;
            }
            let start = pos;
            let Some(&marker) = buf.get(pos) else {
                break pos + 1;
            };
            pos += 1;
            // (bytes of length field, fixed payload bytes, child items)
            let (len_bytes, fixed, children): (usize, u64, u64) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
                0x80..=0x8f => (0, 0, 2 * (marker & 0x0f) as u64),
                0x90..=0x9f => (0, 0, (marker & 0x0f) as u64),
                0xa0..=0xbf => (0, (marker & 0x1f) as u64, 0),
                0xc1 => return Err(DecodeError::Malformed("reserved marker 0xc1".into())),
                0xc4 | 0xd9 => (1, 0, 0),
                0xc5 | 0xda => (2, 0, 0),
                0xc6 | 0xdb => (4, 0, 0),
                0xc7 => (1, 1, 0),
                0xc8 => (2, 1, 0),
                0xc9 => (4, 1, 0),
                0xca => (0, 4, 0),
                0xcb => (0, 8, 0),
                0xcc | 0xd0 => (0, 1, 0),
                0xcd | 0xd1 => (0, 2, 0),
                0xce | 0xd2 => (0, 4, 0),
                0xcf | 0xd3 => (0, 8, 0),
                0xd4 => (0, 2, 0),
                0xd5 => (0, 3, 0),
                0xd6 => (0, 5, 0),
                0xd7 => (0, 9, 0),
                0xd8 => (0, 17, 0),
                0xdc | 0xde => (2, 0, 0),
                0xdd | 0xdf => (4, 0, 0),
            };
            let mut payload = fixed;
            let mut children = children;
            if len_bytes > 0 {
                let Some(field) = buf.get(pos..pos + len_bytes) else {
                    pos = start;
                    break start + 1 + len_bytes;
                };
                pos += len_bytes;
                let n = field.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64);
                match marker {
                    0xdc | 0xdd => children = n,
                    0xde | 0xdf => children = 2 * n,
                    _ => payload += n,
                }
            }
            // Every child takes at least one byte, so the announced size is a lower
            // bound that can be checked before any of it has arrived.
            let announced = pos as u64 + payload + children;
            if announced > max as u64 {
                return Err(DecodeError::TooLarge { announced });
            }
            let end = pos + payload as usize;
            if end > buf.len() {
                // Only a string, binary or ext gets here (its header is all
                // there), and the largest binary must be known while it is not.
                if matches!(marker, 0xc4..=0xc6)
                    && w.largest_bin.is_none_or(|(_, _, n)| n < payload as usize)
                {
                    w.largest_bin = Some((start, pos, payload as usize));
                }
                if matches!(marker, 0xc7..=0xc9 | 0xd4..=0xd8) && buf.get(pos) == Some(&MARK_EXT) {
                    w.marked = true;
                }
                pos = start;
                break end;
            }
            if matches!(marker, 0xc4..=0xc6)
                && w.largest_bin.is_none_or(|(_, _, n)| n < payload as usize)
            {
                w.largest_bin = Some((start, pos, payload as usize));
            }
            // An ext's type is the first byte of its payload.
            if matches!(marker, 0xc7..=0xc9 | 0xd4..=0xd8) && buf.get(pos) == Some(&MARK_EXT) {
                w.marked = true;
            }
            open[depth] -= 1;
            pos = end;
            if children > 0 {
                if depth == FRAME_DEPTH_MAX {
                    return Err(DecodeError::Malformed(format!(
                        "nesting deeper than {FRAME_DEPTH_MAX} levels"
                    )));
                }
                depth += 1;
                open[depth] = children;
            }
        };
        self.depth = depth;
        self.pos = pos;
        w.need = incomplete;
        Ok(*w)
    }
}

/// Decodes the message at the front of `buf`, if it is complete.
pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let Some(len) = frame_len(buf, FRAME_SIZE_MAX)? else {
        return Ok(Decoded::Incomplete);
    };
    Ok(Decoded::Frame {
        message: message_from_value(read_value(&buf[..len])?)?,
        len,
    })
}

/// Decodes one whole msgpack object (its length checked by a walk).
fn read_value(frame: &[u8]) -> Result<Value, DecodeError> {
    match crate::proto::msgpack::read_value(frame, FRAME_DEPTH_MAX) {
        Ok((v, _)) => Ok(v),
        Err(why) => Err(DecodeError::Malformed(why)),
    }
}

/// A frame with at least this many bytes still to come is gathered by a
/// [`FrameReader`] rather than left in the connection's input.
pub const GATHER_MIN_BYTES: usize = 256 << 10;

/// Frames from a byte stream, a large value held once. A small frame is decoded
/// where it lies in the caller's input. A large one (a value of megabytes on its
/// way) is taken into a buffer of its own as it arrives, so the connection's input
/// stays small, and once whole its largest binary is decoded in place: the buffer
/// becomes that `Value::Binary`, with no second copy.
#[derive(Debug, Default)]
pub struct FrameReader {
    gathering: Option<Vec<u8>>,
    /// A large frame no one waits for any more (see [`FrameReader::discard`]):
    /// the frame with its binary marked, and the binary's bytes still to skip.
    skipping: Option<(Vec<u8>, usize)>,
    /// The walk of the frame at the front of the input, or of the one being
    /// gathered, once it was found not whole: it goes on from where it stopped
    /// as more arrives, and the frame is not decoded until it is whole.
    walker: Option<Walker>,
}

impl FrameReader {
    /// A frame is being gathered or skipped: the front of the caller's input is
    /// the middle of it, not a frame of its own.
    pub fn is_inside_a_frame(&self) -> bool {
        self.gathering.is_some() || self.skipping.is_some()
    }

    /// The frame at the front of the input was taken whole by someone else (see
    /// [`super::request_at`]): a walk of it is over.
    pub fn taken_whole(&mut self) {
        self.walker = None;
    }

    /// Reads from the front of `input`: the bytes used, and a message when one is
    /// complete. `(0, None)` means more input is needed.
    pub fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), DecodeError> {
        let read = self.read_on(input);
        if read.is_err() {
            self.walker = None;
        }
        read
    }

    fn read_on(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), DecodeError> {
        if let Some((shell, left)) = self.skipping.take() {
            return self.skip(shell, left, input);
        }
        let Some(mut buf) = self.gathering.take() else {
            // Most frames are whole when they are first looked at: decoding tells
            // where one ends as well as a walk does, so the walk is left to the
            // rest (a frame not all there, too large, or malformed), to say which.
            if self.walker.is_none() {
                match crate::proto::msgpack::read_value(input, FRAME_DEPTH_MAX) {
                    Ok((v, len)) if len <= FRAME_SIZE_MAX => {
                        return Ok((len, Some(message_from_value(v)?)));
                    }
                    _ => {}
                }
            }
            let walker = self.walker.get_or_insert_with(Walker::default);
            let w = walker.walk(input, FRAME_SIZE_MAX)?;
            if let Some(len) = w.end {
                self.walker = None;
                return Ok((len, Some(message_from_value(read_value(&input[..len])?)?)));
            }
            if w.need - input.len() < GATHER_MIN_BYTES {
                return Ok((0, None));
            }
            // Room for what the frame announced, and its envelope after it. The
            // walker goes on over the copy: it holds the same bytes.
            let mut buf = Vec::with_capacity(w.need.saturating_add(FRAME_ENVELOPE_MAX));
            buf.extend_from_slice(input);
            self.gathering = Some(buf);
            return Ok((input.len(), None));
        };
        let walker = self.walker.get_or_insert_with(Walker::default);
        // Only what the frame is known to take: what follows is the next frame's.
        let need = walker.walk(&buf, FRAME_SIZE_MAX)?.need;
        let take = need.saturating_sub(buf.len()).min(input.len());
        buf.extend_from_slice(&input[..take]);
        match walker.walk(&buf, FRAME_SIZE_MAX)?.end {
            Some(_) => {
                self.walker = None;
                Ok((take, Some(decode_owned(buf)?)))
            }
            None => {
                self.gathering = Some(buf);
                Ok((take, None))
            }
        }
    }
}

impl FrameReader {
    /// The frame being gathered is not wanted: the rest of its largest binary is
    /// skipped as it arrives rather than kept, and the rest of the frame read as
    /// usual. (Nothing changes for a frame whose binary has all come.)
    pub fn discard(&mut self) {
        let Some(buf) = self.gathering.take() else {
            return;
        };
        self.walker = None;
        match walk(&buf, FRAME_SIZE_MAX) {
            Ok(Walk {
                largest_bin: Some((head, start, n)),
                marked: false,
                ..
            }) if start + n > buf.len() => {
                let mut shell = buf[..head].to_vec();
                shell.extend_from_slice(&[0xd4, MARK_EXT, 0]);
                self.skipping = Some((shell, start + n - buf.len()));
            }
            _ => self.gathering = Some(buf),
        }
    }

    fn skip(
        &mut self,
        mut shell: Vec<u8>,
        left: usize,
        input: &[u8],
    ) -> Result<(usize, Option<Message>), DecodeError> {
        if left > 0 {
            let k = left.min(input.len());
            self.skipping = Some((shell, left - k));
            return Ok((k, None));
        }
        let need = walk(&shell, FRAME_SIZE_MAX)?.need;
        let take = need.saturating_sub(shell.len()).min(input.len());
        shell.extend_from_slice(&input[..take]);
        match walk(&shell, FRAME_SIZE_MAX)?.end {
            Some(_) => Ok((take, Some(message_from_value(read_value(&shell)?)?))),
            None => {
                self.skipping = Some((shell, 0));
                Ok((take, None))
            }
        }
    }

    /// The msgid of a response being gathered: its answer is on its way.
    pub fn arriving_response(&self) -> Option<u32> {
        match self.gathering.as_deref()? {
            // [1, msgid, ...]: a positive fixint, or a uint of 1, 2 or 4 bytes.
            [0x94, 0x01, id @ 0x00..=0x7f, ..] => Some(u32::from(*id)),
            [0x94, 0x01, 0xcc, id, ..] => Some(u32::from(*id)),
            [0x94, 0x01, 0xcd, a, b, ..] => Some(u32::from(u16::from_be_bytes([*a, *b]))),
            [0x94, 0x01, 0xce, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }
}

/// Decodes a whole frame that is its own buffer. Its largest binary, if large, is
/// taken in place: the rest of the frame is decoded with a marker where that binary
/// was, then the buffer is cut down to the binary's bytes (moved to its front, no
/// new allocation) and put where the marker is.
pub fn decode_owned(mut frame: Vec<u8>) -> Result<Message, DecodeError> {
    let w = walk(&frame, FRAME_SIZE_MAX)?;
    let Some(len) = w.end else {
        return Err(DecodeError::Malformed("frame cut short".into()));
    };
    let big = w.largest_bin.filter(|&(_, _, n)| n >= GATHER_MIN_BYTES);
    let (Some((head, start, n)), false) = (big, w.marked) else {
        return message_from_value(read_value(&frame[..len])?);
    };
    let mut shell = Vec::with_capacity(len - n + 3);
    shell.extend_from_slice(&frame[..head]);
    shell.extend_from_slice(&[0xd4, MARK_EXT, 0]);
    shell.extend_from_slice(&frame[start + n..len]);
    let mut value = read_value(&shell)?;
    frame.truncate(start + n);
    frame.drain(..start);
    let mut bytes = Some(frame);
    put_at_mark(&mut value, &mut bytes);
    message_from_value(value)
}

/// Replaces the marker ext with `bytes`; the walk bounds the depth.
fn put_at_mark(v: &mut Value, bytes: &mut Option<Vec<u8>>) {
    match v {
        Value::Ext(t, _) if *t == MARK_EXT as i8 => {
            if let Some(b) = bytes.take() {
                *v = Value::Binary(b);
            }
        }
        Value::Array(items) => {
            for x in items {
                if bytes.is_none() {
                    return;
                }
                put_at_mark(x, bytes);
            }
        }
        Value::Map(pairs) => {
            for (k, x) in pairs {
                put_at_mark(k, bytes);
                put_at_mark(x, bytes);
            }
        }
        _ => {}
    }
}
