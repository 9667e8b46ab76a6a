//! A tiny HTTP/1.1 client for the node's local API on loopback, so `liaison send` and
//! `liaison inbox` need no HTTP library beyond std.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

/// Largest response read from the local API.
const RESPONSE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The node in `dir`'s local API address and the operator's token (the node's owner
/// credential, written by `init` into the node directory).
pub fn operator(dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let c = liaison_node::Config::load(dir)?;
    let path = dir.join(liaison_node::users::OPERATOR_TOKEN_FILE);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the operator token `{}`", path.display()))?;
    Ok((c.api.listen.to_string(), token.trim().to_owned()))
}

/// A request without credentials (health, metrics).
#[allow(
    dead_code,
    reason = "the tests' support module includes this file and uses it"
)]
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    request_as(addr, None, method, path, body)
}

/// A request with a bearer token.
pub fn request_as(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).with_context(|| {
        format!("cannot reach the node's local API at {addr}; is `liaison serve` running?")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        bail!("malformed response from {addr}")
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed status line")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(""));
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
