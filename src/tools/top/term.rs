//! The terminal while kumotop runs: raw input (a key at a time, no echo, Ctrl-C as
//! a key), the alternate screen, no cursor; all of it restored when the guard
//! goes, on every way out. SIGTERM and SIGHUP end the loop the same way.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by SIGTERM, SIGHUP and SIGINT: the loop ends and the terminal is restored.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Restores the terminal as it was when dropped.
pub struct Screen {
    saved: libc::termios,
}

/// Whether standard output is a terminal (else kumotop prints frames as lines).
pub fn is_terminal() -> bool {
    // SAFETY: isatty on the standard descriptors.
    unsafe { libc::isatty(1) == 1 && libc::isatty(0) == 1 }
}

impl Screen {
    pub fn enter() -> Result<Screen, String> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own; signal()
        // installs a handler that only stores to an atomic.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Err(format!(
                    "cannot read the terminal: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Err(format!(
                    "cannot set the terminal: {}",
                    std::io::Error::last_os_error()
                ));
            }
            for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
                libc::signal(
                    sig,
                    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
            print!("\x1b[?1049h\x1b[?25l");
            let _ = std::io::stdout().flush();
            Ok(Screen { saved })
        }
    }

    /// Draws a frame from the top left, clearing what the last one left.
    pub fn draw(&self, frame: &str) {
        let mut out = String::from("\x1b[H");
        for line in frame.lines() {
            out.push_str(line);
            out.push_str("\x1b[K\r\n");
        }
        out.push_str("\x1b[J");
        print!("{out}");
        let _ = std::io::stdout().flush();
    }

    /// Waits up to `d` for a key; true when the user asked to quit (q, Q, Ctrl-C)
    /// or a signal did.
    pub fn wait_for_quit(&self, d: Duration) -> bool {
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = d.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll on one pollfd we own; read into a buffer we own.
        let ready = unsafe { libc::poll(&mut fds, 1, ms) };
        if ready > 0 {
            let mut buf = [0u8; 64];
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0
                && buf[..n as usize]
                    .iter()
                    .any(|b| matches!(b, b'q' | b'Q' | 3))
            {
                return true;
            }
            if n == 0 {
                // The terminal went away.
                return true;
            }
        }
        STOP.load(Ordering::Relaxed)
    }

    /// The terminal's width in columns (80 when it cannot tell).
    pub fn width() -> usize {
        // SAFETY: TIOCGWINSZ fills a winsize we own.
        unsafe {
            let mut w: libc::winsize = std::mem::zeroed();
            if libc::ioctl(1, libc::TIOCGWINSZ, &mut w) == 0 && w.ws_col > 0 {
                w.ws_col as usize
            } else {
                80
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        // SAFETY: puts back the settings read at entry.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}
