//! The admin API's HTTP client (routes in [`mesh_proto::admin`]).
//!
//! [`Client::new`] is the one place the HTTP agent is configured: timeouts, no redirects,
//! no proxies (the bearer token goes to the URL given and nowhere else), statuses as values.
//! `http://`, or `https://` trusting exactly one pinned certificate ([`super::tls`]): with
//! no certificate authorities, https without a pin is refused.
//!
//! Every error is a complete one-line message.

use std::path::Path;
use std::time::Duration;

use mesh_proto::control::CertPin;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::Value;
use ureq::http::{header, Method, StatusCode, Uri};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector as _, TcpConnector};

use super::tls::{HandshakeError, PinnedTls};
use crate::local::{io_reason, one_line};

/// Time to set up the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole request, answer included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read; a thousand members list in well under a megabyte.
const MAX_BODY: u64 = 16 << 20;

/// Everything but `A-Z a-z 0-9 - _ ~` is escaped in a path segment, so names and base64
/// keys (`/`, `+`, `=`) and even `.`/`..` arrive as one literal segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// `/api/a/b/c` with each segment percent-encoded.
pub fn api_path(segments: &[&str]) -> String {
    let mut path = String::from("/api");
    for s in segments {
        path.push('/');
        path.extend(utf8_percent_encode(s, SEGMENT));
    }
    path
}

/// `path?k=v&…`, each value percent-encoded like a path segment (a base64 key's `+`, `/`
/// and `=` included).
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = path.to_owned();
    for (i, (k, v)) in pairs.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(k);
        url.push('=');
        url.extend(utf8_percent_encode(v, SEGMENT));
    }
    url
}

/// The pin of the admin API's certificate and where it came from (named in errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// SHA-256 of the certificate.
    pub pin: CertPin,
    /// `--admin-pin`, or the certificate file it was read from.
    pub from: String,
}

