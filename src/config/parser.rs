//! Meaning for the statement tree: `global`, `common`, `include`, `resource`,
//! `on`, and the option sections, with DRBD 8.3 and 8.4 spellings.
//!
//! DRBD options Tandem does not implement are accepted with a warning that
//! names them; a word DRBD does not know either is an error.

use super::model::*;
use super::syntax::{Arg, Stmt};
use super::ConfigError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The defaults a `common` section gives every resource.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub protocol: Protocol,
    pub net: NetOptions,
    pub disk: DiskOptions,
    pub startup: StartupOptions,
    pub handlers: std::collections::BTreeMap<String, String>,
}

/// The default NBD port, which `/dev/drbdN` devices are mapped onto (+ N).
pub const NBD_PORT_DEFAULT: u16 = 10809;

fn err(location: &Location, message: impl Into<String>) -> ConfigError {
    ConfigError::At {
        location: location.clone(),
        message: message.into(),
    }
}

pub struct Ctx<'a> {
    pub warnings: &'a mut Vec<Warning>,
}

impl Ctx<'_> {
    fn warn(&mut self, location: &Location, message: impl Into<String>) {
        self.warnings.push(Warning {
            location: location.clone(),
            message: message.into(),
        });
    }

    fn unimplemented(&mut self, s: &Stmt, section: &str) {
        self.warn(
            &s.location,
            format!(
                "option '{}' in {section} section is accepted but has no effect in Tandem",
                s.keyword
            ),
        );
    }
}

fn one_arg(s: &Stmt) -> Result<&Arg, ConfigError> {
    match (s.args.as_slice(), &s.block) {
        ([a], None) => Ok(a),
        (_, Some(_)) => Err(err(
            &s.location,
            format!("'{}' takes a value, not a section", s.keyword),
        )),
        ([], None) => Err(err(&s.location, format!("'{}' needs a value", s.keyword))),
        (_, None) => Err(err(
            &s.args[1].location,
            format!("'{}' takes one value, found more", s.keyword),
        )),
    }
}

fn block(s: &Stmt) -> Result<&[Stmt], ConfigError> {
    s.block
        .as_deref()
        .ok_or_else(|| err(&s.location, format!("expected '{{' after '{}'", s.keyword)))
}

fn number(a: &Arg, what: &str) -> Result<u64, ConfigError> {
    a.text.parse::<u64>().map_err(|_| {
        err(
            &a.location,
            format!("{what} must be a whole number, found '{}'", a.text),
        )
    })
}

fn small(a: &Arg, what: &str) -> Result<u32, ConfigError> {
    let n = number(a, what)?;
    u32::try_from(n).map_err(|_| err(&a.location, format!("{what} {n} is too large")))
}

