//! `kafka://HOST:PORT[,HOST:PORT]/TOPIC?group=G&key=value...`

/// A parsed Kafka URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaUrl {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// The consumer group (`group=`), required for a source.
    pub group: Option<String>,
    /// Every other `key=value`, passed through to the client's configuration.
    pub params: Vec<(String, String)>,
}

impl KafkaUrl {
    /// Parses a Kafka URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("bad Kafka URL `{url}`: {why} (expected kafka://HOST:PORT/TOPIC?group=G)")
        };
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad("no kafka:// scheme"))?;
        let (location, query) = match rest.split_once('?') {
            Some((location, query)) => (location, query),
            None => (rest, ""),
        };
        let (brokers, topic) = location.split_once('/').ok_or_else(|| bad("no topic"))?;
        if brokers.is_empty() {
            return Err(bad("no broker"));
        }
        if topic.is_empty() || topic.contains('/') {
            return Err(bad("the topic must be one path segment"));
        }
        let mut group = None;
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("a query parameter has no `=`"))?;
            if key == "group" {
                group = Some(value.to_string());
            } else {
                params.push((key.to_string(), value.to_string()));
            }
        }
        Ok(KafkaUrl {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_brokers_topic_group_and_passthrough() {
        let url = KafkaUrl::parse("kafka://127.0.0.1:9092/events?group=g&session.timeout.ms=6000")
            .unwrap();
        assert_eq!(url.brokers, "127.0.0.1:9092");
        assert_eq!(url.topic, "events");
        assert_eq!(url.group.as_deref(), Some("g"));
        assert_eq!(
            url.params,
            vec![("session.timeout.ms".into(), "6000".into())]
        );
        assert!(KafkaUrl::parse("kafka://h:1").is_err());
        assert!(KafkaUrl::parse("http://h:1/t").is_err());
        assert!(KafkaUrl::parse("kafka://h:1/t?x").is_err());
    }
}