/// The pin for `url`: `--admin-pin` (or MESHCTL_ADMIN_PIN) when given; else, for an
/// https URL and a token file named `admin.token` (the coordinator's data dir), the
/// certificate beside it (`DIR/cert.der`, the one `--http-tls` serves); else none.
pub fn pin_for(url: &str, flag: Option<&str>, token_file: &Path) -> Result<Option<Pin>, String> {
    if let Some(text) = flag {
        let pin = text.parse().map_err(|e| format!("--admin-pin: {e}"))?;
        return Ok(Some(Pin {
            pin,
            from: "--admin-pin".to_owned(),
        }));
    }
    let https = url
        .trim()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !https || token_file.file_name().is_none_or(|n| n != "admin.token") {
        return Ok(None);
    }
    let cert = token_file.with_file_name("cert.der");
    match std::fs::read(&cert) {
        Ok(der) => Ok(Some(Pin {
            pin: CertPin::of_der(&der),
            from: cert.display().to_string(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "reading the coordinator's certificate {} (to pin it): {}",
            cert.display(),
            io_reason(&e)
        )),
    }
}

/// An authenticated connection to one coordinator's admin API.
pub struct Client {
    agent: ureq::Agent,
    /// `http[s]://host:port[/prefix]`, no trailing slash.
    base: String,
    authorization: String,
    /// The pinned certificate, for https.
    pin: Option<Pin>,
}

impl Client {
    /// Checks `url` and builds the agent; `token` is the admin token, `pin` the
    /// certificate an https URL must present (required for https, refused for http).
    pub fn new(url: &str, token: &str, pin: Option<Pin>) -> Result<Client, String> {
        let base = url.trim().trim_end_matches('/');
        let bad = || {
            format!("--coordinator: expected the admin API's URL, like http://127.0.0.1:7480, got {url:?}")
        };
        let uri: Uri = base.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        if uri.authority().is_none_or(|a| a.host().is_empty()) || uri.query().is_some() {
            return Err(bad());
        }
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(TOTAL_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("meshctl/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = match (https, &pin) {
            (false, None) => config.into(),
            (false, Some(p)) => {
                return Err(format!(
                    "{}: a pin is for https:// admin URLs, and {base} is plain http",
                    p.from
                ))
            }
            (true, None) => {
                return Err(format!(
                    "--coordinator {base}: https needs the admin API certificate's pin: give --admin-pin sha256:… (`coordinator pin` prints it for the coordinator's own certificate), or a --token-file in the coordinator's data dir"
                ))
            }
            (true, Some(p)) => ureq::Agent::with_parts(
                config,
                ().chain(TcpConnector::default())
                    .chain(PinnedTls::new(p.pin)),
                DefaultResolver::default(),
            ),
        };
        Ok(Client {
            agent,
            base: base.to_owned(),
            authorization: format!("Bearer {token}"),
            pin,
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(Method::GET, path, None)
            .map_err(anyhow::Error::msg)
    }

    pub fn post(&self, path: &str, body: Option<&impl Serialize>) -> anyhow::Result<Value> {
        let body = body.map(to_json).transpose().map_err(anyhow::Error::msg)?;
        self.json(Method::POST, path, body)
            .map_err(anyhow::Error::msg)
    }

    pub fn patch(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        let body = to_json(body).map_err(anyhow::Error::msg)?;
        self.json(Method::PATCH, path, Some(body))
            .map_err(anyhow::Error::msg)
    }

    pub fn put(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        let body = to_json(body).map_err(anyhow::Error::msg)?;
        self.json(Method::PUT, path, Some(body))
            .map_err(anyhow::Error::msg)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, path, None)
            .map(drop)
            .map_err(anyhow::Error::msg)
    }

    /// A DELETE whose answer is a JSON body (e.g. the member after unapproving a route).
    pub fn delete_json(&self, path: &str) -> anyhow::Result<Value> {
        self.json(Method::DELETE, path, None)
            .map_err(anyhow::Error::msg)
    }

    /// A call whose answer must be JSON.
    fn json(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Value, String> {
        let text = self.call(method, path, body)?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "the coordinator at {} answered with invalid JSON: {e}",
                self.base
            )
        })
    }

    /// One exchange; a success answer's body, or the error as one line.
    fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<String, String> {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::ACCEPT, "application/json");
        let sent = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .map(|r| self.agent.run(r)),
            None => request.body(()).map(|r| self.agent.run(r)),
        };
        let mut response = sent
            .map_err(|e| format!("building the request: {e}"))?
            .map_err(|e| self.describe(e))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.describe(e))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(api_error(status, &text))
        }
    }

    fn describe(&self, e: ureq::Error) -> String {
        use ureq::Error as E;
        let base = &self.base;
        let hint = "(is the coordinator running? check --coordinator)";
        match e {
            E::Io(e) => format!(
                "cannot reach the coordinator at {base}: {} {hint}",
                io_reason(&e)
            ),
            E::ConnectionFailed => {
                format!("cannot reach the coordinator at {base}: connection failed {hint}")
            }
            E::HostNotFound => {
                format!(
                    "cannot reach the coordinator at {base}: host not found (check --coordinator)"
                )
            }
            E::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => format!(
                "cannot reach the coordinator at {base}: no connection within {} seconds {hint}",
                CONNECT_TIMEOUT.as_secs()
            ),
            E::Timeout(_) => format!(
                "the coordinator at {base} did not answer within {} seconds",
                TOTAL_TIMEOUT.as_secs()
            ),
            E::BodyExceedsLimit(_) => {
                format!("the coordinator at {base} answered with more than {MAX_BODY} bytes")
            }
            E::Other(e) if e.is::<HandshakeError>() => {
                let tls = "TLS handshake with the coordinator at";
                match e.downcast_ref::<HandshakeError>() {
                    Some(HandshakeError::Mismatch(got)) => match &self.pin {
                        Some(p) => format!(
                            "the coordinator at {base} presented certificate {got}, not the pinned {} (from {})",
                            p.pin, p.from
                        ),
                        None => format!("the coordinator at {base} presented certificate {got}"),
                    },
                    Some(HandshakeError::NotTls(e)) => format!(
                        "{tls} {base} failed: {e} (does it serve plain http? then use http://)"
                    ),
                    _ => format!("{tls} {base} failed: {e}"),
                }
            }
            E::Protocol(e) if self.pin.is_none() => format!(
                "talking to the coordinator at {base}: {e} (does it serve https? then use https:// and --admin-pin)"
            ),
            other => format!("talking to the coordinator at {base}: {other}"),
        }
    }
}

fn to_json(body: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(body).map_err(|e| format!("encoding the request: {e}"))
}