/// `N`, `NK`, `NM`, `NG`, `NT` (powers of two); `Ns` = 512-byte sectors.
/// `unit` is what a bare number means (1 for bytes, 1024 for KiB).
pub fn size_with_suffix(a: &Arg, unit: u64, what: &str) -> Result<u64, ConfigError> {
    let t = a.text.as_str();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let bad = || {
        err(
            &a.location,
            format!("{what} must be a number with an optional K, M or G suffix, found '{t}'"),
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => unit,
        "s" => 512,
        "k" | "K" | "KiB" | "KB" => 1 << 10,
        "m" | "M" | "MiB" | "MB" => 1 << 20,
        "g" | "G" | "GiB" | "GB" => 1 << 30,
        "t" | "T" | "TiB" | "TB" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| err(&a.location, format!("{what} '{t}' is too large")))
}

fn rate_kib(a: &Arg, what: &str) -> Result<u64, ConfigError> {
    Ok(size_with_suffix(a, 1024, what)? / 1024)
}

fn boolean(s: &Stmt) -> Result<bool, ConfigError> {
    match s.args.as_slice() {
        [] => Ok(true),
        [a] => match a.text.as_str() {
            "yes" | "on" | "true" => Ok(true),
            "no" | "off" | "false" => Ok(false),
            other => Err(err(
                &a.location,
                format!("'{}' must be yes or no, found '{other}'", s.keyword),
            )),
        },
        _ => Err(err(&s.location, format!("'{}' takes yes or no", s.keyword))),
    }
}

fn protocol(a: &Arg) -> Result<Protocol, ConfigError> {
    match a.text.as_str() {
        "A" | "a" => Ok(Protocol::A),
        "B" | "b" => Ok(Protocol::B),
        "C" | "c" => Ok(Protocol::C),
        other => Err(err(&a.location, format!("protocol must be A, B or C, found '{other}'"))),
    }
}

/// DRBD options that exist but that Tandem does not implement, per section.
const NET_ACCEPTED: &[&str] = &[
    "rr-conflict",
    "tcp-cork",
    "use-rle",
    "on-congestion",
    "congestion-fill",
    "congestion-extents",
    "always-asbp",
    "csums-after-crash-only",
    "socket-check-timeout",
    "unplug-watermark",
    "sndbuf-size",
    "rcvbuf-size",
    "discard-my-data",
    "transport",
    "verify-alg-options",
];
const DISK_ACCEPTED: &[&str] = &[
    "disk-barrier",
    "disk-drain",
    "no-disk-barrier",
    "no-disk-drain",
    "resync-after",
    "c-delay-target",
    "disk-timeout",
    "discard-zeroes-if-aligned",
    "rs-discard-granularity",
    "read-balancing",
    "max-bio-bvecs",
    "disable-write-same",
    "use-bmbv",
    "no-disk-flushes-on-resync",
];
const STARTUP_ACCEPTED: &[&str] = &["wait-after-sb", "stacked-timeouts"];
const GLOBAL_ACCEPTED: &[&str] = &[
    "usage-count",
    "minor-count",
    "dialog-refresh",
    "disable-ip-verification",
    "udev-always-use-vnr",
    "cmd-timeout-short",
    "cmd-timeout-medium",
    "cmd-timeout-long",
];
const OPTIONS_ACCEPTED: &[&str] = &[
    "cpu-mask",
    "on-no-data-accessible",
    "auto-promote",
    "quorum",
    "on-no-quorum",
    "quorum-minimum-redundancy",
    "on-suspended-primary-outdated",
    "twopc-timeout",
    "twopc-retry-timeout",
    "peer-ack-window",
    "peer-ack-delay",
    "max-io-depth",
];

pub fn global(ctx: &mut Ctx<'_>, s: &Stmt) -> Result<(), ConfigError> {
    for o in block(s)? {
        if GLOBAL_ACCEPTED.contains(&o.keyword.as_str()) {
            ctx.unimplemented(o, "global");
        } else {
            return Err(err(
                &o.location,
                format!("unknown option '{}' in global section", o.keyword),
            ));
        }
    }
    Ok(())
}

/// A `common` section, or the option sections of a `resource`.
pub fn section(ctx: &mut Ctx<'_>, d: &mut Defaults, s: &Stmt) -> Result<bool, ConfigError> {
    match s.keyword.as_str() {
        "protocol" => d.protocol = protocol(one_arg(s)?)?,
        "net" => {
            for o in block(s)? {
                net(ctx, d, o)?;
            }
        }
        "disk" if s.block.is_some() => {
            for o in block(s)? {
                disk(ctx, d, o)?;
            }
        }
        "syncer" => {
            for o in block(s)? {
                match o.keyword.as_str() {
                    "rate" => d.disk.resync_rate_kib_s = rate_kib(one_arg(o)?, "rate")?,
                    "al-extents" => d.disk.al_extents = al_extents(one_arg(o)?)?,
                    "verify-alg" => d.net.verify_alg = Some(one_arg(o)?.text.clone()),
                    "csums-alg" => d.net.csums_alg = Some(one_arg(o)?.text.clone()),
                    "after"
                    | "cpu-mask"
                    | "use-rle"
                    | "delay-probe-volume"
                    | "delay-probe-interval"
                    | "c-plan-ahead"
                    | "c-fill-target"
                    | "c-delay-target"
                    | "c-max-rate"
                    | "c-min-rate" => ctx.unimplemented(o, "syncer"),
                    other => return Err(err(&o.location, format!("unknown option '{other}' in syncer section"))),
                }
            }
        }
        "startup" => {
            for o in block(s)? {
                match o.keyword.as_str() {
                    "wfc-timeout" => d.startup.wfc_timeout_s = small(one_arg(o)?, "wfc-timeout")?,
                    "degr-wfc-timeout" => d.startup.degr_wfc_timeout_s = small(one_arg(o)?, "degr-wfc-timeout")?,
                    "outdated-wfc-timeout" => {
                        d.startup.outdated_wfc_timeout_s = small(one_arg(o)?, "outdated-wfc-timeout")?
                    }
                    "become-primary-on" => d.startup.become_primary_on = Some(one_arg(o)?.text.clone()),
                    k if STARTUP_ACCEPTED.contains(&k) => ctx.unimplemented(o, "startup"),
                    other => return Err(err(&o.location, format!("unknown option '{other}' in startup section"))),
                }
            }
        }
        "handlers" => {
            for o in block(s)? {
                let cmd = one_arg(o)?;
                d.handlers.insert(o.keyword.clone(), cmd.text.clone());
            }
        }
        "options" => {
            for o in block(s)? {
                if OPTIONS_ACCEPTED.contains(&o.keyword.as_str()) {
                    ctx.unimplemented(o, "options");
                } else {
                    return Err(err(
                        &o.location,
                        format!("unknown option '{}' in options section", o.keyword),
                    ));
                }
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn al_extents(a: &Arg) -> Result<u32, ConfigError> {
    let n = small(a, "al-extents")?;
    if !(7..=65534).contains(&n) {
        return Err(err(
            &a.location,
            format!("al-extents must be between 7 and 65534, found {n}"),
        ));
    }
    Ok(n)
}

fn fencing(a: &Arg) -> Result<Fencing, ConfigError> {
    match a.text.as_str() {
        "dont-care" => Ok(Fencing::DontCare),
        "resource-only" => Ok(Fencing::ResourceOnly),
        "resource-and-stonith" => Ok(Fencing::ResourceAndStonith),
        other => Err(err(
            &a.location,
            format!("fencing must be dont-care, resource-only or resource-and-stonith, found '{other}'"),
        )),
    }
}

fn net(ctx: &mut Ctx<'_>, d: &mut Defaults, o: &Stmt) -> Result<(), ConfigError> {
    let n = &mut d.net;
    let k = o.keyword.as_str();
    match k {
        "protocol" => d.protocol = protocol(one_arg(o)?)?,
        "shared-secret" => n.shared_secret = Some(one_arg(o)?.text.clone()),
        "cram-hmac-alg" => n.cram_hmac_alg = Some(one_arg(o)?.text.clone()),
        "ping-int" => n.ping_int_s = small(one_arg(o)?, k)?,
        "ping-timeout" => n.ping_timeout_ds = small(one_arg(o)?, k)?,
        "connect-int" => n.connect_int_s = small(one_arg(o)?, k)?,
        "timeout" => n.timeout_ds = small(one_arg(o)?, k)?,
        "ko-count" => n.ko_count = small(one_arg(o)?, k)?,
        "max-buffers" => n.max_buffers = small(one_arg(o)?, k)?,
        "max-epoch-size" => n.max_epoch_size = small(one_arg(o)?, k)?,
        "after-sb-0pri" => {
            let a = one_arg(o)?;
            n.after_sb_0pri = match a.text.as_str() {
                "disconnect" => AfterSb0Pri::Disconnect,
                "discard-younger-primary" => AfterSb0Pri::DiscardYoungerPrimary,
                "discard-older-primary" => AfterSb0Pri::DiscardOlderPrimary,
                "discard-zero-changes" => AfterSb0Pri::DiscardZeroChanges,
                "discard-least-changes" => AfterSb0Pri::DiscardLeastChanges,
                t => match t.strip_prefix("discard-node-") {
                    Some(node) if !node.is_empty() => AfterSb0Pri::DiscardNode(node.to_owned()),
                    _ => return Err(err(&a.location, format!("after-sb-0pri must be one of disconnect, discard-younger-primary, discard-older-primary, discard-zero-changes, discard-least-changes, discard-node-NAME; found '{t}'"))),
                },
            }
        }
        "after-sb-1pri" => {
            let a = one_arg(o)?;
            n.after_sb_1pri = match a.text.as_str() {
                "disconnect" => AfterSb1Pri::Disconnect,
                "consensus" => AfterSb1Pri::Consensus,
                "discard-secondary" => AfterSb1Pri::DiscardSecondary,
                "call-pri-lost-after-sb" => AfterSb1Pri::CallPriLostAfterSb,
                "violently-as0p" => AfterSb1Pri::ViolentlyAs0p,
                t => return Err(err(&a.location, format!("after-sb-1pri must be one of disconnect, consensus, discard-secondary, call-pri-lost-after-sb, violently-as0p; found '{t}'"))),
            }
        }
        "after-sb-2pri" => {
            let a = one_arg(o)?;
            n.after_sb_2pri = match a.text.as_str() {
                "disconnect" => AfterSb2Pri::Disconnect,
                "call-pri-lost-after-sb" => AfterSb2Pri::CallPriLostAfterSb,
                "violently-as0p" => AfterSb2Pri::ViolentlyAs0p,
                t => {
                    return Err(err(
                        &a.location,
                        format!(
                        "after-sb-2pri must be one of disconnect, call-pri-lost-after-sb, violently-as0p; found '{t}'"
                    ),
                    ))
                }
            }
        }
        "allow-two-primaries" => n.allow_two_primaries = boolean(o)?,
        "allow-insecure" => n.allow_insecure = boolean(o)?,
        "csums-alg" => n.csums_alg = Some(algorithm(ctx, o)?),
        "verify-alg" => n.verify_alg = Some(algorithm(ctx, o)?),
        "data-integrity-alg" => n.data_integrity_alg = Some(algorithm(ctx, o)?),
        "fencing" => n.fencing = fencing(one_arg(o)?)?,
        _ if NET_ACCEPTED.contains(&k) => ctx.unimplemented(o, "net"),
        _ => return Err(err(&o.location, format!("unknown option '{k}' in net section"))),
    }
    Ok(())
}

fn algorithm(ctx: &mut Ctx<'_>, o: &Stmt) -> Result<String, ConfigError> {
    let a = one_arg(o)?;
    if !matches!(a.text.as_str(), "crc32c" | "sha1" | "sha256" | "md5" | "crc32") {
        ctx.warn(
            &a.location,
            format!(
                "{} '{}' is not one Tandem implements; crc32c will be used",
                o.keyword, a.text
            ),
        );
    }
    Ok(a.text.clone())
}

fn disk(ctx: &mut Ctx<'_>, d: &mut Defaults, o: &Stmt) -> Result<(), ConfigError> {
    let dk = &mut d.disk;
    let k = o.keyword.as_str();
    match k {
        "on-io-error" => {
            let a = one_arg(o)?;
            dk.on_io_error = match a.text.as_str() {
                "pass_on" | "pass-on" => OnIoError::PassOn,
                "call-local-io-error" => OnIoError::CallLocalIoError,
                "detach" => OnIoError::Detach,
                t => {
                    return Err(err(
                        &a.location,
                        format!("on-io-error must be pass_on, call-local-io-error or detach; found '{t}'"),
                    ))
                }
            }
        }
        "resync-rate" | "rate" => dk.resync_rate_kib_s = rate_kib(one_arg(o)?, k)?,
        "c-plan-ahead" => dk.c_plan_ahead_ds = small(one_arg(o)?, k)?,
        "c-fill-target" => dk.c_fill_target_sectors = size_with_suffix(one_arg(o)?, 512, k)? / 512,
        "c-max-rate" => dk.c_max_rate_kib_s = rate_kib(one_arg(o)?, k)?,
        "c-min-rate" => dk.c_min_rate_kib_s = rate_kib(one_arg(o)?, k)?,
        "al-extents" => dk.al_extents = al_extents(one_arg(o)?)?,
        "al-updates" => dk.al_updates = boolean(o)?,
        "disk-flushes" => dk.disk_flushes = boolean(o)?,
        "no-disk-flushes" => dk.disk_flushes = false,
        "md-flushes" => dk.md_flushes = boolean(o)?,
        "no-md-flushes" => dk.md_flushes = false,
        "size" => dk.size_bytes = Some(size_with_suffix(one_arg(o)?, 1, k)?),
        "fencing" => d.net.fencing = fencing(one_arg(o)?)?,
        _ if DISK_ACCEPTED.contains(&k) => ctx.unimplemented(o, "disk"),
        _ => return Err(err(&o.location, format!("unknown option '{k}' in disk section"))),
    }
    Ok(())
}

/// Host statements that may also sit directly in `resource` as defaults.
#[derive(Debug, Clone, Default)]
pub struct HostDefaults {
    device: Option<(NbdEndpoint, Location)>,
    disk: Option<PathBuf>,
    meta_disk: Option<MetaDisk>,
    address: Option<SocketAddr>,
}

/// One host statement (`device`, `disk`, `meta-disk`, `address`); false if
/// the keyword is not one.
pub fn host_statement(ctx: &mut Ctx<'_>, h: &mut HostDefaults, s: &Stmt, resource: &str) -> Result<bool, ConfigError> {
    match s.keyword.as_str() {
        "device" => h.device = Some((device(ctx, s, resource)?, s.location.clone())),
        "disk" if s.block.is_none() => h.disk = Some(PathBuf::from(&one_arg(s)?.text)),
        "meta-disk" | "flexible-meta-disk" => {
            let a = s
                .args
                .first()
                .ok_or_else(|| err(&s.location, "'meta-disk' needs 'internal' or a path"))?;
            if s.args.len() > 1 || a.text.contains('[') {
                return Err(err(
                    &a.location,
                    "indexed meta-disk is not supported; use an external file per resource",
                ));
            }
            h.meta_disk = Some(match a.text.as_str() {
                "internal" => MetaDisk::Internal,
                p => MetaDisk::External(PathBuf::from(p)),
            });
        }
        "address" => h.address = Some(address(s)?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn device(ctx: &mut Ctx<'_>, s: &Stmt, resource: &str) -> Result<NbdEndpoint, ConfigError> {
    let minor = match s.args.as_slice() {
        [m, n] if m.text == "minor" => Some(number(n, "minor")?),
        [a] if a.text.starts_with("/dev/drbd") => {
            let tail = &a.text["/dev/drbd".len()..];
            Some(
                tail.parse::<u64>()
                    .map_err(|_| err(&a.location, format!("cannot read a minor number from '{}'", a.text)))?,
            )
        }
        [a] => return nbd_uri(a, resource),
        _ => {
            return Err(err(
                &s.location,
                "'device' takes one value: an nbd:// or nbd+unix:// URI",
            ))
        }
    };
    let minor = minor.unwrap_or(0);
    let port = u16::try_from(u64::from(NBD_PORT_DEFAULT) + minor).map_err(|_| {
        err(
            &s.location,
            format!("minor {minor} is too large to map onto an NBD port"),
        )
    })?;
    let ep = NbdEndpoint::Tcp {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        export: resource.to_owned(),
    };
    ctx.warn(
        &s.location,
        format!("DRBD device mapped to the NBD endpoint {ep} (10809 + minor); write 'device {ep};' to say so"),
    );
    Ok(ep)
}

/// `nbd://HOST[:PORT][/EXPORT]` or `nbd+unix:///EXPORT?socket=PATH`.
pub fn nbd_uri(a: &Arg, resource: &str) -> Result<NbdEndpoint, ConfigError> {
    let t = a.text.as_str();
    let bad = |why: &str| {
        err(
            &a.location,
            format!("device '{t}' {why}; write an NBD endpoint such as nbd://127.0.0.1:10809/{resource} or nbd+unix:///{resource}?socket=/run/tandem/{resource}.sock"),
        )
    };
    if let Some(rest) = t.strip_prefix("nbd+unix://") {
        let (path_part, query) = rest.split_once('?').ok_or_else(|| bad("has no ?socket=PATH"))?;
        let export = path_part.trim_start_matches('/');
        let socket = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("socket="))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("has no ?socket=PATH"))?;
        return Ok(NbdEndpoint::Unix {
            path: PathBuf::from(socket),
            export: if export.is_empty() {
                resource.to_owned()
            } else {
                export.to_owned()
            },
        });
    }
    let rest = t.strip_prefix("nbd://").ok_or_else(|| bad("is not an NBD endpoint"))?;
    let (hostport, export) = match rest.split_once('/') {
        Some((hp, e)) => (hp, e),
        None => (rest, ""),
    };
    let addr = host_port(hostport, NBD_PORT_DEFAULT).ok_or_else(|| bad("does not name an IP address and port"))?;
    Ok(NbdEndpoint::Tcp {
        addr,
        export: if export.is_empty() {
            resource.to_owned()
        } else {
            export.to_owned()
        },
    })
}

/// `1.2.3.4[:port]`, `[::1][:port]`, `localhost[:port]`. IP literals only:
/// resolving names is not the parser's business (and must not block).
fn host_port(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a); // 10.0.0.1:7789, [::1]:7789
    }
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port));
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if s == "localhost" {
        return Some(SocketAddr::new(localhost, default_port));
    }
    match s.split_once(':') {
        Some(("localhost", port)) => Some(SocketAddr::new(localhost, port.parse().ok()?)),
        _ => None,
    }
}

fn address(s: &Stmt) -> Result<SocketAddr, ConfigError> {
    let a = match s.args.as_slice() {
        [a] => a,
        [fam, a] if matches!(fam.text.as_str(), "ipv4" | "ipv6") => a,
        [fam, _] if matches!(fam.text.as_str(), "ssocks" | "sdp" | "af_inet") => {
            return Err(err(
                &fam.location,
                format!("address family '{}' is not supported; use ipv4 or ipv6", fam.text),
            ))
        }
        _ => return Err(err(&s.location, "'address' takes [ipv4|ipv6] ADDRESS:PORT")),
    };
    let addr = host_port(&a.text, 0).filter(|a| a.port() != 0);
    addr.ok_or_else(|| {
        err(
            &a.location,
            format!(
                "address must be an IP address and port such as 10.0.0.1:7789, found '{}'",
                a.text
            ),
        )
    })
}

/// `on NAME { … }`.
pub fn host(ctx: &mut Ctx<'_>, s: &Stmt, defaults: &HostDefaults, resource: &str) -> Result<Host, ConfigError> {
    let name = match s.args.as_slice() {
        [n] => n.text.clone(),
        _ => return Err(err(&s.location, "expected one host name after 'on'")),
    };
    let mut h = defaults.clone();
    for o in block(s)? {
        if host_statement(ctx, &mut h, o, resource)? {
            continue;
        }
        match o.keyword.as_str() {
            "volume" => {
                match o.args.first().map(|a| a.text.as_str()) {
                    Some("0") => {}
                    _ => {
                        return Err(err(
                            &o.location,
                            "multiple volumes are not supported; use 'volume 0' or one resource per disk",
                        ))
                    }
                }
                for v in block(o)? {
                    if !host_statement(ctx, &mut h, v, resource)? {
                        return Err(err(
                            &v.location,
                            format!("unknown option '{}' in volume section", v.keyword),
                        ));
                    }
                }
            }
            "node-id" => ctx.unimplemented(o, "on"),
            other => {
                return Err(err(
                    &o.location,
                    format!("unknown option '{other}' in 'on {name}' section"),
                ))
            }
        }
    }
    let missing = |what: &str| err(&s.location, format!("'on {name}' has no '{what}' statement"));
    let device = h.device.map(|(d, _)| d).ok_or_else(|| missing("device"))?;
    let disk = h.disk.ok_or_else(|| missing("disk"))?;
    let meta_disk = h.meta_disk.ok_or_else(|| missing("meta-disk"))?;
    Ok(Host {
        name,
        device,
        disk,
        address: h.address,
        meta_disk,
        location: s.location.clone(),
    })
}

/// `resource NAME { … }`.
pub fn resource(ctx: &mut Ctx<'_>, s: &Stmt, common: &Defaults) -> Result<Resource, ConfigError> {
    let name = match s.args.as_slice() {
        [n] => n.text.clone(),
        _ => return Err(err(&s.location, "expected one resource name after 'resource'")),
    };
    let mut d = common.clone();
    let mut hd = HostDefaults::default();
    let mut hosts = Vec::new();
    for o in block(s)? {
        if section(ctx, &mut d, o)? || host_statement(ctx, &mut hd, o, &name)? {
            continue;
        }
        match o.keyword.as_str() {
            "on" => hosts.push(o),
            "floating" | "stacked-on-top-of" | "connection" | "connection-mesh" | "volume" => {
                return Err(err(
                    &o.location,
                    format!("'{}' is not supported; write two 'on HOST {{ }}' sections", o.keyword),
                ))
            }
            other => {
                return Err(err(
                    &o.location,
                    format!("unknown statement '{other}' in resource {name}"),
                ))
            }
        }
    }
    // Resource-level host statements apply wherever in the resource they were written.
    let hosts = hosts
        .into_iter()
        .map(|o| host(ctx, o, &hd, &name))
        .collect::<Result<Vec<_>, _>>()?;
    match hosts.len() {
        0 => {
            return Err(err(
                &s.location,
                format!("resource {name} has no 'on HOST {{ }}' section"),
            ))
        }
        1 | 2 => {}
        _ => {
            return Err(err(
                &hosts[2].location,
                format!("resource {name} has more than two 'on' sections; Tandem replicates between two nodes"),
            ))
        }
    }
    if hosts.len() == 2 {
        if hosts[0].name == hosts[1].name {
            return Err(err(
                &hosts[1].location,
                format!("host '{}' appears twice in resource {name}", hosts[1].name),
            ));
        }
        for h in &hosts {
            if h.address.is_none() {
                return Err(err(
                    &h.location,
                    format!("'on {}' needs an 'address' for replication", h.name),
                ));
            }
        }
    }
    Ok(Resource {
        name,
        protocol: d.protocol,
        net: d.net,
        disk: d.disk,
        startup: d.startup,
        handlers: d.handlers,
        hosts,
        location: s.location.clone(),
    })
}

/// Glob matches for `include`, relative to the including file's directory.
pub fn include_paths(a: &Arg, including: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let pattern = if Path::new(&a.text).is_absolute() {
        PathBuf::from(&a.text)
    } else {
        including.parent().unwrap_or(Path::new(".")).join(&a.text)
    };
    let pattern = pattern.to_string_lossy().into_owned();
    let paths = glob::glob(&pattern).map_err(|e| err(&a.location, format!("bad include pattern '{}': {e}", a.text)))?;
    let mut out: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
    out.sort();
    Ok(out)
}
