use super::*;
use std::path::Path;

fn parse(s: &str) -> Result<Config, ConfigError> {
    parse_str(s, Path::new("/etc/tandem/t.res"))
}

fn err_at(s: &str) -> (u32, u32, String) {
    match parse(s).unwrap_err() {
        ConfigError::At { location, message } => (location.line, location.column, message),
        e => panic!("unexpected {e}"),
    }
}

/// Config 1 of `reference/seed-usage.md` (DRBD 8.3, CentOS guide).
const SEED_83: &str = r#"
global {
  usage-count no;
}
common {
  protocol C;
  syncer {
    rate 100M;
    al-extents 1801;
  }
  startup {
    degr-wfc-timeout 0;
  }
  disk {
    on-io-error detach;
  }
  net {
    after-sb-0pri disconnect;
    after-sb-1pri disconnect;
    after-sb-2pri disconnect;
    rr-conflict   disconnect;
  }
}
resource drbd_r1 {
  handlers {
    pri-on-incon-degr "echo 0 > /proc/sysrq-trigger ; halt -f";
    pri-lost-after-sb "echo 0 > /proc/sysrq-trigger ; halt -f";
    local-io-error "echo 0 > /proc/sysrq-trigger ; halt -f";
  }
  on server1 {
    device /dev/drbd0;
    disk /dev/sdb1;
    address 192.168.1.1:7789;
    meta-disk internal;
  }
  on server2 {
    device /dev/drbd0;
    disk /dev/sdb1;
    address 192.168.1.2:7789;
    meta-disk internal;
  }
}
"#;

#[test]
fn seed_config_drbd83_parses_with_mapped_devices() {
    let c = parse(SEED_83).unwrap();
    let r = c.resource("drbd_r1").unwrap();
    assert_eq!(r.protocol, Protocol::C);
    assert_eq!(r.disk.al_extents, 1801);
    assert_eq!(r.disk.resync_rate_kib_s, 102_400);
    assert_eq!(r.handlers.len(), 3);
    assert_eq!(r.hosts.len(), 2);
    let h = r.host("server2").unwrap();
    assert_eq!(h.device.to_string(), "nbd://127.0.0.1:10809/drbd_r1");
    assert_eq!(h.address, Some("192.168.1.2:7789".parse().unwrap()));
    assert_eq!(h.meta_disk, MetaDisk::Internal);
    let msgs: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(msgs.iter().any(|m| m.contains("'usage-count'")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("'rr-conflict'")), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.contains("mapped to the NBD endpoint nbd://127.0.0.1:10809/drbd_r1")),
        "{msgs:?}"
    );
    assert!(msgs[0].starts_with("/etc/tandem/t.res:"), "{msgs:?}");
}

const SEED_84_AZURE: &str = "resource r0 {\n  on `hadb01` {\n    device  /dev/drbd1;\n    disk   /dev/sdc1;\n    address 10.10.10.4:7789;\n    meta-disk internal;\n  }\n  on `hadb02` {\n    device  /dev/drbd1;\n    disk   /dev/sdc1;\n    address 10.10.10.5:7789;\n    meta-disk internal;\n  }\n}\n";

#[test]
fn seed_config_azure_backquotes_are_refused_where_they_stand() {
    let (line, col, msg) = err_at(SEED_84_AZURE);
    assert_eq!((line, col), (2, 6));
    assert!(msg.contains("without backquotes"), "{msg}");
    let c = parse(&SEED_84_AZURE.replace('`', "")).unwrap();
    let r = c.resource("r0").unwrap();
    assert_eq!(r.host("hadb01").unwrap().device.to_string(), "nbd://127.0.0.1:10810/r0");
}

