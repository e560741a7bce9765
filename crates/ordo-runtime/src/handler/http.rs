//! `--handler http://HOST:PORT/PATH` (or `https://`): one `POST` per event, on pooled
//! keep-alive connections, answered by status code (DESIGN.md, "Handlers").

use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{clip_reason, Answer, Call, Handler, REASON_BYTES_MAX};

/// Most bytes of a response body read (the first [`REASON_BYTES_MAX`] become a
/// rejection's reason; reading the rest lets the connection be reused).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Longest a pooled connection stays open unused.
pub const IDLE_CONNECTION_MS: u64 = 90_000;

const _: () = assert!(REASON_BYTES_MAX <= RESPONSE_BYTES_MAX);

/// Why an HTTP handler could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpHandlerError {
    /// The URL does not parse, or is not `http://` or `https://` with a host.
    Url(String),
    /// `https://` without any root certificate on this system.
    Roots(std::io::Error),
}

impl std::fmt::Display for HttpHandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpHandlerError::Url(text) => f.write_str(text),
            HttpHandlerError::Roots(e) => {
                write!(
                    f,
                    "https handler: no usable root certificates on this system: {e}"
                )
            }
        }
    }
}

impl std::error::Error for HttpHandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpHandlerError::Url(_) => None,
            HttpHandlerError::Roots(e) => Some(e),
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Posts each event to one URL.
#[derive(Clone, Debug)]
pub struct HttpHandler {
    uri: Uri,
    client: Client<Connector, Full<Bytes>>,
}

impl HttpHandler {
    /// A handler posting to `url`; `https://` uses the system's root certificates.
    pub fn new(url: &str) -> Result<Self, HttpHandlerError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| HttpHandlerError::Url(format!("handler URL `{url}`: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(HttpHandlerError::Url(format!(
                    "handler URL `{url}` must start with http://, https:// or exec:"
                )))
            }
        };
        if uri.host().is_none() {
            return Err(HttpHandlerError::Url(format!(
                "handler URL `{url}` has no host"
            )));
        }
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if https {
            builder
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                .map_err(HttpHandlerError::Roots)?
        } else {
            // No TLS is ever negotiated for http://; an empty root store keeps the
            // connector's type without reading the system's certificates.
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            builder.with_tls_config(config)
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(IDLE_CONNECTION_MS))
            .build(connector);
        Ok(HttpHandler { uri, client })
    }

    fn request(&self, call: &Call<'_>) -> Request<Full<Bytes>> {
        let body = serde_json::Value::Object(call.body()).to_string();
        let event = call.event();
        let mut request = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a POST with a parsed URI is a valid request");
        let headers = request.headers_mut();
        let mut put = |name: &'static str, value: &str| {
            headers.insert(HeaderName::from_static(name), header_value(value));
        };
        put("idempotency-key", &event.id);
        put("ordo-stream", &event.stream);
        put("ordo-version", &event.version.to_string());
        put("ordo-document", call.document());
        put("ordo-attempt", &call.attempt().to_string());
        request
    }
}

impl Handler for HttpHandler {
    async fn handle(&self, call: &Call<'_>) -> Answer {
        let response = match self.client.request(self.request(call)).await {
            Ok(response) => response,
            Err(error) => return Answer::retry(error_chain(&error)),
        };
        let status = response.status();
        let retry_after_ms = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry_after_ms(value, SystemTime::now()));
        let text = match Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
        {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(error) => format!("(the body could not be read: {error})"),
        };
        answer_for(status, &text, retry_after_ms)
    }
}

/// The contract's table: 2xx applied; 408, 429 and 5xx retried; any other status refused
/// with the body as reason.
fn answer_for(status: StatusCode, body: &str, retry_after_ms: Option<u64>) -> Answer {
    let said = |what: &str| {
        let body = body.trim();
        if body.is_empty() {
            format!("{what} {status}")
        } else {
            clip_reason(&format!("{what} {status}: {body}"))
        }
    };
    if status.is_success() {
        Answer::Applied
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Answer::Retry {
            reason: said("answered"),
            after_ms: retry_after_ms,
        }
    } else if status.is_client_error() {
        Answer::Rejected {
            reason: said("answered"),
        }
    } else {
        // 1xx and 3xx are not answers the contract knows: redirects are not followed.
        Answer::Rejected {
            reason: said("answered an unexpected"),
        }
    }
}

/// [`answer_for`] from raw parts, for the fuzz target: `None` for a status that is not
/// one (outside 100–999).
#[cfg(fuzzing)]
pub(super) fn fuzz_answer(status: u16, body: &str, retry_after: &str) -> Option<Answer> {
    let status = StatusCode::from_u16(status).ok()?;
    let after = retry_after_ms(
        retry_after,
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
    );
    Some(answer_for(status, body, after))
}

/// `Retry-After` as milliseconds from `now`: delay-seconds or an HTTP date.
fn retry_after_ms(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_millis() as u64))
}

/// A header value for `text`: as is when it is visible ASCII, else percent-encoded
/// (UTF-8 bytes outside `!`..=`~`, and `%` itself), so any stream name can be sent.
fn header_value(text: &str) -> HeaderValue {
    let plain = text.bytes().all(|b| b.is_ascii_graphic() && b != b'%');
    if plain {
        if let Ok(value) = HeaderValue::from_str(text) {
            return value;
        }
    }
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&encoded).expect("percent-encoded text is visible ASCII")
}

/// An error with its causes, `a: b: c` (hyper's top-level text alone says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_contract() {
        assert_eq!(answer_for(StatusCode::OK, "", None), Answer::Applied);
        assert_eq!(
            answer_for(StatusCode::NO_CONTENT, "x", None),
            Answer::Applied
        );
        assert_eq!(
            answer_for(StatusCode::UNPROCESSABLE_ENTITY, "sku unknown\n", None),
            Answer::Rejected {
                reason: "answered 422 Unprocessable Entity: sku unknown".into()
            }
        );
        for retryable in [408, 429, 500, 503] {
            let status = StatusCode::from_u16(retryable).unwrap();
            assert!(matches!(
                answer_for(status, "", Some(5)),
                Answer::Retry {
                    after_ms: Some(5),
                    ..
                }
            ));
        }
        assert!(matches!(
            answer_for(StatusCode::MOVED_PERMANENTLY, "", None),
            Answer::Rejected { .. }
        ));
        let long = "x".repeat(5000);
        let Answer::Rejected { reason } = answer_for(StatusCode::BAD_REQUEST, &long, None) else {
            panic!("a 400 is a rejection");
        };
        assert!(reason.len() <= REASON_BYTES_MAX + 3);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(retry_after_ms("3", now), Some(3_000));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(retry_after_ms(&later, now), Some(7_000));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after_ms(&earlier, now), Some(0));
        assert_eq!(retry_after_ms("soon", now), None);
    }

    #[test]
    fn any_stream_name_becomes_a_header_value() {
        assert_eq!(header_value("customer-42").to_str().unwrap(), "customer-42");
        assert_eq!(
            header_value("kunde müller").to_str().unwrap(),
            "kunde%20m%C3%BCller"
        );
        assert_eq!(header_value("100%").to_str().unwrap(), "100%25");
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        for url in ["ftp://x/", "nonsense", "http:///path"] {
            assert!(HttpHandler::new(url).is_err(), "{url}");
        }
        assert!(HttpHandler::new("http://127.0.0.1:1/events").is_ok());
    }
}
