//! Who may use the console. Loopback by default; listening anywhere else needs a token
//! (`--token` or `ORDO_CONSOLE_TOKEN`), and then every request must carry it, as a bearer
//! token or the cookie `/login?token=…` sets.

use std::net::SocketAddr;

/// Shortest token accepted: anything shorter is guessable.
pub const TOKEN_LEN_MIN: usize = 16;

/// The cookie that carries the token after `/login`.
pub const TOKEN_COOKIE: &str = "ordo_console_token";

/// The resolved access rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    token: Option<String>,
}

/// Why the console refuses to start.
#[derive(Debug, PartialEq, Eq)]
pub enum AccessError {
    /// A non-loopback address without a token.
    TokenRequired(SocketAddr),
    /// A token too short to be a secret.
    TokenTooShort,
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessError::TokenRequired(address) => write!(
                f,
                "--listen {address} is not a loopback address: give --token (or ORDO_CONSOLE_TOKEN) so that nobody else on the network can act on the store"
            ),
            AccessError::TokenTooShort => write!(
                f,
                "the console token must be at least {TOKEN_LEN_MIN} characters"
            ),
        }
    }
}

impl std::error::Error for AccessError {}

impl Access {
    /// The rule for listening on `listen` with `token`.
    pub fn resolve(listen: SocketAddr, token: Option<String>) -> Result<Access, AccessError> {
        let token = token.filter(|t| !t.is_empty());
        match &token {
            Some(token) if token.len() < TOKEN_LEN_MIN => Err(AccessError::TokenTooShort),
            None if !listen.ip().is_loopback() => Err(AccessError::TokenRequired(listen)),
            _ => Ok(Access { token }),
        }
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request with these `Authorization` and `Cookie` headers may pass.
    pub fn allows(&self, authorization: Option<&str>, cookie: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
        let cookie = cookie.and_then(|c| {
            c.split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == TOKEN_COOKIE)
                .map(|(_, value)| value)
        });
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|given| same(given.as_bytes(), token.as_bytes()))
    }

    /// Whether `given` is the token (for `/login`).
    pub fn is_token(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|token| same(given.as_bytes(), token.as_bytes()))
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_address_needs_a_long_enough_token() {
        let anywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            Access::resolve(anywhere, None),
            Err(AccessError::TokenRequired(anywhere))
        );
        assert_eq!(
            Access::resolve(anywhere, Some("short".into())),
            Err(AccessError::TokenTooShort)
        );
        assert!(Access::resolve(local, None).is_ok());
        let access = Access::resolve(anywhere, Some("0123456789abcdef".into())).unwrap();
        assert!(access.allows(Some("Bearer 0123456789abcdef"), None));
        assert!(access.allows(None, Some("a=b; ordo_console_token=0123456789abcdef")));
        assert!(!access.allows(Some("Bearer 0123456789abcdeF"), None));
        assert!(!access.allows(None, None));
        assert!(Access::resolve(local, None).unwrap().allows(None, None));
    }
}
