//! Meaning for `resource NAME { … }`: its `on HOST { }` sections, `volume 0`,
//! and the host statements `device`, `disk`, `meta-disk` and `address`,
//! which may also stand directly in the resource as defaults for both hosts.
//!
//! A host statement given twice in one place (two `disk` lines in one `on`)
//! is an error, as in drbdadm; a resource-level one overridden in an `on`
//! section is the documented inheritance, not a duplicate.

use super::model::*;
use super::parser::{body, closest, err, number, option_section, place, terminator, value, Ctx, Options, Scope};
use super::syntax::{shown, Arg, Stmt};
use super::ConfigError;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The default NBD port; `/dev/drbdN` devices are mapped onto this + N.
pub const NBD_PORT_DEFAULT: u16 = 10809;

/// The host statements gathered for one `on` section, starting from the
/// resource-level ones.
#[derive(Debug, Clone, Default)]
struct HostParts {
    device: Option<(NbdEndpoint, Location)>,
    disk: Option<PathBuf>,
    meta_disk: Option<MetaDisk>,
    address: Option<(SocketAddr, Location)>,
}

/// Where a host's `device` and `address` were written, for the conflict
/// checks across resources (the model keeps only the `on` line).
#[derive(Debug, Clone)]
pub struct HostSpots {
    pub device: Location,
    pub address: Option<Location>,
}

/// A path as written; a relative one gets a warning, since it is resolved
/// against the daemon's working directory, not the configuration file's.
fn path(ctx: &mut Ctx<'_>, a: &Arg, what: &str) -> PathBuf {
    let p = PathBuf::from(&a.text);
    if p.is_relative() {
        ctx.warn(
            &a.location,
            format!(
                "{what} '{}' is a relative path: it is resolved against tandemd's working directory, not this file's; write an absolute path",
                shown(&a.text)
            ),
        );
    }
    p
}

/// One host statement (`device`, `disk PATH`, `meta-disk`, `address`) into
/// `h`; false if `s` is not one. `seen` catches a statement given twice in
/// one place (drbdadm refuses that too); `place_name` names the place.
fn host_statement(
    ctx: &mut Ctx<'_>,
    h: &mut HostParts,
    seen: &mut HashMap<&'static str, Location>,
    s: &Stmt,
    resource: &str,
    place_name: &str,
) -> Result<bool, ConfigError> {
    let key = match s.keyword.as_str() {
        "device" => "device",
        "disk" if s.block.is_none() => "disk",
        "meta-disk" | "flexible-meta-disk" => "meta-disk",
        "address" => "address",
        _ => return Ok(false),
    };
    if let Some(first) = seen.get(key) {
        return Err(err(
            &s.location,
            format!(
                "'{key}' is given twice in {place_name} (first at {})",
                place(first, &s.location)
            ),
        ));
    }
    seen.insert(key, s.location.clone());
    match key {
        "device" => h.device = Some((device(ctx, s, resource)?, s.location.clone())),
        "disk" => {
            let a = value(s)?;
            if a.text == "none" {
                return Err(err(
                    &a.location,
                    "'disk none' (a diskless node) is not supported; name a backing file or device",
                ));
            }
            h.disk = Some(path(ctx, a, "disk"));
        }
        "meta-disk" => h.meta_disk = Some(meta_disk(ctx, s)?),
        _ => h.address = Some((address(s)?, s.location.clone())),
    }
    Ok(true)
}

/// `meta-disk internal;` or `meta-disk PATH;`.
fn meta_disk(ctx: &mut Ctx<'_>, s: &Stmt) -> Result<MetaDisk, ConfigError> {
    let indexed = |at: &Location| {
        err(
            at,
            "indexed meta-disk is not supported; use an external file per resource",
        )
    };
    match s.args.as_slice() {
        [] => Err(err(
            &s.end,
            format!(
                "expected 'internal' or a path after '{}', found {}",
                s.keyword,
                terminator(s)
            ),
        )),
        [a] if a.text.contains('[') => Err(indexed(&a.location)),
        [a, idx, ..] if a.text != "internal" && idx.text.starts_with('[') => Err(indexed(&idx.location)),
        _ => {
            let a = value(s)?;
            Ok(match a.text.as_str() {
                "internal" => MetaDisk::Internal,
                _ => MetaDisk::External(path(ctx, a, "meta-disk")),
            })
        }
    }
}

