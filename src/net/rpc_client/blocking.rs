//! A synchronous msgpack-rpc client over a plain socket.

use super::RpcError;
use crate::net::auth;
use crate::proto::rpc::{self, Decoded, Message};
use rmpv::Value;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A synchronous client over a plain socket, for the command-line tools and tests:
/// one call at a time, no event loop, no threads.
pub struct BlockingClient {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    next_msgid: u32,
    timeout: Duration,
}

impl BlockingClient {
    /// Connects within `timeout`, which also bounds every later call.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<BlockingClient> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut c = BlockingClient {
            stream,
            buf: Vec::new(),
            next_msgid: 1,
            timeout,
        };
        if let Some(t) = auth::token() {
            c.call_with_id(auth::AUTH_MSGID, auth::AUTH, &[Value::Binary(t.to_vec())])
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
        }
        Ok(c)
    }

    /// Calls `method` and waits for its response. Requests that arrive meanwhile
    /// (a manager pushing a hash space) are skipped.
    pub fn call(&mut self, method: &str, params: &[Value]) -> Result<Value, String> {
        let msgid = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1).max(1);
        self.call_with_id(msgid, method, params)
    }

    fn call_with_id(
        &mut self,
        msgid: u32,
        method: &str,
        params: &[Value],
    ) -> Result<Value, String> {
        let mut frame = Vec::new();
        rpc::encode_request(&mut frame, msgid, method, params);
        self.send_frame(&frame)?;
        self.wait(msgid)
    }

    /// Sends a request whose last param is the binary `bytes` (written straight
    /// from the caller's buffer), and returns its msgid without waiting: a caller keeps
    /// the next request in flight while this one is handled, and then [`wait`]s.
    ///
    /// [`wait`]: BlockingClient::wait
    pub fn send_with_binary(
        &mut self,
        method: &str,
        params: &[Value],
        bytes: &[u8],
    ) -> Result<u32, String> {
        let msgid = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1).max(1);
        let mut frame = Vec::with_capacity(bytes.len() + 64);
        rpc::encode_request_with_binary(&mut frame, msgid, method, params, bytes);
        self.send_frame(&frame)?;
        Ok(msgid)
    }

    fn send_frame(&mut self, frame: &[u8]) -> Result<(), String> {
        use std::io::Write;
        self.stream
            .write_all(frame)
            .map_err(|e| format!("send failed: {e}"))
    }

    /// Waits for the answer to the request `msgid`. Answers to earlier requests
    /// that are still arriving, and requests (a manager pushing a hash space), are
    /// skipped.
    pub fn wait(&mut self, msgid: u32) -> Result<Value, String> {
        use std::io::Read;
        let deadline = Instant::now() + self.timeout;
        loop {
            match rpc::decode(&self.buf).map_err(|e| e.to_string())? {
                Decoded::Frame { message, len } => {
                    self.buf.drain(..len);
                    if let Message::Response {
                        msgid: id,
                        error,
                        result,
                    } = message
                    {
                        if id == msgid {
                            return if error.is_nil() {
                                Ok(result)
                            } else {
                                Err(RpcError::Remote(error).to_string())
                            };
                        }
                    }
                }
                Decoded::Incomplete => {
                    if Instant::now() >= deadline {
                        return Err("timeout".into());
                    }
                    let mut chunk = [0u8; 64 << 10];
                    match self.stream.read(&mut chunk) {
                        Ok(0) => return Err("connection closed by peer".into()),
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            return Err("timeout".into())
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("receive failed: {e}")),
                    }
                }
            }
        }
    }
}
