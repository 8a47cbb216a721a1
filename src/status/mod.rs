//! Renderings of [`Snapshot`]s: the DRBD 8.4 `/proc/drbd` text that existing
//! monitoring parses, and the DRBD 9-style `status` that people read.
//!
//! The `/proc/drbd` rendering keeps to what its known parsers need
//! (`reference/clients.md` §3): the version line first; device lines as
//! `%2d:` (check_drbd accepts at most one leading space); roles and disk
//! states always as `local/peer` (node_exporter crashes on a role without
//! `/`); counters as plain integers (a thousands separator breaks
//! node_exporter). Thousands separators appear only in the speed line, as DRBD
//! prints them there.

use crate::core::{ConnState, DiskState, Role, Snapshot};
use std::fmt::Write;

/// DRBD's version line, which parsers of the 8.4 format require unchanged.
pub const DRBD_VERSION_LINE: &str = "version: 8.4.11 (api:1/proto:86-101)";

/// One resource for the status file: configured but down, or up (with the
/// resync speed the shell measured, if syncing).
pub enum Minor<'a> {
    Unconfigured { minor: u32 },
    Up(&'a Snapshot, Option<Speed>),
}

/// Resync speed in KiB/s: over the last few seconds, and since the start.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Speed {
    pub recent_kib_s: u64,
    pub average_kib_s: u64,
}

