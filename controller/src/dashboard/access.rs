//! Who may use the dashboard's API (SECURITY.md: everything a key protects, the dashboard
//! protects too).
//!
//! - **With a cluster key**, every `/api` request (the live stream included) carries the
//!   token derived from it ([`ClusterKey::dashboard_token`]: HKDF-SHA256 of the key, info
//!   `troupe dashboard token v1`), as `Authorization: Bearer TOKEN` or in the cookie
//!   [`cookie_name`]. Any key of the keyring opens it, so a key rotation does not lock a page
//!   out before the new key is first. The token is compared in constant time and never logged.
//!   `troupe serve` and `troupe dashboard-url` print `http://HOST:PORT/#token=TOKEN`: the part
//!   after `#` never leaves the browser (not sent, not in a Referer); the page hands it once
//!   to `POST /api/login`, which sets the cookie (HttpOnly, SameSite=Strict) that the live
//!   stream needs (an EventSource cannot send headers), and takes it out of the address bar.
//! - **Without a key** the dashboard binds loopback addresses only ([`check_address`]) and
//!   answers only requests whose `Host` names a loopback address or `localhost`, so a web page
//!   elsewhere cannot reach it through a DNS name re-pointed at 127.0.0.1.
//! - **Either way** an action is a `POST` with a JSON body (a cross-site form cannot send one
//!   without a CORS preflight, which is never granted), and a request whose `Origin` is
//!   another site's is refused.

use super::{App, Serves};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use troupe::cluster_key::ClusterKey;

/// How the dashboard checks requests.
pub struct Access {
    cookie: String,
}

impl Access {
    pub fn new(address: SocketAddr) -> Access {
        Access {
            cookie: cookie_name(address.port()),
        }
    }
}

/// The token cookie of the dashboard on `port`: browsers share cookies between the ports of
/// one host, so two dashboards on one host keep theirs apart.
pub fn cookie_name(port: u16) -> String {
    format!("troupe_token_{port}")
}

/// Refuses to serve a keyless dashboard (or `/metrics` alone) beyond loopback: anyone
/// reaching the dashboard could stop or reset every watcher of the cluster, and anyone
/// reaching `/metrics` would learn every node, watcher and process of it.
pub fn check_address(address: SocketAddr, keyed: bool, serves: Serves) -> anyhow::Result<()> {
    if keyed || address.ip().is_loopback() {
        return Ok(());
    }
    let option = serves.option();
    let (what, why) = match serves {
        Serves::Dashboard => (
            "the dashboard",
            "anyone who reaches it could stop and reset every watcher of the cluster",
        ),
        Serves::MetricsOnly => (
            "/metrics",
            "anyone who reaches it would learn every node, watcher and process of the cluster",
        ),
    };
    anyhow::bail!(
        "{option} {address}: without a cluster key {what} listens on loopback only, as {why}. \
         Give the controller a key (troupe keygen --out FILE, then --key-file FILE or key_file \
         in troupe.toml; {what} then asks for the token troupe dashboard-url prints), or use \
         {option} 127.0.0.1:PORT and an SSH tunnel (ssh -L PORT:127.0.0.1:PORT HOST)"
    )
}

/// The tokens that open the dashboard now: one per key of the process's keyring; None
/// without a key.
fn tokens() -> Option<Vec<String>> {
    troupe::sockets::client_keys().map(|keys| {
        keys.keyring()
            .keys()
            .iter()
            .map(ClusterKey::dashboard_token)
            .collect()
    })
}

/// `troupe dashboard-url`: prints the URL of the dashboard at `http` (else troupe.toml's, else
/// the default), and warns when no cluster key gives it a token.
pub fn print_url(http: Option<SocketAddr>, flags: &crate::settings::NodeFlags) -> ExitCode {
    let settings = match flags.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("troupe: {e:#}");
            return ExitCode::from(crate::exit_code::EXIT_USAGE);
        }
    };
    let address = http
        .or(settings.config.serve.http)
        .unwrap_or_else(troupe::config::controller::default_dashboard_address);
    println!("{}", url(address));
    if troupe::sockets::client_keys().is_none() {
        eprintln!(
            "troupe: no cluster key (--key-file, TROUPE_KEY_FILE, key_file in troupe.toml): \
             the URL has no token, and a keyless dashboard answers on loopback only"
        );
    }
    ExitCode::SUCCESS
}

/// The dashboard's address for a browser, with the token of the keyring's first key when
/// there is one. An unspecified address (0.0.0.0) is shown as this host's name.
pub fn url(address: SocketAddr) -> String {
    let host = if address.ip().is_unspecified() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    } else {
        match address.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        }
    };
    let token = troupe::sockets::client_keys()
        .map(|keys| format!("#token={}", keys.keyring().first().dashboard_token()))
        .unwrap_or_default();
    format!("http://{host}:{}/{token}", address.port())
}

