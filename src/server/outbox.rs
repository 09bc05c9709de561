//! The sending side of a replace's copy: records batched per target, pushed over
//! a connection to each target's stream port with the next batch in flight while
//! one is applied, and sent again on a new connection when a push fails.

use super::node::Node;
use crate::net::rpc_client::BlockingClient;
use crate::proto::cluster as msg;
use rmpv::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A batch to one new owner is sent once it holds this many bytes.
pub const BATCH_BYTES: usize = 256 << 10;
/// How long one push may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to push one batch before the target is given up for this replace.
pub const PUSH_ATTEMPTS: u32 = 3;
/// Pause after a target refused a connection, before the next attempt.
pub const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Batches a copy may have sent to one target and not had answered: the next is
/// read and encoded while the target applies one. Memory: this many batches per
/// target beyond the replace's memory limit.
pub const PUSHES_IN_FLIGHT: usize = 2;

/// Records for one target, in the store's format back to back: a push's records.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    count: usize,
    /// The push carrying it, once sent on the current connection.
    msgid: Option<u32>,
}

/// One target: the batch being filled, those sent and not yet answered, and the
/// connection they went over.
#[derive(Default)]
pub(super) struct Link {
    filling: Batch,
    unanswered: std::collections::VecDeque<Batch>,
    client: Option<BlockingClient>,
}

/// Per-target batches and the connections to send them over.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) links: HashMap<SocketAddr, Link>,
    /// Bytes in batches being filled, across targets.
    pub(super) buffered: usize,
    pub(super) given_up: Vec<SocketAddr>,
    pub(super) records: u64,
    pub(super) bytes: u64,
}

impl Outbox {
    /// Queues one record for `to`; returns the bytes now queued for it.
    pub(super) fn add(&mut self, to: SocketAddr, record: &[u8]) -> usize {
        if self.given_up.contains(&to) {
            return 0;
        }
        let b = &mut self.links.entry(to).or_default().filling;
        b.bytes.extend_from_slice(record);
        b.count += 1;
        self.buffered += record.len();
        b.bytes.len()
    }

    /// Sends `to`'s batch, and waits until no more than [`PUSHES_IN_FLIGHT`] - 1
    /// of its pushes are unanswered.
    pub(super) fn send(
        &mut self,
        node: &Node,
        id: u64,
        to: SocketAddr,
        streams: &HashMap<SocketAddr, SocketAddr>,
    ) {
        let Some(link) = self.links.get_mut(&to) else {
            return;
        };
        let batch = std::mem::take(&mut link.filling);
        self.buffered -= batch.bytes.len();
        if batch.count > 0 {
            link.unanswered.push_back(batch);
        }
        self.settle(node, id, to, streams, PUSHES_IN_FLIGHT - 1);
    }

    /// Sends what is unsent to `to` and waits for answers until at most `keep`
    /// are outstanding. A failure drops the connection; every unanswered batch
    /// goes again on a new one (a record applied twice is harmless: newer wins),
    /// up to [`PUSH_ATTEMPTS`] times before the target is given up.
    pub(super) fn settle(
        &mut self,
        node: &Node,
        id: u64,
        to: SocketAddr,
        streams: &HashMap<SocketAddr, SocketAddr>,
        keep: usize,
    ) {
        let Some(link) = self.links.get_mut(&to) else {
            return;
        };
        if link.unanswered.is_empty() {
            return;
        }
        let Some(&stream) = streams.get(&to) else {
            let n: usize = link.unanswered.iter().map(|b| b.count).sum();
            log::warn!("replace {id:#x}: no stream port known for {to}; {n} records not sent");
            link.unanswered.clear();
            self.given_up.push(to);
            return;
        };
        let mut answered = Vec::new();
        let mut delivered = false;
        for attempt in 1..=PUSH_ATTEMPTS {
            if !node.replace.is_current(id) {
                // A newer replace plans its own copies; these batches are its business now.
                link.unanswered.clear();
                delivered = true;
                break;
            }
            match Self::pump(node, id, link, stream, keep, &mut answered) {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "replace {id:#x}: push to {to} at {stream} failed: {e} (attempt {attempt})"
                    );
                    link.client = None;
                    for b in &mut link.unanswered {
                        b.msgid = None;
                    }
                    if e.starts_with(CONNECT_FAILED) {
                        std::thread::sleep(RECONNECT_PAUSE);
                    }
                }
            }
        }
        for b in answered {
            self.records += b.count as u64;
            self.bytes += b.bytes.len() as u64;
            node.replace
                .records_sent
                .fetch_add(b.count as u64, Ordering::Relaxed);
            node.replace
                .bytes_sent
                .fetch_add(b.bytes.len() as u64, Ordering::Relaxed);
        }
        if !delivered {
            // The manager restarts the replace when it loses a server, so a target
            // that is really gone gets its data from the next replace.
            log::warn!("replace {id:#x}: giving up on {to} for this replace");
            link.unanswered.clear();
            self.given_up.push(to);
        }
    }

    /// One attempt of [`Outbox::settle`]; the batches answered go to `answered`.
    fn pump(
        node: &Node,
        id: u64,
        link: &mut Link,
        stream: SocketAddr,
        keep: usize,
        answered: &mut Vec<Batch>,
    ) -> Result<(), String> {
        if link.client.is_none() {
            let c = BlockingClient::connect(stream, CALL_TIMEOUT)
                .map_err(|e| format!("{CONNECT_FAILED}: {e}"))?;
            link.client = Some(c);
        }
        let client = link.client.as_mut().expect("connected above");
        for b in link.unanswered.iter_mut().filter(|b| b.msgid.is_none()) {
            let head = [Value::from(node.clock.tick()), Value::from(id)];
            b.msgid = Some(client.send_with_binary(msg::REPLACE_PUSH, &head, &b.bytes)?);
        }
        while link.unanswered.len() > keep {
            let msgid = link.unanswered[0].msgid.expect("sent above");
            client.wait(msgid)?;
            answered.extend(link.unanswered.pop_front());
        }
        Ok(())
    }
}

/// How a failed connect reads in a push's error, which is retried after a pause.
const CONNECT_FAILED: &str = "cannot connect";
