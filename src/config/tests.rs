use super::*;
use std::path::Path;

fn parse(s: &str) -> Result<Config, ConfigError> {
    parse_str(s, Path::new("/etc/tandem/t.res"))
}

/// The error's line, column and message; panics if parsing succeeded.
fn err_at(s: &str) -> (u32, u32, String) {
    let e = match parse(s) {
        Ok(_) => panic!("parsed, but should not have: {s}"),
        Err(e) => e,
    };
    let location = e.location().unwrap_or_else(|| panic!("no location in {e}")).clone();
    let message = match e {
        ConfigError::Syntax { message, .. } | ConfigError::At { message, .. } => message,
        ConfigError::Io { .. } => unreachable!("has a location"),
    };
    (location.line, location.column, message)
}

fn warnings(c: &Config) -> Vec<String> {
    c.warnings.iter().map(|w| w.to_string()).collect()
}

/// A minimal valid `on` body, for tests about something else.
const HOST: &str = "device nbd://127.0.0.1; disk /x; meta-disk internal;";

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
    assert_eq!(r.disk.on_io_error, OnIoError::Detach);
    assert_eq!(r.startup.degr_wfc_timeout_s, 0);
    assert_eq!(r.net.after_sb_2pri, AfterSb2Pri::Disconnect);
    assert_eq!(r.handlers.len(), 3);
    assert_eq!(r.handlers["local-io-error"], "echo 0 > /proc/sysrq-trigger ; halt -f");
    assert_eq!(r.hosts.len(), 2);
    let h = r.host("server2").unwrap();
    assert_eq!(h.device.to_string(), "nbd://127.0.0.1:10809/drbd_r1");
    assert_eq!(h.disk, Path::new("/dev/sdb1"));
    assert_eq!(h.address, Some("192.168.1.2:7789".parse().unwrap()));
    assert_eq!(h.meta_disk, MetaDisk::Internal);
    assert_eq!(r.peer_of("server1").unwrap().name, "server2");
    let mut w = warnings(&c);
    assert_eq!(w.len(), 6, "{w:#?}");
    assert!(
        w.remove(3).starts_with(
            "/etc/tandem/t.res:26:5: warning: handler 'pri-on-incon-degr' is accepted but Tandem never runs it"
        ),
        "{w:#?}"
    );
    assert_eq!(
        w.remove(1),
        "/etc/tandem/t.res:12:5: warning: option 'degr-wfc-timeout' is accepted but has no effect in Tandem: \
         'tandemadm wait-connect' waits as long as it is told"
    );
    assert_eq!(
        w[0],
        "/etc/tandem/t.res:3:3: warning: option 'usage-count' is accepted but has no effect in Tandem"
    );
    assert_eq!(
        w[1],
        "/etc/tandem/t.res:21:5: warning: option 'rr-conflict' is accepted but has no effect in Tandem"
    );
    assert_eq!(
        w[2],
        "/etc/tandem/t.res:31:5: warning: DRBD device '/dev/drbd0' is not an NBD endpoint: it is mapped to the NBD \
         endpoint nbd://127.0.0.1:10809/drbd_r1 (port 10809 + minor 0); write 'device nbd://127.0.0.1:10809/drbd_r1;' \
         to say so"
    );
    assert!(
        w[3].starts_with("/etc/tandem/t.res:37:5: warning: DRBD device"),
        "{}",
        w[3]
    );
}

const SEED_84_AZURE: &str = "resource r0 {
  on `hadb01` {
    device  /dev/drbd1;
    disk   /dev/sdc1;
    address 10.10.10.4:7789;
    meta-disk internal;
  }
  on `hadb02` {
    device  /dev/drbd1;
    disk   /dev/sdc1;
    address 10.10.10.5:7789;
    meta-disk internal;
  }
}
";

#[test]
fn seed_config_azure_backquotes_are_refused_where_they_stand() {
    let e = parse(SEED_84_AZURE).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "/etc/tandem/t.res:2:6: host names are written without backquotes: on hadb01 {"
    );
    let c = parse(&SEED_84_AZURE.replace('`', "")).unwrap();
    let r = c.resource("r0").unwrap();
    assert_eq!(r.host("hadb01").unwrap().device.to_string(), "nbd://127.0.0.1:10810/r0");
    assert_eq!(
        r.host("hadb02").unwrap().address,
        Some("10.10.10.5:7789".parse().unwrap())
    );
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
}

const CONTRACT_EXAMPLE: &str = r#"
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
"#;

#[test]
fn contract_example_parses_warning_only_about_what_tandem_does_not_do() {
    let c = parse(CONTRACT_EXAMPLE).unwrap();
    // DRBD options without effect here are named, never silently dropped.
    let named: Vec<&str> = c.warnings.iter().filter_map(|w| w.message.split('\'').nth(1)).collect();
    assert_eq!(named, ["wfc-timeout", "degr-wfc-timeout"], "{:?}", c.warnings);
    let r = &c.resources[0];
    assert_eq!(r.protocol, Protocol::C);
    assert_eq!(r.net.shared_secret.as_deref(), Some("s3cret"));
    assert_eq!(r.net.cram_hmac_alg.as_deref(), Some("sha256"));
    assert_eq!((r.net.ping_int_s, r.net.ping_timeout_ds), (10, 5));
    assert_eq!((r.net.connect_int_s, r.net.timeout_ds), (10, 60));
    // ko-count left at DRBD's 7: 6 s × 7.
    assert_eq!(r.net.ko_limit_us(), 42_000_000);
    assert_eq!(r.net.csums_alg.as_deref(), Some("crc32c"));
    assert_eq!(r.net.fencing, Fencing::ResourceOnly);
    assert_eq!(r.disk.resync_rate_kib_s, 102_400);
    assert_eq!(r.disk.c_plan_ahead_ds, 20);
    assert!(r.disk.disk_flushes && r.disk.md_flushes);
    assert_eq!(r.startup.degr_wfc_timeout_s, 60);
    assert_eq!(r.handlers["split-brain"], "/usr/local/bin/notify-split-brain");
    let alpha = r.host("alpha").unwrap();
    assert_eq!(
        alpha.device,
        NbdEndpoint::Tcp {
            addr: "127.0.0.1:10809".parse().unwrap(),
            export: "r0".into()
        }
    );
    let beta = r.host("beta").unwrap();
    assert_eq!(
        beta.device,
        NbdEndpoint::Unix {
            path: "/run/tandem/r0.sock".into(),
            export: "r0".into()
        }
    );
    assert_eq!(beta.meta_disk, MetaDisk::External("/var/lib/tandem/r0b.md".into()));
    assert_eq!((beta.location.line, beta.location.column), (26, 3));
    assert_eq!(r.peer_of("alpha").unwrap().name, "beta");
}

