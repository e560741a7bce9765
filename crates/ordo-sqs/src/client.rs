//! The SQS calls ordo makes, over SQS's JSON protocol (`X-Amz-Target: AmazonSQS.<Action>`,
//! `application/x-amz-json-1.0`), each signed with Signature Version 4. Throttling, 5xx
//! answers and broken connections are retried with exponential backoff and full jitter,
//! as the AWS SDKs do; anything else is the caller's to see.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Uri};
use serde_json::{json, Value};

use crate::credentials::{CredentialChain, CredentialsError};
use crate::http::{Http, HttpError};
use crate::sigv4;

/// Most attempts of one call.
pub const ATTEMPTS_MAX: u32 = 5;

/// The first retry's longest backoff; each later one doubles it, up to [`BACKOFF_MS_MAX`].
const BACKOFF_MS_BASE: u64 = 100;
const BACKOFF_MS_MAX: u64 = 5_000;

/// Longest wait for an answer beyond a receive's own long-poll wait.
pub const CALL_WAIT_MS: u64 = 10_000;

/// Entries in one batch call: SQS's limit.
pub const BATCH_ENTRIES_MAX: usize = 10;

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SqsError {
    /// No answer (connection, deadline).
    Http(HttpError),
    /// No keys to sign with.
    Credentials(CredentialsError),
    /// SQS answered with an error.
    Service {
        /// The HTTP status.
        status: u16,
        /// The error's code (`QueueDoesNotExist`, `ThrottlingException`…).
        code: String,
        /// SQS's message.
        message: String,
    },
    /// The answer was not what the protocol says.
    Answer(String),
}

impl std::fmt::Display for SqsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqsError::Http(error) => error.fmt(f),
            SqsError::Credentials(error) => error.fmt(f),
            SqsError::Service {
                status,
                code,
                message,
            } => write!(f, "{code} ({status}): {message}"),
            SqsError::Answer(detail) => write!(f, "unexpected answer: {detail}"),
        }
    }
}

impl std::error::Error for SqsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SqsError::Http(error) => Some(error),
            SqsError::Credentials(error) => Some(error),
            _ => None,
        }
    }
}

impl SqsError {
    /// Whether trying again may succeed: throttling, a server error, a lost connection.
    pub fn retryable(&self) -> bool {
        match self {
            SqsError::Http(HttpError::Roots(_)) => false,
            SqsError::Http(_) => true,
            SqsError::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "ThrottlingException" | "RequestThrottled" | "KmsThrottled" | "OverLimit"
                    )
            }
            SqsError::Credentials(_) | SqsError::Answer(_) => false,
        }
    }
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Message {
    /// SQS's id.
    pub message_id: String,
    /// What deletes it, or changes its visibility, until it is received again.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// A FIFO queue's message group.
    pub group_id: Option<String>,
    /// How many times it was received, this time included.
    pub receive_count: u32,
}

/// One message to send.
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    /// The body.
    pub body: &'a str,
    /// `MessageGroupId` (FIFO queues).
    pub group_id: Option<&'a str>,
    /// `MessageDeduplicationId` (FIFO queues).
    pub deduplication_id: Option<&'a str>,
}

/// A batch entry SQS did not take: its index in the batch, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The entry's index in the batch given.
    pub index: usize,
    /// SQS's code.
    pub code: String,
    /// SQS's message.
    pub message: String,
}

/// A client for one region's (or one endpoint's) SQS.
#[derive(Clone, Debug)]
pub struct SqsClient {
    http: Http,
    credentials: Arc<CredentialChain>,
    endpoint: Uri,
    host: String,
    region: String,
}

