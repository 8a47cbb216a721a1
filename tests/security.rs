//! Who may do what: the replication link needs a shared secret unless the
//! configuration explicitly allows an insecure link, and only root, the
//! daemon's user or the configured admin group may use the control socket.

mod common;

use common::pair::*;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// A pair whose config has no shared secret (plus `net` options).
fn unauthenticated_pair(net: &str) -> (tempfile::TempDir, Daemon, Daemon) {
    let dir = tempfile::tempdir().expect("tmp");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mk = |name: &'static str| {
        let conf = dir.path().join(format!("{name}.conf"));
        write_conf(&conf, dir.path(), "", ports, "", net, "");
        let image = dir.path().join(format!("{name}.img"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        let mut d = Daemon::new(name, conf, dir.path(), image);
        d.adm_ok(&["create-md", "r0"]);
        d.start();
        d
    };
    let (a, b) = (mk("alpha"), mk("beta"));
    (dir, a, b)
}

#[test]
fn a_link_without_a_shared_secret_is_refused_unless_allow_insecure() {
    let (_dir, alpha, _beta) = unauthenticated_pair("");
    let out = alpha.adm(&["up", "r0"]);
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to connect without a shared-secret") && err.contains("allow-insecure yes"),
        "{err}"
    );
    let out = alpha.adm(&["connect", "--dry-run", "r0"]);
    assert!(!out.status.success());

    let (_dir, alpha, beta) = unauthenticated_pair("allow-insecure yes;");
    alpha.adm_ok(&["up", "r0"]);
    beta.adm_ok(&["up", "r0"]);
    alpha.wait_for("cs:Connected", 20);
    assert!(alpha.log_text().contains("not authenticated"));
}

fn as_user(node: &Node, gid: u32, args: &[&str]) -> std::process::Output {
    run(Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups", TANDEMADM])
        .args(["-c", &node.conf.to_string_lossy(), "--node", "alpha", "--run-dir"])
        .arg(&node.run_dir)
        .args(args))
}

fn open_dirs(node: &Node) {
    for d in [node.dir.path(), node.run_dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn a_user_outside_the_admin_group_cannot_change_state() {
    require_tool("setpriv", "util-linux");
    let node = Node::primary(16 << 20);
    open_dirs(&node);
    let out = as_user(&node, 65534, &["secondary", "r0"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(node.adm_ok(&["role", "r0"]), "Primary/Unknown\n");
}

#[test]
fn the_admin_group_may_use_tandemadm_and_is_logged() {
    require_tool("setpriv", "util-linux");
    let mut node = Node::configured(16 << 20, "meta-disk internal;");
    node.adm_ok(&["create-md", "r0"]);
    node.start_with(&["--admin-group", "users"]);
    node.adm_ok(&["up", "r0"]);
    node.adm_ok(&["primary", "--force", "r0"]);
    open_dirs(&node);
    // nobody outside the group: refused by the socket's mode already.
    let out = as_user(&node, 65534, &["secondary", "r0"]);
    assert!(!out.status.success(), "{out:?}");
    // nobody with the admin group (gid 100, "users"): allowed.
    let out = as_user(&node, 100, &["secondary", "r0"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(node.adm_ok(&["role", "r0"]), "Secondary/Unknown\n");
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("control request") && l.contains("65534") && l.contains("Secondary")),
        "{log}"
    );
}

/// A standalone node whose `net` section says `nbd-allow ALLOW;`.
fn node_allowing(allow: &str) -> Node {
    let mut node = Node::configured(16 << 20, "meta-disk internal;");
    let conf = std::fs::read_to_string(&node.conf).expect("conf");
    let conf = conf.replacen(
        "resource r0 {",
        &format!("resource r0 {{\n  net {{ nbd-allow {allow}; }}"),
        1,
    );
    std::fs::write(&node.conf, conf).expect("conf");
    node.adm_ok(&["create-md", "r0"]);
    node.start();
    node.adm_ok(&["up", "r0"]);
    node.adm_ok(&["primary", "--force", "r0"]);
    node
}

#[test]
fn nbd_clients_outside_the_allow_list_are_turned_away() {
    require_tool("nbdinfo", "libnbd-bin");
    let node = node_allowing("192.0.2.0/24");
    let out = run(Command::new("nbdinfo").arg(node.uri()));
    assert!(!out.status.success(), "a client outside nbd-allow got in");
    assert!(node.log().contains("not in nbd-allow"), "{}", node.log());
    let node = node_allowing("192.0.2.0/24 127.0.0.1");
    let out = run_ok(Command::new("nbdinfo").arg(node.uri()));
    assert!(out.contains("export-size: 16"), "{out}");
}
