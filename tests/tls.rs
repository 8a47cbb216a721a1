//! TLS on the replication link (`tls yes`): certificates made with the
//! openssl command line, a pair that syncs and replicates through it, an
//! eavesdropping proxy on the link that must see no block in the clear
//! (and, as a control, does without TLS), and peers refused for a
//! certificate from another CA or one issued to another node.

mod common;

use common::pair::*;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A CA in `dir/NAME-ca.{crt,key}`.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    require_tool("openssl", "openssl");
    let (crt, key) = (dir.join(format!("{name}-ca.crt")), dir.join(format!("{name}-ca.key")));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .args(["-days", "30", "-subj", &format!("/CN={name} test CA")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    (crt, key)
}

/// A certificate for `dns` (and 127.0.0.1) signed by `ca`, as
/// `dir/FILE.{crt,key}`.
fn issue(dir: &Path, ca: &(PathBuf, PathBuf), file: &str, dns: &str) -> (PathBuf, PathBuf) {
    let (crt, key, csr, ext) = (
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
        dir.join(format!("{file}.csr")),
        dir.join(format!("{file}.ext")),
    );
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{dns},IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )
    .expect("ext");
    run_ok(
        Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", &format!("/CN={dns}")]),
    );
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca.0)
            .arg("-CAkey")
            .arg(&ca.1)
            .arg("-out")
            .arg(&crt)
            .arg("-extfile")
            .arg(&ext),
    );
    (crt, key)
}

/// Bytes crossing the link, both directions, as an eavesdropper sees them.
type Capture = Arc<Mutex<Vec<u8>>>;

