//! Slow handlers: the Confluent Parallel Consumer's README table, reproduced.
//!
//! N events on one partition, each handler waiting 0–5 ms asynchronously (the same delay
//! per event in every mode, drawn from one seed), up to `concurrency` handlers at once:
//!
//! - **partition-ordered**: a plain consumer, one event after the other (the baseline);
//! - **key-ordered** with 1, 10, 1,000 and 10,000 keys: ordo's engine releases at most one
//!   event per key, [`ordo_runtime::apply_concurrently`] runs them, and every key's
//!   versions are checked to have finished in order;
//! - **unordered**: every event at once up to the concurrency, no ordering at all (the
//!   ceiling).
//!
//! `key_parallel_vs_partition` is the rate with the most keys over the partition-ordered
//! rate; `key_parallel_vs_unordered` the same rate over the unordered one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo_core::{Config, Engine, Outcome, SourcePosition};
use ordo_sim::Rng;
use tokio::task::JoinSet;

/// The run's shape.
#[derive(Clone, Debug)]
pub struct SlowShape {
    /// Events per mode.
    pub events: usize,
    /// Handlers at once.
    pub concurrency: usize,
    /// Longest handler wait (each waits a uniform 0..=this).
    pub handler_ms_max: u64,
    /// Key counts for the key-ordered modes, ascending.
    pub keys: Vec<usize>,
    /// Seed of the handler delays.
    pub seed: u64,
}

impl SlowShape {
    /// The README table's shape: 10,000 events, concurrency 100, 0–5 ms.
    pub fn full() -> Self {
        SlowShape {
            events: 10_000,
            concurrency: 100,
            handler_ms_max: 5,
            keys: vec![1, 10, 1_000, 10_000],
            seed: 7,
        }
    }

    /// Fewer events (the sequential modes take events × 2.5 ms each).
    pub fn quick() -> Self {
        SlowShape {
            events: 2_000,
            ..SlowShape::full()
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowRow {
    /// `partition`, `key`, or `unordered`.
    pub mode: &'static str,
    /// Keys (key-ordered rows only).
    pub keys: Option<usize>,
    /// Events per second.
    pub events_per_s: f64,
}

/// The table and its two ratios.
#[derive(Clone, Debug)]
pub struct SlowReport {
    /// Partition-ordered, key-ordered by key count, unordered.
    pub rows: Vec<SlowRow>,
    /// Most keys' rate over the partition-ordered rate.
    pub key_parallel_vs_partition: f64,
    /// Most keys' rate over the unordered rate.
    pub key_parallel_vs_unordered: f64,
    /// The shape measured.
    pub shape: SlowShape,
}

impl SlowReport {
    /// A row's rate.
    pub fn rate(&self, mode: &str, keys: Option<usize>) -> f64 {
        self.rows
            .iter()
            .find(|r| r.mode == mode && r.keys == keys)
            .map_or(0.0, |r| r.events_per_s)
    }
}

fn delays(shape: &SlowShape) -> Vec<u64> {
    let mut rng = Rng::derive(shape.seed, "handler delays");
    (0..shape.events)
        .map(|_| rng.range(0, shape.handler_ms_max))
        .collect()
}

async fn handler_wait(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs every mode. Panics if a key-ordered run finishes a key's events out of order
/// (that would be a bug in the engine, not a measurement).
pub fn run(shape: SlowShape) -> SlowReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let delays = delays(&shape);
    let mut rows = Vec::new();

    let started = Instant::now();
    runtime.block_on(async {
        for &ms in &delays {
            handler_wait(ms).await;
        }
    });
    rows.push(SlowRow {
        mode: "partition",
        keys: None,
        events_per_s: shape.events as f64 / started.elapsed().as_secs_f64(),
    });

    for &keys in &shape.keys {
        let events_per_s = runtime.block_on(key_ordered(&shape, &delays, keys));
        rows.push(SlowRow {
            mode: "key",
            keys: Some(keys),
            events_per_s,
        });
    }

    let started = Instant::now();
    runtime.block_on(async {
        let mut running = JoinSet::new();
        for &ms in &delays {
            if running.len() == shape.concurrency {
                running.join_next().await;
            }
            running.spawn(handler_wait(ms));
        }
        while running.join_next().await.is_some() {}
    });
    rows.push(SlowRow {
        mode: "unordered",
        keys: None,
        events_per_s: shape.events as f64 / started.elapsed().as_secs_f64(),
    });

    let most_keys = shape.keys.last().copied();
    let keyed = rows
        .iter()
        .find(|r| r.mode == "key" && r.keys == most_keys)
        .map_or(0.0, |r| r.events_per_s);
    let partition = rows[0].events_per_s;
    let unordered = rows.last().map_or(0.0, |r| r.events_per_s);
    SlowReport {
        rows,
        key_parallel_vs_partition: keyed / partition,
        key_parallel_vs_unordered: keyed / unordered,
        shape,
    }
}

async fn key_ordered(shape: &SlowShape, delays: &[u64], keys: usize) -> f64 {
    let mut versions = vec![0u64; keys];
    let deliveries: Vec<(SourcePosition, Vec<u8>)> = (0..shape.events)
        .map(|i| {
            let key = i % keys;
            versions[key] += 1;
            let body = format!(
                r#"{{"id":"e{i}","stream":"k{key}","version":{},"type":"T","op":"incr","data":{{"ms":{}}}}}"#,
                versions[key], delays[i]
            );
            (
                SourcePosition {
                    partition: 0,
                    offset: i as u64,
                },
                body.into_bytes(),
            )
        })
        .collect();
    let mut engine = Engine::new(Config::default());
    let finished: Arc<Mutex<Vec<(usize, u64)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(shape.events)));
    let log = finished.clone();
    let started = Instant::now();
    let report = ordo_runtime::apply_concurrently(
        &mut engine,
        deliveries,
        shape.concurrency,
        || 0,
        move |work| {
            let log = log.clone();
            async move {
                let ms = work
                    .event
                    .data
                    .get("ms")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                handler_wait(ms).await;
                let key: usize = work.event.stream[1..].parse().expect("k<number>");
                log.lock()
                    .expect("finish log")
                    .push((key, work.event.version));
                (work, Outcome::Applied)
            }
        },
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        report.finished as usize, shape.events,
        "every event handled"
    );
    let mut last = vec![0u64; keys];
    for &(key, version) in finished.lock().expect("finish log").iter() {
        assert_eq!(version, last[key] + 1, "key k{key} finished out of order");
        last[key] = version;
    }
    shape.events as f64 / elapsed
}

/// The slow-handler table as an SVG line chart: events/s against keys (log scale), with
/// the partition-ordered and unordered rates as horizontal references.
pub fn plot_svg(report: &SlowReport) -> String {
    let keyed: Vec<(f64, f64)> = report
        .rows
        .iter()
        .filter_map(|r| r.keys.map(|k| (k as f64, r.events_per_s)))
        .collect();
    let partition = report.rate("partition", None);
    let unordered = report.rate("unordered", None);
    let chart = Chart {
        y_max: keyed
            .iter()
            .map(|(_, y)| *y)
            .chain([partition, unordered])
            .fold(1.0, f64::max)
            * 1.1,
        x_max: keyed.iter().map(|(x, _)| *x).fold(10.0, f64::max),
    };
    let mut svg = chart.frame(report);
    svg.push_str(&chart.ticks(&keyed));
    for (rate, label, colour) in [
        (unordered, "unordered", "#2a9d8f"),
        (partition, "partition-ordered", "#e76f51"),
    ] {
        svg.push_str(&chart.reference(rate, label, colour));
    }
    svg.push_str(&chart.series(&keyed));
    svg.push_str("</svg>\n");
    svg
}

/// The chart's geometry: a fixed canvas and margins, scaled to the largest values.
struct Chart {
    x_max: f64,
    y_max: f64,
}

impl Chart {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 400.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;