impl SqsClient {
    /// A client sending to `endpoint`, signing for `region` with keys from `credentials`.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: CredentialChain,
    ) -> Result<Self, SqsError> {
        let endpoint: Uri = format!("{endpoint}/")
            .parse()
            .map_err(|e| SqsError::Answer(format!("endpoint `{endpoint}`: {e}")))?;
        let host = endpoint
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| SqsError::Answer("the endpoint has no host".into()))?;
        Ok(SqsClient {
            http: Http::new().map_err(SqsError::Http)?,
            credentials: Arc::new(credentials),
            endpoint,
            host,
            region: region.to_string(),
        })
    }

    /// The HTTP client (shared with the credential chain's endpoints).
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// One call, retried while [`SqsError::retryable`], up to [`ATTEMPTS_MAX`].
    pub async fn call(
        &self,
        action: &str,
        body: &Value,
        wait: Duration,
    ) -> Result<Value, SqsError> {
        let mut attempt = 1;
        loop {
            match self.call_once(action, body, wait).await {
                Err(error) if error.retryable() && attempt < ATTEMPTS_MAX => {
                    let cap = (BACKOFF_MS_BASE << (attempt - 1)).min(BACKOFF_MS_MAX);
                    let backoff = fastrand::u64(0..=cap);
                    tracing::debug!(%error, attempt, backoff, "sqs: {action} retried");
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        action: &str,
        body: &Value,
        wait: Duration,
    ) -> Result<Value, SqsError> {
        let payload = body.to_string();
        let request = self.signed(action, payload).await?;
        let answer = self
            .http
            .send(request, wait)
            .await
            .map_err(SqsError::Http)?;
        let status = answer.status.as_u16();
        let value: Value = if answer.body.is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice(&answer.body) {
                Ok(value) => value,
                // A proxy's or load balancer's page: its status decides (a 502 or 503 is
                // retried like SQS's own).
                Err(_) if !answer.status.is_success() => {
                    return Err(SqsError::Service {
                        status,
                        code: String::new(),
                        message: String::from_utf8_lossy(
                            &answer.body[..answer.body.len().min(200)],
                        )
                        .into_owned(),
                    })
                }
                Err(e) => {
                    return Err(SqsError::Answer(format!(
                        "{status} with a body that is not JSON ({e})"
                    )))
                }
            }
        };
        if answer.status.is_success() {
            return Ok(value);
        }
        let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
        let code = text("__type")
            .rsplit('#')
            .next()
            .unwrap_or_default()
            .to_string();
        let message = [text("message"), text("Message")].concat();
        Err(SqsError::Service {
            status,
            code,
            message,
        })
    }

    async fn signed(
        &self,
        action: &str,
        payload: String,
    ) -> Result<Request<Full<Bytes>>, SqsError> {
        let keys = self
            .credentials
            .get(&self.http)
            .await
            .map_err(SqsError::Credentials)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = sigv4::amz_date(now);
        let target = format!("AmazonSQS.{action}");
        let mut headers = vec![
            ("content-type", "application/x-amz-json-1.0"),
            ("host", self.host.as_str()),
            ("x-amz-date", date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        if let Some(token) = &keys.session_token {
            headers.push(("x-amz-security-token", token.as_str()));
        }
        let signature = sigv4::authorization(
            &sigv4::Request {
                method: "POST",
                path: self.endpoint.path(),
                query: &[],
                headers: &headers,
                payload: payload.as_bytes(),
            },
            &keys,
            &self.region,
            "sqs",
            &date,
        );
        let mut request = Request::post(self.endpoint.clone());
        // `host` too: what hyper would send by itself leaves out a default port that
        // the signature covers.
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        request
            .header("authorization", signature)
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| SqsError::Answer(format!("cannot build the request: {e}")))
    }

    /// The queue's URL, from its name.
    pub async fn queue_url(&self, name: &str) -> Result<String, SqsError> {
        let answer = self
            .call("GetQueueUrl", &json!({ "QueueName": name }), call_wait())
            .await?;
        answer
            .get("QueueUrl")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| SqsError::Answer("GetQueueUrl without QueueUrl".into()))
    }

    /// Some of the queue's attributes (`ApproximateNumberOfMessages`…), as SQS's strings.
    pub async fn attributes(&self, queue: &str, names: &[&str]) -> Result<Value, SqsError> {
        let body = json!({ "QueueUrl": queue, "AttributeNames": names });
        let answer = self.call("GetQueueAttributes", &body, call_wait()).await?;
        Ok(answer.get("Attributes").cloned().unwrap_or(Value::Null))
    }

    /// Up to `max` (at most 10) messages, waiting up to `wait_s` for the first, each kept
    /// invisible to other receivers for `visibility_s`.
    pub async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait_s: u32,
        visibility_s: u32,
    ) -> Result<Vec<Message>, SqsError> {
        let wanted = ["MessageGroupId", "ApproximateReceiveCount"];
        let body = json!({
            "QueueUrl": queue,
            "MaxNumberOfMessages": max.clamp(1, BATCH_ENTRIES_MAX),
            "WaitTimeSeconds": wait_s,
            "VisibilityTimeout": visibility_s,
            "MessageSystemAttributeNames": wanted,
            "AttributeNames": wanted,
        });
        let wait = Duration::from_secs(u64::from(wait_s)) + call_wait();
        let answer = self.call("ReceiveMessage", &body, wait).await?;
        let Some(messages) = answer.get("Messages").and_then(Value::as_array) else {
            return Ok(Vec::new());
        };
        messages.iter().map(message_of).collect()
    }

    /// Deletes messages by receipt handle.
    pub async fn delete(&self, queue: &str, receipts: &[&str]) -> Result<Vec<Refused>, SqsError> {
        let entries: Vec<Value> = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| json!({ "Id": i.to_string(), "ReceiptHandle": r }))
            .collect();
        let body = json!({ "QueueUrl": queue, "Entries": entries });
        let answer = self.call("DeleteMessageBatch", &body, call_wait()).await?;
        refused_of(&answer)
    }

    /// Sets messages' visibility timeout, from now.
    pub async fn change_visibility(
        &self,
        queue: &str,
        receipts: &[&str],
        visibility_s: u32,
    ) -> Result<Vec<Refused>, SqsError> {
        let entries: Vec<Value> = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({ "Id": i.to_string(), "ReceiptHandle": r, "VisibilityTimeout": visibility_s })
            })
            .collect();
        let body = json!({ "QueueUrl": queue, "Entries": entries });
        let answer = self
            .call("ChangeMessageVisibilityBatch", &body, call_wait())
            .await?;
        refused_of(&answer)
    }

    /// Sends up to ten messages.
    pub async fn send(
        &self,
        queue: &str,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<Refused>, SqsError> {
        let entries: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut entry = json!({ "Id": i.to_string(), "MessageBody": m.body });
                if let Some(group) = m.group_id {
                    entry["MessageGroupId"] = json!(group);
                }
                if let Some(id) = m.deduplication_id {
                    entry["MessageDeduplicationId"] = json!(id);
                }
                entry
            })
            .collect();
        let body = json!({ "QueueUrl": queue, "Entries": entries });
        let answer = self.call("SendMessageBatch", &body, call_wait()).await?;
        refused_of(&answer)
    }
}

