//! Two nodes in their own network namespaces joined by a veth pair, cut apart
//! with iptables DROP: the link's own keepalive must notice (TCP alone does
//! not), the Primary carries on degraded, and healing the network resyncs
//! exactly what was written meanwhile.

mod common;

use common::netns::Net;
use common::pair::Daemon;
use std::time::{Duration, Instant};

const SIZE: u64 = 32 << 20;

#[test]
fn an_iptables_partition_is_detected_by_keepalive_and_healed_by_a_bitmap_resync() {
    let net = Net::new();
    let dir = tempfile::Builder::new()
        .prefix("tandem-netns-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path();
    let conf = d.join("tandem.conf");
    std::fs::write(
        &conf,
        format!(
            r#"resource r0 {{
  net {{ shared-secret "part"; connect-int 1; ping-int 1; ping-timeout 10; }}
  on alpha {{ device nbd://{a}:10809/r0; disk {d}/alpha.img; address {a}:7789; meta-disk {d}/alpha.md; }}
  on beta  {{ device nbd://{b}:10809/r0; disk {d}/beta.img; address {b}:7789; meta-disk {d}/beta.md; }}
}}
"#,
            a = net.ip[0],
            b = net.ip[1],
            d = d.display()
        ),
    )
    .expect("config");
    let mut nodes = Vec::new();
    for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
        std::fs::File::create(d.join(format!("{name}.img")))
            .and_then(|f| f.set_len(SIZE))
            .expect("image");
        let mut n = Daemon::new(name, conf.clone(), d, d.join(format!("{name}.img")));
        n.ns = Some(net.ns[i].clone());
        n.adm_ok(&["create-md", "r0"]);
        n.start();
        n.adm_ok(&["up", "r0"]);
        nodes.push(n);
    }
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    alpha.wait_for("cs:Connected", 20);
    alpha.adm_ok(&["primary", "--force", "r0"]);
    alpha.wait_for("ds:UpToDate/UpToDate", 30);

    let uri = format!("nbd://{}:10809/r0", net.ip[0]);
    net.partition();
    // A write during the partition: with no keepalive it would hang forever
    // waiting for the peer's ack; the link is declared dead instead and the
    // write completes degraded.
    let started = Instant::now();
    net.exec(
        0,
        &format!("qemu-io -f raw -c 'write -P 0x5c 1M 256k' {uri} >/dev/null"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "write hung {:?} in a partition",
        started.elapsed()
    );
    alpha.wait_for("cs:WFConnection", 15);
    alpha.wait_for("oos:256", 5);

    net.heal();
    alpha.wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    beta.wait_for("ds:UpToDate/UpToDate", 10);
    alpha.wait_for("oos:0", 5);
    let a = std::fs::read(d.join("alpha.img")).expect("alpha");
    let b = std::fs::read(d.join("beta.img")).expect("beta");
    assert!(a == b, "replicas differ after healing the partition");
    assert!(b[1 << 20..(1 << 20) + (256 << 10)].iter().all(|&x| x == 0x5c));
}
