//! Existing monitoring reads Tandem's /proc/drbd-format status file as it
//! reads DRBD's: Prometheus node_exporter's drbd collector and Nagios
//! check_drbd, run for real in the connected, resyncing and degraded states.

mod common;

use common::pair::*;
use common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHECK_DRBD: &str = "/usr/lib/nagios/plugins/check_drbd";

/// node_exporter with only the drbd collector, reading `procfs/drbd`.
struct NodeExporter {
    child: std::process::Child,
    port: u16,
}

impl NodeExporter {
    fn start(procfs: &std::path::Path) -> NodeExporter {
        let port = free_port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--path.procfs={}", procfs.display()))
            .args(["--collector.disable-defaults", "--collector.drbd"])
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node_exporter");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "node_exporter did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        NodeExporter { child, port }
    }

    /// `metric{labels}` → value, for the drbd metrics and the scrape status.
    fn scrape(&self) -> std::collections::BTreeMap<String, f64> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("response");
        body.lines()
            .filter(|l| l.starts_with("node_drbd") || l.contains(r#"collector="drbd""#))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_drbd(d: &Daemon) -> (i32, String) {
    let out = run(Command::new(CHECK_DRBD)
        .arg("-p")
        .arg(d.run_dir.join("drbd"))
        .args(["-d", "0"]));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

fn get(m: &std::collections::BTreeMap<String, f64>, k: &str) -> f64 {
    *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"))
}

#[test]
fn node_exporter_and_check_drbd_read_the_status_file() {
    require_tool("prometheus-node-exporter", "prometheus-node-exporter");
    assert!(
        std::path::Path::new(CHECK_DRBD).exists(),
        "check_drbd is missing: apt-get install monitoring-plugins-contrib"
    );
    // 1 MiB/s resync, so that the resyncing state lasts long enough to look at.
    let p = Pair::up_full("s3cret", 16 << 20, "c-plan-ahead 0; resync-rate 1M;", "", "");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    p.alpha.adm_ok(&["primary", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 10);
    qemu_io(&format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha), &["write -P 0x21 0 1M"]);
    let ne = NodeExporter::start(&p.alpha.run_dir);

    // Connected.
    let m = ne.scrape();
    assert_eq!(
        get(&m, r#"node_scrape_collector_success{collector="drbd"}"#),
        1.0,
        "{m:?}"
    );
    assert_eq!(get(&m, r#"node_drbd_connected{device="drbd0"}"#), 1.0);
    assert_eq!(
        get(&m, r#"node_drbd_node_role_is_primary{device="drbd0",node="local"}"#),
        1.0
    );
    assert_eq!(
        get(&m, r#"node_drbd_node_role_is_primary{device="drbd0",node="remote"}"#),
        0.0
    );
    assert_eq!(
        get(
            &m,
            r#"node_drbd_disk_state_is_up_to_date{device="drbd0",node="remote"}"#
        ),
        1.0
    );
    assert!(get(&m, r#"node_drbd_network_sent_bytes_total{device="drbd0"}"#) >= 1048576.0);
    assert_eq!(get(&m, r#"node_drbd_out_of_sync_bytes{device="drbd0"}"#), 0.0);
    let (rc, text) = check_drbd(&p.alpha);
    assert_eq!((rc, text.as_str()), (0, "DRBD OK: Device 0 Connected UpToDate"));

    // Degraded: the peer gone, 8 MiB written meanwhile.
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.wait_for("cs:WFConnection", 10);
    qemu_io(&format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha), &["write -P 0x22 4M 8M"]);
    p.alpha.wait_for("oos:8192", 10);
    let m = ne.scrape();
    assert_eq!(
        get(&m, r#"node_scrape_collector_success{collector="drbd"}"#),
        1.0,
        "{m:?}"
    );
    assert_eq!(get(&m, r#"node_drbd_connected{device="drbd0"}"#), 0.0);
    assert_eq!(
        get(
            &m,
            r#"node_drbd_disk_state_is_up_to_date{device="drbd0",node="remote"}"#
        ),
        0.0
    );
    assert_eq!(
        get(&m, r#"node_drbd_out_of_sync_bytes{device="drbd0"}"#),
        8192.0 * 1024.0
    );
    let (rc, text) = check_drbd(&p.alpha);
    assert_eq!(rc, 1, "{text}");
    // check_drbd prints the oos: figure (KiB) and calls it sectors, as for DRBD.
    assert!(text.contains("Out of sync on device 0: 8192 sectors"), "{text}");

    // Resyncing: 8 MiB at 1 MiB/s.
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha.wait_for("cs:SyncSource", 10);
    let m = ne.scrape();
    assert_eq!(
        get(&m, r#"node_scrape_collector_success{collector="drbd"}"#),
        1.0,
        "{m:?}"
    );
    assert_eq!(get(&m, r#"node_drbd_connected{device="drbd0"}"#), 0.0);
    let oos = get(&m, r#"node_drbd_out_of_sync_bytes{device="drbd0"}"#);
    assert!(oos > 0.0 && oos <= 8192.0 * 1024.0, "{oos}");
    let (rc, text) = check_drbd(&p.alpha);
    assert_eq!(rc, 1, "{text}");
    assert!(text.contains("Out of sync on device 0"), "{text}");
    p.alpha.wait_for("cs:Connected", 60);
    let (rc, text) = check_drbd(&p.alpha);
    assert_eq!((rc, text.as_str()), (0, "DRBD OK: Device 0 Connected UpToDate"));
}