/// `404 Not Found: <the ApiError's text>`; a 401 says the token was rejected.
pub fn api_error(status: StatusCode, body: &str) -> String {
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    if status == StatusCode::UNAUTHORIZED {
        return format!(
            "{status_text}: the coordinator rejected the admin token (check --token-file)"
        );
    }
    let reason = match serde_json::from_str::<mesh_proto::admin::ApiError>(body) {
        Ok(e) => one_line(&e.error),
        Err(_) => {
            let text = one_line(body);
            if text.chars().count() > 200 {
                format!("{}…", text.chars().take(200).collect::<String>())
            } else {
                text
            }
        }
    };
    if reason.is_empty() {
        status_text
    } else {
        format!("{status_text}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(api_path(&["networks"]), "/api/networks");
        assert_eq!(
            api_path(&[
                "networks",
                "lab",
                "members",
                "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs="
            ]),
            "/api/networks/lab/members/m9OJrAFVwqGa%2BbJFZnZX5%2BJZChdEygr56p86FYJdDjs%3D"
        );
        assert_eq!(api_path(&["networks", "a/b"]), "/api/networks/a%2Fb");
        assert_eq!(api_path(&["networks", ".."]), "/api/networks/%2E%2E");
        assert_eq!(
            api_path(&["networks", "web 1?x#y%"]),
            "/api/networks/web%201%3Fx%23y%25"
        );
        assert_eq!(
            api_path(&["networks", "my-lab_2~"]),
            "/api/networks/my-lab_2~"
        );
        assert_eq!(api_path(&["networks", "héllo"]), "/api/networks/h%C3%A9llo");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(with_query("/api/x", &[]), "/api/x");
        assert_eq!(
            with_query(
                "/api/networks/lab/members",
                &[
                    ("limit", "500"),
                    ("after", "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs="),
                    ("q", "web 1&x=y"),
                ]
            ),
            "/api/networks/lab/members?limit=500&after=m9OJrAFVwqGa%2BbJFZnZX5%2BJZChdEygr56p86FYJdDjs%3D&q=web%201%26x%3Dy"
        );
    }

    const PIN: &str = "sha256:8a3c9ef8a4f6d3b8a1d4de6f1c55e4b1e8f7c3a1b2c4d5e6f708192a3b4c5d6e";

    fn pin() -> Option<Pin> {
        Some(Pin {
            pin: PIN.parse().unwrap(),
            from: "--admin-pin".to_owned(),
        })
    }

    #[test]
    fn urls() {
        for good in [
            "http://127.0.0.1:7480",
            "http://127.0.0.1:7480/",
            " http://coord:80/admin/ ",
            "http://[::1]:7480",
        ] {
            let c = Client::new(good, "t", None).unwrap();
            assert!(!c.base.ends_with('/'), "{good}");
        }
        for good in ["https://c:7480", "HTTPS://[::1]:7480/admin/"] {
            let c = Client::new(good, "t", pin()).unwrap();
            assert!(!c.base.ends_with('/'), "{good}");
        }
        assert_eq!(
            Client::new("https://c:7480/", "t", None).err().unwrap(),
            "--coordinator https://c:7480: https needs the admin API certificate's pin: give --admin-pin sha256:… (`coordinator pin` prints it for the coordinator's own certificate), or a --token-file in the coordinator's data dir"
        );
        assert_eq!(
            Client::new("http://c:7480", "t", pin()).err().unwrap(),
            "--admin-pin: a pin is for https:// admin URLs, and http://c:7480 is plain http"
        );
        for bad in [
            "127.0.0.1:7480",
            "ftp://c",
            "http://",
            "https://",
            "http://c:7480/?x=1",
            "",
            "not a url",
        ] {
            let err = Client::new(bad, "t", pin()).err().unwrap();
            assert!(
                err.starts_with(
                    "--coordinator: expected the admin API's URL, like http://127.0.0.1:7480"
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn pins() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin.token");
        let https = "https://c:7480";

        // --admin-pin wins, and is checked.
        let p = pin_for(https, Some(PIN), &token).unwrap().unwrap();
        assert_eq!(
            (p.pin.to_string().as_str(), p.from.as_str()),
            (PIN, "--admin-pin")
        );
        assert_eq!(
            pin_for(https, Some("sha256:abc"), &token).unwrap_err(),
            "--admin-pin: expected sha256:<64 hex digits>"
        );
        // Handed to Client::new, which refuses it for http.
        assert!(pin_for("http://c", Some(PIN), &token).unwrap().is_some());

        // No certificate beside the token: no pin.
        assert_eq!(pin_for(https, None, &token).unwrap(), None);
        // The coordinator's data dir: DIR/cert.der beside DIR/admin.token.
        std::fs::write(dir.path().join("cert.der"), b"certificate bytes").unwrap();
        let p = pin_for(" HTTPS://c:7480", None, &token).unwrap().unwrap();
        assert_eq!(p.pin, CertPin::of_der(b"certificate bytes"));
        assert_eq!(p.from, dir.path().join("cert.der").display().to_string());
        // Only for https, and only beside a file named admin.token.
        assert_eq!(pin_for("http://c:7480", None, &token).unwrap(), None);
        assert_eq!(
            pin_for(https, None, &dir.path().join("token")).unwrap(),
            None
        );
        // An unreadable certificate is an error, not a silent "no pin".
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::create_dir(sub.join("cert.der")).unwrap();
        let err = pin_for(https, None, &sub.join("admin.token")).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "reading the coordinator's certificate {} (to pin it): ",
                sub.join("cert.der").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn api_errors() {
        for (code, body, want) in [
            (
                404,
                r#"{"error":"no network \"lab\""}"#,
                "404 Not Found: no network \"lab\"",
            ),
            (
                401,
                r#"{"error":"missing bearer token"}"#,
                "401 Unauthorized: the coordinator rejected the admin token (check --token-file)",
            ),
            (
                409,
                "{\"error\":\"address in use\\nby web-1\"}",
                "409 Conflict: address in use; by web-1",
            ),
            (
                502,
                "<html>\nbad gateway\n</html>",
                "502 Bad Gateway: <html>; bad gateway; </html>",
            ),
            (500, "", "500 Internal Server Error"),
            (599, "", "599"),
        ] {
            assert_eq!(api_error(StatusCode::from_u16(code).unwrap(), body), want);
        }
        let long = "x".repeat(300);
        assert_eq!(
            api_error(StatusCode::BAD_REQUEST, &long),
            format!("400 Bad Request: {}…", "x".repeat(200))
        );
    }
}
