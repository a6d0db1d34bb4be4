//! A client that sends the request target exactly as written. reqwest (and
//! the `url` crate under it) normalise dot segments and `%2e`, which is what
//! an attacker's client does not do; the gate tests need the bytes as typed.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `method target` to `addr` (`127.0.0.1:PORT`) with an optional bearer
/// token and, for anything but GET, an empty JSON object as the body. The
/// answer's status code, read from the status line alone: a response that
/// never ends (the live stream) is dropped once its status is known.
pub async fn status(addr: &str, method: &str, target: &str, token: Option<&str>) -> u16 {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if method == "GET" {
        request.push_str("\r\n");
    } else {
        request.push_str("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    }
    status_of(addr, method, target, request).await
}

/// [`status`] for a console route: the session token goes in the
/// `ledgerdesk_session` cookie, and anything but GET sends a form without
/// a CSRF token.
pub async fn console_status(addr: &str, method: &str, target: &str, session: Option<&str>) -> u16 {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(session) = session {
        request.push_str(&format!("Cookie: ledgerdesk_session={session}\r\n"));
    }
    if method == "GET" {
        request.push_str("\r\n");
    } else {
        request.push_str(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\nx=1",
        );
    }
    status_of(addr, method, target, request).await
}

async fn status_of(addr: &str, method: &str, target: &str, request: String) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.expect("read answer");
        assert!(
            n > 0,
            "{method} {target}: connection closed before a status line"
        );
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no status in {line:?}"))
}

/// Send `request` (a whole HTTP/1.1 request, as bytes) and return the
/// answer's status line and headers, or `None` when no complete head came
/// within `wait` (the server is still reading what it was promised).
pub async fn head(addr: &str, request: &[u8], wait: std::time::Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send request");
    let read = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}
