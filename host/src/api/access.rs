//! Who may read the stats API, `/metrics` and the P2P page: OME's rule, HTTP Basic credentials
//! whose decoded text is the configured `<AccessToken>` (OME's `user:password` form included).
//! Without a token configured they answer on loopback only (OME then refuses to start; a host
//! that answers only its own machine is the safer default).

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use std::net::IpAddr;

/// Why a request was refused, with OME's words where OME has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization` header.
    #[error("Authorization header is required to call API")]
    Missing,
    /// Not two space-separated parts.
    #[error("Invalid authorization header")]
    Malformed,
    /// Another scheme than Basic.
    #[error("Not supported credential type: {0}")]
    NotBasic(String),
    /// Not base64, or not UTF-8.
    #[error("Invalid credential format")]
    BadEncoding,
    /// Not the token.
    #[error("Invalid credential")]
    Wrong,
    /// No token is configured and the request is not from loopback.
    #[error("this host answers on loopback only: configure <Managers><API><AccessToken> to call it from elsewhere")]
    LoopbackOnly,
}

impl Refusal {
    /// The HTTP status: 403 for [`Refusal::LoopbackOnly`], else 401 (with OME's challenge).
    pub fn status(&self) -> u16 {
        if *self == Self::LoopbackOnly { 403 } else { 401 }
    }
}

/// Checks a request from `remote` with `headers` against `token`.
pub fn check(token: Option<&str>, headers: &HeaderMap, remote: IpAddr) -> Result<(), Refusal> {
    let Some(token) = token else {
        return if remote.is_loopback() { Ok(()) } else { Err(Refusal::LoopbackOnly) };
    };
    let value = headers.get(header::AUTHORIZATION).ok_or(Refusal::Missing)?;
    let value = value.to_str().map_err(|_| Refusal::Malformed)?;
    let parts: Vec<&str> = value.split(' ').collect();
    let [scheme, credentials] = parts[..] else { return Err(Refusal::Malformed) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refusal::NotBasic(scheme.to_string()));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).map_err(|_| Refusal::BadEncoding)?;
    if constant_time_eq(&decoded, token.as_bytes()) { Ok(()) } else { Err(Refusal::Wrong) }
}

/// Compares without an early exit, so the time taken says nothing about the token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn omes_basic_token_is_checked_and_loopback_is_the_default() {
        let (lo, far): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap());
        assert_eq!(check(None, &HeaderMap::new(), lo), Ok(()));
        assert_eq!(check(None, &HeaderMap::new(), far), Err(Refusal::LoopbackOnly));
        let token = Some("ome-access-token");
        // OME's example: base64("ome-access-token").
        assert_eq!(check(token, &with("Basic b21lLWFjY2Vzcy10b2tlbg=="), far), Ok(()));
        assert_eq!(check(token, &with("basic b21lLWFjY2Vzcy10b2tlbg=="), far), Ok(()), "the scheme in any case");
        assert_eq!(check(token, &HeaderMap::new(), lo), Err(Refusal::Missing), "a token binds loopback too");
        assert_eq!(check(token, &with("Bearer ome-access-token"), far), Err(Refusal::NotBasic("Bearer".into())));
        assert_eq!(check(token, &with("Basic"), far), Err(Refusal::Malformed));
        assert_eq!(check(token, &with("Basic %%%"), far), Err(Refusal::BadEncoding));
        assert_eq!(check(token, &with("Basic b21l"), far), Err(Refusal::Wrong));
    }
}