    fn x_of(&self, keys: f64) -> f64 {
        Self::LEFT
            + (Self::WIDTH - Self::LEFT - Self::RIGHT)
                * (keys.max(1.0).log10() / self.x_max.log10())
    }

    fn y_of(&self, rate: f64) -> f64 {
        Self::HEIGHT
            - Self::BOTTOM
            - (Self::HEIGHT - Self::TOP - Self::BOTTOM) * (rate / self.y_max)
    }

    /// The canvas, the title and the axes with their labels.
    fn frame(&self, report: &SlowReport) -> String {
        let (width, height, left, right, top, bottom) = (
            Self::WIDTH,
            Self::HEIGHT,
            Self::LEFT,
            Self::RIGHT,
            Self::TOP,
            Self::BOTTOM,
        );
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">Slow handlers: {} events, 0–{} ms each, concurrency {}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">keys (log scale)</text>
<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">events/s</text>
"#,
            width / 2.0,
            report.shape.events,
            report.shape.handler_ms_max,
            report.shape.concurrency,
            height - bottom,
            width - right,
            height - bottom,
            height - bottom,
            (left + width - right) / 2.0,
            height - 15.0,
            height / 2.0,
            height / 2.0,
        )
    }

    /// Five rates up the y axis, and each measured key count along the x axis.
    fn ticks(&self, keyed: &[(f64, f64)]) -> String {
        let mut svg = String::new();
        for i in 0..=4 {
            let rate = self.y_max * f64::from(i) / 4.0;
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>\n",
                Self::LEFT - 6.0,
                self.y_of(rate) + 4.0,
                rate
            ));
        }
        for &(keys, _) in keyed {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{keys}</text>\n",
                self.x_of(keys),
                Self::HEIGHT - Self::BOTTOM + 18.0
            ));
        }
        svg
    }

    /// A horizontal reference rate, labelled in the middle (the points sit at the ends).
    fn reference(&self, rate: f64, label: &str, colour: &str) -> String {
        let (left, right) = (Self::LEFT, Self::RIGHT);
        format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-dasharray=\"6 4\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{label} ({rate:.0}/s)</text>\n",
            Self::WIDTH - right,
            (left + Self::WIDTH - right) / 2.0,
            self.y_of(rate) - 5.0,
            y = self.y_of(rate),
        )
    }

    /// The key-ordered rates as a line with labelled points.
    fn series(&self, keyed: &[(f64, f64)]) -> String {
        let points: Vec<String> = keyed
            .iter()
            .map(|&(k, r)| format!("{:.1},{:.1}", self.x_of(k), self.y_of(r)))
            .collect();
        let mut svg = format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#264653\" stroke-width=\"2\"/>\n",
            points.join(" ")
        );
        for &(k, r) in keyed {
            svg.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#264653\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{r:.0}</text>\n",
                self.x_of(k),
                self.y_of(r),
                self.x_of(k),
                self.y_of(r) - 10.0
            ));
        }
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_runs_keys_finish_in_order_and_the_plot_has_every_point() {
        let report = run(SlowShape {
            events: 200,
            concurrency: 20,
            handler_ms_max: 2,
            keys: vec![1, 50],
            seed: 1,
        });
        // (The per-key order is asserted inside `run`; rates are not asserted: timing is
        // the benchmark's business, not a test's.)
        assert_eq!(report.rows.len(), 4);
        assert!(report.rows.iter().all(|r| r.events_per_s > 0.0));
        let svg = plot_svg(&report);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }
}