/// `device`: an NBD endpoint, or a DRBD device mapped onto one.
fn device(ctx: &mut Ctx<'_>, s: &Stmt, resource: &str) -> Result<NbdEndpoint, ConfigError> {
    if let Some(a) = s.args.first() {
        if a.text.starts_with("nbd://") || a.text.starts_with("nbd+unix://") {
            let a = value(s)?;
            return nbd_uri(a, resource);
        }
    }
    // DRBD's forms: `/dev/drbdN`, `drbdN`, `minor N`, `/dev/drbd_NAME minor N`.
    let (name, minor) = match s.args.as_slice() {
        [m, n] if m.text == "minor" => (None, number(n, "minor")?),
        [d, m, n] if m.text == "minor" && is_drbd_device(&d.text) => {
            let minor = number(n, "minor")?;
            if let Some(from_name) = minor_of(&d.text) {
                if from_name != minor {
                    return Err(err(
                        &n.location,
                        format!(
                            "the explicit minor must match the device name: write 'device /dev/drbd{minor} minor {minor};' or leave either out"
                        ),
                    ));
                }
            }
            (Some(d), minor)
        }
        [d] if is_drbd_device(&d.text) => {
            let minor = minor_of(&d.text).ok_or_else(|| {
                err(
                    &d.location,
                    format!(
                        "no minor number in '{}'; add 'minor N', or write an NBD endpoint such as nbd://127.0.0.1:{NBD_PORT_DEFAULT}/{resource}",
                        shown(&d.text)
                    ),
                )
            })?;
            (Some(d), minor)
        }
        [a] => return nbd_uri(a, resource),
        _ => {
            value(s)?; // the right "expected ';' …, found …" message
            return Err(err(&s.location, "'device' takes one NBD endpoint"));
        }
    };
    let port = u16::try_from(u64::from(NBD_PORT_DEFAULT).saturating_add(minor)).map_err(|_| {
        err(
            &s.location,
            format!(
                "minor {minor} is too large to map onto an NBD port ({NBD_PORT_DEFAULT} + minor must be at most 65535)"
            ),
        )
    })?;
    let ep = NbdEndpoint::Tcp {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        export: resource.to_owned(),
    };
    let written = match name {
        Some(d) => format!("'{}'", shown(&d.text)),
        None => format!("'minor {minor}'"),
    };
    ctx.warn(
        &s.location,
        format!(
            "DRBD device {written} is not an NBD endpoint: it is mapped to the NBD endpoint {ep} (port {NBD_PORT_DEFAULT} + minor {minor}); write 'device {ep};' to say so"
        ),
    );
    Ok(ep)
}

/// `/dev/drbd…` or `drbd…` (drbdadm adds the `/dev/`).
fn is_drbd_device(text: &str) -> bool {
    text.starts_with("/dev/drbd") || text.starts_with("drbd")
}

/// The N of `/dev/drbdN`.
fn minor_of(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("/dev/").unwrap_or(text).strip_prefix("drbd")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `nbd://HOST[:PORT][/EXPORT]` or `nbd+unix:///EXPORT?socket=PATH`; the
/// export defaults to the resource name.
pub fn nbd_uri(a: &Arg, resource: &str) -> Result<NbdEndpoint, ConfigError> {
    let t = a.text.as_str();
    let bad = |why: &str| {
        err(
            &a.location,
            format!(
                "device '{}' {why}; write an NBD endpoint such as nbd://127.0.0.1:{NBD_PORT_DEFAULT}/{resource} or nbd+unix:///{resource}?socket=/run/tandem/{resource}.sock",
                shown(t)
            ),
        )
    };
    let export = |e: &str| {
        if e.is_empty() {
            resource.to_owned()
        } else {
            e.to_owned()
        }
    };
    if let Some(rest) = t.strip_prefix("nbd+unix://") {
        let (path_part, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path_part.is_empty() && !path_part.starts_with('/') {
            return Err(bad(
                "names a host, but a Unix socket has none (nbd+unix:///EXPORT?socket=PATH)",
            ));
        }
        let socket = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("socket="))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("has no ?socket=PATH"))?;
        return Ok(NbdEndpoint::Unix {
            path: PathBuf::from(socket),
            export: export(path_part.trim_start_matches('/')),
        });
    }
    let rest = t.strip_prefix("nbd://").ok_or_else(|| bad("is not an NBD endpoint"))?;
    let (hostport, exp) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = host_port(hostport, NBD_PORT_DEFAULT, true)
        .filter(|a| a.port() != 0)
        .ok_or_else(|| bad("does not name an IP address (or localhost) and port"))?;
    Ok(NbdEndpoint::Tcp {
        addr,
        export: export(exp),
    })
}

