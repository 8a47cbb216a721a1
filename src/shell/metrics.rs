//! Tandem's own Prometheus endpoint (`global { metrics ADDR:PORT; }`):
//! per resource its states, the `/proc/drbd` counters in bytes, resync
//! progress, and write-latency histograms split into local disk, network
//! and peer disk. Plain HTTP/1.x, `GET /metrics` only, one response per
//! connection; requests are bounded before anything is parsed.

use super::daemon::Daemon;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request head larger than this is refused.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve until the daemon stops (the task is dropped with the runtime).
pub async fn serve(daemon: Rc<Daemon>, listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let d = Rc::clone(&daemon);
                tokio_uring::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(&d, stream)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(daemon: &Daemon, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > REQUEST_BYTES_MAX {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "request too large\n",
            )
            .await;
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            respond(&mut stream, "200 OK", &render(daemon)).await
        }
        (Some("GET"), Some(_)) => respond(&mut stream, "404 Not Found", "try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "GET /metrics only\n").await,
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// One family: its HELP and TYPE lines, then the samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP tandem_{name} {help}\n# TYPE tandem_{name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "tandem_{name}{{{labels}}} {value}");
    }
}

/// The exposition text for every resource of this node.
pub fn render(daemon: &Daemon) -> String {
    let snaps: Vec<_> = daemon
        .resources
        .iter()
        .map(|r| (r.node.borrow().snapshot(), r.latency.borrow().clone()))
        .collect();
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let res = |s: &crate::core::Snapshot| format!("resource=\"{}\",minor=\"{}\"", s.resource, s.minor);

    type State = fn(&crate::core::Snapshot) -> String;
    let states: [(&str, &str, State); 5] = [
        (
            "role",
            "This node's role (the label carries it; the value is 1).",
            |s| s.role.to_string(),
        ),
        ("peer_role", "The peer's role as this node knows it.", |s| {
            s.peer_role.to_string()
        }),
        ("connection_state", "The connection state, as DRBD names it.", |s| {
            s.cstate.to_string()
        }),
        ("disk_state", "This node's disk state.", |s| s.disk.to_string()),
        ("peer_disk_state", "The peer's disk state as this node knows it.", |s| {
            s.peer_disk.to_string()
        }),
    ];
    for (name, help, get) in states {
        f.head(name, "gauge", help);
        for (s, _) in &snaps {
            f.sample(name, &format!("{},state=\"{}\"", res(s), get(s)), 1);
        }
    }
    type Value = fn(&crate::core::Snapshot) -> u64;
    let values: [(&str, &str, &str, Value); 24] = [
        (
            "connected",
            "gauge",
            "1 while replicating (Connected or resyncing).",
            |s| u64::from(s.cstate >= crate::core::ConnState::Connected),
        ),
        ("up_to_date", "gauge", "1 while this node's disk is UpToDate.", |s| {
            u64::from(s.disk == crate::core::DiskState::UpToDate)
        }),
        (
            "split_brain",
            "gauge",
            "1 after a split brain no policy resolved.",
            |s| u64::from(s.split_brain),
        ),
        (
            "io_suspended",
            "gauge",
            "1 while application writes are held (fencing).",
            |s| u64::from(s.suspended.is_some()),
        ),
        (
            "abandoned_requests",
            "gauge",
            "Local requests disk-timeout gave up on that the old disk has not given back.",
            |s| s.abandoned as u64,
        ),
        (
            "peer_flushes_early_total",
            "counter",
            "Flushes of the peer's writes issued as they went quiet, ahead of the barrier they answered.",
            |s| s.flushes.peer_early,
        ),
        (
            "peer_flushes_on_barrier_total",
            "counter",
            "Flushes of the peer's writes a barrier had to wait for from its arrival.",
            |s| s.flushes.peer_on_barrier,
        ),
        (
            "app_flushes_total",
            "counter",
            "Application FLUSHes (the clients' commits), however they were answered.",
            |s| s.flushes.app,
        ),
        (
            "app_flushes_early_total",
            "counter",
            "Flushes of the local disk issued as the application's writes went quiet, ahead of the FLUSH its recent ones predicted.",
            |s| s.flushes.app_early,
        ),
        (
            "app_flushes_covered_total",
            "counter",
            "Application FLUSHes answered by an early flush of the local disk, done or under way, with no flush of their own.",
            |s| s.flushes.app_covered,
        ),
        (
            "app_flushes_peer_ahead_total",
            "counter",
            "Application FLUSHes the peer had already made stable on its disk by a flush of its own (it said so): answered without waiting for the barrier's round trip.",
            |s| s.flushes.app_peer_ahead,
        ),
        (
            "app_flushes_grouped_total",
            "counter",
            "Application FLUSHes that arrived while a flush of the disk not covering them was under way: they waited for it and shared the next flush with every other one that arrived meanwhile.",
            |s| s.flushes.app_grouped,
        ),
        ("device_size_bytes", "gauge", "Size of the replicated device.", |s| {
            s.size_bytes
        }),
        ("nbd_clients", "gauge", "NBD clients connected.", |s| {
            u64::from(s.nbd_clients)
        }),
        (
            "network_sent_bytes_total",
            "counter",
            "Bytes sent to the peer (ns).",
            |s| s.counters.ns * 1024,
        ),
        (
            "network_received_bytes_total",
            "counter",
            "Bytes received from the peer (nr).",
            |s| s.counters.nr * 1024,
        ),
        (
            "disk_written_bytes_total",
            "counter",
            "Bytes written to the local disk (dw).",
            |s| s.counters.dw * 1024,
        ),
        (
            "disk_read_bytes_total",
            "counter",
            "Bytes read from the local disk (dr).",
            |s| s.counters.dr * 1024,
        ),
        (
            "activity_log_writes_total",
            "counter",
            "Activity-log transactions written (al).",
            |s| s.counters.al,
        ),
        ("bitmap_writes_total", "counter", "Bitmap pages written (bm).", |s| {
            s.counters.bm
        }),
        ("local_pending", "gauge", "Requests open to the local disk (lo).", |s| {
            s.counters.lo
        }),
        (
            "peer_pending",
            "gauge",
            "Requests sent to the peer awaiting an answer (pe).",
            |s| s.counters.pe,
        ),
        (
            "application_pending",
            "gauge",
            "Application requests not yet completed (ap).",
            |s| s.counters.ap,
        ),
        ("out_of_sync_bytes", "gauge", "Bytes marked out of sync (oos).", |s| {
            s.counters.oos * 1024
        }),
    ];
    for (name, kind, help, get) in values {
        f.head(name, kind, help);
        for (s, _) in &snaps {
            f.sample(name, &res(s), get(s));
        }
    }
    f.head(
        "resync_remaining_bytes",
        "gauge",
        "Bytes the running resync still has to move (0 when none runs).",
    );
    for (s, _) in &snaps {
        f.sample(
            "resync_remaining_bytes",
            &res(s),
            s.resync_kib.map_or(0, |(left, _)| left * 1024),
        );
    }
    f.head(
        "resync_progress_ratio",
        "gauge",
        "Share of the running resync done (1 when none runs).",
    );
    for (s, _) in &snaps {
        let done = match s.resync_kib {
            Some((left, total)) if total > 0 => 1.0 - left as f64 / total as f64,
            _ => 1.0,
        };
        f.sample("resync_progress_ratio", &res(s), done);
    }
    f.head(
        "write_latency_seconds",
        "histogram",
        "Replicated write latency by part: local disk, network round trip, peer disk.",
    );
    for (s, lat) in &snaps {
        for (part, h) in [
            ("local_disk", &lat.local_disk),
            ("network", &lat.network),
            ("peer_disk", &lat.peer_disk),
        ] {
            let labels = format!("{},part=\"{part}\"", res(s));
            let (buckets, sum_us) = h.cumulative();
            let total = buckets.last().map_or(0, |b| b.1);
            for (le_us, count) in buckets {
                let le = le_us as f64 / 1e6;
                f.sample("write_latency_seconds_bucket", &format!("{labels},le=\"{le}\""), count);
            }
            f.sample("write_latency_seconds_bucket", &format!("{labels},le=\"+Inf\""), total);
            f.sample("write_latency_seconds_sum", &labels, sum_us as f64 / 1e6);
            f.sample("write_latency_seconds_count", &labels, total);
        }
    }
    out
}
