//! The `/metrics` listener of `--metrics`: a connection on the worker loops like
//! any other, whose session answers one HTTP request with the page the role
//! renders at that moment (see [`crate::proto::http`]), then closes.

use super::conn::{Session, Writer};
use super::{Net, SessionFactory};
use crate::proto::http::{self, Answer};
use crate::proto::metrics::CONTENT_TYPE;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a connection may take to send its request. A scraper sends it as soon
/// as it has connected; one that sends nothing is closed, not held for ever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Renders a role's metrics page, in the Prometheus text format.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

struct MetricsSession {
    render: Render,
    net: Net,
    /// Set once the request has its answer; the timeout leaves it alone then.
    answered: Arc<AtomicBool>,
}

impl Session for MetricsSession {
    fn on_open(&mut self, out: &Arc<Writer>) {
        let (out, answered) = (Arc::downgrade(out), self.answered.clone());
        self.net.timers().after(REQUEST_TIMEOUT, move || {
            if let (false, Some(out)) = (answered.load(Ordering::Acquire), out.upgrade()) {
                out.close();
            }
        });
    }

    fn on_input(&mut self, input: &[u8], out: &Arc<Writer>) -> Result<usize, ()> {
        if self.answered.load(Ordering::Acquire) {
            // One request per connection: what follows it is not read.
            return Ok(input.len());
        }
        let reply = match http::answer(input) {
            Answer::NeedMore => return Ok(0),
            Answer::Page { head_only } => http::response(
                "200 OK",
                CONTENT_TYPE,
                (self.render)().as_bytes(),
                head_only,
            ),
            Answer::Error(status) => http::response(
                status,
                "text/plain; charset=utf-8",
                format!("{status}\n").as_bytes(),
                false,
            ),
        };
        self.answered.store(true, Ordering::Release);
        out.send(&reply);
        out.close_after_flush();
        Ok(input.len())
    }
}

/// Binds `--metrics`'s address, before the daemon goes to the background, so
/// that a taken port is told.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

/// Serves `render`'s page on `listener` (`--metrics`); returns its address.
pub fn serve(
    net: &Net,
    listener: std::net::TcpListener,
    render: Render,
) -> Result<SocketAddr, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let session_net = net.clone();
    let factory: SessionFactory = Arc::new(move |_peer| {
        Box::new(MetricsSession {
            render: render.clone(),
            net: session_net.clone(),
            answered: Arc::new(AtomicBool::new(false)),
        })
    });
    net.listen(listener, factory)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}
