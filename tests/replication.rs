//! Two `tandemd` processes on loopback: initial sync, protocol C writes on
//! both disks when acknowledged, degraded writes resynced from the bitmap,
//! refusals, split-brain detection.

mod common;

use common::pair::*;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn initial_sync_then_every_acknowledged_write_is_on_both_disks() {
    let p = Pair::up("s3cret");
    p.alpha
        .wait_for("cs:Connected ro:Secondary/Secondary ds:Inconsistent/Inconsistent C", 20);
    // A fresh pair: nobody may be Primary without saying whose data wins.
    let out = p.alpha.adm(&["primary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    std::fs::write(&p.alpha.image, pattern(5, SIZE as usize)).expect("fill alpha");
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    p.assert_identical();
    assert!(
        p.alpha.counter("ns") >= SIZE / 1024,
        "full sync sent {} KiB",
        p.alpha.counter("ns")
    );

    // Protocol C: when qemu-io returns, both disks hold the data.
    qemu_io(
        &p.uri(),
        &[
            "write -P 0x61 0 64k",
            "write -P 0x62 1M 1M",
            "write -f -P 0x63 10M 4k",
            "write -z 20M 256k",
            "flush",
        ],
    );
    p.assert_identical();
    let beta = std::fs::read(&p.beta.image).expect("beta");
    assert!(beta[1 << 20..2 << 20].iter().all(|&b| b == 0x62));
    assert!(beta[20 << 20..(20 << 20) + (256 << 10)].iter().all(|&b| b == 0));

    // fio with verification through the Primary, then identical replicas.
    fio_verified(
        &p.uri(),
        &["--name=rep", "--size=32m", "--bs=4k", "--iodepth=16", "--rw=randwrite"],
    );
    p.assert_identical();
    assert_eq!(p.alpha.adm_ok(&["dstate", "r0"]), "UpToDate/UpToDate\n");
    assert_eq!(p.beta.adm_ok(&["role", "r0"]), "Secondary/Primary\n");

    // Where the write latency went: local disk, network, peer disk.
    let verbose = p.alpha.adm_ok(&["status", "--verbose", "r0"]);
    assert!(verbose.contains("write-latency: local-disk p50:"), "{verbose}");
    // The Secondary measured no replicated write of its own: no line of zeros.
    let verbose = p.beta.adm_ok(&["status", "--verbose", "r0"]);
    assert!(!verbose.contains("write-latency"), "{verbose}");
    let json: serde_json::Value = serde_json::from_str(&p.alpha.adm_ok(&["status", "--json", "r0"])).expect("json");
    let lat = &json[0]["write_latency_us"];
    for part in ["local_disk", "network", "peer_disk"] {
        assert!(lat[part]["count"].as_u64().unwrap_or(0) > 1000, "{part}: {lat}");
        assert!(lat[part]["p50"].as_u64().unwrap_or(0) > 0, "{part}: {lat}");
    }
}

#[test]
fn a_disconnected_primary_resyncs_only_the_blocks_it_wrote() {
    let p = Pair::synced();
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.wait_for("cs:WFConnection", 10);
    let ns_before = p.alpha.counter("ns");
    qemu_io(&p.uri(), &["write -P 0x71 4M 512k", "write -P 0x72 40M 512k"]);
    // 1 MiB written while degraded: the bitmap says so.
    p.alpha.wait_for("oos:1024", 5);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.alpha.wait_for("oos:0", 5);
    p.assert_identical();
    let moved = p.alpha.counter("ns") - ns_before;
    assert!(
        (1024..=1024 + 64).contains(&moved),
        "resync moved {moved} KiB for 1024 KiB of changes"
    );
    assert!(
        p.alpha.log_text().contains("uuid_compare()=1 by rule 70"),
        "{}",
        p.alpha.log_text()
    );
    assert!(p
        .alpha
        .log_text()
        .contains("blocks newer than beta; alpha becomes SyncSource"));
}

#[test]
fn a_killed_secondary_catches_up_after_restart() {
    let mut p = Pair::synced();
    p.beta.kill9();
    p.alpha.wait_for("cs:WFConnection", 15);
    qemu_io(&p.uri(), &["write -P 0x31 8M 256k"]);
    p.beta.start();
    p.beta.adm_ok(&["up", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
    p.beta.wait_for("ds:UpToDate/UpToDate", 10);
    p.assert_identical();
}

#[test]
fn refusals_say_why() {
    let p = Pair::synced();
    let out = p.beta.adm(&["primary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(-1) Multiple primaries not allowed by config (peer alpha is Primary)"),
        "{err}"
    );
    // The Secondary refuses its NBD export, saying why.
    let beta_uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_beta);
    let out = run(Command::new("qemu-io").args(["-f", "raw", "-c", "read 0 4k", &beta_uri]));
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(msg.contains("r0 is Secondary on beta"), "{msg}");
    // A connected Primary with an NBD client cannot be demoted.
    let (mut client, _) = RawClient::handshake(p.nbd_alpha);
    assert_eq!(client.write(1, 0, &pattern(1, 4096)), 0);
    let out = p.alpha.adm(&["secondary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(-12) Device is held open by someone"));
    drop(client);
    let out = p.beta.adm(&["connect", "--discard-my-data", "r0"]);
    assert!(out.status.success(), "discard-my-data on a Secondary is allowed");
    let out = p.alpha.adm(&["connect", "--discard-my-data", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this node is Primary"));
}

#[test]
fn a_wrong_shared_secret_is_refused_with_a_log_line() {
    let p = Pair::up("not-the-secret");
    std::thread::sleep(Duration::from_secs(3));
    assert!(p.alpha.status().contains("cs:WFConnection"), "{}", p.alpha.status());
    let logs = p.alpha.log_text() + &p.beta.log_text();
    assert!(logs.contains("wrong shared secret"), "{logs}");
}

#[test]
fn split_brain_is_detected_and_never_merged() {
    let p = Pair::synced();
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.adm_ok(&["disconnect", "r0"]);
    qemu_io(&p.uri(), &["write -P 0x41 0 64k"]);
    p.beta.adm_ok(&["primary", "r0"]);
    p.alpha.adm_ok(&["connect", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha.wait_for("cs:StandAlone", 20);
    p.beta.wait_for("cs:StandAlone", 20);
    let logs = p.alpha.log_text() + &p.beta.log_text();
    assert!(logs.contains("Split-Brain detected"), "{logs}");
    // Nothing was merged: beta still lacks alpha's write.
    let beta = std::fs::read(&p.beta.image).expect("beta");
    assert!(!beta[..65536].iter().all(|&b| b == 0x41));

    // Manual recovery: beta is the victim. Refused while it is Primary.
    let out = p.beta.adm(&["connect", "--discard-my-data", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    p.beta.adm_ok(&["secondary", "r0"]);
    p.beta.adm_ok(&["--", "--discard-my-data", "connect", "r0"]);
    p.alpha.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.beta.wait_for("ds:UpToDate/UpToDate", 10);
    p.assert_identical();
    let logs = p.alpha.log_text() + &p.beta.log_text();
    assert!(logs.contains("manually solved"), "{logs}");
}

/// QD1 writes of self-describing blocks until the connection dies; returns
/// (offset, generation) of every write whose reply said success.
fn write_until_failure(port: u16) -> Vec<(u64, u64)> {
    use std::io::{Read, Write};
    let (c, size) = RawClient::handshake(port);
    let mut s = c.stream;
    let blocks = size / 4096;
    let mut acked = Vec::new();
    for i in 0..1_000_000u64 {
        let off = (i * 7919 % blocks) * 4096;
        let mut req = Vec::with_capacity(28 + 4096);
        req.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&NBD_CMD_WRITE.to_be_bytes());
        req.extend_from_slice(&i.to_be_bytes());
        req.extend_from_slice(&off.to_be_bytes());
        req.extend_from_slice(&4096u32.to_be_bytes());
        req.extend_from_slice(&pattern(1000 + i, 4096));
        if s.write_all(&req).is_err() {
            break;
        }
        let mut r = [0u8; 16];
        if s.read_exact(&mut r).is_err() || r[4..8] != [0, 0, 0, 0] {
            break;
        }
        acked.push((off, i));
    }
    acked
}

#[test]
fn primary_crash_failover_keeps_every_acknowledged_write_and_the_old_primary_rejoins() {
    let mut p = Pair::synced();
    let port = p.nbd_alpha;
    let writer = std::thread::spawn(move || write_until_failure(port));
    std::thread::sleep(Duration::from_millis(800));
    p.alpha.kill9();
    let acked = writer.join().expect("writer");
    assert!(acked.len() > 50, "only {} writes before the crash", acked.len());

    // The cluster manager's failover: promote the survivor.
    p.beta.wait_for("cs:WFConnection", 15);
    p.beta.adm_ok(&["primary", "r0"]);
    let mut latest = std::collections::BTreeMap::new();
    for (off, i) in &acked {
        latest.insert(*off, *i);
    }
    let (mut c, _) = RawClient::handshake(p.nbd_beta);
    for (n, (off, i)) in latest.iter().enumerate() {
        let got = c.read(n as u64, *off, 4096).expect("read from the new Primary");
        assert!(
            got == pattern(1000 + i, 4096),
            "acknowledged write {i} at {off} lost after failover"
        );
    }
    drop(c);

    // The old Primary comes back, replays its activity log and rejoins as
    // Secondary; it receives what it missed and what it may have written alone.
    p.alpha.start();
    p.alpha.adm_ok(&["up", "r0"]);
    p.beta
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 60);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 10);
    assert!(
        p.alpha.log_text().contains("activity-log extents"),
        "{}",
        p.alpha.log_text()
    );
    p.assert_identical();
}

#[test]
fn a_primary_that_crashed_resyncs_its_hot_extents_and_then_forgets_the_crash() {
    let mut p = Pair::synced();
    qemu_io(&p.uri(), &["write -P 0x61 0 64k"]);
    p.alpha.kill9();
    let flags = p.alpha.md_flags();
    assert!(flags.iter().any(|f| f == "primary"), "killed as Primary: {flags:?}");

    // Back up: the crashed Primary's copy is the source of its hot extents.
    p.alpha.start();
    p.alpha.adm_ok(&["up", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    assert!(
        p.alpha.log_text().contains("activity-log extents"),
        "{}",
        p.alpha.log_text()
    );
    p.assert_identical();

    // Both copies UpToDate again: the crash no longer says which is
    // newer. Kept, it would decide the next power failure of both nodes
    // for a copy that may be the stale one.
    p.alpha.kill9();
    let flags = p.alpha.md_flags();
    assert!(!flags.iter().any(|f| f == "crashed-primary"), "{flags:?}");
}

#[test]
fn resync_under_application_writes_ends_identical() {
    let p = Pair::synced();
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.wait_for("cs:WFConnection", 10);
    qemu_io(&p.uri(), &["write -P 0x51 0 16M"]);
    p.beta.adm_ok(&["connect", "r0"]);
    // Writes with verification while the 16 MiB resync runs.
    run_ok(Command::new("fio").args([
        "--name=during-resync",
        "--ioengine=nbd",
        &format!("--uri={}", p.uri()),
        "--offset=8m",
        "--size=16m",
        "--bs=4k",
        "--iodepth=8",
        "--rw=randwrite",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
    ]));
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
    p.alpha.wait_for("oos:0", 10);
    p.assert_identical();
}

#[test]
fn a_dry_run_connect_says_what_would_happen_and_changes_nothing() {
    let p = Pair::synced();
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.wait_for("cs:WFConnection", 10);
    qemu_io(&p.uri(), &["write -P 0x22 0 128k"]);
    let connects_before = p.alpha.log_text().matches("peer connected").count();
    let out = p.beta.adm_ok(&["connect", "--dry-run", "r0"]);
    assert!(out.contains("uuid_compare()=-1 by rule 50"), "{out}");
    assert!(
        out.contains("alpha has 32 blocks newer than beta; beta becomes SyncTarget"),
        "{out}"
    );
    assert!(
        out.contains("would connect: this node becomes SyncTarget (bitmap-based); 128 KiB would move"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(p.beta.status().contains("cs:StandAlone"), "{}", p.beta.status());
    assert!(p.alpha.status().contains("oos:128"), "{}", p.alpha.status());
    // The peer answered the preview and acted on nothing.
    assert!(
        p.alpha.log_text().contains("dry-run connect from the peer answered"),
        "{}",
        p.alpha.log_text()
    );
    assert_eq!(
        p.alpha.log_text().matches("peer connected").count(),
        connects_before,
        "the dry run connected the peer"
    );
    // The real connect then does exactly that.
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
    p.assert_identical();
}

#[test]
fn wait_commands_pause_and_resume_a_full_sync() {
    let p = Pair::up_sized("s3cret", 1 << 30);
    p.alpha.adm_ok(&["wait-connect", "--timeout", "20", "r0"]);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.adm_ok(&["pause-sync", "r0"]);
    p.alpha.wait_for("cs:PausedSyncS", 5);
    assert!(p.alpha.status().contains(" C r--u--"), "{}", p.alpha.status());
    let paused_at = p.alpha.counter("ns");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        p.alpha.counter("ns") <= paused_at + 16 * 256,
        "data kept moving while paused"
    );
    assert!(p.alpha.status().contains("sync'ed:"), "{}", p.alpha.status());
    // The target cannot pause; it says where to do it.
    let out = p.beta.adm(&["pause-sync", "r0"]);
    assert!(!out.status.success());
    p.alpha.adm_ok(&["resume-sync", "r0"]);
    p.alpha.adm_ok(&["wait-sync", "--timeout", "120", "r0"]);
    assert_eq!(p.alpha.adm_ok(&["dstate", "r0"]), "UpToDate/UpToDate\n");
    p.assert_identical();
}

#[test]
fn new_current_uuid_with_clear_bitmap_skips_the_initial_sync() {
    let p = Pair::up("s3cret");
    p.alpha.adm_ok(&["wait-connect", "--timeout", "20", "r0"]);
    p.alpha.adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 10);
    p.beta.wait_for("ds:UpToDate/UpToDate", 10);
    assert_eq!(p.alpha.counter("ns"), 0, "nothing was copied");
    p.alpha.adm_ok(&["primary", "r0"]);
    qemu_io(&p.uri(), &["write -P 0x3c 0 1M"]);
    p.assert_identical();
}

#[test]
fn a_fixed_resync_rate_is_honoured() {
    let p = Pair::up_with("s3cret", SIZE, "c-plan-ahead 0; resync-rate 16M;");
    p.alpha.adm_ok(&["wait-connect", "--timeout", "20", "r0"]);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    std::thread::sleep(Duration::from_millis(1000));
    // One second at 16 MiB/s, plus the burst and the requests in flight.
    let sent = p.alpha.counter("ns");
    assert!(sent < 24 * 1024, "{sent} KiB sent in the first second at 16 MiB/s");
    assert!(p.alpha.status().contains("cs:SyncSource"), "{}", p.alpha.status());
    p.alpha.adm_ok(&["wait-sync", "--timeout", "60", "r0"]);
    p.assert_identical();
}

/// fio writing 4 KiB blocks at queue depth 1 to the export's first MiB
/// for `secs`: the application a resync shares the disk with.
struct Load(std::process::Child);

impl Load {
    fn start(uri: &str, secs: u32) -> Load {
        require_tool("fio", "fio");
        let child = Command::new("fio")
            .args([
                "--name=load",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--size=1m",
                "--bs=4k",
                "--iodepth=1",
                "--rw=randwrite",
                "--time_based",
                &format!("--runtime={secs}"),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("fio");
        Load(child)
    }

    /// Waits for fio's end; whether every write it made succeeded.
    fn succeeded(mut self) -> bool {
        self.0.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn c_min_rate_holds_a_resync_back_while_the_application_writes_and_adjust_lets_it_go() {
    let p = Pair::up_with("s3cret", SIZE, "c-min-rate 1M;");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.adm_ok(&["wait-sync", "--timeout", "60", "r0"]);
    let load = Load::start(&p.uri(), 8);
    std::thread::sleep(Duration::from_millis(500));
    // A full resync of 64 MiB, while the application writes.
    p.alpha.adm_ok(&["invalidate-remote", "r0"]);
    std::thread::sleep(Duration::from_millis(3000));
    // 1 MiB/s for 3 s and the first second's allowance (and the 1 MiB the
    // writes themselves bring up to date), some 5 MiB; far from the 64 MiB
    // the resync would have moved by now without c-min-rate. (A busy test
    // machine stalls fio now and then, and each stall of 100 ms lets the
    // resync take its full width for a moment: the bound leaves room.)
    let moved = (SIZE >> 10) - p.alpha.counter("oos");
    assert!(moved > 1024, "the resync hardly moved: {}", p.alpha.status());
    assert!(
        moved < 16 << 10,
        "{moved} KiB in sync after 3 s with c-min-rate 1M under load"
    );
    assert!(p.alpha.status().contains("cs:SyncSource"), "{}", p.alpha.status());
    // The operator asks why it crawls. (The resync moves a chunk now and
    // then; between two it says it yields. Look a few times, as one would.)
    let says = (0..20).find_map(|_| {
        let verbose = p.alpha.adm_ok(&["status", "--verbose", "r0"]);
        if verbose.contains("yielding to application I/O: c-min-rate 1024 KiB/s") {
            return Some(verbose);
        }
        std::thread::sleep(Duration::from_millis(50));
        None
    });
    assert!(says.is_some(), "{}", p.alpha.adm_ok(&["status", "--verbose", "r0"]));
    // The operator lets it go while the load goes on.
    for d in [&p.alpha, &p.beta] {
        d.edit_conf("c-min-rate 1M;", "c-min-rate 0;");
    }
    let out = p.alpha.adm_ok(&["adjust", "r0"]);
    assert!(out.contains("disk options"), "{out}");
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
    assert!(load.succeeded(), "fio saw a failed write");
    p.alpha.wait_for("oos:0", 10);
    p.assert_identical();
}

#[test]
fn a_resync_beside_the_application_says_how_it_steers_by_the_applications_latency() {
    // Capped so that the resync lasts long enough to be looked at.
    let p = Pair::up_with("s3cret", SIZE, "c-max-rate 8M;");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.adm_ok(&["wait-sync", "--timeout", "60", "r0"]);
    // The application alone first: the controller learns its latency.
    let load = Load::start(&p.uri(), 6);
    std::thread::sleep(Duration::from_millis(1000));
    p.alpha.adm_ok(&["invalidate-remote", "r0"]);
    let line = (0..40).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let verbose = p.alpha.adm_ok(&["status", "--verbose", "r0"]);
        let line = verbose
            .lines()
            .find(|l| l.contains("beside application I/O:"))?
            .to_owned();
        // Both figures known: the latency now and without the resync.
        (!line.contains(" -")).then_some(line)
    });
    let line = line.unwrap_or_else(|| p.alpha.adm_ok(&["status", "--verbose", "r0"]));
    let figures: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        line.contains("resync requests in flight; application latency") && figures.len() == 3,
        "{line}"
    );
    let (width, now_us, alone_us) = (figures[0], figures[1], figures[2]);
    assert!((1..=16).contains(&width), "{line}");
    assert!(now_us > 0 && alone_us > 0, "{line}");
    // The same for monitoring, in `status --json`.
    let steering = (0..20).find_map(|_| {
        let json: serde_json::Value = serde_json::from_str(&p.alpha.adm_ok(&["status", "--json", "r0"])).expect("json");
        let u = json[0]["resync_under_load"].clone();
        if u["alone_us"].as_u64().is_some() {
            return Some(u);
        }
        std::thread::sleep(Duration::from_millis(50));
        None
    });
    let steering = steering.expect("status --json never showed resync_under_load");
    assert!(steering["width"].as_u64().is_some_and(|w| w <= 16), "{steering}");
    // The load ran to its end unharmed; the resync does too.
    assert!(load.succeeded(), "fio saw a failed write");
    p.alpha.adm_ok(&["wait-sync", "--timeout", "60", "r0"]);
    p.alpha.wait_for("oos:0", 10);
    p.assert_identical();
}

#[test]
fn invalidate_resyncs_everything_from_the_peer() {
    let p = Pair::synced();
    // Damage beta's copy behind Tandem's back, then have beta throw it away.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p.beta.image)
            .expect("beta image");
        f.seek(SeekFrom::Start(5 << 20)).expect("seek");
        f.write_all(&[0xde; 8192]).expect("damage");
    }
    let out = p.alpha.adm(&["invalidate", "r0"]);
    assert_eq!(out.status.code(), Some(11), "the Primary's data cannot be invalidated");
    let nr_before = p.beta.counter("nr");
    p.beta.adm_ok(&["invalidate", "r0"]);
    p.beta.adm_ok(&["wait-sync", "--timeout", "60", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 10);
    assert!(p.beta.counter("nr") - nr_before >= SIZE / 1024, "not a full resync");
    p.assert_identical();
    // invalidate-remote from the Primary does the same in the other direction.
    p.alpha.adm_ok(&["invalidate-remote", "r0"]);
    p.alpha.adm_ok(&["wait-sync", "--timeout", "60", "r0"]);
    p.assert_identical();
}

#[test]
fn an_outdated_secondary_refuses_to_be_promoted_alone() {
    let p = Pair::synced();
    let out = p.beta.adm(&["outdate", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(-6) Refusing to be Outdated while Connected"));
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.beta.adm_ok(&["outdate", "r0"]);
    assert_eq!(p.beta.adm_ok(&["dstate", "r0"]), "Outdated/DUnknown\n");
    let out = p.beta.adm(&["primary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(-2) Need access to UpToDate data"));
    // Reconnected to the UpToDate Primary, it catches up and is UpToDate again.
    p.beta.adm_ok(&["connect", "r0"]);
    p.beta.wait_for("ds:UpToDate/UpToDate", 20);
}

#[test]
fn adjust_applies_a_new_secret_and_refuses_to_move_an_attached_disk() {
    let p = Pair::synced();
    for d in [&p.alpha, &p.beta] {
        d.edit_conf("s3cret", "n3w-s3cret");
    }
    let out = p.alpha.adm_ok(&["adjust", "r0"]);
    assert!(out.contains("applied net options; peer link restarted"), "{out}");
    p.beta.adm_ok(&["adjust", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 20);
    assert!(p.alpha.adm_ok(&["adjust", "r0"]).contains("nothing to change"));
    qemu_io(&p.uri(), &["write -P 0x7e 0 64k"]);
    p.assert_identical();

    p.alpha.edit_conf("alpha.img", "alpha2.img");
    let out = p.alpha.adm(&["adjust", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot move an attached resource"));
}

#[test]
fn the_listening_node_can_disconnect_and_connect_again_while_nobody_dials() {
    // beta listens (alpha's name sorts first and dials). With alpha away,
    // beta's pending accept must not keep the port after a disconnect.
    let p = Pair::up("s3cret");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["disconnect", "r0"]);
    for _ in 0..3 {
        p.beta.adm_ok(&["disconnect", "r0"]);
        p.beta.adm_ok(&["connect", "r0"]);
    }
    p.beta.adm_ok(&["down", "r0"]);
    p.beta.adm_ok(&["up", "r0"]);
    p.alpha.adm_ok(&["connect", "r0"]);
    p.alpha.wait_for("cs:Connected", 20);
}
