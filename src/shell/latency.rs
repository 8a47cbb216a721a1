//! Where write latency goes: local disk, network round trip, peer disk.
//!
//! Log2 histograms in microseconds, cheap enough to record on every write.
//! The peer reports its own disk time in each `DataAck`; the network share is
//! the round trip minus that.

use serde::Serialize;

const BUCKETS: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS],
    total: u64,
    sum_us: u64,
}

/// p50 and p99 in µs (upper bounds of their buckets), and how many samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub p50: u64,
    pub p99: u64,
    pub count: u64,
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let b = (64 - us.max(1).leading_zeros() as usize).min(BUCKETS - 1);
        self.counts[b] += 1;
        self.total += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// (upper bound in µs, samples at or below it) for every bucket, then
    /// the sum of all samples: what a Prometheus histogram is made of.
    pub fn cumulative(&self) -> (Vec<(u64, u64)>, u64) {
        let mut seen = 0;
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .map(|(b, &c)| {
                seen += c;
                (1u64 << b, seen)
            })
            .collect();
        (buckets, self.sum_us)
    }

    fn quantile(&self, q: f64) -> u64 {
        let want = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return 1u64 << b;
            }
        }
        0
    }

    pub fn summary(&self) -> Summary {
        Summary {
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            count: self.total,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LatencyStats {
    pub local_disk: Histogram,
    pub network: Histogram,
    pub peer_disk: Histogram,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySplit {
    pub local_disk: Summary,
    pub network: Summary,
    pub peer_disk: Summary,
}

impl LatencyStats {
    pub fn split(&self) -> LatencySplit {
        LatencySplit {
            local_disk: self.local_disk.summary(),
            network: self.network.summary(),
            peer_disk: self.peer_disk.summary(),
        }
    }

    /// One line for `status --verbose`; none on a node that has measured
    /// no replicated write (a Secondary, a Primary before its first), where
    /// a line of zeros would read as writes that took no time.
    pub fn line(&self) -> String {
        let s = self.split();
        if s.local_disk.count + s.network.count + s.peer_disk.count == 0 {
            return String::new();
        }
        let part = |name: &str, x: Summary| format!("{name} p50:{}us p99:{}us", x.p50, x.p99);
        format!(
            "    write-latency: {} | {} | {}\n",
            part("local-disk", s.local_disk),
            part("network", s.network),
            part("peer-disk", s.peer_disk)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_buckets() {
        let mut h = Histogram::default();
        for _ in 0..98 {
            h.record(60);
        }
        h.record(5000);
        h.record(5000);
        let s = h.summary();
        assert_eq!((s.p50, s.p99, s.count), (64, 8192, 100));
        assert_eq!(Histogram::default().summary().p50, 0);
    }

    #[test]
    fn the_status_line_appears_once_a_write_was_measured() {
        let mut stats = LatencyStats::default();
        assert_eq!(stats.line(), "");
        stats.local_disk.record(100);
        stats.network.record(40);
        stats.peer_disk.record(90);
        assert_eq!(
            stats.line(),
            "    write-latency: local-disk p50:128us p99:128us | network p50:64us p99:64us | peer-disk p50:128us p99:128us\n"
        );
    }
}
