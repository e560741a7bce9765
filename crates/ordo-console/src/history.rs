//! The decision counters over the last hour, as the console saw them: sampled by the
//! console itself every `--history-sample-ms` (the store keeps totals, not their past),
//! so the Overview can show rates and sparklines. Bounded; lost when the console stops.

use std::collections::VecDeque;
use std::fmt::Write;

use ordo_core::Counters;

/// Most samples kept: an hour at the default interval of 30 s.
pub const HISTORY_SAMPLES_MAX: usize = 120;

/// The default sampling interval.
pub const HISTORY_SAMPLE_MS_DEFAULT: u64 = 30_000;

/// How far back a rate looks.
pub const RATE_WINDOW_MS: u64 = 5 * 60_000;

/// Sparkline size, in CSS pixels.
const SPARK_WIDTH: usize = 120;
const SPARK_HEIGHT: usize = 24;

/// Samples of the counters, oldest first.
#[derive(Clone, Debug, Default)]
pub struct History {
    samples: VecDeque<(u64, Counters)>,
}

impl History {
    /// Keeps one sample (the oldest goes beyond [`HISTORY_SAMPLES_MAX`]).
    pub fn record(&mut self, at_ms: u64, counters: Counters) {
        if self.samples.len() == HISTORY_SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back((at_ms, counters));
    }

    fn value(counters: &Counters, name: &str) -> u64 {
        counters
            .fields()
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// `name`'s increase per minute over the last [`RATE_WINDOW_MS`] (`None`: fewer than
    /// two samples in it).
    pub fn rate_per_min(&self, name: &str) -> Option<f64> {
        let (last_ms, last) = self.samples.back()?;
        let (first_ms, first) = self
            .samples
            .iter()
            .find(|(at, _)| last_ms.saturating_sub(*at) <= RATE_WINDOW_MS)?;
        let span_ms = last_ms.saturating_sub(*first_ms);
        if span_ms == 0 {
            return None;
        }
        let increase = Self::value(last, name).saturating_sub(Self::value(first, name));
        Some(increase as f64 * 60_000.0 / span_ms as f64)
    }

    /// `name`'s increase between consecutive samples, oldest first.
    pub fn increases(&self, name: &str) -> Vec<u64> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|((_, a), (_, b))| Self::value(b, name).saturating_sub(Self::value(a, name)))
            .collect()
    }
}

/// An inline SVG sparkline of `values`, labelled for screen readers.
pub fn sparkline(values: &[u64], label: &str) -> String {
    if values.len() < 2 {
        return "<span>collecting…</span>".into();
    }
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = SPARK_WIDTH as f64 / (values.len() - 1) as f64;
    let mut points = String::new();
    for (i, value) in values.iter().enumerate() {
        let x = i as f64 * step;
        let y = SPARK_HEIGHT as f64 - 2.0 - (*value as f64 / max) * (SPARK_HEIGHT as f64 - 4.0);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    format!(
        "<svg role=\"img\" aria-label=\"{}\" width=\"{SPARK_WIDTH}\" height=\"{SPARK_HEIGHT}\" \
         viewBox=\"0 0 {SPARK_WIDTH} {SPARK_HEIGHT}\"><polyline fill=\"none\" stroke=\"#0b57d0\" \
         stroke-width=\"1.5\" points=\"{}\"/></svg>",
        crate::html::escape(label),
        points.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(applied: u64) -> Counters {
        Counters {
            applied,
            ..Counters::default()
        }
    }

    #[test]
    fn rates_and_increases_come_from_consecutive_samples_within_the_bound() {
        let mut history = History::default();
        assert_eq!(history.rate_per_min("applied"), None);
        history.record(0, counters(0));
        history.record(30_000, counters(30));
        history.record(60_000, counters(90));
        assert_eq!(history.increases("applied"), [30, 60]);
        assert_eq!(history.rate_per_min("applied"), Some(90.0));
        for i in 0..HISTORY_SAMPLES_MAX as u64 {
            history.record(90_000 + i * 30_000, counters(100 + i));
        }
        assert_eq!(history.increases("applied").len(), HISTORY_SAMPLES_MAX - 1);
        assert!(sparkline(&history.increases("applied"), "applied").starts_with("<svg"));
        assert!(sparkline(&[1], "x").contains("collecting"));
    }
}