fn call_wait() -> Duration {
    Duration::from_millis(CALL_WAIT_MS)
}

fn message_of(value: &Value) -> Result<Message, SqsError> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(String::from);
    let attribute = |key: &str| {
        value
            .get("Attributes")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(String::from)
    };
    Ok(Message {
        message_id: text("MessageId")
            .ok_or_else(|| SqsError::Answer("a message without MessageId".into()))?,
        receipt_handle: text("ReceiptHandle")
            .ok_or_else(|| SqsError::Answer("a message without ReceiptHandle".into()))?,
        body: text("Body").unwrap_or_default(),
        group_id: attribute("MessageGroupId"),
        receive_count: attribute("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
    })
}

/// A batch call's `Failed` entries.
fn refused_of(answer: &Value) -> Result<Vec<Refused>, SqsError> {
    let Some(failed) = answer.get("Failed").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    failed
        .iter()
        .map(|entry| {
            let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default();
            let index = text("Id").parse().map_err(|_| {
                SqsError::Answer(format!("a failed entry with id `{}`", text("Id")))
            })?;
            Ok(Refused {
                index,
                code: text("Code").to_string(),
                message: text("Message").to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        let service = |status: u16, code: &str| SqsError::Service {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(service(400, "ThrottlingException").retryable());
        assert!(service(503, "ServiceUnavailable").retryable());
        assert!(!service(400, "QueueDoesNotExist").retryable());
        assert!(!service(403, "InvalidClientTokenId").retryable());
        assert!(!SqsError::Answer("x".into()).retryable());
    }

    #[test]
    fn batch_failures_name_their_entries() {
        let answer = json!({"Successful": [{"Id": "0"}], "Failed": [
            {"Id": "1", "Code": "ReceiptHandleIsInvalid", "Message": "gone", "SenderFault": true}
        ]});
        assert_eq!(
            refused_of(&answer).unwrap(),
            vec![Refused {
                index: 1,
                code: "ReceiptHandleIsInvalid".into(),
                message: "gone".into()
            }]
        );
    }
}
