//! `tandemadm` as an operator uses it: roles, refusals that say why, the
//! status file monitoring reads, metadata commands, and config errors.

mod common;

use common::*;
use std::io::{Seek, SeekFrom, Write};
use std::process::Command;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tandemadm_says_when_tandemd_is_not_running() {
    let node = Node::configured(16 << 20, "meta-disk internal;");
    let out = node.adm(&["role", "r0"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("tandemd is not running"), "{err}");
    assert!(err.contains("start it with"), "{err}");
}

#[test]
fn roles_states_and_the_status_file_follow_the_drbd_conventions() {
    let mut node = Node::configured(64 << 20, "meta-disk internal;");
    node.adm_ok(&["create-md", "r0"]);
    node.start();
    // Down: the status file lists the minor as unconfigured.
    let status = node.status_file();
    assert!(status.starts_with("version: 8.4.11 (api:1/proto:86-101)\n"), "{status}");
    assert!(status.contains(" 0: cs:Unconfigured"), "{status}");
    assert!(!node.adm(&["role", "r0"]).status.success());

    node.adm_ok(&["up", "r0"]);
    assert_eq!(node.adm_ok(&["role", "r0"]), "Secondary/Unknown\n");
    assert_eq!(node.adm_ok(&["cstate", "r0"]), "StandAlone\n");
    // Fresh metadata: no authoritative data yet.
    assert_eq!(node.adm_ok(&["dstate", "r0"]), "Inconsistent/DUnknown\n");

    // A Secondary refuses the export, saying why.
    let out = run(Command::new("qemu-io").args(["-f", "raw", "-c", "read 0 4k", &node.uri()]));
    assert!(!out.status.success());
    let err = stderr(&out) + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("server reported: r0 is Secondary on alpha"), "{err}");
    assert!(!run(Command::new("nbdinfo").arg(node.uri())).status.success());

    // Promotion without --force is refused with DRBD's code and text.
    let out = node.adm(&["primary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    let err = stderr(&out);
    assert!(
        err.contains("r0: State change failed: (-2) Need access to UpToDate data"),
        "{err}"
    );
    assert!(err.contains("primary --force"), "{err}");

    // drbdadm's 8.3 spelling works too.
    node.adm_ok(&["--", "--overwrite-data-of-peer", "primary", "r0"]);
    assert_eq!(node.adm_ok(&["role", "r0"]), "Primary/Unknown\n");
    // And 8.3's `state`, which drbddisk-era scripts still call.
    assert_eq!(node.adm_ok(&["state", "r0"]), "Primary/Unknown\n");
    assert_eq!(node.adm_ok(&["dstate", "r0"]), "UpToDate/DUnknown\n");

    // Demotion is refused while a client holds the export.
    let (mut client, _) = RawClient::handshake(node.port);
    assert_eq!(client.write(1, 0, &pattern(3, 8192)), 0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = node.adm(&["secondary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    let err = stderr(&out);
    assert!(
        err.contains("(-12) Device is held open by someone (NBD client 127.0.0.1:"),
        "{err}"
    );

    // Counters are real: 8 KiB written through NBD.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let status = node.status_file();
    assert!(
        status.contains(" 0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----"),
        "{status}"
    );
    assert!(status.contains(" dw:8 "), "{status}");
    let json = node.adm_ok(&["status", "--json", "r0"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("status --json is JSON");
    assert_eq!(v[0]["role"], "Primary");
    assert_eq!(v[0]["nbd_clients"], 1);
    assert_eq!(node.adm_ok(&["status", "r0"]), "r0 role:Primary\n  disk:UpToDate\n");

    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(200));
    node.adm_ok(&["secondary", "r0"]);
    node.adm_ok(&["down", "r0"]);
    assert!(node.status_file().contains(" 0: cs:Unconfigured"));
    assert_eq!(node.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn data_survives_a_clean_daemon_restart() {
    let mut node = Node::primary(32 << 20);
    let (mut c, _) = RawClient::handshake(node.port);
    assert_eq!(c.write(1, 4096, &pattern(9, 65536)), 0);
    drop(c);
    assert_eq!(node.stop().and_then(|s| s.code()), Some(0));
    node.start();
    node.adm_ok(&["up", "r0"]);
    // It was UpToDate before, so no --force is needed now.
    node.adm_ok(&["primary", "r0"]);
    let (mut c, _) = RawClient::handshake(node.port);
    assert_eq!(c.read(2, 4096, 65536), Ok(pattern(9, 65536)));
}

#[test]
fn create_md_refuses_to_overwrite_and_dump_md_shows_the_uuids() {
    let node = Node::configured(64 << 20, "meta-disk internal;");
    node.adm_ok(&["create-md", "r0"]);
    let out = node.adm(&["create-md", "r0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusing to overwrite"), "{}", stderr(&out));
    node.adm_ok(&["create-md", "--force", "r0"]);
    let dump = node.adm_ok(&["dump-md", "r0"]);
    assert!(
        dump.contains("0000000000000004"),
        "fresh metadata has UUID_JUST_CREATED:\n{dump}"
    );
}

#[test]
fn external_metadata_keeps_the_whole_disk_for_data() {
    let mut node = Node::configured(32 << 20, "meta-disk DIR/r0.md;");
    node.adm_ok(&["create-md", "r0"]);
    node.start();
    node.adm_ok(&["up", "r0"]);
    node.adm_ok(&["primary", "--force", "r0"]);
    assert_eq!(node.export_size(), 32 << 20);
    assert!(node.dir.path().join("r0.md").exists());
}

#[test]
fn a_corrupt_superblock_is_reported_and_never_trusted() {
    let mut node = Node::configured(32 << 20, "meta-disk DIR/r0.md;");
    node.adm_ok(&["create-md", "r0"]);
    // Flip bits in both superblock copies (slots at the start of the md file).
    let md = node.dir.path().join("r0.md");
    let mut f = std::fs::OpenOptions::new().write(true).open(&md).expect("open md");
    for off in [100u64, 4096 + 100] {
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&[0x5a; 8]).expect("corrupt");
    }
    drop(f);
    let out = node.adm(&["dump-md", "r0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    node.start();
    let out = node.adm(&["up", "r0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert_eq!(
        node.adm_ok(&["status", "r0"]),
        "r0 role:Unconfigured\n  disk:Diskless\n"
    );
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "resource r0 {\n  on alpha {\n    disk /tmp/x.img\n  }\n}\n").expect("write");
    let out = run(Command::new(TANDEMD)
        .args(["-c", &conf.to_string_lossy(), "--node", "alpha", "--run-dir"])
        .arg(dir.path().join("run")));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:4:", conf.display())), "{err}");
    let out = run(Command::new(TANDEMADM).args(["-c", &conf.to_string_lossy(), "--node", "alpha", "dump-md", "r0"]));
    assert_eq!(out.status.code(), Some(12));
    assert!(
        stderr(&out).contains(&format!("{}:4:", conf.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_resources_are_named() {
    let node = Node::primary(16 << 20);
    let out = node.adm(&["role", "r9"]);
    assert_eq!(out.status.code(), Some(20));
    assert!(stderr(&out).contains("r9: no such resource"), "{}", stderr(&out));
}

#[test]
fn events_stream_state_changes_as_json_lines() {
    use std::io::{BufRead, BufReader};
    let mut node = Node::configured(32 << 20, "meta-disk internal;");
    node.adm_ok(&["create-md", "r0"]);
    node.start();
    node.adm_ok(&["up", "r0"]);
    let mut child = Command::new(TANDEMADM)
        .args(["-c", &node.conf.to_string_lossy(), "--node", "alpha", "--run-dir"])
        .arg(&node.run_dir)
        .args(["events", "r0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || -> serde_json::Value {
        serde_json::from_str(&lines.next().expect("a line").expect("readable")).expect("JSON line")
    };
    let first = next();
    assert_eq!(
        (first["event"].as_str(), first["role"].as_str()),
        (Some("exists"), Some("Secondary"))
    );
    assert_eq!(next()["resource"], "-", "end of the initial snapshot");
    node.adm_ok(&["primary", "--force", "r0"]);
    let change = next();
    assert_eq!(change["event"], "change");
    assert_eq!(change["role"], "Primary");
    assert_eq!(change["disk"], "UpToDate");
    let _ = child.kill();
    let _ = child.wait();
}
