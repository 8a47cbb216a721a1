//! Tandem's own Prometheus endpoint (`global { metrics ADDR:PORT; }`):
//! scraped over HTTP while a pair replicates, checked by Prometheus's own
//! `promtool check metrics`, and asserted on what an operator would graph.

mod common;

use common::pair::*;
use common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

fn http(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.write_all(request.as_bytes()).expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The value of the one sample whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix}:\n{text}"))
}

#[test]
fn a_replicating_pair_is_scraped_and_promtool_accepts_the_text() {
    require_tool("promtool", "prometheus");
    let mut p = Pair::up("s3cret");
    let port = free_port();
    // alpha restarts with the endpoint configured.
    p.alpha.kill9();
    let conf = std::fs::read_to_string(&p.alpha.conf).expect("conf");
    std::fs::write(&p.alpha.conf, format!("global {{ metrics 127.0.0.1:{port}; }}\n{conf}")).expect("conf");
    p.alpha.start();
    p.alpha.adm_ok(&["up", "r0"]);
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    qemu_io(&format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha), &["write -P 0x42 0 4M"]);

    let response = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let text = body(&response);
    let r = "resource=\"r0\",minor=\"0\"";
    assert_eq!(value(text, &format!("tandem_role{{{r},state=\"Primary\"}}")), 1.0);
    assert_eq!(
        value(text, &format!("tandem_connection_state{{{r},state=\"Connected\"}}")),
        1.0
    );
    assert_eq!(
        value(text, &format!("tandem_peer_disk_state{{{r},state=\"UpToDate\"}}")),
        1.0
    );
    assert_eq!(value(text, &format!("tandem_connected{{{r}}}")), 1.0);
    assert_eq!(value(text, &format!("tandem_out_of_sync_bytes{{{r}}}")), 0.0);
    assert!(value(text, &format!("tandem_disk_written_bytes_total{{{r}}}")) >= 4.0 * 1024.0 * 1024.0);
    assert!(value(text, &format!("tandem_network_sent_bytes_total{{{r}}}")) >= 4.0 * 1024.0 * 1024.0);
    // Every replicated write is in the histograms, split three ways.
    for part in ["local_disk", "network", "peer_disk"] {
        let count = value(
            text,
            &format!("tandem_write_latency_seconds_count{{{r},part=\"{part}\"}}"),
        );
        assert!(count >= 1.0, "{part}: {count}");
        let inf = value(
            text,
            &format!("tandem_write_latency_seconds_bucket{{{r},part=\"{part}\",le=\"+Inf\"}}"),
        );
        assert_eq!(inf, count);
    }

    // Prometheus's own linter reads the exposition format.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = lint.wait_with_output().expect("promtool");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}");

    // Degraded: the peer goes away, the scrape says so.
    p.beta.kill9();
    p.alpha.wait_for("cs:WFConnection", 30);
    qemu_io(&format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha), &["write -P 0x43 0 64k"]);
    let text = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    let text = body(&text);
    assert_eq!(value(text, &format!("tandem_connected{{{r}}}")), 0.0);
    assert_eq!(value(text, &format!("tandem_out_of_sync_bytes{{{r}}}")), 65536.0);

    // Anything else is refused, and a huge request is not read to the end.
    assert!(http(port, "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http(port, "POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 405"));
    let huge = format!("GET /metrics HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(64 * 1024));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("port");
    let _ = s.write_all(huge.as_bytes());
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
}

#[test]
fn a_bad_metrics_address_is_a_configuration_error_with_its_location() {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("t.res");
    std::fs::write(&conf, "global { metrics localhost; }\nresource r0 { on a { device nbd://127.0.0.1:1/r0; disk /x; meta-disk internal; } }\n").expect("conf");
    let out = run(Command::new(env!("CARGO_BIN_EXE_tandemadm"))
        .arg("-c")
        .arg(&conf)
        .args(["--node", "a", "dump-md", "r0"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("t.res:1:") && err.contains("'localhost' is not an address and port"),
        "{err}"
    );
}

/// The flush counters (`tandem_…_total`, in `names`) of the node whose
/// metrics are on `port`.
fn counters<const N: usize>(port: u16, names: [&str; N]) -> [f64; N] {
    let text = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    let text = body(&text);
    names.map(|n| value(text, &format!("tandem_{n}{{resource=\"r0\",minor=\"0\"}}")))
}

#[test]
fn a_committing_clients_flushes_are_issued_as_its_writes_complete_and_plain_writes_never_flush() {
    // The Secondary's disk in RAM, as if it had a disk of its own: its
    // flush always finishes before the client's next request, so every
    // commit's FLUSH can be answered by its word, however busy the disk
    // the other tests share is. Made before the pair, so removed after
    // its daemons are killed.
    let ram = tempfile::Builder::new()
        .prefix("tandem-metrics-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let mut p = Pair::up("s3cret");
    // Both restart with the endpoint configured, each on a port of its own.
    let ports = [free_port(), free_port()];
    for (d, port) in [&mut p.alpha, &mut p.beta].into_iter().zip(ports) {
        d.kill9();
        if d.name == "beta" {
            let in_ram = ram.path().join("beta.img");
            std::fs::copy(&d.image, &in_ram).expect("copy to tmpfs");
            std::fs::remove_file(&d.image).expect("image");
            std::os::unix::fs::symlink(&in_ram, &d.image).expect("link");
        }
        let conf = std::fs::read_to_string(&d.conf).expect("conf");
        std::fs::write(&d.conf, format!("global {{ metrics 127.0.0.1:{port}; }}\n{conf}")).expect("conf");
        d.start();
        d.adm_ok(&["up", "r0"]);
    }
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    let primary = || counters(ports[0], ["app_flushes_early_total", "app_flushes_covered_total"]);
    let peer_ahead = || counters(ports[0], ["app_flushes_peer_ahead_total"])[0];
    let secondary = || counters(ports[1], ["peer_flushes_early_total", "peer_flushes_on_barrier_total"]);
    let flushes = || counters(ports[0], ["app_flushes_total"])[0];

    // Writes without flushes: neither node flushes for them (the one
    // flush qemu-io sends as it closes is answered the plain way).
    let plain: Vec<String> = (0..50).map(|i| format!("write -P {} {}k 4k", i + 1, i * 8)).collect();
    qemu_io(&p.uri(), &plain.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(primary(), [0.0, 0.0], "no flush the application did not ask for");
    let closing = flushes();
    assert!(closing >= 1.0, "qemu-io's closing FLUSH is counted: {closing}");
    assert_eq!(peer_ahead(), 0.0, "the closing flush waits for its barrier's ack");
    let [early, on_barrier] = secondary();
    assert_eq!(early, 0.0);
    assert!(on_barrier >= 1.0, "{on_barrier}");

    // A database's commits: a write, then a flush, one after the other.
    // Once the first ones show the pattern, each node flushes as the
    // write completes on its disk, and the FLUSH (on the Secondary, the
    // barrier) finds that flush done or under way.
    let commits: Vec<String> = (0..50)
        .flat_map(|i| [format!("write -P {} {}k 4k", i + 100, i * 8 + 4), "flush".to_owned()])
        .collect();
    qemu_io(&p.uri(), &commits.iter().map(String::as_str).collect::<Vec<_>>());
    let commits_flushed = flushes() - closing;
    assert!(
        (50.0..=52.0).contains(&commits_flushed),
        "50 commits (and a closing FLUSH) counted as {commits_flushed} FLUSHes"
    );
    let [early, covered] = primary();
    assert!(
        early >= 40.0 && covered >= 40.0,
        "Primary: {early} early, {covered} answered by them, of 50"
    );
    // The Secondary says when its early flush is done, and a FLUSH that
    // arrives after that needs no barrier: answered by the peer's word.
    let ahead = peer_ahead();
    assert!(ahead >= 40.0, "{ahead} of 50 FLUSHes answered by the peer's word");
    let [early, on_barrier_after] = secondary();
    assert!(early >= 40.0, "Secondary: {early} of 50 commits flushed early");
    // The operator's view of the same counts.
    let status = p.alpha.adm_ok(&["status", "--verbose", "r0"]);
    let line = format!("flushes:{} answered-early:{covered} ", flushes());
    assert!(status.contains(&line), "{line:?} in {status}");
    let status = p.beta.adm_ok(&["status", "--verbose", "r0"]);
    assert!(status.contains(&format!("peer-flushes early:{early} ")), "{status}");
    assert!(
        on_barrier_after - on_barrier <= 10.0,
        "{on_barrier} → {on_barrier_after}"
    );

    // Four clients committing at once never go quiet: a FLUSH that finds
    // the disk flushing for another waits for it and shares the next one.
    let grouped = || counters(ports[0], ["app_flushes_grouped_total"])[0];
    let before = grouped();
    // Each committer on a range of its own, read back and checked after.
    fio_verified(
        &p.uri(),
        &[
            "--name=committers",
            "--rw=randwrite",
            "--bs=4k",
            "--size=2M",
            "--offset_increment=2M",
            "--iodepth=1",
            "--fsync=1",
            "--numjobs=4",
        ],
    );
    let shared = grouped() - before;
    assert!(shared >= 10.0, "{shared} FLUSHes shared a flush");

    // What was committed is on both disks, byte for byte.
    p.alpha.adm_ok(&["secondary", "r0"]);
    p.assert_identical();
}