/// The whole status file.
pub fn render_proc_drbd(minors: &[Minor<'_>]) -> String {
    let mut out = String::with_capacity(256 * (minors.len() + 1));
    out.push_str(DRBD_VERSION_LINE);
    out.push('\n');
    let _ = writeln!(out, "srcversion: tandem-{}", env!("CARGO_PKG_VERSION"));
    for m in minors {
        match m {
            Minor::Unconfigured { minor } => {
                let _ = writeln!(out, "{minor:2}: cs:Unconfigured");
            }
            Minor::Up(s, speed) => render_minor(&mut out, s, *speed),
        }
    }
    out
}

fn render_minor(out: &mut String, s: &Snapshot, speed: Option<Speed>) {
    let c = &s.counters;
    let _ = writeln!(
        out,
        "{:2}: cs:{} ro:{}/{} ds:{}/{} {} {}--{}--",
        s.minor,
        s.cstate,
        s.role,
        s.peer_role,
        s.disk,
        s.peer_disk,
        s.protocol.unwrap_or(' '),
        // DRBD's first I/O flag: 's' while I/O is suspended.
        if s.suspended.is_some() { 's' } else { 'r' },
        // DRBD's fourth I/O flag: 'u' while the operator paused the resync.
        if matches!(s.cstate, ConnState::PausedSyncS | ConnState::PausedSyncT) {
            'u'
        } else {
            '-'
        },
    );
    let _ = writeln!(
        out,
        "    ns:{} nr:{} dw:{} dr:{} al:{} bm:{} lo:{} pe:{} ua:{} ap:{} ep:{} wo:f oos:{}",
        c.ns, c.nr, c.dw, c.dr, c.al, c.bm, c.lo, c.pe, c.ua, c.ap, c.ep, c.oos
    );
    if let (true, Some((left, total))) = (s.cstate.shows_progress(), s.resync_kib) {
        let permille = permille_done(left, total);
        // DRBD switches to MiB above 4 GiB of bitmap.
        let (l, t, unit) = if total > 4 << 20 {
            (left >> 10, total >> 10, 'M')
        } else {
            (left, total, 'K')
        };
        let _ = writeln!(
            out,
            "\t{} {}:{:3}.{}% ({l}/{t}){unit}",
            progress_bar(permille),
            if matches!(s.cstate, ConnState::VerifyS | ConnState::VerifyT) {
                "verified"
            } else {
                "sync'ed"
            },
            permille / 10,
            permille % 10
        );
        let sp = speed.unwrap_or_default();
        let eta = left.checked_div(sp.recent_kib_s.max(1)).unwrap_or(0);
        let _ = writeln!(
            out,
            "\tfinish: {}:{:02}:{:02} speed: {} ({}) K/sec",
            eta / 3600,
            eta / 60 % 60,
            eta % 60,
            thousands(sp.recent_kib_s),
            thousands(sp.average_kib_s)
        );
    }
}

/// DRBD's per-mille done, robust to `total` 0.
pub fn permille_done(left: u64, total: u64) -> u32 {
    (1000 - (left.min(total) * 1000 / (total + 1)).min(1000)) as u32
}

/// DRBD's progress bar: `x = permille / 50`, `=` × (x−1), `>`, `.` × (20−x).
pub fn progress_bar(permille: u32) -> String {
    let x = (permille.min(1000) / 50) as usize;
    let mut bar = String::with_capacity(22);
    bar.push('[');
    bar.extend(std::iter::repeat_n('=', x.saturating_sub(1)));
    bar.push('>');
    bar.extend(std::iter::repeat_n('.', 20 - x));
    bar.push(']');
    bar
}

/// `1234567` → `1,234,567`, as DRBD prints speeds.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// ANSI colours for terminals; plain text when piped.
struct Paint(bool);

impl Paint {
    fn state(&self, text: &str, good: bool, bad: bool) -> String {
        if !self.0 {
            return text.to_owned();
        }
        let code = if good {
            "32"
        } else if bad {
            "31"
        } else {
            "33"
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// `tandemadm status` in DRBD 9's layout:
///
/// ```text
/// r0 role:Primary
///   disk:UpToDate
///   beta connection:Connecting
/// ```
pub fn render_status(s: &Snapshot, verbose: bool, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let role = p.state(&s.role.to_string(), s.role == Role::Primary, false);
    match &s.suspended {
        Some(why) => {
            let _ = writeln!(out, "{} role:{} suspended:fencing", s.resource, role);
            let _ = writeln!(out, "  ({why})");
        }
        None => {
            let _ = writeln!(out, "{} role:{}", s.resource, role);
        }
    }
    let disk = p.state(
        &s.disk.to_string(),
        s.disk == DiskState::UpToDate,
        s.disk <= DiskState::Inconsistent,
    );
    let _ = writeln!(out, "  disk:{disk}");
    if s.abandoned > 0 {
        let _ = writeln!(
            out,
            "  ({} request(s) abandoned by disk-timeout still on the old disk; attach waits for them)",
            s.abandoned
        );
    }
    if verbose {
        let c = &s.counters;
        let _ = writeln!(
            out,
            "    size:{} read:{} written:{} al-writes:{} bm-writes:{} upper-pending:{} lower-pending:{} nbd-clients:{}",
            s.size_bytes / 1024,
            c.dr,
            c.dw,
            c.al,
            c.bm,
            c.ap,
            c.lo,
            s.nbd_clients
        );
        if s.peer.is_some() {
            // DRBD 9's peer-device statistics, in KiB.
            let _ = writeln!(
                out,
                "    received:{} sent:{} out-of-sync:{} pending:{} unacked:{} rs-same-csum:{}",
                c.nr, c.ns, c.oos, c.pe, c.ua, c.rs_same_kib
            );
        }
        let f = &s.flushes;
        if f.app > 0 {
            // How the clients' commits were answered: where a commit's
            // latency goes (docs/troubleshooting.md).
            let _ = writeln!(
                out,
                "    flushes:{} answered-early:{} grouped:{} peer-ahead:{}",
                f.app, f.app_covered, f.app_grouped, f.app_peer_ahead
            );
        }
        if f.peer_early + f.peer_on_barrier > 0 {
            let _ = writeln!(
                out,
                "    peer-flushes early:{} on-barrier:{}",
                f.peer_early, f.peer_on_barrier
            );
        }
        if let Some(u) = &s.uuids {
            let _ = writeln!(
                out,
                "    uuids:{:016X}:{:016X}:{:016X}:{:016X}",
                u.current, u.bitmap, u.history[0], u.history[1]
            );
        }
    }
    if let Some(peer) = &s.peer {
        if s.cstate >= ConnState::Connected {
            let _ = writeln!(out, "  {peer} role:{}", s.peer_role);
            match s.resync_kib {
                Some((left, total)) if s.cstate.shows_progress() => {
                    let pm = permille_done(left, total);
                    let _ = writeln!(
                        out,
                        "    replication:{} peer-disk:{} done:{}.{}",
                        s.cstate,
                        s.peer_disk,
                        pm / 10,
                        pm % 10
                    );
                    let _ = writeln!(out, "    {} {} KiB left", progress_bar(pm), left);
                    if let (true, Some(rate)) = (verbose, s.resync_yielding_kib_s) {
                        let _ = writeln!(out, "    yielding to application I/O: c-min-rate {rate} KiB/s");
                    }
                    if let (true, Some(u)) = (verbose, s.resync_under_load) {
                        let us = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v}us"));
                        let _ = writeln!(
                            out,
                            "    beside application I/O: {} resync requests in flight; application latency {} \
                             ({} without the resync)",
                            u.width,
                            us(u.app_us),
                            us(u.alone_us)
                        );
                    }
                }
                _ => {
                    let _ = writeln!(out, "    peer-disk:{}", s.peer_disk);
                }
            }
        } else {
            let cs = p.state(&s.cstate.to_string(), false, s.cstate == ConnState::StandAlone);
            if s.split_brain {
                let _ = writeln!(out, "  {peer} connection:{cs} split-brain:yes");
                let _ = writeln!(
                    out,
                    "    see 'tandemadm split-brain-report {}' before choosing a victim",
                    s.resource
                );
            } else {
                let _ = writeln!(out, "  {peer} connection:{cs}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Counters;

    fn snap() -> Snapshot {
        Snapshot {
            resource: "r0".into(),
            minor: 0,
            node: "alpha".into(),
            peer: None,
            role: Role::Primary,
            peer_role: Role::Unknown,
            cstate: ConnState::StandAlone,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::DUnknown,
            protocol: None,
            size_bytes: 1 << 30,
            nbd_clients: 1,
            counters: Counters {
                dw: 1_048_576,
                dr: 2048,
                ..Counters::default()
            },
            uuids: None,
            resync_kib: None,
            verify_found_kib: None,
            split_brain: false,
            suspended: None,
            abandoned: 0,
            flushes: Default::default(),
            resync_yielding_kib_s: None,
            resync_under_load: None,
        }
    }

    #[test]
    fn proc_drbd_standalone_primary() {
        let s = snap();
        let text = render_proc_drbd(&[Minor::Up(&s, None), Minor::Unconfigured { minor: 1 }]);
        let expected = "version: 8.4.11 (api:1/proto:86-101)\n\
             srcversion: tandem-VERSION\n \
             0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----\n    \
             ns:0 nr:0 dw:1048576 dr:2048 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:0 wo:f oos:0\n \
             1: cs:Unconfigured\n"
            .replace("VERSION", env!("CARGO_PKG_VERSION"));
        assert_eq!(text, expected);
    }

    #[test]
    fn resync_lines_follow_the_counters() {
        let mut s = snap();
        s.cstate = ConnState::SyncSource;
        s.peer = Some("beta".into());
        s.protocol = Some('C');
        s.resync_kib = Some((731_204, 1_024_000));
        let text = render_proc_drbd(&[Minor::Up(
            &s,
            Some(Speed {
                recent_kib_s: 104_456,
                average_kib_s: 98_816,
            }),
        )]);
        assert!(
            text.contains("\t[====>...............] sync'ed: 28.6% (731204/1024000)K\n"),
            "{text}"
        );
        assert!(
            text.contains("\tfinish: 0:00:07 speed: 104,456 (98,816) K/sec\n"),
            "{text}"
        );
    }

    #[test]
    fn progress_bar_matches_drbd() {
        assert_eq!(progress_bar(0), "[>....................]");
        assert_eq!(progress_bar(186), "[==>.................]");
        assert_eq!(progress_bar(1000), "[===================>]");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(40480), "40,480");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn status_plain_when_not_a_tty() {
        let s = snap();
        assert_eq!(render_status(&s, false, false), "r0 role:Primary\n  disk:UpToDate\n");
        let hung = Snapshot {
            disk: DiskState::Diskless,
            abandoned: 2,
            flushes: Default::default(),
            ..s.clone()
        };
        assert_eq!(
            render_status(&hung, false, false),
            "r0 role:Primary\n  disk:Diskless\n  (2 request(s) abandoned by disk-timeout still on the old disk; attach waits for them)\n"
        );
        assert!(render_status(&s, false, true).contains("\x1b[32m"));
    }

    #[test]
    fn verbose_status_says_how_commits_were_answered_once_there_were_any() {
        let mut s = snap();
        assert!(!render_status(&s, true, false).contains("flushes"));
        s.flushes.app = 50;
        s.flushes.app_covered = 47;
        s.flushes.app_peer_ahead = 45;
        let text = render_status(&s, true, false);
        assert!(
            text.contains("\n    flushes:50 answered-early:47 grouped:0 peer-ahead:45\n"),
            "{text}"
        );
        assert!(!text.contains("peer-flushes"), "{text}");
        s.flushes.peer_early = 3;
        assert!(render_status(&s, true, false).contains("\n    peer-flushes early:3 on-barrier:0\n"));
        assert!(!render_status(&s, false, false).contains("flushes"));
    }
}
