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
    /// The token cookie's name: one per port, so consoles of two stores on one host
    /// (cookies ignore ports) do not overwrite each other's.
    cookie: String,
}

/// Why the console refuses to start.
#[derive(Debug, PartialEq, Eq)]
pub enum AccessError {
    /// A non-loopback address without a token.
    TokenRequired(SocketAddr),
    /// A token too short to be a secret.
    TokenTooShort,
    /// A token with characters a cookie cannot carry.
    TokenCharacters,
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessError::TokenRequired(address) => write!(
                f,
                "--listen {address} is not a loopback address: give --token (or ORDO_CONSOLE_TOKEN) so that nobody else on the network can act on the store"
            ),
            AccessError::TokenCharacters => write!(
                f,
                "the console token may hold letters, digits and . _ ~ - only (`openssl rand -hex 16` makes one)"
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
            // It travels in a cookie and a header: no separators, no line breaks.
            Some(token)
                if !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)) =>
            {
                Err(AccessError::TokenCharacters)
            }
            None if !listen.ip().is_loopback() => Err(AccessError::TokenRequired(listen)),
            _ => Ok(Access {
                token,
                cookie: cookie_name(TOKEN_COOKIE, listen.port()),
            }),
        }
    }

    /// The rule once listening on `port` (an ephemeral port is known only then).
    pub fn on_port(mut self, port: u16) -> Access {
        self.cookie = cookie_name(TOKEN_COOKIE, port);
        self
    }

    /// The `Set-Cookie` value that carries `token` (HttpOnly: no script reads it).
    pub fn token_cookie(&self, token: &str) -> String {
        format!("{}={token}; HttpOnly; SameSite=Strict; Path=/", self.cookie)
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
                .find(|(name, _)| *name == self.cookie)
                .map(|(_, value)| value)
        });
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|given| same(given.as_bytes(), token.as_bytes()))
    }

    /// Whether a request naming `host` (its `Host` header) may pass, the console listening
    /// on `port`. Without a token only loopback names do: a page elsewhere whose name an
    /// attacker points at 127.0.0.1 (DNS rebinding) must not reach a console with no
    /// token. With a token any name does (the token is the check).
    pub fn host_allowed(&self, host: Option<&str>, port: u16) -> bool {
        if self.token.is_some() {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|name| host == format!("{name}:{port}"))
    }

    /// Whether `given` is the token (for `/login`).
    pub fn is_token(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|token| same(given.as_bytes(), token.as_bytes()))
    }
}

/// The cookie and form field that carry the CSRF secret.
pub const CSRF_NAME: &str = "ordo_csrf";

/// Bytes of randomness in the CSRF secret.
const CSRF_BYTES: usize = 16;

/// The check that a state-changing request comes from the console's own pages: a
/// secret drawn at start, set as a SameSite=Strict cookie on every page and put in every
/// form; a POST must carry both, equal, and an `Origin` (when sent) of the console's own
/// host. Another site can neither read the secret nor send the cookie along.
#[derive(Clone, Debug)]
pub struct Csrf {
    secret: String,
    /// The cookie's name, one per port (see [`Access`]).
    cookie: String,
}

/// A cookie's name for the console on `port`.
fn cookie_name(base: &str, port: u16) -> String {
    format!("{base}_{port}")
}

impl Csrf {
    /// A fresh secret from the system's randomness, for the console on `port`.
    pub fn new(port: u16) -> std::io::Result<Csrf> {
        use std::io::Read;
        let mut bytes = [0u8; CSRF_BYTES];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Csrf {
            secret: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            cookie: cookie_name(CSRF_NAME, port),
        })
    }

    /// The secret, for forms.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The `Set-Cookie` value every page carries.
    pub fn cookie(&self) -> String {
        format!("{}={}; SameSite=Strict; Path=/", self.cookie, self.secret)
    }

    /// Whether a POST with this form value, `Cookie` header, `Origin` and `Host` passes.
    pub fn allows(
        &self,
        form: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> bool {
        let cookie = cookie.and_then(|c| {
            c.split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == self.cookie)
                .map(|(_, value)| value)
        });
        let same_origin = match (origin, host) {
            (None, _) => true,
            (Some(origin), Some(host)) => {
                origin.split_once("://").map(|(_, rest)| rest) == Some(host)
            }
            (Some(_), None) => false,
        };
        same_origin
            && same(form.as_bytes(), self.secret.as_bytes())
            && cookie.is_some_and(|c| same(c.as_bytes(), self.secret.as_bytes()))
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
        assert!(access.allows(None, Some("a=b; ordo_console_token_8080=0123456789abcdef")));
        assert!(
            !access.allows(None, Some("ordo_console_token_9090=0123456789abcdef")),
            "another port's console's cookie"
        );
        assert!(!access.allows(Some("Bearer 0123456789abcdeF"), None));
        assert!(!access.allows(None, None));
        assert!(Access::resolve(local, None).unwrap().allows(None, None));
        let open = Access::resolve(local, None).unwrap();
        assert!(open.host_allowed(Some("127.0.0.1:8080"), 8080));
        assert!(open.host_allowed(Some("localhost:8080"), 8080));
        assert!(!open.host_allowed(Some("attacker.example:8080"), 8080));
        assert!(!open.host_allowed(None, 8080));
        assert!(access.host_allowed(Some("ops.example:8080"), 8080));
    }

    #[test]
    fn a_post_needs_the_form_value_the_cookie_and_its_own_origin() {
        let csrf = Csrf::new(8480).unwrap();
        let secret = csrf.secret().to_string();
        let cookie = format!("x=1; {CSRF_NAME}_8480={secret}");
        let elsewhere = format!("{CSRF_NAME}_8481={secret}");
        assert!(!csrf.allows(&secret, Some(&elsewhere), None, Some("127.0.0.1:8480")));
        let host = Some("127.0.0.1:8480");
        assert!(csrf.allows(&secret, Some(&cookie), None, host));
        assert!(csrf.allows(&secret, Some(&cookie), Some("http://127.0.0.1:8480"), host));
        assert!(!csrf.allows(&secret, Some(&cookie), Some("http://evil.example"), host));
        assert!(!csrf.allows(&secret, None, None, host));
        assert!(!csrf.allows("guess", Some(&cookie), None, host));
        assert_ne!(Csrf::new(8480).unwrap().secret(), secret, "drawn anew");
    }
}
