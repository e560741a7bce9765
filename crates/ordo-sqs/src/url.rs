//! `sqs://QUEUE?region=R[&endpoint=URL]`: an SQS queue by name, the region it is in, and
//! (for a local emulator, or a VPC endpoint) where to send the calls. The rest of the
//! query tunes the source: `visibility_timeout_s`, `wait_s`, `receivers`, `slots`.

/// A parsed SQS URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsUrl {
    /// The queue's name (a FIFO queue's ends in `.fifo`).
    pub queue: String,
    /// The region (`region=`, else `AWS_REGION` or `AWS_DEFAULT_REGION`).
    pub region: String,
    /// Where calls go (`endpoint=`), else `https://sqs.REGION.amazonaws.com`.
    pub endpoint: String,
    /// How long a received message stays invisible to other consumers
    /// (`visibility_timeout_s=`); ordo extends it while the message waits for its commit.
    pub visibility_timeout_s: u32,
    /// How long one receive waits for messages (`wait_s=`, long polling).
    pub wait_s: u32,
    /// Receives in flight at once (`receivers=`).
    pub receivers: u32,
    /// Members of a group that may read at once (`slots=`): with a PostgreSQL store each
    /// member holds one or more slots, and positions and waiting events are kept per slot.
    pub slots: u32,
}

/// Default visibility timeout: SQS's own default for a queue.
pub const VISIBILITY_TIMEOUT_S_DEFAULT: u32 = 30;
/// Shortest visibility timeout accepted: ordo extends held messages every third of it,
/// and an extension must not race the expiry.
pub const VISIBILITY_TIMEOUT_S_MIN: u32 = 3;
/// SQS's longest visibility timeout (12 hours).
pub const VISIBILITY_TIMEOUT_S_MAX: u32 = 43_200;
/// Default long-poll wait: short enough that a stop (which lets receives in flight end,
/// so that what they bring is made visible again, not stranded) is not held long; an
/// idle queue costs a call per receiver every two seconds (`wait_s=20` for the fewest).
pub const WAIT_S_DEFAULT: u32 = 2;
/// SQS's longest receive wait.
pub const WAIT_S_MAX: u32 = 20;
/// Default receives in flight.
pub const RECEIVERS_DEFAULT: u32 = 2;
/// Most receives in flight.
pub const RECEIVERS_MAX: u32 = 16;
/// Default slots: up to this many members read one queue at once.
pub const SLOTS_DEFAULT: u32 = 8;
/// Most slots.
pub const SLOTS_MAX: u32 = 256;
const _: () = assert!(VISIBILITY_TIMEOUT_S_MIN <= VISIBILITY_TIMEOUT_S_DEFAULT);
const _: () = assert!(VISIBILITY_TIMEOUT_S_DEFAULT <= VISIBILITY_TIMEOUT_S_MAX);
const _: () = assert!(WAIT_S_DEFAULT <= WAIT_S_MAX);
const _: () = assert!(RECEIVERS_DEFAULT <= RECEIVERS_MAX);
const _: () = assert!(SLOTS_DEFAULT <= SLOTS_MAX);

