//! SPEC's error shape for the answers hyper gives by itself.
//!
//! A request whose HTTP message cannot be read (a bad method, target, version or header,
//! headers too large or too many, a request target over 64 KiB) never reaches the router:
//! hyper answers it 400, 414 or 431 with an empty body, then closes the connection. hyper has
//! no hook for that answer, so the connection's stream is wrapped: when hyper writes one of
//! those heads, the full answer in SPEC's shape is written in its place.
//!
//! It is exact because nothing of the router looks like such a head: hyper writes it with no
//! header but `connection`, `content-length: 0` and `date`, while every response of the router
//! carries a `content-type` (errors a JSON body), and no body the router sends holds a
//! carriage return (JSON escapes it, the OpenAPI document has bare line feeds).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use autodeploy_api::web::error::ApiError;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longer than any head hyper writes for a parse error (status line, `connection`,
/// `content-length` and `date`: about 115 bytes).
const LONGEST_HEAD: usize = 160;

/// A connection's stream on which hyper's automatic error answers are written in SPEC's shape.
pub struct ProtocolErrors<S> {
    inner: S,
    /// Our answer, being written in place of hyper's head.
    replacing: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    sent: usize,
    /// The length of hyper's head, reported written once all of `bytes` is.
    replaces: usize,
}

impl<S> ProtocolErrors<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, replacing: None }
    }
}