/// A TCP relay from `listen` to `to` that keeps a copy of what it carries.
fn eavesdropper(listen: u16, to: u16) -> Capture {
    let seen: Capture = Arc::default();
    let l = TcpListener::bind(("127.0.0.1", listen)).expect("proxy listen");
    let s2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().expect("clone"), server.try_clone().expect("clone")),
                (server, client),
            ] {
                let seen = Arc::clone(&s2);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let mut s = seen.lock().expect("capture");
                        if s.len() < 256 << 20 {
                            s.extend_from_slice(&buf[..n]);
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    seen
}

struct Certs {
    ca: PathBuf,
    alpha: (PathBuf, PathBuf),
    beta: (PathBuf, PathBuf),
}

/// Two nodes with their own configuration files (their certificates differ)
/// and, with `proxy`, alpha reaching beta through an eavesdropper.
fn tls_pair(dir: tempfile::TempDir, certs: Option<&Certs>, proxy: bool) -> (Pair, Option<Capture>) {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let relay = free_port();
    let capture = proxy.then(|| eavesdropper(relay, ports[3]));
    let d = dir.path().to_owned();
    let mk = |name: &'static str| {
        let net = match certs {
            Some(c) => {
                let (crt, key) = if name == "alpha" { &c.alpha } else { &c.beta };
                format!(
                    "tls yes; tls-certificate {}; tls-privkey {}; tls-ca {};",
                    crt.display(),
                    key.display(),
                    c.ca.display()
                )
            }
            None => "shared-secret \"s3cret\";".to_owned(),
        };
        let beta_addr = if proxy && name == "alpha" { relay } else { ports[3] };
        let conf = d.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                r#"resource r0 {{
  net {{ {net} connect-int 1; ping-int 1; ping-timeout 10; }}
  disk {{ c-max-rate 4G; }}
  on alpha {{ device nbd://127.0.0.1:{}/r0; disk {d}/alpha.img; address 127.0.0.1:{}; meta-disk {d}/alpha.md; }}
  on beta {{ device nbd://127.0.0.1:{}/r0; disk {d}/beta.img; address 127.0.0.1:{beta_addr}; meta-disk {d}/beta.md; }}
}}
"#,
                ports[0],
                ports[1],
                ports[2],
                d = d.display()
            ),
        )
        .expect("config");
        let image = d.join(format!("{name}.img"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        let mut n = Daemon::new(name, conf, &d, image);
        n.adm_ok(&["create-md", "r0"]);
        n.start();
        n.adm_ok(&["up", "r0"]);
        n
    };
    let alpha = mk("alpha");
    let beta = mk("beta");
    (
        Pair {
            dir,
            alpha,
            beta,
            nbd_alpha: ports[0],
            nbd_beta: ports[2],
        },
        capture,
    )
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("tandem-tls-").tempdir().expect("tmp")
}

fn certs(dir: &Path) -> Certs {
    let ca = make_ca(dir, "pair");
    Certs {
        alpha: issue(dir, &ca, "alpha", "alpha"),
        beta: issue(dir, &ca, "beta", "beta"),
        ca: ca.0,
    }
}

/// The longest run of `byte` in `data`.
fn longest_run(data: &[u8], byte: u8) -> usize {
    data.split(|b| *b != byte).map(<[u8]>::len).max().unwrap_or(0)
}

/// Sync, write a block pattern on the Primary, check the replica; return
/// what the eavesdropper saw.
fn replicate_through_eavesdropper(tls: bool) -> Vec<u8> {
    let dir = scratch();
    let c = tls.then(|| certs(dir.path()));
    let (p, capture) = tls_pair(dir, c.as_ref(), true);
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha);
    qemu_io(&uri, &["write -P 0xa7 0 1M", "read -P 0xa7 0 1M"]);
    p.assert_identical();
    if tls {
        assert!(p.alpha.log_text().contains("peer connected"));
    }
    let seen = capture.expect("capture").lock().expect("capture").clone();
    seen
}

#[test]
fn the_link_over_tls_replicates_and_an_eavesdropper_sees_no_block() {
    let clear = replicate_through_eavesdropper(false);
    // The control: without TLS the blocks cross in the clear.
    assert!(
        longest_run(&clear, 0xa7) >= 4096,
        "the eavesdropper saw no block at all"
    );
    let sealed = replicate_through_eavesdropper(true);
    assert!(sealed.len() > 1 << 20, "only {} bytes crossed", sealed.len());
    let run = longest_run(&sealed, 0xa7);
    assert!(run < 64, "a {run}-byte run of the written pattern crossed in the clear");
}

/// alpha gets a certificate from `ca_for_alpha` issued to `alpha_name`;
/// the connection must be refused with `why` in one of the logs.
fn refused(alpha_from_other_ca: bool, alpha_name: &str, why: &str) {
    let dir = scratch();
    let mut c = certs(dir.path());
    let ca = if alpha_from_other_ca {
        make_ca(dir.path(), "other")
    } else {
        (c.ca.clone(), dir.path().join("pair-ca.key"))
    };
    c.alpha = issue(dir.path(), &ca, "alpha-presented", alpha_name);
    let (p, _) = tls_pair(dir, Some(&c), false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let logs = format!("{}\n{}", p.alpha.log_text(), p.beta.log_text());
        if logs.contains(why) {
            assert!(logs.contains("TLS handshake with"), "{logs}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused with {why:?}:\n{logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for n in [&p.alpha, &p.beta] {
        assert!(!n.status().contains("cs:Connected"), "{}", n.status());
    }
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_is_refused() {
    refused(true, "alpha", "UnknownIssuer");
}

#[test]
fn a_peer_whose_certificate_names_another_node_is_refused() {
    refused(false, "gamma", "its certificate is not issued to alpha");
}

#[test]
fn tls_without_its_files_is_refused_at_up_with_the_fix() {
    let dir = scratch();
    let d = dir.path();
    let conf = d.join("r0.conf");
    std::fs::write(
        &conf,
        format!(
            r#"resource r0 {{
  net {{ tls yes; tls-certificate {d}/missing.crt; tls-privkey {d}/missing.key; tls-ca {d}/missing-ca.crt; }}
  on alpha {{ device nbd://127.0.0.1:{}/r0; disk {d}/alpha.img; address 127.0.0.1:{}; meta-disk {d}/alpha.md; }}
  on beta {{ device nbd://127.0.0.1:{}/r0; disk {d}/beta.img; address 127.0.0.1:{}; meta-disk {d}/beta.md; }}
}}
"#,
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            d = d.display()
        ),
    )
    .expect("config");
    std::fs::File::create(d.join("alpha.img"))
        .and_then(|f| f.set_len(16 << 20))
        .expect("image");
    let mut n = Daemon::new("alpha", conf, d, d.join("alpha.img"));
    n.adm_ok(&["create-md", "r0"]);
    n.start();
    let out = n.adm(&["up", "r0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("missing") && err.contains("TLS"), "{err}");
}

/// One node serving NBD with `nbd-tls-*` (and `nbd-tls-ca` when
/// `client_certs`); the directory libnbd and qemu read certificates from.
fn tls_export(client_certs: bool) -> (tempfile::TempDir, Daemon, u16, PathBuf) {
    let dir = scratch();
    let d = dir.path().to_owned();
    let ca = make_ca(&d, "nbd");
    let server = issue(&d, &ca, "server", "localhost");
    // What libnbd (tls-certificates=DIR) and qemu (tls-creds-x509 dir=DIR)
    // look for: ca-cert.pem, and client-cert.pem/client-key.pem.
    let client_dir = d.join("client");
    std::fs::create_dir_all(&client_dir).expect("client dir");
    std::fs::copy(&ca.0, client_dir.join("ca-cert.pem")).expect("ca");
    if client_certs {
        let client = issue(&d, &ca, "client", "client");
        std::fs::copy(&client.0, client_dir.join("client-cert.pem")).expect("cert");
        std::fs::copy(&client.1, client_dir.join("client-key.pem")).expect("key");
    }
    let port = free_port();
    let ca_line = if client_certs {
        format!("nbd-tls-ca {};", ca.0.display())
    } else {
        String::new()
    };
    let conf = d.join("r0.conf");
    std::fs::write(
        &conf,
        format!(
            r#"resource r0 {{
  net {{ nbd-tls-certificate {}; nbd-tls-privkey {}; {ca_line} }}
  on alpha {{ device nbd://127.0.0.1:{port}/r0; disk {d}/alpha.img; meta-disk {d}/alpha.md; }}
}}
"#,
            server.0.display(),
            server.1.display(),
            d = d.display()
        ),
    )
    .expect("config");
    std::fs::File::create(d.join("alpha.img"))
        .and_then(|f| f.set_len(16 << 20))
        .expect("image");
    let mut n = Daemon::new("alpha", conf, &d, d.join("alpha.img"));
    n.adm_ok(&["create-md", "r0"]);
    n.start();
    n.adm_ok(&["up", "r0"]);
    n.adm_ok(&["primary", "--force", "r0"]);
    (dir, n, port, client_dir)
}

fn qemu_io_tls(port: u16, certs: &Path, cmds: &[&str]) -> std::process::Output {
    let mut c = Command::new("qemu-io");
    c.arg("--object")
        .arg(format!(
            "tls-creds-x509,id=tls0,endpoint=client,dir={}",
            certs.display()
        ))
        .arg("--image-opts");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(format!(
        "driver=nbd,host=127.0.0.1,port={port},export=r0,tls-creds=tls0,tls-hostname=localhost"
    ));
    run(&mut c)
}

#[test]
fn nbd_over_starttls_serves_nbdinfo_and_qemu_and_refuses_clients_in_the_clear() {
    require_tool("nbdinfo", "libnbd-bin");
    require_tool("qemu-io", "qemu-utils");
    let (_dir, n, port, certs) = tls_export(false);
    // qemu writes and reads back through TLS.
    let out = qemu_io_tls(port, &certs, &["write -P 0x5c 0 256k", "read -P 0x5c 0 256k"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("fail"), "{text}");
    // nbdinfo over nbds:// sees the export.
    let info = run_ok(Command::new("nbdinfo").arg(format!(
        "nbds://localhost:{port}/r0?tls-certificates={}",
        certs.display()
    )));
    assert!(info.contains("export-size: 16777216"), "{info}");
    assert!(n.log_text().contains("NBD client secured with TLS"));
    // A client in the clear is told TLS is required, and gets nothing.
    let out = run(Command::new("nbdinfo").arg(format!("nbd://127.0.0.1:{port}/r0")));
    assert!(!out.status.success(), "a client without TLS got in");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !n.log_text().contains("this export requires TLS") {
        assert!(std::time::Instant::now() < deadline, "{}", n.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn nbd_tls_with_a_ca_demands_a_client_certificate() {
    require_tool("qemu-io", "qemu-utils");
    let (dir, _n, port, certs) = tls_export(true);
    let out = qemu_io_tls(port, &certs, &["write -P 0x6d 0 64k", "read -P 0x6d 0 64k"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("fail"), "{text}");
    // The same CA, but no client certificate: refused.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).expect("dir");
    std::fs::copy(certs.join("ca-cert.pem"), bare.join("ca-cert.pem")).expect("ca");
    let out = qemu_io_tls(port, &bare, &["read 0 4k"]);
    assert!(!out.status.success(), "a client without a certificate got in");
}