/// The middleware in front of every `/api` route.
pub(super) async fn check(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Err(refusal) = admit(&app.access, request.method(), request.headers()) {
        return refusal.into_response();
    }
    next.run(request).await
}

/// Why a request is refused: a status and a message that says what to do.
#[derive(Debug, PartialEq)]
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        super::api::error(self.0, self.1)
    }
}

fn admit(access: &Access, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    if *method != Method::GET {
        check_origin(headers)?;
    }
    match tokens() {
        Some(tokens) => check_token(&tokens, &access.cookie, headers),
        None => check_loopback_host(headers),
    }
}

fn check_token(tokens: &[String], cookie: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let presented = bearer(headers).or_else(|| cookie_value(headers, cookie));
    let Some(presented) = presented else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "this dashboard needs its access token: open the URL that troupe serve printed, or \
             run troupe dashboard-url on the controller's host (with its cluster key); scripts \
             send it as Authorization: Bearer TOKEN"
                .into(),
        ));
    };
    // Every token is compared, in constant time, whichever matches.
    let matched = tokens.iter().fold(subtle::Choice::from(0), |any, token| {
        any | token.as_bytes().ct_eq(presented.as_bytes())
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "the access token does not match this controller's cluster key (was the key \
             rotated?): run troupe dashboard-url on the controller's host for the current one"
                .into(),
        ))
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value carrying `token` for the dashboard's own pages.
pub fn session_cookie(access: &Access, token: &str) -> String {
    format!(
        "{}={token}; HttpOnly; SameSite=Strict; Path=/",
        access.cookie
    )
}

/// The token a login presented (already checked by [`check`]).
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    bearer(headers)
}

/// Whether a host (of a `Host` or `Origin` header, port included or not) is loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_loopback_host(headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if is_loopback_host(host) {
        return Ok(());
    }
    Err(Refusal(
        StatusCode::FORBIDDEN,
        format!(
            "this dashboard has no cluster key, so it answers only at a loopback address \
             (http://127.0.0.1:PORT or http://localhost:PORT), not at Host {host:?}"
        ),
    ))
}

/// A request sent by a page of another site names it in `Origin`; the dashboard's own page
/// names the dashboard's host.
fn check_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(()); // not a browser's cross-site request: scripts, curl
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        return Ok(());
    }
    Err(Refusal(
        StatusCode::FORBIDDEN,
        format!("a request from the page of another site ({origin:?}) is not accepted"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_token_opens_by_header_or_cookie_and_nothing_else_does() {
        let tokens = vec!["aa11".to_string(), "bb22".to_string()];
        let ok = |h: HeaderMap| check_token(&tokens, "troupe_token_5580", &h);
        assert!(ok(headers(&[(header::AUTHORIZATION, "Bearer aa11")])).is_ok());
        assert!(ok(headers(&[(header::AUTHORIZATION, "Bearer bb22")])).is_ok());
        assert!(ok(headers(&[(header::COOKIE, "x=1; troupe_token_5580=bb22")])).is_ok());
        let refused = |h: HeaderMap| ok(h).unwrap_err().0;
        assert_eq!(refused(HeaderMap::new()), StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused(headers(&[(header::AUTHORIZATION, "Bearer aa1")])),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refused(headers(&[(header::COOKIE, "troupe_token_5581=aa11")])),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refused(headers(&[(header::AUTHORIZATION, "Basic aa11")])),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn a_keyless_dashboard_answers_loopback_hosts_only() {
        for host in [
            "127.0.0.1:5580",
            "localhost:5580",
            "[::1]:5580",
            "127.0.0.9",
        ] {
            assert!(
                check_loopback_host(&headers(&[(header::HOST, host)])).is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example:5580",
            "10.0.0.1:5580",
            "",
            "localhost.evil.example",
        ] {
            assert!(
                check_loopback_host(&headers(&[(header::HOST, host)])).is_err(),
                "{host}"
            );
        }
        assert!(check_address("127.0.0.1:5580".parse().unwrap(), false, Serves::Dashboard).is_ok());
        let refused =
            check_address("0.0.0.0:5580".parse().unwrap(), false, Serves::MetricsOnly).unwrap_err();
        assert!(refused.to_string().contains("loopback only"), "{refused}");
        assert!(
            refused.to_string().starts_with("--metrics 0.0.0.0:5580"),
            "{refused}"
        );
        assert!(check_address("0.0.0.0:5580".parse().unwrap(), true, Serves::Dashboard).is_ok());
    }

    #[test]
    fn another_sites_origin_is_refused() {
        let host = (header::HOST, "127.0.0.1:5580");
        assert!(check_origin(&headers(std::slice::from_ref(&host))).is_ok());
        assert!(check_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:5580")
        ]))
        .is_ok());
        assert!(check_origin(&headers(&[host, (header::ORIGIN, "http://evil.example")])).is_err());
    }
}
