//! `nats://HOST:PORT/STREAM?durable=NAME[&subject=FILTER]`, or
//! `…?durable=NAME&partitions=N&prefix=P`: a JetStream stream, and the durable pull
//! consumers ordo reads it through (one, or one per subject partition `P.<n>.>`).

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
    /// The subject prefix (`prefix=`): the relay publishes on `PREFIX.<stream>`, a source
    /// reads `PREFIX.>` (`PREFIX.<n>.>` per partition).
    pub prefix: Option<String>,
    /// How many subject partitions the stream is read as (`partitions=`, 1 when not
    /// given): partition `n` is the subjects `PREFIX.<n>.>`, read through the durable
    /// consumer `NAME-<n>`.
    pub partitions: u32,
    /// The consumer's ack wait (`ack_wait_ms=`, at least [`ACK_WAIT_MS_MIN`]), else
    /// [`crate::ACK_WAIT_MS`].
    pub ack_wait_ms: Option<u64>,
}

use crate::partition::PARTITIONS_MAX;

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
            partitions: 1,
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
                "partitions" => match value.parse::<u32>() {
                    Ok(n) if (1..=PARTITIONS_MAX).contains(&n) => parsed.partitions = n,
                    _ => return Err(bad(&format!("partitions must be 1 to {PARTITIONS_MAX}"))),
                },
                other => return Err(bad(&format!("unknown parameter `{other}`"))),
            }
        }
        if parsed.partitions > 1 {
            if parsed.prefix.is_none() {
                return Err(bad(
                    "partitions=N needs prefix=P: partition n is the subjects P.<n>.>",
                ));
            }
            if parsed.subject.is_some() {
                return Err(bad(
                    "subject= and partitions= both choose the subjects read: give one",
                ));
            }
        }
        Ok(parsed)
    }

    /// The subjects partition `partition` reads: `PREFIX.<n>.>` when partitioned, else
    /// `subject=`, else `PREFIX.>`, else the whole stream (`""`).
    pub fn filter_subject(&self, partition: u32) -> String {
        match (&self.prefix, &self.subject) {
            (Some(prefix), _) if self.partitions > 1 => format!("{prefix}.{partition}.>"),
            (_, Some(subject)) => subject.clone(),
            (Some(prefix), None) => format!("{prefix}.>"),
            (None, None) => String::new(),
        }
    }

    /// The durable consumer that reads `partition`: `NAME`, or `NAME-<n>` when
    /// partitioned.
    pub fn consumer_name(&self, partition: u32) -> Option<String> {
        let durable = self.durable.as_ref()?;
        Some(if self.partitions > 1 {
            format!("{durable}-{partition}")
        } else {
            durable.clone()
        })
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

    #[test]
    fn partitions_need_a_prefix_and_name_their_consumers() {
        let url =
            NatsUrl::parse("nats://h:1/ORDERS?durable=ordo&partitions=4&prefix=orders").unwrap();
        assert_eq!(url.partitions, 4);
        assert_eq!(url.filter_subject(3), "orders.3.>");
        assert_eq!(url.consumer_name(3).as_deref(), Some("ordo-3"));
        assert!(NatsUrl::parse("nats://h:1/O?durable=o&partitions=4").is_err());
        assert!(NatsUrl::parse("nats://h:1/O?durable=o&partitions=0&prefix=p").is_err());
        assert!(
            NatsUrl::parse("nats://h:1/O?durable=o&partitions=2&prefix=p&subject=p.>").is_err()
        );
        let single = NatsUrl::parse("nats://h:1/O?durable=o&prefix=p").unwrap();
        assert_eq!(single.filter_subject(0), "p.>");
        assert_eq!(single.consumer_name(0).as_deref(), Some("o"));
    }
}