#[test]
fn contract_example_parses() {
    let c = parse(
        r#"
global { }
common { net { protocol C; } disk { } }
resource r0 {
  protocol C;
  net {
    shared-secret "s3cret";
    cram-hmac-alg sha256;
    ping-int 10; ping-timeout 5;
    connect-int 10; timeout 60;
    after-sb-0pri disconnect;
    after-sb-1pri disconnect;
    after-sb-2pri disconnect;
    csums-alg crc32c; verify-alg crc32c; data-integrity-alg crc32c;
    fencing resource-only;
  }
  disk { on-io-error detach; resync-rate 100M; c-plan-ahead 20; al-extents 1237; disk-flushes yes; md-flushes yes; }
  handlers { split-brain "/usr/local/bin/notify-split-brain"; fence-peer "/usr/lib/tandem/fence"; local-io-error "/bin/true"; }
  startup { wfc-timeout 0; degr-wfc-timeout 60; }
  on alpha {
    device    nbd://127.0.0.1:10809/r0;
    disk      /var/lib/tandem/r0.img;
    address   127.0.0.1:7789;
    meta-disk internal;
  }
  on beta {
    device    nbd+unix:///r0?socket=/run/tandem/r0.sock;
    disk      /var/lib/tandem/r0b.img;
    address   127.0.0.1:7790;
    meta-disk /var/lib/tandem/r0b.md;
  }
}
"#,
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let r = &c.resources[0];
    assert_eq!(r.net.shared_secret.as_deref(), Some("s3cret"));
    assert_eq!(r.net.fencing, Fencing::ResourceOnly);
    assert_eq!(r.startup.degr_wfc_timeout_s, 60);
    assert_eq!(r.handlers["split-brain"], "/usr/local/bin/notify-split-brain");
    let beta = r.host("beta").unwrap();
    assert_eq!(
        beta.device,
        NbdEndpoint::Unix {
            path: "/run/tandem/r0.sock".into(),
            export: "r0".into()
        }
    );
    assert_eq!(beta.meta_disk, MetaDisk::External("/var/lib/tandem/r0b.md".into()));
    assert_eq!(r.peer_of("alpha").unwrap().name, "beta");
}

#[test]
fn drbd84_user_guide_example_with_volume_and_late_address() {
    let c = parse(
        r#"resource r0 { net { protocol C; cram-hmac-alg sha1; shared-secret "FooFunFactory"; } disk { resync-rate 10M; }
           on alice { volume 0 { device minor 1; disk /dev/sda7; meta-disk internal; } address 10.1.1.31:7789; }
           on bob { volume 0 { device minor 1; disk /dev/sda7; meta-disk internal; } address 10.1.1.32:7789; } }"#,
    )
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(r.disk.resync_rate_kib_s, 10 * 1024);
    assert_eq!(r.host("bob").unwrap().disk, std::path::PathBuf::from("/dev/sda7"));
    assert_eq!(r.host("alice").unwrap().device.to_string(), "nbd://127.0.0.1:10810/r0");
}

#[test]
fn a_single_on_section_is_standalone_and_needs_no_address() {
    let c = parse("resource r0 { on a { device nbd://[::1]:10900; disk /x; meta-disk internal; } }").unwrap();
    let h = &c.resources[0].hosts[0];
    assert_eq!(h.device.to_string(), "nbd://[::1]:10900/r0");
    assert!(h.address.is_none());
    assert!(c.resources[0].peer_of("a").is_none());
}