/// `1.2.3.4[:port]`, `[::1][:port]`, and with `localhost_ok` also
/// `localhost[:port]`. IP literals only: resolving names is not a parser's
/// business (it must not block, and the answer could change under us).
fn host_port(s: &str, default_port: u16, localhost_ok: bool) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a); // 10.0.0.1:7789, [::1]:7789
    }
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Some(SocketAddr::new(IpAddr::V4(ip), default_port));
    }
    // An IPv6 literal only in brackets: `::1:7789` would be ambiguous.
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port));
    }
    if !localhost_ok {
        return None;
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    match s.split_once(':') {
        None if s == "localhost" => Some(SocketAddr::new(localhost, default_port)),
        Some(("localhost", port)) => Some(SocketAddr::new(localhost, port.parse().ok()?)),
        _ => None,
    }
}

/// `address [ipv4|ipv6] ADDRESS:PORT;`
fn address(s: &Stmt) -> Result<SocketAddr, ConfigError> {
    let (family, a) = match s.args.as_slice() {
        [fam, ..] if matches!(fam.text.as_str(), "ssocks" | "sdp" | "sci") => {
            return Err(err(
                &fam.location,
                format!("address family '{}' is not supported; use ipv4 or ipv6", fam.text),
            ))
        }
        [fam, a] if matches!(fam.text.as_str(), "ipv4" | "ipv6") && s.block.is_none() => (Some(fam), a),
        [fam, _, extra, ..] if matches!(fam.text.as_str(), "ipv4" | "ipv6") => {
            return Err(err(
                &extra.location,
                format!("expected ';' after value of 'address', found '{}'", shown(&extra.text)),
            ));
        }
        _ => (None, value(s)?),
    };
    let addr = host_port(&a.text, 0, false).filter(|x| x.port() != 0).ok_or_else(|| {
        let host = a.text.rsplit_once(':').map_or(a.text.as_str(), |(h, _)| h);
        let hint = if host.contains(':') && !host.contains('[') {
            " (an IPv6 address goes in brackets: ipv6 [ADDRESS]:PORT)"
        } else if host.chars().any(|c| c.is_ascii_alphabetic()) && !host.contains('[') {
            " (host names are not resolved: write the IP address)"
        } else {
            ""
        };
        err(
            &a.location,
            format!(
                "address must be an IP address and port such as 10.0.0.1:7789 or ipv6 [fd00::1]:7789, found '{}'{hint}",
                shown(&a.text)
            ),
        )
    })?;
    if let Some(fam) = family {
        let v6 = fam.text == "ipv6";
        if v6 != addr.is_ipv6() {
            return Err(err(
                &a.location,
                format!(
                    "'{}' does not match the {} address '{}'",
                    fam.text,
                    if addr.is_ipv6() { "IPv6" } else { "IPv4" },
                    shown(&a.text)
                ),
            ));
        }
    }
    if addr.ip().is_unspecified() {
        return Err(err(
            &a.location,
            format!("address {addr} is not one a peer can connect to; write this node's own IP address"),
        ));
    }
    Ok(addr)
}

/// A name that becomes part of paths, export names and commands: it must be
/// non-empty and free of white space, control characters and `/`.
fn check_name(a: &Arg, what: &str) -> Result<(), ConfigError> {
    let t = a.text.as_str();
    let bad = if t.is_empty() {
        Some("is empty")
    } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains white space or control characters")
    } else if t.contains('/') {
        Some("contains '/'")
    } else if t.starts_with('-') {
        Some("starts with '-'")
    } else {
        None
    };
    match bad {
        Some(why) => Err(err(&a.location, format!("{what} '{}' {why}", shown(t)))),
        None => Ok(()),
    }
}