impl<S: AsyncWrite + Unpin> ProtocolErrors<S> {
    /// Write the rest of a replacement, if one is under way.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(replacement) = &mut self.replacing {
            while replacement.sent < replacement.bytes.len() {
                let rest = &replacement.bytes[replacement.sent..];
                match ready!(Pin::new(&mut self.inner).poll_write(cx, rest))? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    n => replacement.sent += n,
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProtocolErrors<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProtocolErrors<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            match answer_for(buf) {
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
                // The end of an earlier response first, as it is: hyper's head then starts
                // a write of its own.
                Some((start, _)) if start > 0 => return Pin::new(&mut this.inner).poll_write(cx, &buf[..start]),
                Some((_, bytes)) => {
                    this.replacing = Some(Replacement {
                        bytes,
                        sent: 0,
                        replaces: buf.len(),
                    })
                }
            }
        }
        ready!(this.poll_replacement(cx))?;
        // hyper retries the same bytes after a `Pending`, and counts its head written only
        // now that all of ours is.
        let replaces = this.replacing.take().map_or(0, |r| r.replaces);
        Poll::Ready(Ok(replaces.min(buf.len())))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    /// Not vectored: hyper then gathers what it writes into one buffer, so its head comes
    /// whole in one write (with at most the end of an earlier response before it).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// When `written` ends with hyper's automatic head for a parse error: where that head starts,
/// and what to write instead of it.
fn answer_for(written: &[u8]) -> Option<(usize, Vec<u8>)> {
    if !written.ends_with(b"\r\n\r\n") {
        return None;
    }
    let from = written.len().saturating_sub(LONGEST_HEAD);
    (from..written.len()).find_map(|start| Some((start, replacement(&written[start..])?)))
}

/// The full answer in place of `head`, when `head` is exactly one of hyper's automatic heads:
/// the same status line and `date`, a JSON body, and `connection: close` (hyper closes the
/// connection after it).
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    if !head.starts_with(b"HTTP/1.") {
        return None;
    }
    let mut lines = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = status.split_once(' ')?;
    let status = StatusCode::from_bytes(code.as_bytes()).ok()?;
    if status.canonical_reason() != Some(reason) {
        return None;
    }
    let error = ApiError::unreadable_request(status)?;
    let (mut empty, mut date) = (false, None);
    for line in lines {
        match line.split_once(": ")? {
            ("connection", "close") => {}
            ("content-length", "0") => empty = true,
            ("date", value) => date = Some(value),
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let body = error.to_json();
    let date = date.map(|date| format!("date: {date}\r\n")).unwrap_or_default();
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{date}\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const CODES: [(u16, &str); 3] = [
        (400, "MALFORMED_REQUEST"),
        (414, "URI_TOO_LONG"),
        (431, "HEADERS_TOO_LARGE"),
    ];

    /// hyper 1.12's head for a parse error (`Server::encode`): `connection: close` on
    /// HTTP/1.1 (none after an HTTP/1.0 request on the connection), `date` unless turned off.
    fn hyper_head(version: &str, status: u16, date: bool) -> String {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap();
        let connection = if version == "1.1" { "connection: close\r\n" } else { "" };
        let date = if date {
            format!("date: {DATE}\r\n")
        } else {
            String::new()
        };
        format!("HTTP/{version} {status} {reason}\r\n{connection}content-length: 0\r\n{date}\r\n")
    }

    /// A response of the router: JSON, on a kept-alive connection.
    fn ours(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ndate: {DATE}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn hyper_s_automatic_heads_become_spec_errors() {
        for (status, code) in CODES {
            for (version, date) in [("1.1", true), ("1.0", true), ("1.1", false)] {
                let head = hyper_head(version, status, date);
                let (start, answer) = answer_for(head.as_bytes()).unwrap();
                assert_eq!(start, 0, "{head}");
                let answer = String::from_utf8(answer).unwrap();
                let (answer_head, body) = answer.split_once("\r\n\r\n").unwrap();
                let status_line = head.lines().next().unwrap();
                let date = if date {
                    format!("\r\ndate: {DATE}")
                } else {
                    String::new()
                };
                assert_eq!(
                    answer_head,
                    format!(
                        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close{date}",
                        body.len()
                    )
                );
                let body: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(body["error"]["code"], code, "{body}");
                assert!(
                    body["error"]["message"].as_str().is_some_and(|m| m.ends_with('.')),
                    "{body}"
                );
                assert_eq!(body["error"]["details"], serde_json::json!([]));
            }
        }
    }

    #[test]
    fn the_end_of_an_earlier_response_is_written_first() {
        let earlier = ours("200 OK", r#"{"status":"ok"}"#);
        let written = format!("{earlier}{}", hyper_head("1.1", 400, true));
        assert_eq!(
            answer_for(written.as_bytes()).map(|(start, _)| start),
            Some(earlier.len())
        );
    }

    #[test]
    fn responses_of_the_router_are_never_taken_for_hyper_s() {
        let error = r#"{"error":{"code":"MALFORMED_BODY","message":"Not JSON.","details":[]}}"#;
        let head_only = |status: &str, len: usize| {
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\ndate: {DATE}\r\n\r\n"
            )
        };
        let not_hyper_s = [
            ours("400 Bad Request", error),
            // The answer to a HEAD request, and a head written before its body.
            head_only("400 Bad Request", error.len()),
            head_only("431 Request Header Fields Too Large", 0),
            format!("HTTP/1.1 204 No Content\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\ndate: {DATE}\r\n\r\n"),
            // The end of a streamed body.
            "1d\r\n{\"status\":\"ok\"}\r\n0\r\n\r\n".to_owned(),
            // Another status, or another reason.
            hyper_head("1.1", 400, true).replace("400 Bad Request", "413 Payload Too Large"),
            hyper_head("1.1", 400, true).replace("Bad Request", "Bad"),
        ];
        for written in not_hyper_s {
            assert!(answer_for(written.as_bytes()).is_none(), "{written}");
        }
    }

    /// A socket taking at most 7 bytes a write, and `Pending` every other call.
    #[derive(Default)]
    struct Trickle {
        written: Vec<u8>,
        calls: usize,
        flushed: bool,
        shut: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(7);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushed = true;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    fn ready<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<io::Result<T>>) -> T {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(result) = poll(&mut cx) {
                return result.unwrap();
            }
        }
    }

    #[test]
    fn a_kept_alive_connection_s_bytes_pass_unchanged_and_hyper_s_head_is_replaced_whole() {
        let mut stream = ProtocolErrors::new(Trickle::default());
        // As hyper writes them: a response whole, a head then its chunked body in three
        // writes, heads alone (HEAD, 204), then the end of a response with hyper's head.
        let body = r#"{"status":"ok"}"#;
        let earlier = ours("200 OK", body);
        let writes = [
            ours(
                "404 Not Found",
                r#"{"error":{"code":"NOT_FOUND","message":"No.","details":[]}}"#,
            ),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned(),
            format!("5\r\n{}\r\n", &body[..5]),
            format!("{:x}\r\n{}\r\n", body.len() - 5, &body[5..]),
            "0\r\n\r\n".to_owned(),
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 70\r\ndate: {DATE}\r\n\r\n"
            ),
            format!("HTTP/1.1 204 No Content\r\ndate: {DATE}\r\n\r\n"),
            earlier.clone(),
        ];
        let mut expected = Vec::new();
        for write in &writes {
            let mut at = 0;
            while at < write.len() {
                at += ready(|cx| Pin::new(&mut stream).poll_write(cx, &write.as_bytes()[at..]));
            }
            expected.extend_from_slice(write.as_bytes());
        }
        assert_eq!(stream.inner.written, expected);

        // Hyper's head after the end of the last response, in the same write.
        let earlier_end = &earlier.as_bytes()[earlier.len() - 4..];
        let head = hyper_head("1.1", 431, true);
        let (_, answer) = answer_for(head.as_bytes()).unwrap();
        let last = [earlier_end, head.as_bytes()].concat();
        let mut at = 0;
        while at < last.len() {
            let n = ready(|cx| Pin::new(&mut stream).poll_write(cx, &last[at..]));
            at += n;
            // Hyper's head is counted written only once all of our answer is.
            if at > earlier_end.len() {
                assert_eq!(at, last.len());
                assert!(stream.inner.written.ends_with(&answer));
            }
        }
        expected.extend_from_slice(earlier_end);
        expected.extend_from_slice(&answer);
        assert_eq!(stream.inner.written, expected);
        ready(|cx| Pin::new(&mut stream).poll_flush(cx));
        ready(|cx| Pin::new(&mut stream).poll_shutdown(cx));
        assert!(stream.inner.flushed && stream.inner.shut);
    }

    #[test]
    fn an_answer_under_way_is_written_whole_before_shutdown() {
        let mut stream = ProtocolErrors::new(Trickle::default());
        let head = hyper_head("1.1", 414, true);
        let (_, answer) = answer_for(head.as_bytes()).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        // The first write of the answer is `Pending`: hyper's write is too, and then it shuts
        // the connection down.
        assert!(Pin::new(&mut stream).poll_write(&mut cx, head.as_bytes()).is_pending());
        ready(|cx| Pin::new(&mut stream).poll_shutdown(cx));
        assert_eq!(stream.inner.written, answer);
        assert!(stream.inner.shut);
    }
}
