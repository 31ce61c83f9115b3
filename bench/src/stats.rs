//! Latency statistics: nearest-rank percentiles of samples, HDR histograms of µs samples, and the
//! rounding and unit conversions of the JSON output.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Nearest-rank percentiles and mean of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Pct {
    pub n: usize,
    pub min: f64,
    /// Median (the mean of the two middle samples when `n` is even).
    pub median: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// [`Pct`] of `values`; `None` when there are none.
pub fn pct(values: &[f64]) -> Option<Pct> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Pct {
        n,
        min: v[0],
        median: median_sorted(&v),
        p50: rank(0.5),
        p90: rank(0.9),
        p99: rank(0.99),
        max: v[n - 1],
        mean: v.iter().sum::<f64>() / n as f64,
    })
}

fn median_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    median_sorted(&s)
}

/// Mean of `v` (NaN when empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// A histogram of µs samples up to 10 minutes.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Latency summary of a [`histogram`] of µs samples, in ms.
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |v: u64| (v as f64 / 10.0).round() / 100.0;
    json!({"n": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)), "p90_ms": ms(h.value_at_quantile(0.9)),
           "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(h.max()), "mean_ms": (h.mean() / 10.0).round() / 100.0})
}

/// Rounded to 1 decimal.
pub fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Rounded to 2 decimals.
pub fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Rounded to 3 decimals.
pub fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
