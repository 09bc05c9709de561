//! The budget of one connection's multi-gets: which key may be asked for next.
//! Pure bookkeeping, no I/O, so that a test can drive it; `multiget.rs` runs it.
//!
//! A key is asked for only while the connection's unsent reply bytes, plus each
//! value in flight counted at the largest size this connection has seen, stay under
//! [`OUTPUT_BUDGET_BYTES`]. Under the budget one value may always go, however large,
//! so that every get ends; over it, none until the connection has sent some.

use super::form::Form;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Unsent reply bytes a connection may have before it asks for no more values and
/// reads no more commands.
pub const OUTPUT_BUDGET_BYTES: usize = 4 << 20;
/// Values one connection may have on their way at once.
pub const FETCHES_MAX: usize = 64;
/// The size a value is assumed to have before the connection has seen one.
pub const FIRST_VALUE_GUESS_BYTES: usize = 256 << 10;

/// A value (or a whole binary packet) on its way in, gathered into one buffer that
/// grows as its bytes arrive and never past the size announced: the connection's
/// input then holds at most a read's worth of it, and the buffer becomes the write's
/// value without a copy. Capacity is not reserved from the announcement alone, so
/// a client that announces a large value and sends little holds little.
pub(super) struct Gathering {
    buf: Vec<u8>,
    need: usize,
}

/// The first reservation of a gathering buffer; it grows fourfold from there.
const GATHER_FIRST_BYTES: usize = 64 << 10;

impl Gathering {
    pub fn new(need: usize) -> Gathering {
        Gathering {
            buf: Vec::new(),
            need,
        }
    }

    /// Takes what it still needs from the front of `input`; returns bytes used.
    pub fn take(&mut self, input: &[u8]) -> usize {
        let n = (self.need - self.buf.len()).min(input.len());
        let want = self.buf.len() + n;
        if want > self.buf.capacity() {
            // Growing fourfold, the last move holds at most a quarter more than
            // the value (and the allocator may remap rather than copy).
            let grown = (self.buf.capacity() * 4).max(GATHER_FIRST_BYTES).max(want);
            self.buf
                .reserve_exact(grown.min(self.need) - self.buf.len());
        }
        self.buf.extend_from_slice(&input[..n]);
        n
    }