/// The statements of a `volume N { … }`: only volume 0 exists in Tandem,
/// which replicates one disk per resource, and it is flattened into the host.
fn volume(v: &Stmt) -> Result<&[Stmt], ConfigError> {
    let stmts = body(v, 1, "a volume number")?;
    let n = &v.args[0];
    if number(n, "volume number")? != 0 {
        return Err(err(
            &n.location,
            "multiple volumes are not supported; use 'volume 0' or one resource per disk",
        ));
    }
    Ok(stmts)
}

/// Statements that belong in a volume: host statements other than `address`.
fn volume_statement(
    ctx: &mut Ctx<'_>,
    h: &mut HostParts,
    seen: &mut HashMap<&'static str, Location>,
    s: &Stmt,
    resource: &str,
    place_name: &str,
) -> Result<(), ConfigError> {
    if s.keyword != "address" && host_statement(ctx, h, seen, s, resource, place_name)? {
        return Ok(());
    }
    Err(err(
        &s.location,
        format!(
            "unknown statement '{}' in volume section; a volume holds device, disk and meta-disk",
            shown(&s.keyword)
        ),
    ))
}

/// `on NAME { … }`.
fn host(ctx: &mut Ctx<'_>, s: &Stmt, defaults: &HostParts, resource: &str) -> Result<(Host, HostSpots), ConfigError> {
    let stmts = body(s, 1, "a host name")?;
    let n = &s.args[0];
    check_name(n, "host name")?;
    let name = n.text.clone();
    let here = format!("'on {name}'");
    let mut h = defaults.clone();
    let mut seen = HashMap::new();
    for o in stmts {
        if host_statement(ctx, &mut h, &mut seen, o, resource, &here)? {
            continue;
        }
        match o.keyword.as_str() {
            "volume" => {
                for v in volume(o)? {
                    volume_statement(ctx, &mut h, &mut seen, v, resource, &here)?;
                }
            }
            "node-id" => {
                number(value(o)?, "node-id")?;
                ctx.no_effect(o);
            }
            other => {
                let mut message = format!(
                    "unknown statement '{}' in 'on {name}' section; expected device, disk, address, meta-disk or volume 0",
                    shown(other)
                );
                if let Some(k) = closest(
                    other,
                    &[&["device", "disk", "address", "meta-disk", "volume", "node-id"]],
                ) {
                    message.push_str(&format!(" (did you mean '{k}'?)"));
                }
                return Err(err(&o.location, message));
            }
        }
    }
    let missing = |what: &str| {
        err(
            &s.location,
            format!("'on {name}' has no '{what}' statement (nor has resource {resource})"),
        )
    };
    let (device, device_at) = h.device.ok_or_else(|| missing("device"))?;
    let disk = h.disk.ok_or_else(|| missing("disk"))?;
    let meta_disk = h.meta_disk.ok_or_else(|| missing("meta-disk"))?;
    let (address, address_at) = h.address.unzip();
    Ok((
        Host {
            name,
            device,
            disk,
            address,
            meta_disk,
            location: s.location.clone(),
        },
        HostSpots {
            device: device_at,
            address: address_at,
        },
    ))
}