#[test]
fn common_is_inherited_and_overridden() {
    let c = parse(
        "common { disk { al-extents 601; resync-rate 40M; } net { ping-int 3; } }
         resource r0 { disk { al-extents 7; } on a { device nbd://127.0.0.1; disk /x; meta-disk internal; } }",
    )
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(
        (r.disk.al_extents, r.disk.resync_rate_kib_s, r.net.ping_int_s),
        (7, 40 * 1024, 3)
    );
}

#[test]
fn includes_expand_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    for (f, r) in [("b.res", "rb"), ("a.res", "ra")] {
        std::fs::write(
            dir.path().join("d").join(f),
            format!("resource {r} {{ on n {{ device nbd://127.0.0.1/{r}; disk /x; meta-disk internal; }} }}"),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("d/ignored.txt"), "garbage {").unwrap();
    let main = dir.path().join("tandem.conf");
    std::fs::write(&main, "include \"d/*.res\";\ninclude \"none/*.res\";\n").unwrap();
    let c = load(&main).unwrap();
    let names: Vec<&str> = c.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ra", "rb"]);
    // A cycle is refused, not looped on.
    std::fs::write(&main, "include \"tandem.conf\";\n").unwrap();
    assert!(load(&main).unwrap_err().to_string().contains("nested more than"));
    // Errors inside an included file name that file.
    std::fs::write(dir.path().join("d/a.res"), "resource x {\n  bogus;\n}\n").unwrap();
    std::fs::write(&main, "include \"d/a.res\";\n").unwrap();
    let e = load(&main).unwrap_err().to_string();
    assert!(e.contains("d/a.res:2:3: unknown statement 'bogus'"), "{e}");
}

#[test]
fn errors_name_the_line_and_column_and_what_was_wrong() {
    let cases = [
        ("resource r0 {\n  protocol D;\n}", (2, 12), "protocol must be A, B or C"),
        ("resource r0 {\n  net { ping-int ten; }\n}", (2, 18), "whole number"),
        ("resource r0 {\n  disk { al-extents 3; }\n}", (2, 21), "between 7 and 65534"),
        ("resource r0 {\n  disk { resync-rate 10X; }\n}", (2, 22), "K, M or G"),
        ("resource r0 {\n  net { frobnicate yes; }\n}", (2, 9), "unknown option 'frobnicate' in net section"),
        ("resource r0 {\n  on a { device /dev/sda; disk /x; meta-disk internal; }\n}", (2, 17), "nbd://127.0.0.1:10809/r0"),
        ("resource r0 {\n  on a { device nbd://127.0.0.1; disk /x; }\n}", (2, 3), "no 'meta-disk'"),
        ("resource r0 {\n}\n", (1, 1), "no 'on HOST"),
        ("resource r0 { on a { device nbd://127.0.0.1; disk /x; meta-disk internal; address 1.2.3.4:5; }\n on b { device nbd://127.0.0.1; disk /x; meta-disk internal; } }", (2, 2), "needs an 'address'"),
        ("resource r0 {\n on a { address example.com:7789; device nbd://127.0.0.1; disk /x; meta-disk internal; }\n}", (2, 17), "IP address and port"),
        ("resource r0 {\n on a { meta-disk /dev/md[0]; }\n}", (2, 19), "indexed meta-disk"),
        ("resource r0 {\n net { after-sb-0pri maybe; }\n}", (2, 22), "discard-least-changes"),
        ("nonsense;", (1, 1), "expected 'global', 'common', 'include' or 'resource'"),
    ];
    for (src, (line, col), needle) in cases {
        let (l, c, msg) = err_at(src);
        assert!(msg.contains(needle), "{src:?}: {msg}");
        assert_eq!((l, c), (line, col), "{src:?}: {msg}");
    }
}

#[test]
fn duplicate_resources_are_refused() {
    let one = "resource r0 { on a { device nbd://127.0.0.1; disk /x; meta-disk internal; } }\n";
    let (line, _, msg) = err_at(&format!("{one}{one}"));
    assert_eq!(line, 2);
    assert!(msg.contains("already defined at /etc/tandem/t.res:1:1"), "{msg}");
}

#[test]
fn sizes_and_booleans() {
    let c = parse("resource r0 { disk { size 10G; no-disk-flushes; md-flushes no; c-max-rate 2G; } on a { device nbd://127.0.0.1; disk /x; meta-disk internal; } }").unwrap();
    let d = &c.resources[0].disk;
    assert_eq!(d.size_bytes, Some(10 << 30));
    assert!(!d.disk_flushes && !d.md_flushes);
    assert_eq!(d.c_max_rate_kib_s, 2 << 20);
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        let _ = parse(&s);
    }

    #[test]
    fn mutated_seed_configs_never_panic(cut in 0usize..1200, byte in 0u8..128) {
        let mut s = SEED_83.as_bytes().to_vec();
        let at = cut % s.len();
        s[at] = byte;
        let _ = parse(&String::from_utf8_lossy(&s));
    }
}
