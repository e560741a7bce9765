//! Which subject a stream's events are published on, and so which partition of a
//! partitioned source reads them.
//!
//! A stream's subject token is its name with the characters NATS reserves (`.`, `*`,
//! `>`, whitespace) replaced by `_`. With `partitions=N`, its events go to
//! `PREFIX.<n>.<token>`, where `n` is FNV-1a (32 bits) of the token modulo `N`: the
//! function nats-server's own `{{partition(N,1)}}` subject mapping applies to a
//! subject's first wildcard token. So producers may compute `n` themselves (any language
//! has FNV-1a), publish through `ordo relay`, or publish on `PREFIX.<token>` and let a
//! server mapping `PREFIX.* → PREFIX.{{partition(N,1)}}.{{wildcard(1)}}` do it; all three
//! agree.

/// Most partitions a NATS source is read as (each is a durable consumer on the server).
pub const PARTITIONS_MAX: u32 = 1_024;

/// The subject token for a stream name.
#[must_use]
pub fn token(stream: &str) -> String {
    stream
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

/// The partition (of `partitions`) a subject token belongs to.
#[must_use]
pub fn partition_of(token: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "at least one partition");
    let mut hash: u32 = 0x811c_9dc5;
    for byte in token.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions
}

/// The subject a stream's events are published on: `PREFIX.<token>`, or
/// `PREFIX.<partition>.<token>` when the stream is read as several partitions.
#[must_use]
pub fn subject(prefix: &str, partitions: u32, stream: &str) -> String {
    let token = token(stream);
    if partitions > 1 {
        let partition = partition_of(&token, partitions);
        format!("{prefix}.{partition}.{token}")
    } else {
        format!("{prefix}.{token}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_replace_what_nats_reserves() {
        assert_eq!(token("customer-1"), "customer-1");
        assert_eq!(token("eu.customer 1*"), "eu_customer_1_");
    }

    #[test]
    fn the_partition_is_fnv1a_of_the_token() {
        // FNV-1a 32 of "" is the offset basis; of "a" is 0xe40c292c (the published
        // test vectors), as Go's hash/fnv computes them for the server's mapping.
        assert_eq!(partition_of("", u32::MAX), 0x811c_9dc5);
        assert_eq!(partition_of("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_of("foobar", u32::MAX), 0xbf9c_f968);
        assert_eq!(subject("orders", 1, "c.1"), "orders.c_1");
        let n = partition_of("c-1", 4);
        assert_eq!(subject("orders", 4, "c-1"), format!("orders.{n}.c-1"));
    }
}
