//! Reading a gateway's Prometheus `/metrics` (blocking, from a plain
//! thread): every sample as `name{labels}` → value.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// GET `{admin_url}/metrics` with the bearer token.
pub fn scrape(admin_url: &str, token: &str) -> Result<BTreeMap<String, f64>, String> {
    let authority = admin_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{admin_url}: not http://"))?
        .trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{admin_url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{admin_url}: no address"))?;
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP answer"))?;
    match crate::flood::status_of(head.as_bytes()) {
        Some(200) => Ok(parse(body)),
        Some(403) => Err(format!(
            "{admin_url}/metrics answered 403 (set flood.admin_token to the gateway's admin.token)"
        )),
        other => Err(format!("{admin_url}/metrics answered {other:?}")),
    }
}

/// Prometheus text format: `name{labels} value` lines; comments skipped.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.trim().rsplit_once(' ')?;
            Some((name.trim().to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `after - before` for every counter (`*_total`).
pub fn counter_increase(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(k, _)| k.split('{').next().is_some_and(|n| n.ends_with("_total")))
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_increases() {
        let a = parse("# HELP x y\n# TYPE x counter\nx_total 3\ng 5\nr_total{reason=\"a b\"} 1\n");
        assert_eq!(a["x_total"], 3.0);
        assert_eq!(a["r_total{reason=\"a b\"}"], 1.0);
        let b = parse("x_total 10\ng 1\nr_total{reason=\"a b\"} 4\n");
        let d = counter_increase(&a, &b);
        assert_eq!(d.len(), 2);
        assert_eq!(d["x_total"], 7.0);
        assert_eq!(d["r_total{reason=\"a b\"}"], 3.0);
    }
}
