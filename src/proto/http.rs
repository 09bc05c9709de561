//! Just enough HTTP/1.x to serve one page, `/metrics`, to Prometheus and curl: the
//! request head is read whole, anything else gets its status, and every answer
//! closes the connection.

/// The longest request head served; a longer one is refused.
pub const HEAD_MAX_BYTES: usize = 8 << 10;

/// What to answer a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The head is not complete yet.
    NeedMore,
    /// 200 with the page (to a HEAD request, the headers alone).
    Page { head_only: bool },
    /// An error status, its line and a one-line body.
    Error(&'static str),
}

/// Reads the request head at the front of `input`.
pub fn answer(input: &[u8]) -> Answer {
    let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if input.len() > HEAD_MAX_BYTES {
            Answer::Error("431 Request Header Fields Too Large")
        } else {
            Answer::NeedMore
        };
    };
    let line = &input[..input[..end].iter().position(|&b| b == b'\r').unwrap_or(end)];
    let mut words = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Answer::Error("400 Bad Request");
    };
    if !version.starts_with(b"HTTP/1.") {
        return Answer::Error("400 Bad Request");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or(b"");
    match (method, path) {
        (b"GET", b"/metrics") => Answer::Page { head_only: false },
        (b"HEAD", b"/metrics") => Answer::Page { head_only: true },
        (b"GET" | b"HEAD", _) => Answer::Error("404 Not Found"),
        _ => Answer::Error("405 Method Not Allowed"),
    }
}

/// The whole response: status line, headers, and `body` unless `head_only`.
pub fn response(status: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_answered_as_a_small_http_server_would() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        assert_eq!(answer(get), Answer::Page { head_only: false });
        assert_eq!(
            answer(b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n"),
            Answer::Page { head_only: false }
        );
        assert_eq!(
            answer(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Answer::Page { head_only: true }
        );
        for cut in 0..get.len() {
            assert_eq!(answer(&get[..cut]), Answer::NeedMore, "{cut}");
        }
        assert_eq!(
            answer(b"GET / HTTP/1.1\r\n\r\n"),
            Answer::Error("404 Not Found")
        );
        assert_eq!(
            answer(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Answer::Error("405 Method Not Allowed")
        );
        assert_eq!(answer(b"get k\r\n\r\n"), Answer::Error("400 Bad Request"));
        assert_eq!(
            answer(b"GET /metrics SPDY/3\r\n\r\n"),
            Answer::Error("400 Bad Request")
        );
        assert_eq!(
            answer(&vec![b'a'; HEAD_MAX_BYTES + 1]),
            Answer::Error("431 Request Header Fields Too Large")
        );
        let r = response("200 OK", "text/plain", b"up 1\n", false);
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nup 1\n"
        );
        assert!(!response("200 OK", "text/plain", b"up 1\n", true).ends_with(b"up 1\n"));
    }
}
