//! ordo's partitioner agrees with nats-server's own `{{partition(N,1)}}` subject mapping:
//! a producer may publish on `PREFIX.<entity>` and let the server map it to
//! `PREFIX.<n>.<entity>`, and the partitioned source reads the same split as with
//! `ordo relay --to …&partitions=N`. The test starts a nats-server of its own (Debian's,
//! the version the machine has) on a free loopback port with that mapping, bounded in
//! time and stopped whatever happens.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

/// Partitions of the mapping.
const PARTITIONS: u32 = 4;

/// Longest wait for the server to accept connections.
const START_WAIT: Duration = Duration::from_secs(10);

/// A server killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_servers_partition_mapping_gives_ordos_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("server.conf");
    let mut file = std::fs::File::create(&config).unwrap();
    write!(
        file,
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\nmappings = {{ \"orders.*\": \"orders.{{{{partition({PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}\" }}\n",
        dir.path().join("js").display()
    )
    .unwrap();
    // Debian installs it in /usr/sbin, which not every PATH holds.
    let spawn = |program: &str| {
        Command::new(program)
            .args(["-c", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let server = spawn("nats-server").or_else(|_| spawn("/usr/sbin/nats-server"));
    let Ok(server) = server else {
        panic!("nats-server is not on PATH (Debian's package nats-server)");
    };
    let _server = Server(server);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < START_WAIT, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tokens: Vec<String> = (0..200).map(|i| format!("customer-{i}")).collect();
    let subjects = runtime.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let context = jetstream::new(client);
        let stream = context
            .create_stream(stream::Config {
                name: "ORDERS".into(),
                subjects: vec!["orders.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        for token in &tokens {
            let ack = context
                .publish(format!("orders.{token}"), "{}".into())
                .await
                .unwrap();
            ack.await.unwrap();
        }
        let mut subjects = Vec::new();
        for sequence in 1..=tokens.len() as u64 {
            let message = stream.get_raw_message(sequence).await.unwrap();
            subjects.push(message.subject.to_string());
        }
        subjects
    });
    for (token, stored) in tokens.iter().zip(&subjects) {
        assert_eq!(
            stored,
            &ordo_nats::subject("orders", PARTITIONS, token),
            "the server mapped `orders.{token}` elsewhere than ordo's partitioner"
        );
    }
    let used: std::collections::BTreeSet<_> = tokens
        .iter()
        .map(|t| ordo_nats::partition_of(t, PARTITIONS))
        .collect();
    assert_eq!(used.len(), PARTITIONS as usize, "every partition is used");
}