#[test]
fn drbd84_user_guide_example_with_volume_and_late_address() {
    let c = parse(
        r#"resource r0 {
  net {
    protocol C;
    cram-hmac-alg sha1;
    shared-secret "FooFunFactory";
  }
  disk {
    resync-rate 10M;
  }
  on alice {
    volume 0 {
      device minor 1;
      disk /dev/sda7;
      meta-disk internal;
    }
    address 10.1.1.31:7789;
  }
  on bob {
    volume 0 {
      device minor 1;
      disk /dev/sda7;
      meta-disk internal;
    }
    address 10.1.1.32:7789;
  }
}"#,
    )
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(r.disk.resync_rate_kib_s, 10 * 1024);
    assert_eq!(r.net.cram_hmac_alg.as_deref(), Some("sha1"));
    assert_eq!(r.host("bob").unwrap().disk, Path::new("/dev/sda7"));
    assert_eq!(r.host("alice").unwrap().device.to_string(), "nbd://127.0.0.1:10810/r0");
    assert_eq!(
        r.host("alice").unwrap().address,
        Some("10.1.1.31:7789".parse().unwrap())
    );
    let w = warnings(&c);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("12:7: warning: DRBD device 'minor 1' is not an NBD endpoint"),
        "{w:?}"
    );
}