/// `resource NAME { … }`, with `common`'s options as its starting point.
/// Returns the resource and where each host's device and address stand.
pub fn resource(ctx: &mut Ctx<'_>, s: &Stmt, common: &Options) -> Result<(Resource, Vec<HostSpots>), ConfigError> {
    let stmts = body(s, 1, "a resource name")?;
    let n = &s.args[0];
    check_name(n, "resource name")?;
    if n.text == "all" {
        return Err(err(
            &n.location,
            "a resource cannot be named 'all': tandemadm uses that word for every resource",
        ));
    }
    let name = n.text.clone();
    let here = format!("resource {name}");
    let mut d = common.clone();
    let mut scope = Scope::new(here.clone());
    let mut defaults = HostParts::default();
    let mut seen = HashMap::new();
    let mut ons = Vec::new();
    for o in stmts {
        if option_section(ctx, &mut scope, &mut d, o)? {
            continue;
        }
        match o.keyword.as_str() {
            "on" => ons.push(o),
            "address" => {
                return Err(err(
                    &o.location,
                    "'address' belongs inside each 'on HOST { }' section: every node has its own",
                ))
            }
            "volume" => {
                for v in volume(o)? {
                    volume_statement(ctx, &mut defaults, &mut seen, v, &name, &here)?;
                }
            }
            _ if host_statement(ctx, &mut defaults, &mut seen, o, &name, &here)? => {}
            kw @ ("floating" | "stacked-on-top-of" | "connection" | "connection-mesh" | "proxy" | "ignore-on"
            | "_this_host" | "_remote_host") => {
                return Err(err(
                    &o.location,
                    format!("'{kw}' is not supported; write two 'on HOST {{ }}' sections"),
                ))
            }
            other => {
                let mut message = format!("unknown statement '{}' in resource {name}", shown(other));
                let words: &[&str] = &[
                    "protocol",
                    "net",
                    "disk",
                    "syncer",
                    "startup",
                    "handlers",
                    "options",
                    "on",
                    "device",
                    "meta-disk",
                    "volume",
                ];
                if let Some(k) = closest(other, &[words]) {
                    message.push_str(&format!("; did you mean '{k}'?"));
                }
                return Err(err(&o.location, message));
            }
        }
    }
    if let Some(third) = ons.get(2) {
        return Err(err(
            &third.location,
            format!("resource {name} has a third 'on' section; Tandem replicates between two nodes"),
        ));
    }
    // Resource-level host statements apply wherever in the resource they
    // were written, so the hosts are read last.
    let mut hosts = Vec::new();
    let mut spots = Vec::new();
    for o in ons {
        let (h, at) = host(ctx, o, &defaults, &name)?;
        if let Some(first) = hosts.iter().find(|f: &&Host| f.name == h.name) {
            return Err(err(
                &h.location,
                format!(
                    "'on {}' appears twice in resource {name} (first at {})",
                    h.name,
                    place(&first.location, &h.location)
                ),
            ));
        }
        hosts.push(h);
        spots.push(at);
    }
    if hosts.is_empty() {
        return Err(err(
            &s.location,
            format!("resource {name} has no 'on HOST {{ }}' section"),
        ));
    }
    if hosts.len() == 2 {
        for h in &hosts {
            if h.address.is_none() {
                return Err(err(
                    &h.location,
                    format!("'on {}' needs an 'address' for replication", h.name),
                ));
            }
        }
    }
    Ok((
        Resource {
            name,
            protocol: d.protocol,
            net: d.net,
            disk: d.disk,
            startup: d.startup,
            handlers: d.handlers,
            hosts,
            location: s.location.clone(),
        },
        spots,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parser::tests::arg;

    #[test]
    fn endpoints() {
        let ep = |t: &str| nbd_uri(&arg(t), "r0").map(|e| e.to_string());
        assert_eq!(ep("nbd://10.0.0.1").unwrap(), "nbd://10.0.0.1:10809/r0");
        assert_eq!(ep("nbd://10.0.0.1:1234/x").unwrap(), "nbd://10.0.0.1:1234/x");
        assert_eq!(ep("nbd://localhost/").unwrap(), "nbd://127.0.0.1:10809/r0");
        assert_eq!(ep("nbd://localhost:99").unwrap(), "nbd://127.0.0.1:99/r0");
        assert_eq!(ep("nbd://[::1]").unwrap(), "nbd://[::1]:10809/r0");
        assert_eq!(ep("nbd://[fd00::2]:7/e").unwrap(), "nbd://[fd00::2]:7/e");
        assert_eq!(
            ep("nbd+unix:///e?socket=/run/s.sock").unwrap(),
            "nbd+unix:///e?socket=/run/s.sock"
        );
        assert_eq!(ep("nbd+unix://?socket=/s").unwrap(), "nbd+unix:///r0?socket=/s");
        for bad in [
            "nbd://",
            "nbd://example.com/r0",
            "nbd://::1/r0",
            "nbd://10.0.0.1:0",
            "nbd://10.0.0.1:99999",
            "nbd+unix:///r0",
            "nbd+unix://host/r0?socket=/s",
            "nbds://10.0.0.1",
        ] {
            let e = ep(bad).unwrap_err().to_string();
            assert!(e.contains("nbd://127.0.0.1:10809/r0"), "{bad}: {e}");
        }
    }

    #[test]
    fn minors_of_drbd_devices() {
        assert_eq!(minor_of("/dev/drbd12"), Some(12));
        assert_eq!(minor_of("drbd3"), Some(3));
        assert_eq!(minor_of("/dev/drbd_web"), None);
        assert_eq!(minor_of("/dev/drbd"), None);
        assert_eq!(minor_of("/dev/drbd+1"), None);
    }
}
