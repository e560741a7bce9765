//! `nats://HOST:PORT/STREAM?durable=NAME[&subject=FILTER]`: a JetStream stream, and the
//! durable pull consumer ordo reads it through.

/// A parsed NATS URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsUrl {
    /// The server (`HOST:PORT`).
    pub server: String,
    /// The JetStream stream.
    pub stream: String,
    /// The durable consumer's name (`durable=`), required for a source.
    pub durable: Option<String>,
    /// Only subjects matching this filter (`subject=`), else the whole stream.
    pub subject: Option<String>,
    /// The relay's subject prefix (`prefix=`): it publishes on `PREFIX.<stream>`.
    pub prefix: Option<String>,
    /// The consumer's ack wait (`ack_wait_ms=`, at least [`ACK_WAIT_MS_MIN`]), else
    /// [`crate::ACK_WAIT_MS`].
    pub ack_wait_ms: Option<u64>,
}

/// Shortest ack wait accepted: below it a commit could outlast it routinely.
pub const ACK_WAIT_MS_MIN: u64 = 1_000;

impl NatsUrl {
    /// Parses a NATS URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("bad NATS URL `{url}`: {why} (expected nats://HOST:PORT/STREAM?durable=NAME)")
        };
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| bad("no nats:// scheme"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (server, stream) = location.split_once('/').ok_or_else(|| bad("no stream"))?;
        if server.is_empty() {
            return Err(bad("no server"));
        }
        // JetStream stream names: no spaces, dots, `*`, `>` or path separators.
        let name_ok = |name: &str| {
            !name.is_empty()
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !name_ok(stream) {
            return Err(bad("the stream must be a JetStream stream name"));
        }
        let mut parsed = NatsUrl {
            server: server.to_string(),
            stream: stream.to_string(),
            durable: None,
            subject: None,
            prefix: None,
            ack_wait_ms: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("a query parameter has no `=`"))?;
            match key {
                "durable" if name_ok(value) => parsed.durable = Some(value.to_string()),
                "durable" => return Err(bad("the durable name must be a consumer name")),
                "subject" => parsed.subject = Some(value.to_string()),
                "prefix" => parsed.prefix = Some(value.to_string()),
                "ack_wait_ms" => match value.parse::<u64>() {
                    Ok(ms) if ms >= ACK_WAIT_MS_MIN => parsed.ack_wait_ms = Some(ms),
                    _ => {
                        return Err(bad(&format!(
                            "ack_wait_ms must be at least {ACK_WAIT_MS_MIN}"
                        )))
                    }
                },
                other => return Err(bad(&format!("unknown parameter `{other}`"))),
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_stream_durable_and_filter() {
        let url =
            NatsUrl::parse("nats://127.0.0.1:4222/ORDERS?durable=ordo&subject=orders.>").unwrap();
        assert_eq!(url.server, "127.0.0.1:4222");
        assert_eq!(url.stream, "ORDERS");
        assert_eq!(url.durable.as_deref(), Some("ordo"));
        assert_eq!(url.subject.as_deref(), Some("orders.>"));
        assert!(NatsUrl::parse("nats://h:1").is_err());
        assert!(NatsUrl::parse("nats://h:1/A.B?durable=x").is_err());
        assert!(NatsUrl::parse("nats://h:1/A?durable=x.y").is_err());
        assert!(NatsUrl::parse("nats://h:1/A?group=x").is_err());
    }
}
