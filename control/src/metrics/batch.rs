//! `uvlan_dataplane_batch_size`: the sizes of a worker's receive batches as an OpenMetrics
//! histogram, from the dataplane's own power-of-two counts ([`WorkerStats::batch_hist`]).
//!
//! Bucket `i` of the dataplane counts batches of `2^i ..= 2^(i+1) - 1` frames, the last
//! one (the eleventh) 1024 frames and more (`LoopCounters::batch_hist` in the dataplane's
//! `run` module). Batch sizes are whole numbers, so those buckets are exactly the
//! cumulative `le` buckets 1, 3, 7, …, 1023 and `+Inf`; `_count` is the number of batches and `_sum` the frames in
//! them (`batches`, `batch_frames`). Nothing is estimated.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use uvlan_dataplane::run::BATCH_BUCKETS;

use crate::api::WorkerStats;

/// The family's name (after the `uvlan_` prefix).
pub const NAME: &str = "dataplane_batch_size";

/// One worker's batch sizes, as a constant histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSizes {
    /// Batches.
    count: u64,
    /// Frames in them.
    sum: u64,
    /// `(le, batches in this bucket only)`; the encoder accumulates.
    buckets: Vec<(f64, u64)>,
}

impl BatchSizes {
    /// The histogram of worker `w`. A report with fewer buckets than the dataplane has
    /// (an older daemon) counts the missing ones as empty; a longer one adds its extra
    /// buckets to the last (`+Inf`).
    pub fn of(w: &WorkerStats) -> BatchSizes {
        let mut per = [0u64; BATCH_BUCKETS];
        for (i, n) in w.batch_hist.iter().enumerate() {
            let slot = i.min(BATCH_BUCKETS - 1);
            if let Some(s) = per.get_mut(slot) {
                *s = s.saturating_add(*n);
            }
        }
        let buckets = per
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let le = if i + 1 == BATCH_BUCKETS {
                    f64::INFINITY
                } else {
                    // 2^(i+1) - 1: the largest size of bucket i.
                    f64::from((2u32 << i) - 1)
                };
                (le, *n)
            })
            .collect();
        BatchSizes {
            count: w.batches,
            sum: w.batch_frames,
            buckets,
        }
    }
}

impl EncodeMetric for BatchSizes {
    fn encode(&self, mut enc: MetricEncoder) -> fmt::Result {
        // Frame counts stay exact as f64 up to 2^53.
        enc.encode_histogram::<NoLabelSet>(self.sum as f64, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Encodes the family: one histogram per worker (label `worker`, its index).
pub fn encode(enc: &mut DescriptorEncoder, help: &str, workers: &[WorkerStats]) -> fmt::Result {
    let mut f = enc.encode_descriptor(NAME, help, None, MetricType::Histogram)?;
    for (i, w) in workers.iter().enumerate() {
        let id = i.to_string();
        let labels = [("worker", id.as_str())];
        let lv = f.encode_family(&labels)?;
        BatchSizes::of(w).encode(lv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{promtool_check, sample};
    use super::super::{openmetrics, prometheus_text};
    use super::*;

    fn with_batches() -> crate::api::StatsReport {
        let mut r = sample();
        let lp = r.dataplane.as_mut().unwrap();
        let w = WorkerStats {
            batches: 7,
            // 1 + 2 + 3 + 64 + 64 + 100 + 1100
            batch_frames: 1334,
            batch_hist: vec![1, 2, 0, 0, 0, 0, 3, 0, 0, 0, 1],
            ..Default::default()
        };
        lp.workers = vec![WorkerStats::default(), w];
        r
    }

    #[test]
    fn buckets_are_cumulative_with_count_and_sum() {
        let t = openmetrics(&with_batches());
        for want in [
            "# TYPE uvlan_dataplane_batch_size histogram\n",
            "uvlan_dataplane_batch_size_sum{worker=\"1\"} 1334.0\n",
            "uvlan_dataplane_batch_size_count{worker=\"1\"} 7\n",
            "uvlan_dataplane_batch_size_bucket{le=\"1.0\",worker=\"1\"} 1\n",
            "uvlan_dataplane_batch_size_bucket{le=\"3.0\",worker=\"1\"} 3\n",
            "uvlan_dataplane_batch_size_bucket{le=\"7.0\",worker=\"1\"} 3\n",
            "uvlan_dataplane_batch_size_bucket{le=\"127.0\",worker=\"1\"} 6\n",
            "uvlan_dataplane_batch_size_bucket{le=\"511.0\",worker=\"1\"} 6\n",
            "uvlan_dataplane_batch_size_bucket{le=\"1023.0\",worker=\"1\"} 6\n",
            "uvlan_dataplane_batch_size_bucket{le=\"+Inf\",worker=\"1\"} 7\n",
            "uvlan_dataplane_batch_size_count{worker=\"0\"} 0\n",
            "uvlan_dataplane_batch_size_bucket{le=\"+Inf\",worker=\"0\"} 0\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // Eleven buckets per worker, the last one +Inf.
        let n = t
            .lines()
            .filter(|l| {
                l.starts_with("uvlan_dataplane_batch_size_bucket{") && l.contains("worker=\"1\"")
            })
            .count();
        assert_eq!(n, BATCH_BUCKETS, "{t}");
    }

    #[test]
    fn a_longer_report_folds_into_the_last_bucket() {
        let w = WorkerStats {
            batches: 3,
            batch_frames: 3000,
            batch_hist: vec![0; BATCH_BUCKETS].into_iter().chain([2, 1]).collect(),
            ..Default::default()
        };
        let h = BatchSizes::of(&w);
        assert_eq!(h.buckets.len(), BATCH_BUCKETS);
        assert_eq!(h.buckets.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(h.buckets.first(), Some(&(1.0, 0)));
    }

    /// `promtool check metrics` accepts the histogram (in the text format it reads).
    #[test]
    fn promtool_accepts_the_histogram() {
        let text = prometheus_text(&with_batches());
        assert!(
            text.contains("uvlan_dataplane_batch_size_bucket{worker=\"1\",le=\"+Inf\"} 7\n"),
            "{text}"
        );
        promtool_check(&text);
    }
}