#[test]
fn host_statements_at_resource_level_are_defaults_for_both_hosts() {
    let c = parse(
        "resource r0 {
  device /dev/drbd3 minor 3;
  disk /dev/vg/r0;
  meta-disk internal;
  on a { address 10.0.0.1:7789; }
  on b { address 10.0.0.2:7789; disk /dev/vg/other; }
  volume 0 { }
}",
    )
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(r.hosts[0].disk, Path::new("/dev/vg/r0"));
    assert_eq!(r.hosts[1].disk, Path::new("/dev/vg/other"));
    assert_eq!(r.hosts[1].device.to_string(), "nbd://127.0.0.1:10812/r0");
    // One mapping, one warning: it was written once.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
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
fn common_is_inherited_and_overridden_wherever_it_stands() {
    let c = parse(&format!(
        "resource r0 {{ disk {{ al-extents 7; }} handlers {{ split-brain \"/r0\"; }} on a {{ {HOST} }} }}
         common {{ disk {{ al-extents 601; resync-rate 40M; }} net {{ ping-int 3; }} protocol A;
                   handlers {{ split-brain \"/common\"; fence-peer \"/f\"; }} }}
         resource r1 {{ on a {{ device nbd://127.0.0.1:10900; disk /y; meta-disk internal; }} }}"
    ))
    .unwrap();
    let r0 = &c.resources[0];
    assert_eq!(
        (
            r0.disk.al_extents,
            r0.disk.resync_rate_kib_s,
            r0.net.ping_int_s,
            r0.protocol
        ),
        (7, 40 * 1024, 3, Protocol::A)
    );
    assert_eq!(r0.handlers["split-brain"], "/r0");
    assert_eq!(r0.handlers["fence-peer"], "/f");
    let r1 = &c.resources[1];
    assert_eq!(
        (r1.disk.al_extents, r1.handlers["split-brain"].as_str()),
        (601, "/common")
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn defaults_are_drbds() {
    let c = parse(&format!("resource r0 {{ on a {{ {HOST} }} }}")).unwrap();
    let r = &c.resources[0];
    assert_eq!(r.protocol, Protocol::C);
    assert_eq!(r.net, NetOptions::default());
    assert_eq!(r.disk, DiskOptions::default());
    assert_eq!(r.startup, StartupOptions::default());
    assert_eq!(
        (r.disk.resync_rate_kib_s, r.disk.al_extents, r.net.timeout_ds),
        (250, 1237, 60)
    );
}

#[test]
fn drbd83_syncer_maps_onto_disk_and_net() {
    let c = parse(&format!(
        "resource r0 {{ syncer {{ rate 33M; al-extents 257; verify-alg sha1; csums-alg md5; c-max-rate 200M; after r9; }}
         on a {{ {HOST} }} }}"
    ))
    .unwrap();
    let r = &c.resources[0];
    assert_eq!((r.disk.resync_rate_kib_s, r.disk.al_extents), (33 * 1024, 257));
    assert_eq!(
        (r.net.verify_alg.as_deref(), r.net.csums_alg.as_deref()),
        (Some("sha1"), Some("md5"))
    );
    assert_eq!(r.disk.c_max_rate_kib_s, 200 * 1024);
    let w = warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("option 'after' is accepted but has no effect"), "{w:?}");
}

#[test]
fn every_net_disk_and_startup_option_reaches_the_model() {
    let c = parse(&format!(
        "resource r0 {{
  net {{
    protocol B; shared-secret \"x y\"; cram-hmac-alg sha1; ping-int 7; ping-timeout 9; connect-int 11; timeout 50;
    ko-count 0; max-buffers 8000; max-epoch-size 4000; sndbuf-size 512k; rcvbuf-size 1M;
    after-sb-0pri discard-node-alpha; after-sb-1pri call-pri-lost-after-sb; after-sb-2pri violently-as0p;
    allow-two-primaries; allow-insecure yes; csums-alg crc32; verify-alg sha256; data-integrity-alg md5;
    fencing resource-and-stonith;
  }}
  disk {{
    on-io-error call-local-io-error; disk-timeout 45; rate 300; c-plan-ahead 0; c-fill-target 1M; c-max-rate 250;
    c-min-rate 1M; al-extents 6433; al-updates no; disk-flushes no; no-md-flushes; size 2048;
  }}
  startup {{ wfc-timeout 10; degr-wfc-timeout 20; outdated-wfc-timeout 30; become-primary-on both; }}
  on a {{ {HOST} }}
}}"
    ))
    .unwrap();
    // Parsed into the model, and each one Tandem does not act on is named.
    assert_eq!(c.warnings.len(), 13, "{:?}", c.warnings);
    assert!(
        c.warnings
            .iter()
            .all(|w| w.message.contains("has no effect in Tandem: ")),
        "{:?}",
        c.warnings
    );
    let r = &c.resources[0];
    let n = &r.net;
    assert_eq!(r.protocol, Protocol::B);
    assert_eq!(n.shared_secret.as_deref(), Some("x y"));
    assert_eq!(
        (n.ping_int_s, n.ping_timeout_ds, n.connect_int_s, n.timeout_ds),
        (7, 9, 11, 50)
    );
    assert_eq!((n.ko_count, n.max_buffers, n.max_epoch_size), (0, 8000, 4000));
    assert_eq!(n.ko_limit_us(), 0, "ko-count 0 waits forever");
    assert_eq!((n.sndbuf_size_bytes, n.rcvbuf_size_bytes), (512 << 10, 1 << 20));
    assert_eq!(n.after_sb_0pri, AfterSb0Pri::DiscardNode("alpha".into()));
    assert_eq!(n.after_sb_1pri, AfterSb1Pri::CallPriLostAfterSb);
    assert_eq!(n.after_sb_2pri, AfterSb2Pri::ViolentlyAs0p);
    assert!(n.allow_two_primaries && n.allow_insecure);
    assert_eq!(n.data_integrity_alg.as_deref(), Some("md5"));
    assert_eq!(n.fencing, Fencing::ResourceAndStonith);
    let d = &r.disk;
    assert_eq!(d.on_io_error, OnIoError::CallLocalIoError);
    assert_eq!(d.disk_timeout_us(), 4_500_000, "tenths of a second, as in DRBD");
    assert_eq!(
        (d.resync_rate_kib_s, d.c_plan_ahead_ds, d.c_fill_target_sectors),
        (300, 0, 2048)
    );
    assert_eq!(
        (d.c_max_rate_kib_s, d.c_min_rate_kib_s, d.al_extents),
        (250, Some(1024), 6433)
    );
    assert!(!d.al_updates && !d.disk_flushes && !d.md_flushes);
    // A bare size counts sectors, as in DRBD.
    assert_eq!(d.size_bytes, Some(2048 * 512));
    let s = &r.startup;
    assert_eq!(
        (s.wfc_timeout_s, s.degr_wfc_timeout_s, s.outdated_wfc_timeout_s),
        (10, 20, 30)
    );
    assert_eq!(s.become_primary_on.as_deref(), Some("both"));
}

#[test]
fn every_listed_option_word_is_handled() {
    // The lists drive "did you mean"; each word must really be handled.
    let sections: [(&str, &[&str]); 9] = [
        ("net", parser::NET_OPTIONS),
        ("net", parser::NET_NO_EFFECT),
        ("disk", parser::DISK_OPTIONS),
        ("disk", parser::DISK_NO_EFFECT),
        ("startup", parser::STARTUP_OPTIONS),
        ("startup", parser::STARTUP_NO_EFFECT),
        ("syncer", parser::SYNCER_OPTIONS),
        ("syncer", parser::SYNCER_NO_EFFECT),
        ("options", parser::OPTIONS_NO_EFFECT),
    ];
    for (section, words) in sections {
        for w in words {
            let src = format!("resource r0 {{ {section} {{ {w} 1; }} on a {{ {HOST} }} }}");
            if let Err(e) = parse(&src) {
                assert!(!e.to_string().contains("unknown option"), "{section} {w}: {e}");
            }
        }
    }
    for w in parser::GLOBAL_NO_EFFECT {
        parse(&format!("global {{ {w} 1; }}")).unwrap();
    }
}

#[test]
fn sizes_rates_and_booleans() {
    let c = parse(&format!(
        "resource r0 {{ disk {{ size 10G; no-disk-flushes; md-flushes no; c-max-rate 2G; resync-rate 1000s; }} on a {{ {HOST} }} }}"
    ))
    .unwrap();
    let d = &c.resources[0].disk;
    assert_eq!(d.size_bytes, Some(10 << 30));
    assert!(!d.disk_flushes && !d.md_flushes);
    assert_eq!(d.c_max_rate_kib_s, 2 << 20);
    assert_eq!(d.resync_rate_kib_s, 500);
    let c = parse(&format!(
        "resource r0 {{ disk {{ size 0; disk-flushes; }} on a {{ {HOST} }} }}"
    ))
    .unwrap();
    assert_eq!(c.resources[0].disk.size_bytes, None);
    assert!(c.resources[0].disk.disk_flushes);
    let c = parse(&format!(
        "resource r0 {{ net {{ allow-two-primaries no; }} disk {{ size 8s; }} on a {{ {HOST} }} }}"
    ))
    .unwrap();
    assert!(!c.resources[0].net.allow_two_primaries);
    assert_eq!(c.resources[0].disk.size_bytes, Some(4096));
}

#[test]
fn includes_expand_in_order_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    // A directory name with glob characters is taken literally.
    let base = dir.path().join("etc[1]");
    std::fs::create_dir_all(base.join("d")).unwrap();
    for (f, r, port) in [("b.res", "rb", 10901), ("a.res", "ra", 10900)] {
        std::fs::write(
            base.join("d").join(f),
            format!("resource {r} {{ on n {{ device nbd://127.0.0.1:{port}; disk /x; meta-disk internal; }} }}"),
        )
        .unwrap();
    }
    std::fs::write(base.join("d/ignored.txt"), "garbage {").unwrap();
    std::fs::write(
        base.join("global_common.conf"),
        "global { usage-count no; }\ncommon { disk { al-extents 99; } }\n",
    )
    .unwrap();
    let main = base.join("tandem.conf");
    std::fs::write(
        &main,
        "include \"global_common.conf\";\ninclude \"d/*.res\";\ninclude \"none/*.res\";\n",
    )
    .unwrap();
    let c = load(&main).unwrap();
    let names: Vec<&str> = c.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ra", "rb"]);
    assert_eq!(c.resources[1].disk.al_extents, 99);
    assert_eq!(c.resources[0].location.file, base.join("d/a.res"));
    assert!(c.warnings[0]
        .to_string()
        .starts_with(&format!("{}:1:10:", base.join("global_common.conf").display())));
    // parse_str resolves includes against the file it is told about.
    let c = parse_str("include \"d/a.res\";", &main).unwrap();
    assert_eq!(c.resources[0].name, "ra");
}

#[test]
fn include_errors() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("tandem.conf");
    let sub = dir.path().join("sub.res");
    let display = |p: &Path| p.display().to_string();
    // A cycle is refused, not looped on.
    std::fs::write(&main, "include \"sub.res\";\n").unwrap();
    std::fs::write(&sub, "\ninclude \"tandem.conf\";\n").unwrap();
    let e = load(&main).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2:1: include cycle", display(&sub))), "{e}");
    // So is a chain more than 8 deep.
    for i in 0..10 {
        std::fs::write(
            dir.path().join(format!("n{i}.res")),
            format!("include \"n{}.res\";", i + 1),
        )
        .unwrap();
    }
    std::fs::write(&main, "include \"n0.res\";\n").unwrap();
    let e = load(&main).unwrap_err().to_string();
    assert!(e.contains("n7.res:1:1: includes nested more than 8 deep"), "{e}");
    // A plain file name must exist (a glob may match nothing).
    std::fs::write(&main, "\n  include \"missing.res\";\n").unwrap();
    let e = load(&main).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2:11: included file", display(&main))), "{e}");
    assert!(e.contains("missing.res does not exist"), "{e}");
    // Errors inside an included file name that file.
    std::fs::write(&sub, "resource x {\n  bogus;\n}\n").unwrap();
    std::fs::write(&main, "include \"sub.res\";\n").unwrap();
    let e = load(&main).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}:2:3: unknown statement 'bogus' in resource x", display(&sub))
    );
    // The main file missing is an I/O error naming it.
    let e = load(&dir.path().join("nope.conf")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
    assert!(e.to_string().starts_with("cannot read "), "{e}");
    // include is top level only.
    let (line, col, msg) = err_at("resource r0 {\n  include \"x\";\n}");
    assert_eq!((line, col), (2, 3));
    assert!(msg.contains("unknown statement 'include'"), "{msg}");
}

#[test]
fn syntax_and_meaning_errors_name_line_column_and_what_was_wrong() {
    let cases: &[(&str, (u32, u32), &str)] = &[
        // Syntax.
        ("resource r0 {\n  on a {\n    disk /x\n  }\n}", (4, 3), "expected ';' after value of 'disk', found '}'"),
        ("resource r0 {\n  on a {\n    disk /x;\n", (4, 1), "expected '}' to close 'on' opened at 2:3, found end of file"),
        ("resource r0 {\n  net { shared-secret \"abc; }\n}", (2, 23), "unterminated string"),
        ("resource r0 { }\n}", (2, 1), "no open section to close"),
        // Statement shapes.
        ("resource r0 {\n  on a {\n    device /dev/drbd0\n    disk /dev/sdb1;\n  }\n}", (4, 5), "expected ';' after value of 'device', found 'disk'"),
        ("resource r0 {\n  net { ping-int; }\n}", (2, 17), "expected a value after 'ping-int', found ';'"),
        ("resource r0 {\n  net;\n}", (2, 6), "expected '{' after 'net', found ';'"),
        ("resource r0 {\n  net x { }\n}", (2, 7), "expected '{' after 'net', found 'x'"),
        ("resource {\n}", (1, 10), "expected a resource name after 'resource', found '{'"),
        ("resource r0 r1 {\n}", (1, 13), "expected '{' after 'resource r0', found 'r1'"),
        ("resource r0 {\n  on a b { }\n}", (2, 8), "expected '{' after 'on a', found 'b'"),
        ("resource r0 { disk { no-disk-flushes yes; } }", (1, 38), "expected ';' after 'no-disk-flushes', found 'yes'"),
        // Values.
        ("resource r0 {\n  protocol D;\n}", (2, 12), "protocol must be A, B or C, found 'D'"),
        ("resource r0 {\n  net { ping-int ten; }\n}", (2, 18), "ping-int must be a whole number, found 'ten'"),
        ("resource r0 {\n  net { ping-int 0; }\n}", (2, 18), "ping-int must be between 1 and 120 seconds, found '0'"),
        ("resource r0 {\n  disk { al-extents 3; }\n}", (2, 21), "al-extents must be between 7 and 65534, found '3'"),
        ("resource r0 {\n  disk { disk-timeout 6001; }\n}", (2, 23), "disk-timeout must be between 0 and 6000 tenths of a second, found '6001'"),
        ("resource r0 {\n  disk { resync-rate 10X; }\n}", (2, 22), "optional K, M or G suffix"),
        ("resource r0 {\n  disk { size 1Q; }\n}", (2, 15), "size must be a number with an optional K, M or G suffix"),
        ("resource r0 {\n  disk { disk-flushes maybe; }\n}", (2, 23), "'disk-flushes' must be yes or no, found 'maybe'"),
        ("resource r0 {\n net { after-sb-0pri maybe; }\n}", (2, 22), "after-sb-0pri must be one of disconnect, discard-younger-primary, discard-older-primary, discard-zero-changes, discard-least-changes, discard-node-NAME; found 'maybe'"),
        ("resource r0 {\n net { after-sb-1pri discard-node-a; }\n}", (2, 22), "after-sb-1pri must be one of disconnect, consensus,"),
        ("resource r0 {\n disk { on-io-error panic; }\n}", (2, 21), "on-io-error must be one of pass_on, call-local-io-error, detach"),
        ("resource r0 {\n net { fencing stonith; }\n}", (2, 16), "fencing must be one of dont-care, resource-only, resource-and-stonith"),
        // Unknown words.
        ("resource r0 {\n  net { frobnicate yes; }\n}", (2, 9), "unknown option 'frobnicate' in net section"),
        ("resource r0 {\n  net { ping-intt 5; }\n}", (2, 9), "unknown option 'ping-intt' in net section; did you mean 'ping-int'?"),
        ("resource r0 {\n  syncer { on-io-error detach; }\n}", (2, 12), "unknown option 'on-io-error' in syncer section"),
        ("global {\n  usage-cont no;\n}", (2, 3), "unknown option 'usage-cont' in global section; did you mean 'usage-count'?"),
        ("resource r0 {\n  netz { }\n}", (2, 3), "unknown statement 'netz' in resource r0; did you mean 'net'?"),
        ("resource r0 {\n on a { devise /x; }\n}", (2, 9), "unknown statement 'devise' in 'on a' section"),
        ("common {\n  on a { }\n}", (2, 3), "'on' cannot appear in the common section"),
        ("nonsense;", (1, 1), "expected 'global', 'common', 'include' or 'resource', found 'nonsense'"),
        ("on a { }", (1, 1), "'on' belongs inside a resource section"),
        // Devices.
        ("resource r0 {\n  on a { device /dev/sda; disk /x; meta-disk internal; }\n}", (2, 17), "device '/dev/sda' is not an NBD endpoint; write an NBD endpoint such as nbd://127.0.0.1:10809/r0 or nbd+unix:///r0?socket=/run/tandem/r0.sock"),
        ("resource r0 {\n  on a { device nbd://db1.example.com/r0; }\n}", (2, 17), "does not name an IP address (or localhost) and port"),
        ("resource r0 {\n  on a { device /dev/drbd_web; }\n}", (2, 17), "no minor number in '/dev/drbd_web'; add 'minor N'"),
        ("resource r0 {\n  on a { device /dev/drbd1 minor 2; }\n}", (2, 34), "the explicit minor must match the device name"),
        ("resource r0 {\n  on a { device minor 60000; }\n}", (2, 10), "minor 60000 is too large to map onto an NBD port"),
        // Addresses.
        ("resource r0 {\n on a { address example.com:7789; }\n}", (2, 17), "address must be an IP address and port such as 10.0.0.1:7789 or ipv6 [fd00::1]:7789, found 'example.com:7789' (host names are not resolved: write the IP address)"),
        ("resource r0 {\n on a { address 10.0.0.1; }\n}", (2, 17), "address must be an IP address and port"),
        ("resource r0 {\n on a { address fd00::1:7789; }\n}", (2, 17), "(an IPv6 address goes in brackets: ipv6 [ADDRESS]:PORT)"),
        ("resource r0 {\n on a { address 10.0.0.1:0; }\n}", (2, 17), "address must be an IP address and port"),
        ("resource r0 {\n on a { address localhost:7789; }\n}", (2, 17), "address must be an IP address and port"),
        ("resource r0 {\n on a { address sdp 10.0.0.1:7789; }\n}", (2, 17), "address family 'sdp' is not supported; use ipv4 or ipv6"),
        ("resource r0 {\n on a { address ssocks 10.0.0.1:7789; }\n}", (2, 17), "address family 'ssocks' is not supported"),
        ("resource r0 {\n on a { address ipv4 [::1]:7789; }\n}", (2, 22), "'ipv4' does not match the IPv6 address '[::1]:7789'"),
        ("resource r0 {\n on a { address 0.0.0.0:7789; }\n}", (2, 17), "is not one a peer can connect to"),
        ("resource r0 {\n address 10.0.0.1:7789;\n}", (2, 2), "'address' belongs inside each 'on HOST { }' section"),
        // Meta-disk.
        ("resource r0 {\n on a { meta-disk /dev/md[0]; }\n}", (2, 19), "indexed meta-disk is not supported; use an external file per resource"),
        ("resource r0 {\n on a { meta-disk /dev/sdb2 [1]; }\n}", (2, 29), "indexed meta-disk is not supported"),
        ("resource r0 {\n on a { flexible-meta-disk /dev/sdb2 [1]; }\n}", (2, 38), "indexed meta-disk is not supported"),
        ("resource r0 {\n on a { meta-disk internal internal; }\n}", (2, 28), "expected ';' after value of 'meta-disk', found 'internal'"),
        // Volumes.
        ("resource r0 {\n on a { volume 1 { } }\n}", (2, 16), "multiple volumes are not supported"),
        ("resource r0 {\n volume 2 { }\n}", (2, 9), "multiple volumes are not supported"),
        ("resource r0 {\n on a { volume 0 { address 10.0.0.1:7789; } }\n}", (2, 20), "unknown statement 'address' in volume section"),
        // Structure.
        ("resource r0 {\n}\n", (1, 1), "resource r0 has no 'on HOST { }' section"),
        ("resource r0 {\n  on a { device nbd://127.0.0.1; disk /x; }\n}", (2, 3), "'on a' has no 'meta-disk' statement (nor has resource r0)"),
        ("resource r0 {\n  on a { device nbd://127.0.0.1; meta-disk internal; }\n}", (2, 3), "'on a' has no 'disk' statement"),
        ("resource r0 {\n  on a { disk /x; meta-disk internal; }\n}", (2, 3), "'on a' has no 'device' statement"),
        ("resource r0 {\n  on a { disk none; }\n}", (2, 15), "'disk none' (a diskless node) is not supported"),
        ("resource r0 { on a { device nbd://127.0.0.1; disk /x; meta-disk internal; address 1.2.3.4:5; }\n on b { device nbd://127.0.0.1; disk /x; meta-disk internal; } }", (2, 2), "'on b' needs an 'address' for replication"),
        ("resource r0 { on a { address 1.2.3.4:5; } on b { address 1.2.3.5:5; }\n on c { } device nbd://127.0.0.1; disk /x; meta-disk internal; }", (2, 2), "resource r0 has a third 'on' section; Tandem replicates between two nodes"),
        ("resource r0 { device nbd://127.0.0.1; disk /x; meta-disk internal;\n on a { } on a { } }", (2, 11), "'on a' appears twice in resource r0 (first at 2:2)"),
        ("resource r0 {\n  floating 10.0.0.1:7789 { }\n}", (2, 3), "'floating' is not supported"),
        ("resource all {\n}", (1, 10), "a resource cannot be named 'all'"),
        ("resource \"r 0\" {\n}", (1, 10), "resource name 'r 0' contains white space"),
        ("resource ../x {\n}", (1, 10), "resource name '../x' contains '/'"),
        // Duplicates that drbdadm refuses.
        ("resource r0 {\n on a { disk /x;\n disk /y; }\n}", (3, 2), "'disk' is given twice in 'on a' (first at 2:9)"),
        ("resource r0 {\n on a { volume 0 { disk /x; } disk /y; }\n}", (2, 31), "'disk' is given twice in 'on a'"),
        ("resource r0 {\n device minor 1; device minor 2;\n}", (2, 18), "'device' is given twice in resource r0"),
        ("resource r0 {\n net { }\n net { }\n}", (3, 2), "a second 'net' section in resource r0 (the first is at 2:2)"),
        ("common { }\ncommon { }", (2, 1), "a second 'common' section"),
        ("global { }\nglobal { }", (2, 1), "a second 'global' section"),
    ];
    for (src, (line, col), needle) in cases {
        let (l, c, msg) = err_at(src);
        assert!(msg.contains(needle), "{src:?}:\n  got: {msg}\n want: {needle}");
        assert_eq!((l, c), (*line, *col), "{src:?}: {msg}");
    }
}

#[test]
fn duplicate_resources_are_refused() {
    let one = format!("resource r0 {{ on a {{ {HOST} }} }}\n");
    let (line, col, msg) = err_at(&format!("{one}{one}"));
    assert_eq!((line, col), (2, 1));
    assert_eq!(msg, "resource r0 is already defined at /etc/tandem/t.res:1:1");
}

#[test]
fn a_second_setting_of_an_option_warns_and_the_later_counts() {
    let c = parse(&format!(
        "resource r0 {{\n  protocol A;\n  net {{ protocol B; }}\n  syncer {{ rate 1M; }}\n  disk {{ resync-rate 2M;\n  no-md-flushes; md-flushes yes; }}\n  handlers {{ outdate-peer \"/a\"; fence-peer \"/b\"; }}\n  on a {{ {HOST} }}\n}}"
    ))
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(
        (r.protocol, r.disk.resync_rate_kib_s, r.disk.md_flushes),
        (Protocol::B, 2048, true)
    );
    assert_eq!(r.handlers["fence-peer"], "/b");
    let w = warnings(&c);
    assert_eq!(
        w,
        [
            "/etc/tandem/t.res:3:9: warning: protocol is set again in resource r0 (first at 2:3); the later value counts",
            "/etc/tandem/t.res:5:10: warning: option 'resync-rate' is set again in resource r0 (first at 4:12); the later value counts",
            "/etc/tandem/t.res:6:18: warning: option 'md-flushes' is set again in resource r0 (first at 6:3); the later value counts",
            "/etc/tandem/t.res:7:33: warning: handler 'fence-peer' is set again in resource r0 (first at 7:14); the later value counts",
        ]
    );
}

#[test]
fn unimplemented_drbd_options_warn_with_their_place() {
    let c = parse(&format!(
        "global {{ minor-count 8; dialog-refresh 1; disable-ip-verification; }}
resource r0 {{
  net {{ tcp-cork no; on-congestion pull-ahead; }}
  disk {{ disk-barrier no; max-bio-bvecs 1; resync-after r9; }}
  options {{ cpu-mask 1; }}
  startup {{ wait-after-sb; }}
  on a {{ node-id 0; {HOST} }}
}}"
    ))
    .unwrap();
    let w = warnings(&c);
    let named: Vec<&str> = [
        "minor-count",
        "dialog-refresh",
        "disable-ip-verification",
        "tcp-cork",
        "on-congestion",
        "disk-barrier",
        "max-bio-bvecs",
        "resync-after",
        "cpu-mask",
        "wait-after-sb",
        "node-id",
    ]
    .to_vec();
    assert_eq!(w.len(), named.len(), "{w:#?}");
    for (w, name) in w.iter().zip(named) {
        assert!(
            w.contains(&format!(
                "warning: option '{name}' is accepted but has no effect in Tandem"
            )),
            "{w}"
        );
    }
    assert!(w[3].starts_with("/etc/tandem/t.res:3:9:"), "{}", w[3]);
}

#[test]
fn unknown_algorithms_are_kept_with_a_warning() {
    let c = parse(&format!(
        "resource r0 {{ net {{ verify-alg blake2; cram-hmac-alg whirlpool; }} on a {{ {HOST} }} }}"
    ))
    .unwrap();
    assert_eq!(c.resources[0].net.verify_alg.as_deref(), Some("blake2"));
    let w = warnings(&c);
    assert!(
        w[0].contains("verify-alg 'blake2' is not an algorithm Tandem knows; crc32c will be used"),
        "{w:?}"
    );
    assert!(w[1].contains("HMAC-SHA256 will be used"), "{w:?}");
}

#[test]
fn relative_paths_warn() {
    let c = parse("resource r0 { on a { device nbd://127.0.0.1; disk r0.img; meta-disk md/r0; } }").unwrap();
    let w = warnings(&c);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("disk 'r0.img' is a relative path"), "{w:?}");
}

#[test]
fn device_forms() {
    let dev = |d: &str| {
        let c = parse(&format!(
            "resource r0 {{ on a {{ device {d}; disk /x; meta-disk internal; }} }}"
        ))?;
        Ok::<_, ConfigError>((c.resources[0].hosts[0].device.to_string(), c.warnings.len()))
    };
    assert_eq!(
        dev("nbd://10.0.0.1:9000/data").unwrap(),
        ("nbd://10.0.0.1:9000/data".into(), 0)
    );
    assert_eq!(dev("nbd://localhost").unwrap(), ("nbd://127.0.0.1:10809/r0".into(), 0));
    assert_eq!(
        dev("nbd://0.0.0.0:10809").unwrap(),
        ("nbd://0.0.0.0:10809/r0".into(), 0)
    );
    assert_eq!(dev("/dev/drbd7").unwrap(), ("nbd://127.0.0.1:10816/r0".into(), 1));
    assert_eq!(dev("drbd2").unwrap(), ("nbd://127.0.0.1:10811/r0".into(), 1));
    assert_eq!(dev("minor 4").unwrap(), ("nbd://127.0.0.1:10813/r0".into(), 1));
    assert_eq!(
        dev("/dev/drbd5 minor 5").unwrap(),
        ("nbd://127.0.0.1:10814/r0".into(), 1)
    );
    assert_eq!(
        dev("/dev/drbd_web minor 6").unwrap(),
        ("nbd://127.0.0.1:10815/r0".into(), 1)
    );
    assert!(dev("/dev/nbd0").is_err());
}

#[test]
fn address_forms() {
    let addr = |a: &str| {
        let c = parse(&format!("resource r0 {{ on a {{ address {a}; {HOST} }} }}"))?;
        Ok::<_, ConfigError>(c.resources[0].hosts[0].address)
    };
    assert_eq!(addr("10.1.1.31:7789").unwrap(), Some("10.1.1.31:7789".parse().unwrap()));
    assert_eq!(
        addr("ipv4 10.1.1.31:7789").unwrap(),
        Some("10.1.1.31:7789".parse().unwrap())
    );
    assert_eq!(
        addr("ipv6 [fd00::1]:7789").unwrap(),
        Some("[fd00::1]:7789".parse().unwrap())
    );
    assert_eq!(addr("[::1]:7789").unwrap(), Some("[::1]:7789".parse().unwrap()));
    assert!(addr("fd00::1:7789").is_err());
    assert!(addr("10.0.0.1:70000").is_err());
}

#[test]
fn endpoints_may_not_be_shared() {
    let r = |name: &str, host: &str, device: &str, address: &str| {
        format!(
            "resource {name} {{ on {host} {{ device {device}; disk /x; meta-disk internal; address {address}; }} }}\n"
        )
    };
    // The same replication address in two resources.
    let src = r("r0", "a", "nbd://127.0.0.1:1", "10.0.0.1:7789") + &r("r1", "b", "nbd://127.0.0.1:2", "10.0.0.1:7789");
    let (line, col, msg) = err_at(&src);
    assert_eq!((line, col), (2, 77));
    assert_eq!(
        msg,
        "address 10.0.0.1:7789 is already used by resource r0 ('on a' at /etc/tandem/t.res:1:77)"
    );
    // Loopback is per node: two nodes on one loopback address is fine across resources ...
    let src =
        r("r0", "a", "nbd://127.0.0.1:1", "127.0.0.1:7789") + &r("r1", "b", "nbd://127.0.0.1:2", "127.0.0.1:7789");
    parse(&src).unwrap();
    // ... but not for one node.
    let src =
        r("r0", "a", "nbd://127.0.0.1:1", "127.0.0.1:7789") + &r("r1", "a", "nbd://127.0.0.1:2", "127.0.0.1:7789");
    assert!(err_at(&src).2.contains("already used by resource r0"));
    // One node, two resources, one NBD port (the wildcard covers every address).
    let src =
        r("r0", "a", "nbd://0.0.0.0:10809", "10.0.0.1:7789") + &r("r1", "a", "nbd://10.0.0.1:10809/x", "10.0.0.1:7790");
    let (line, col, msg) = err_at(&src);
    assert_eq!((line, col), (2, 22));
    assert!(
        msg.starts_with("NBD endpoint nbd://10.0.0.1:10809/x of 'on a' is already used by resource r0"),
        "{msg}"
    );
    // Mapped DRBD devices with the same minor collide the same way.
    let src = r("r0", "a", "/dev/drbd0", "10.0.0.1:7789") + &r("r1", "a", "/dev/drbd0", "10.0.0.1:7790");
    assert!(err_at(&src).2.contains("NBD endpoint nbd://127.0.0.1:10809/r1"));
    // Different nodes may use the same NBD endpoint (they are different machines).
    let src = r("r0", "a", "/dev/drbd0", "10.0.0.1:7789") + &r("r1", "b", "/dev/drbd0", "10.0.0.2:7789");
    parse(&src).unwrap();
    // The two nodes of one resource need different addresses.
    let (line, _, msg) = err_at(
        "resource r0 {\n on a { address 10.0.0.1:7789; device nbd://127.0.0.1; disk /x; meta-disk internal; }\n on b { address 10.0.0.1:7789; device nbd://127.0.0.1; disk /x; meta-disk internal; }\n}",
    );
    assert_eq!(line, 3);
    assert!(
        msg.contains("'on a' and 'on b' both use address 10.0.0.1:7789"),
        "{msg}"
    );
}

#[test]
fn global_after_a_resource_warns() {
    let c = parse(&format!("resource r0 {{ on a {{ {HOST} }} }}\nglobal {{ }}")).unwrap();
    assert_eq!(
        warnings(&c),
        ["/etc/tandem/t.res:2:1: warning: the global section should come before any resource section"]
    );
}

#[test]
fn comments_skip_blocks_and_quoted_names() {
    let c = parse(&format!(
        "# a comment\nskip resource old {{ on x {{ nonsense; }} }}\nresource \"r0\" {{ # trailing\n  on \"a\" {{ {HOST} }} }}"
    ))
    .unwrap();
    assert_eq!(c.resources.len(), 1);
    assert_eq!(c.resources[0].hosts[0].name, "a");
    assert_eq!(c.resources[0].location.line, 3);
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        let _ = parse(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_seed_configs_never_panic_and_errors_point_inside(cut in 0usize..1200, byte in 0u8..128) {
        let mut s = SEED_83.as_bytes().to_vec();
        let at = cut % s.len();
        s[at] = byte;
        let text = String::from_utf8_lossy(&s).into_owned();
        if let Err(e) = parse(&text) {
            let loc = e.location().expect("text errors have a location");
            let lines = u32::try_from(text.lines().count()).unwrap_or(u32::MAX).max(1);
            proptest::prop_assert!(loc.line >= 1 && loc.line <= lines + 1, "{e}");
            proptest::prop_assert!(loc.column >= 1);
        }
    }

    #[test]
    fn statement_soup_never_panics(words in proptest::collection::vec(
        proptest::sample::select(vec![
            "resource", "r0", "on", "a", "{", "}", ";", "device", "nbd://127.0.0.1", "/dev/drbd0", "disk", "/x",
            "meta-disk", "internal", "address", "10.0.0.1:7789", "net", "syncer", "rate", "100M", "volume", "0",
            "common", "global", "include", "\"*.none\"", "skip", "minor", "1", "protocol", "C", "`", "#", "\n",
        ]),
        0..80,
    )) {
        let _ = parse(&words.join(" "));
    }
}

#[test]
fn nbd_allow_takes_addresses_and_prefixes_and_says_what_is_wrong() {
    let c = parse(
        "resource r0 {\n net { nbd-allow 127.0.0.1 10.1.0.0/16 ::1; }\n on a { device nbd://127.0.0.1:10809/r0; disk /dev/x; meta-disk internal; }\n}",
    )
    .unwrap();
    let allow = &c.resources[0].net.nbd_allow;
    assert_eq!(allow.len(), 3);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(allow[0].contains(ip("127.0.0.1")) && !allow[0].contains(ip("127.0.0.2")));
    assert!(allow[1].contains(ip("10.1.200.3")) && !allow[1].contains(ip("10.2.0.1")));
    assert!(allow[2].contains(ip("::1")));
    // An IPv4 client seen on a dual-stack socket.
    assert!(allow[0].contains(ip("::ffff:127.0.0.1")));
    assert!(AllowNet::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.7")));
    assert_eq!(AllowNet::parse("10.0.0.0/33"), None);
    let (line, col, msg) = err_at("resource r0 {\n net { nbd-allow 10.0.0.0/24 nonsense; }\n}");
    assert_eq!((line, col), (2, 30), "{msg}");
    assert!(msg.contains("'nonsense' is not an address or CIDR prefix"), "{msg}");
    let (_, _, msg) = err_at("resource r0 {\n net { nbd-allow; }\n}");
    assert!(msg.contains("expected addresses or CIDR prefixes"), "{msg}");
}

#[test]
fn al_extents_beyond_the_ring_are_capped_with_a_warning() {
    let c = parse(&format!(
        "resource r0 {{ disk {{ al-extents 65534; }} on a {{ {HOST} }} }}"
    ))
    .unwrap();
    assert_eq!(c.resources[0].disk.al_extents, 8120);
    let w = warnings(&c);
    assert!(
        w.iter()
            .any(|w| w.contains("al-extents 65534") && w.contains("using 8120")),
        "{w:?}"
    );
    // DRBD's default is within it, silently.
    let c = parse(&format!(
        "resource r0 {{ disk {{ al-extents 1237; }} on a {{ {HOST} }} }}"
    ))
    .unwrap();
    assert_eq!((c.resources[0].disk.al_extents, warnings(&c).len()), (1237, 0));
}
