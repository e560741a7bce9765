//! One pooled, kept-alive HTTP/1.1 client for every call this crate makes (SQS, and the
//! credential endpoints of ECS and EC2), with a deadline on each and a bound on what an
//! answer may weigh.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Most bytes of one answer read (a receive of ten 256 KiB messages is 2.5 MiB).
pub const ANSWER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How long an idle pooled connection is kept.
const IDLE_CONNECTION_MS: u64 = 30_000;

/// Why a call got no answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpError {
    /// No connection, or it broke.
    Send(hyper_util::client::legacy::Error),
    /// The answer's body could not be read, or was larger than [`ANSWER_BYTES_MAX`].
    Body(String),
    /// No answer within the deadline.
    Timeout(Duration),
    /// The system's root certificates could not be read (for `https://`).
    Roots(std::io::Error),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Send(error) => {
                write!(f, "{error}")?;
                // hyper's own words stop at "client error (Connect)": the cause says why.
                let mut cause = std::error::Error::source(error);
                while let Some(inner) = cause {
                    write!(f, ": {inner}")?;
                    cause = inner.source();
                }
                Ok(())
            }
            HttpError::Body(detail) => write!(f, "cannot read the answer: {detail}"),
            HttpError::Timeout(wait) => write!(f, "no answer within {} ms", wait.as_millis()),
            HttpError::Roots(error) => {
                write!(f, "cannot read the system's root certificates: {error}")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// An answer: its status, headers and body.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The client.
#[derive(Clone, Debug)]
pub struct Http {
    client: Client<Connector, Full<Bytes>>,
}

impl Http {
    /// A client for `http://` and `https://` (the system's root certificates).
    pub fn new() -> Result<Self, HttpError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(HttpError::Roots)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(IDLE_CONNECTION_MS))
            .build(connector);
        Ok(Http { client })
    }

    /// Sends `request` and reads the whole answer, within `deadline`.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        deadline: Duration,
    ) -> Result<Answer, HttpError> {
        let call = async {
            let answer = self
                .client
                .request(request)
                .await
                .map_err(HttpError::Send)?;
            let (parts, body) = answer.into_parts();
            let body = Limited::new(body, ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(deadline, call)
            .await
            .map_err(|_| HttpError::Timeout(deadline))?
    }
}