impl SqsUrl {
    /// Parses an SQS URL; `env` gives environment variables (the region's fallback).
    pub fn parse_with(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("bad SQS URL `{url}`: {why} (expected sqs://QUEUE?region=R[&endpoint=URL])")
        };
        let rest = url
            .strip_prefix("sqs://")
            .ok_or_else(|| bad("no sqs:// scheme"))?;
        let (queue, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !queue_name_ok(queue) {
            return Err(bad(
                "the queue must be a queue name: 1 to 80 letters, digits, `-` and `_`, a FIFO queue's ending in `.fifo`",
            ));
        }
        let mut region = None;
        let mut endpoint = None;
        let mut parsed = SqsUrl {
            queue: queue.to_string(),
            region: String::new(),
            endpoint: String::new(),
            visibility_timeout_s: VISIBILITY_TIMEOUT_S_DEFAULT,
            wait_s: WAIT_S_DEFAULT,
            receivers: RECEIVERS_DEFAULT,
            slots: SLOTS_DEFAULT,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("a query parameter has no `=`"))?;
            let value = percent_decoded(value).ok_or_else(|| bad("bad %-escape"))?;
            let number = |low: u32, high: u32| match value.parse::<u32>() {
                Ok(n) if (low..=high).contains(&n) => Ok(n),
                _ => Err(bad(&format!("{key} must be {low} to {high}"))),
            };
            match key {
                "region" => region = Some(value),
                "endpoint" => endpoint = Some(value),
                "visibility_timeout_s" => {
                    parsed.visibility_timeout_s =
                        number(VISIBILITY_TIMEOUT_S_MIN, VISIBILITY_TIMEOUT_S_MAX)?
                }
                "wait_s" => parsed.wait_s = number(0, WAIT_S_MAX)?,
                "receivers" => parsed.receivers = number(1, RECEIVERS_MAX)?,
                "slots" => parsed.slots = number(1, SLOTS_MAX)?,
                other => return Err(bad(&format!("unknown parameter `{other}`"))),
            }
        }
        let region = region
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad("no region: give ?region=R (or set AWS_REGION)"))?;
        if !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad("the region must be a region name, such as eu-west-1"));
        }
        let endpoint = endpoint.unwrap_or_else(|| format!("https://sqs.{region}.amazonaws.com"));
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(bad("endpoint must start with http:// or https://"));
        }
        parsed.region = region;
        parsed.endpoint = endpoint.trim_end_matches('/').to_string();
        Ok(parsed)
    }

    /// Parses an SQS URL, the region falling back on the process's environment.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_with(url, |name| std::env::var(name).ok())
    }

    /// Whether the queue is a FIFO queue (its name says so).
    pub fn fifo(&self) -> bool {
        self.queue.ends_with(".fifo")
    }
}

/// SQS's rule for queue names.
fn queue_name_ok(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `value` with its `%XX` escapes decoded (an endpoint may come escaped).
fn percent_decoded(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_the_contract_form() {
        let url = SqsUrl::parse_with(
            "sqs://orders.fifo?region=eu-west-1&endpoint=http%3A%2F%2F127.0.0.1%3A5000",
            no_env,
        )
        .unwrap();
        assert_eq!(url.queue, "orders.fifo");
        assert_eq!(url.region, "eu-west-1");
        assert_eq!(url.endpoint, "http://127.0.0.1:5000");
        assert!(url.fifo());
        let url = SqsUrl::parse_with("sqs://orders?region=us-east-1", no_env).unwrap();
        assert_eq!(url.endpoint, "https://sqs.us-east-1.amazonaws.com");
        assert!(!url.fifo());
        assert_eq!(url.visibility_timeout_s, VISIBILITY_TIMEOUT_S_DEFAULT);
    }

    #[test]
    fn the_region_falls_back_on_the_environment() {
        let env = |name: &str| (name == "AWS_DEFAULT_REGION").then(|| "ap-south-1".to_string());
        assert_eq!(
            SqsUrl::parse_with("sqs://q", env).unwrap().region,
            "ap-south-1"
        );
        let error = SqsUrl::parse_with("sqs://q", no_env).unwrap_err();
        assert!(error.contains("no region"), "{error}");
    }

    #[test]
    fn refuses_what_sqs_would() {
        for (url, says) in [
            ("sqs://?region=r", "queue name"),
            ("sqs://a.b?region=r", "queue name"),
            ("sqs://q?region=r&wait_s=21", "wait_s must be 0 to 20"),
            (
                "sqs://q?region=r&visibility_timeout_s=1",
                "visibility_timeout_s",
            ),
            ("sqs://q?region=r&group=x", "unknown parameter `group`"),
            ("sqs://q?region=r&endpoint=127.0.0.1:5000", "http://"),
            ("sqs://q?region=EU", "region name"),
            ("kafka://q", "sqs://"),
        ] {
            let error = SqsUrl::parse_with(url, no_env).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
    }
}
