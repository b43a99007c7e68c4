//! The HTTP/1.1 part of the flow: the request, and a response read to its end (Content-Length,
//! chunked, or until the server's close_notify), parsed with `httparse`. `no_std` + `alloc`
//! friendly: only `core` and `alloc` here.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// `GET {path}` for `host`, asking the server to close after the response.
pub fn request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tether-device-https\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The body (chunked encoding removed).
    pub body: Vec<u8>,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The bytes are not an HTTP/1.x response.
    Malformed(String),
    /// The response is larger than the limit.
    TooLarge(usize),
    /// The connection ended before the response did.
    Incomplete(String),
}

impl core::fmt::Display for HttpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HttpError::Malformed(s) => write!(f, "malformed HTTP response: {s}"),
            HttpError::TooLarge(n) => write!(
                f,
                "the response is larger than {n} bytes; raise --max-response if that is expected"
            ),
            HttpError::Incomplete(s) => write!(f, "incomplete HTTP response: {s}"),
        }
    }
}

/// How far the bytes received so far go.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed (or the end of the stream, when the body is delimited by it).
    More,
    /// The response is complete.
    Done(Response),
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Looks at the bytes received so far. `eof`: the server has closed (close_notify).
pub fn parse(buf: &[u8], eof: bool, limit: usize) -> Result<Progress, HttpError> {
    if buf.len() > limit {
        return Err(HttpError::TooLarge(limit));
    }
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => {
            return Err(HttpError::Incomplete(format!(
                "the server closed after {} bytes, inside the headers",
                buf.len()
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(Progress::More),
        Err(e) => return Err(HttpError::Malformed(format!("{e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let reason = String::from(resp.reason.unwrap_or(""));
    let mut framing = Framing::UntilClose;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = core::str::from_utf8(h.value).unwrap_or("");
            if v.trim().eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            let v = core::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    HttpError::Malformed(format!(
                        "bad Content-Length {:?}",
                        String::from_utf8_lossy(h.value)
                    ))
                })?;
            framing = Framing::Length(v);
        }
    }
    // No body for these (RFC 9112 section 6.3).
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    let rest = &buf[head_len..];
    let done = |body: Vec<u8>| {
        Ok(Progress::Done(Response {
            status,
            reason: reason.clone(),
            body,
        }))
    };
    match framing {
        Framing::Length(n) => {
            if n > limit {
                return Err(HttpError::TooLarge(limit));
            }
            if rest.len() >= n {
                done(rest[..n].to_vec())
            } else if eof {
                Err(HttpError::Incomplete(format!(
                    "Content-Length is {n} but the server closed after {} body bytes",
                    rest.len()
                )))
            } else {
                Ok(Progress::More)
            }
        }
        Framing::UntilClose if eof => done(rest.to_vec()),
        Framing::UntilClose => Ok(Progress::More),
        Framing::Chunked => match dechunk(rest)? {
            Some(body) => done(body),
            None if eof => Err(HttpError::Incomplete(
                "the server closed inside a chunked body".into(),
            )),
            None => Ok(Progress::More),
        },
    }
}

/// The body of a complete chunked encoding, `None` while incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    loop {
        let (skip, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HttpError::Malformed("bad chunk size".into())),
        };
        rest = &rest[skip..];
        let size = usize::try_from(size)
            .map_err(|_| HttpError::Malformed("chunk size too large".into()))?;
        if size == 0 {
            // The last chunk; trailers end with an empty line.
            return Ok(find(rest, b"\r\n").map(|_| body));
        }
        if rest.len() < size.saturating_add(2) {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_host_and_close() {
        let r = String::from_utf8(request("api.device.test", "/v1/models")).unwrap();
        assert!(r.starts_with("GET /v1/models HTTP/1.1\r\nHost: api.device.test\r\n"));
        assert!(r.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn content_length() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut], false, 1 << 20), Ok(Progress::More));
            assert!(parse(&full[..cut], true, 1 << 20).is_err());
        }
        let Progress::Done(r) = parse(full, false, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.status, r.reason.as_str(), &r.body[..]),
            (200, "OK", &b"hello"[..])
        );
    }

    #[test]
    fn chunked_and_until_close() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let Progress::Done(r) = parse(chunked, false, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"abcde");
        assert_eq!(
            parse(&chunked[..chunked.len() - 2], false, 1 << 20),
            Ok(Progress::More)
        );
        let close = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert_eq!(parse(close, false, 1 << 20), Ok(Progress::More));
        let Progress::Done(r) = parse(close, true, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"until close");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            parse(b"SSH-2.0-x\r\n\r\n", false, 100),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, 100),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                false,
                100
            ),
            Err(HttpError::TooLarge(100))
        ));
        assert!(matches!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
                100
            ),
            Err(HttpError::Malformed(_))
        ));
    }
}