    pub fn is_complete(&self) -> bool {
        self.buf.len() == self.need
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// One get (or gat) line, or one part of a long one.
pub(super) struct GetRun {
    pub keys: Vec<Arc<Vec<u8>>>,
    pub with_cas: bool,
    /// `gat`: each key's new exptime (absolute), set before it is read.
    pub touch: Option<u32>,
    /// The place of the first key's answer; `END` follows the last key's.
    pub seq: u64,
    /// This part ends its line: `END` goes after it.
    pub end: bool,
    /// The protocol its answers are worded in.
    pub form: Form,
    state: Mutex<RunState>,
}

struct RunState {
    /// Keys not asked for yet start here.
    next: usize,
    /// Keys answered.
    answered: usize,
}

/// The connection's reads in flight, and the get runs waiting to ask for more.
#[derive(Default)]
pub(super) struct Fetching {
    runs: VecDeque<Arc<GetRun>>,
    in_flight: usize,
    /// The largest value this connection has been sent.
    largest: usize,
}

impl GetRun {
    pub(super) fn new(
        keys: Vec<Vec<u8>>,
        with_cas: bool,
        touch: Option<u32>,
        seq: u64,
        end: bool,
        form: Form,
    ) -> Arc<GetRun> {
        Arc::new(GetRun {
            keys: keys.into_iter().map(Arc::new).collect(),
            with_cas,
            touch,
            seq,
            end,
            form,
            state: Mutex::new(RunState {
                next: 0,
                answered: 0,
            }),
        })
    }

    /// The places this run's answers take: one per key, and `END` if it ends its line.
    pub(super) fn places(keys: usize, end: bool) -> usize {
        keys + usize::from(end)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more key answered; true when it was the last.
    pub(super) fn answered(&self) -> bool {
        let mut st = self.lock();
        st.answered += 1;
        st.answered == self.keys.len()
    }
}

impl Fetching {
    /// Queues a run whose keys are to be asked for.
    pub(super) fn add(&mut self, run: Arc<GetRun>) {
        self.runs.push_back(run);
    }

    /// The next key to ask for, if the budget allows one more value on its way
    /// with `unsent` bytes not yet sent.
    pub(super) fn admit(&mut self, unsent: usize) -> Option<(Arc<GetRun>, usize)> {
        let guess = if self.largest == 0 {
            FIRST_VALUE_GUESS_BYTES
        } else {
            self.largest
        };
        // Nothing more while the unsent answers fill the budget; below it, one
        // value may always go (however large), so that every get ends. The
        // connection's drain brings the next.
        let over = unsent + self.in_flight * guess > OUTPUT_BUDGET_BYTES;
        if unsent >= OUTPUT_BUDGET_BYTES
            || self.in_flight >= FETCHES_MAX
            || (self.in_flight > 0 && over)
        {
            return None;
        }
        let run = self.runs.front()?.clone();
        let i = {
            let mut st = run.lock();
            st.next += 1;
            st.next - 1
        };
        if i + 1 >= run.keys.len() {
            self.runs.pop_front();
        }
        self.in_flight += 1;
        Some((run, i))
    }

    /// A value (its answer `len` bytes long) arrived.
    pub(super) fn arrived(&mut self, len: usize) {
        self.in_flight -= 1;
        self.largest = self.largest.max(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_gathered_in_pieces_never_past_its_size() {
        let need = 1 << 20;
        let mut g = Gathering::new(need);
        assert_eq!(g.take(b"abc"), 3);
        assert!(
            g.buf.capacity() <= GATHER_FIRST_BYTES,
            "no reservation up front"
        );
        let chunk = vec![7u8; 48 << 10];
        let mut taken = 3;
        while !g.is_complete() {
            taken += g.take(&chunk);
            assert!(g.buf.capacity() <= need, "never past the announced size");
        }
        assert_eq!(taken, need);
        assert_eq!(g.take(b"more"), 0, "the next command's bytes stay");
        let v = g.into_inner();
        assert_eq!((v.len(), v.capacity()), (need, need));
        assert_eq!(&v[..4], b"abc\x07");
    }

    fn run(keys: usize) -> Arc<GetRun> {
        let keys = (0..keys).map(|k| vec![k as u8]).collect();
        GetRun::new(keys, false, None, 0, true, Form::text())
    }

    #[test]
    fn keys_are_asked_for_in_order_up_to_the_flight_limit() {
        let mut f = Fetching::default();
        f.add(run(FETCHES_MAX + 5));
        let mut asked = Vec::new();
        while let Some((_, i)) = f.admit(0) {
            f.arrived(10);
            asked.push(i);
            if asked.len() > FETCHES_MAX + 10 {
                break;
            }
        }
        assert_eq!(asked, (0..FETCHES_MAX + 5).collect::<Vec<_>>());
        // Small values seen: as many as FETCHES_MAX at once, no more.
        let mut f = Fetching::default();
        f.add(run(FETCHES_MAX + 5));
        assert!(f.admit(0).is_some());
        f.arrived(10);
        let started = std::iter::from_fn(|| f.admit(0)).count();
        assert_eq!(started, FETCHES_MAX, "no more than FETCHES_MAX at once");
    }

    #[test]
    fn large_values_and_a_slow_reader_hold_the_reads_back() {
        let mut f = Fetching::default();
        f.add(run(100));
        // Before any value is seen, each is guessed at FIRST_VALUE_GUESS_BYTES.
        let first = std::iter::from_fn(|| f.admit(0)).count();
        assert_eq!(first, OUTPUT_BUDGET_BYTES / FIRST_VALUE_GUESS_BYTES + 1);
        // Values of 1 MiB: only what fits the budget goes out at once.
        for _ in 0..first {
            f.arrived(1 << 20);
        }
        let next = std::iter::from_fn(|| f.admit(0)).count();
        assert_eq!(next, OUTPUT_BUDGET_BYTES / (1 << 20) + 1);
        // A reader with nearly the whole budget unsent gets one value at a time,
        // and none once the budget is full.
        for _ in 0..next {
            f.arrived(1 << 20);
        }
        assert!(f.admit(OUTPUT_BUDGET_BYTES - 1).is_some(), "one is allowed");
        assert!(f.admit(OUTPUT_BUDGET_BYTES - 1).is_none());
        f.arrived(1 << 20);
        assert!(
            f.admit(OUTPUT_BUDGET_BYTES).is_none(),
            "none over the budget"
        );
    }
}
