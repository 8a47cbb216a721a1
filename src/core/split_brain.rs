//! Split brain: DRBD's automatic recovery policies (`after-sb-0pri`,
//! `after-sb-1pri`, `after-sb-2pri`) and the facts `split-brain-report`
//! shows. Pure: both nodes run the same function on mirrored inputs and
//! reach mirrored answers, so they agree without another round trip.

use super::generation::UuidReport;
use crate::config::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri};
use crate::meta::BM_BLOCK_BYTES;
use serde::Serialize;

/// The configured policies (the `net` section).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    pub zero: AfterSb0Pri,
    pub one: AfterSb1Pri,
    pub two: AfterSb2Pri,
}

/// Who keeps its data, from this node's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// This node's data wins: it becomes SyncSource.
    Source,
    /// The peer's data wins: this node becomes SyncTarget.
    Target,
    /// This node is Primary and lost; `call-pri-lost-after-sb` wants it
    /// demoted (or, if it cannot be, the `pri-lost-after-sb` handler run).
    PrimaryLost,
}

/// Both sides' view at connect time.
#[derive(Debug, Clone, Copy)]
pub struct Sides<'a> {
    pub me: &'a UuidReport,
    pub peer: &'a UuidReport,
    pub my_name: &'a str,
    pub peer_name: &'a str,
    pub i_am_primary: bool,
    /// Exactly one side of a connection loses ties (DRBD's
    /// RESOLVE_CONFLICTS); here the node whose name sorts last.
    pub i_lose_ties: bool,
}

impl Sides<'_> {
    /// Bit 0 of the bitmap UUID: this side was Primary when it started the
    /// generation that diverged (i.e. it was the Primary before the split).
    fn was_primary(r: &UuidReport) -> bool {
        r.uuids.bitmap & 1 == 1
    }
}

/// The automatic decision, with a sentence saying why (for the log).
/// `None` means the policy does not decide: the link is refused.
pub fn recover(p: &Policies, s: &Sides<'_>) -> (Option<Resolution>, String) {
    let primaries = u32::from(s.i_am_primary) + u32::from(s.peer.primary);
    match primaries {
        0 => recover_0pri(&p.zero, s),
        1 => recover_1pri(p, s),
        _ => recover_2pri(p, s),
    }
}

fn recover_0pri(policy: &AfterSb0Pri, s: &Sides<'_>) -> (Option<Resolution>, String) {
    use Resolution::{Source, Target};
    let (me_pri, peer_pri) = (Sides::was_primary(s.me), Sides::was_primary(s.peer));
    let (mine, theirs) = (s.me.bitmap_bits, s.peer.bitmap_bits);
    let tie = if s.i_lose_ties { Target } else { Source };
    let least = || {
        let r = match mine.cmp(&theirs) {
            std::cmp::Ordering::Less => Target,
            std::cmp::Ordering::Greater => Source,
            std::cmp::Ordering::Equal => tie,
        };
        (
            Some(r),
            format!(
                "discard-least-changes: {} changed {mine} blocks, {} changed {theirs}",
                s.my_name, s.peer_name
            ),
        )
    };
    let zero = |fall_through: bool| match (mine, theirs) {
        (0, 0) => (
            Some(tie),
            "discard-zero-changes: neither side changed anything".to_owned(),
        ),
        (_, 0) => (
            Some(Source),
            format!("discard-zero-changes: {} changed nothing", s.peer_name),
        ),
        (0, _) => (
            Some(Target),
            format!("discard-zero-changes: {} changed nothing", s.my_name),
        ),
        _ if fall_through => least(),
        _ => (
            None,
            format!("discard-zero-changes: both sides changed data ({mine} and {theirs} blocks)"),
        ),
    };
    let older = || match (me_pri, peer_pri) {
        (false, true) => (
            Some(Source),
            format!("discard-older-primary: {} was Primary before the split", s.peer_name),
        ),
        (true, false) => (
            Some(Target),
            format!("discard-older-primary: {} was Primary before the split", s.my_name),
        ),
        _ => zero(true),
    };
    match policy {
        AfterSb0Pri::Disconnect => (None, "after-sb-0pri is disconnect".to_owned()),
        AfterSb0Pri::DiscardYoungerPrimary => match (me_pri, peer_pri) {
            (true, false) => (
                Some(Source),
                format!("discard-younger-primary: {} was Primary before the split", s.my_name),
            ),
            (false, true) => (
                Some(Target),
                format!("discard-younger-primary: {} was Primary before the split", s.peer_name),
            ),
            _ => older(),
        },
        AfterSb0Pri::DiscardOlderPrimary => older(),
        AfterSb0Pri::DiscardZeroChanges => zero(false),
        AfterSb0Pri::DiscardLeastChanges => least(),
        AfterSb0Pri::DiscardNode(name) if name == s.my_name => (Some(Target), format!("discard-node-{name}")),
        AfterSb0Pri::DiscardNode(name) if name == s.peer_name => (Some(Source), format!("discard-node-{name}")),
        AfterSb0Pri::DiscardNode(name) => (None, format!("discard-node-{name} names neither node")),
    }
}

fn recover_1pri(p: &Policies, s: &Sides<'_>) -> (Option<Resolution>, String) {
    use Resolution::{PrimaryLost, Source, Target};
    match p.one {
        AfterSb1Pri::Disconnect => (None, "after-sb-1pri is disconnect".to_owned()),
        AfterSb1Pri::DiscardSecondary => {
            let secondary = if s.i_am_primary { s.peer_name } else { s.my_name };
            let r = if s.i_am_primary { Source } else { Target };
            (Some(r), format!("discard-secondary: {secondary} is Secondary"))
        }
        AfterSb1Pri::Consensus => {
            let (r, why) = recover_0pri(&p.zero, s);
            // Accepted only when the victim it picks is the Secondary.
            match r {
                Some(Target) if !s.i_am_primary => (r, format!("consensus: {why}")),
                Some(Source) if s.i_am_primary => (r, format!("consensus: {why}")),
                Some(_) => (None, format!("consensus: {why}, but that victim is the Primary")),
                None => (None, format!("consensus: {why}")),
            }
        }
        AfterSb1Pri::ViolentlyAs0p => {
            let (r, why) = recover_0pri(&p.zero, s);
            (r, format!("violently-as0p: {why}"))
        }
        AfterSb1Pri::CallPriLostAfterSb => {
            let (r, why) = recover_0pri(&p.zero, s);
            match r {
                Some(Target) if s.i_am_primary => (Some(PrimaryLost), format!("call-pri-lost-after-sb: {why}")),
                r => (r, format!("call-pri-lost-after-sb: {why}")),
            }
        }
    }
}

fn recover_2pri(p: &Policies, s: &Sides<'_>) -> (Option<Resolution>, String) {
    match p.two {
        AfterSb2Pri::Disconnect => (None, "after-sb-2pri is disconnect".to_owned()),
        AfterSb2Pri::ViolentlyAs0p => {
            let (r, why) = recover_0pri(&p.zero, s);
            (r, format!("violently-as0p: {why}"))
        }
        AfterSb2Pri::CallPriLostAfterSb => {
            let (r, why) = recover_0pri(&p.zero, s);
            match r {
                Some(Resolution::Target) => (Some(Resolution::PrimaryLost), format!("call-pri-lost-after-sb: {why}")),
                r => (r, format!("call-pri-lost-after-sb: {why}")),
            }
        }
    }
}

/// One side of a split brain, as `split-brain-report` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideReport {
    pub node: String,
    pub primary: bool,
    /// The generation both sides shared when they split (bitmap UUID).
    pub split_generation: u64,
    pub current_generation: u64,
    pub blocks_changed: u64,
    pub bytes_changed: u64,
    /// Unix seconds; 0 when this side wrote nothing.
    pub first_write_s: u64,
    pub last_write_s: u64,
}

/// What `split-brain-report` prints: both sides, and what discarding
/// either would cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub resource: String,
    /// Whether the generation UUIDs show a split brain at all.
    pub split_brain: bool,
    /// The decision the UUIDs reach, in words.
    pub verdict: String,
    pub me: SideReport,
    pub peer: SideReport,
    /// Blocks a resync after recovery moves: the union of both bitmaps
    /// (known when the peer's bitmap was fetched).
    pub union_blocks: Option<u64>,
}

impl SideReport {
    pub fn new(node: &str, r: &UuidReport) -> SideReport {
        SideReport {
            node: node.to_owned(),
            primary: r.primary,
            split_generation: r.uuids.bitmap & !1,
            current_generation: r.uuids.current & !1,
            blocks_changed: r.bitmap_bits,
            bytes_changed: r.bitmap_bits * BM_BLOCK_BYTES,
            first_write_s: r.divergence.first_write_s,
            last_write_s: r.divergence.last_write_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::GenerationUuids;

    fn side(was_primary: bool, bits: u64, primary: bool) -> UuidReport {
        UuidReport {
            uuids: GenerationUuids {
                current: 0x1000,
                bitmap: 0x2000 | u64::from(was_primary),
                history: [0, 0],
            },
            bitmap_bits: bits,
            flags: 0,
            primary,
            divergence: Default::default(),
        }
    }

    /// Both nodes' answers, each from its own side.
    fn both(p: &Policies, a: &UuidReport, b: &UuidReport) -> (Option<Resolution>, Option<Resolution>) {
        let sa = Sides {
            me: a,
            peer: b,
            my_name: "alpha",
            peer_name: "beta",
            i_am_primary: a.primary,
            i_lose_ties: false,
        };
        let sb = Sides {
            me: b,
            peer: a,
            my_name: "beta",
            peer_name: "alpha",
            i_am_primary: b.primary,
            i_lose_ties: true,
        };
        (recover(p, &sa).0, recover(p, &sb).0)
    }

    use Resolution::*;

    fn zero(policy: AfterSb0Pri) -> Policies {
        Policies {
            zero: policy,
            ..Policies::default()
        }
    }

    #[test]
    fn disconnect_never_chooses() {
        let p = Policies::default();
        assert_eq!(both(&p, &side(true, 5, false), &side(false, 0, false)), (None, None));
        assert_eq!(both(&p, &side(true, 5, true), &side(false, 0, false)), (None, None));
        assert_eq!(both(&p, &side(true, 5, true), &side(false, 0, true)), (None, None));
    }

    #[test]
    fn zero_primaries_policies_pick_mirrored_sides() {
        let (old_pri, new_pri) = (side(true, 10, false), side(false, 3, false));
        assert_eq!(
            both(&zero(AfterSb0Pri::DiscardYoungerPrimary), &old_pri, &new_pri),
            (Some(Source), Some(Target))
        );
        assert_eq!(
            both(&zero(AfterSb0Pri::DiscardOlderPrimary), &old_pri, &new_pri),
            (Some(Target), Some(Source))
        );
        assert_eq!(
            both(&zero(AfterSb0Pri::DiscardLeastChanges), &old_pri, &new_pri),
            (Some(Source), Some(Target))
        );
        // Both changed: zero-changes refuses; one changed nothing: it loses.
        assert_eq!(
            both(&zero(AfterSb0Pri::DiscardZeroChanges), &old_pri, &new_pri),
            (None, None)
        );
        assert_eq!(
            both(&zero(AfterSb0Pri::DiscardZeroChanges), &side(true, 0, false), &new_pri),
            (Some(Target), Some(Source))
        );
        assert_eq!(
            both(&zero(AfterSb0Pri::DiscardNode("beta".into())), &old_pri, &new_pri),
            (Some(Source), Some(Target))
        );
        // Ties go to the node that does not lose ties, on both sides alike.
        assert_eq!(
            both(
                &zero(AfterSb0Pri::DiscardLeastChanges),
                &side(true, 4, false),
                &side(false, 4, false)
            ),
            (Some(Source), Some(Target))
        );
        // Younger/older undecidable (both were Primary) falls through to least changes.
        assert_eq!(
            both(
                &zero(AfterSb0Pri::DiscardYoungerPrimary),
                &side(true, 1, false),
                &side(true, 9, false)
            ),
            (Some(Target), Some(Source))
        );
    }

    #[test]
    fn one_primary_policies() {
        let primary = side(true, 10, true);
        let secondary = side(false, 30, false);
        let p = Policies {
            one: AfterSb1Pri::DiscardSecondary,
            ..Policies::default()
        };
        assert_eq!(both(&p, &primary, &secondary), (Some(Source), Some(Target)));
        // Consensus: least-changes picks the Primary as victim → refused.
        let p = Policies {
            zero: AfterSb0Pri::DiscardLeastChanges,
            one: AfterSb1Pri::Consensus,
            ..Policies::default()
        };
        assert_eq!(both(&p, &primary, &secondary), (None, None));
        let p = Policies {
            zero: AfterSb0Pri::DiscardYoungerPrimary,
            one: AfterSb1Pri::Consensus,
            ..Policies::default()
        };
        assert_eq!(both(&p, &primary, &secondary), (Some(Source), Some(Target)));
        let p = Policies {
            zero: AfterSb0Pri::DiscardLeastChanges,
            one: AfterSb1Pri::CallPriLostAfterSb,
            ..Policies::default()
        };
        assert_eq!(both(&p, &primary, &secondary), (Some(PrimaryLost), Some(Source)));
    }

    #[test]
    fn two_primaries_policies() {
        let (a, b) = (side(true, 10, true), side(false, 30, true));
        let p = Policies {
            zero: AfterSb0Pri::DiscardLeastChanges,
            two: AfterSb2Pri::CallPriLostAfterSb,
            ..Policies::default()
        };
        assert_eq!(both(&p, &a, &b), (Some(PrimaryLost), Some(Source)));
        let p = Policies {
            zero: AfterSb0Pri::DiscardLeastChanges,
            ..Policies::default()
        };
        assert_eq!(both(&p, &a, &b), (None, None));
    }
}

/// `2026-11-23 10:04:05 UTC` for unix seconds (0: "never").
pub fn utc(unix_s: u64) -> String {
    if unix_s == 0 {
        return "-".to_owned();
    }
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn kib(blocks: u64) -> String {
    let k = blocks * (BM_BLOCK_BYTES / 1024);
    if k >= 10 * 1024 {
        format!("{} blocks ({} MiB)", blocks, k / 1024)
    } else {
        format!("{blocks} blocks ({k} KiB)")
    }
}

impl Report {
    /// The text `tandemadm split-brain-report` prints.
    pub fn render(&self, save_dir: &str, source: &str) -> String {
        let (a, b) = (&self.me, &self.peer);
        let mut o = String::new();
        let headline = if self.split_brain {
            format!("{}: split brain between {} and {}", self.resource, a.node, b.node)
        } else {
            format!("{}: no split brain between {} and {}", self.resource, a.node, b.node)
        };
        o.push_str(&headline);
        o.push('\n');
        o.push_str(&format!("  {}; peer facts {source}\n", self.verdict));
        let row = |label: &str, x: String, y: String| format!("  {label:<14}{x:<32}{y}\n");
        o.push_str(&row("", format!("{} (this node)", a.node), b.node.clone()));
        let role = |p: bool| if p { "Primary" } else { "Secondary" }.to_owned();
        o.push_str(&row("role", role(a.primary), role(b.primary)));
        o.push_str(&row(
            "split from",
            format!("{:016X}", a.split_generation),
            format!("{:016X}", b.split_generation),
        ));
        o.push_str(&row(
            "generation",
            format!("{:016X}", a.current_generation),
            format!("{:016X}", b.current_generation),
        ));
        o.push_str(&row("changed", kib(a.blocks_changed), kib(b.blocks_changed)));
        o.push_str(&row("first write", utc(a.first_write_s), utc(b.first_write_s)));
        o.push_str(&row("last write", utc(a.last_write_s), utc(b.last_write_s)));
        let moves = match self.union_blocks {
            Some(u) => kib(u),
            None => format!(
                "between {} and {} (the union of both bitmaps)",
                kib(a.blocks_changed.max(b.blocks_changed)),
                kib(a.blocks_changed + b.blocks_changed)
            ),
        };
        for (victim, survivor) in [(a, b), (b, a)] {
            o.push_str(&format!(
                "If {} discards its data ('tandemadm connect --discard-my-data {}' on {}, 'tandemadm connect {}' on {}):\n",
                victim.node, self.resource, victim.node, self.resource, survivor.node
            ));
            if victim.blocks_changed == 0 {
                o.push_str(&format!(
                    "  {} loses nothing: it wrote nothing since the split\n",
                    victim.node
                ));
            } else {
                o.push_str(&format!(
                    "  {} loses {} written from {} to {}; they are saved first under {} on {}\n",
                    victim.node,
                    kib(victim.blocks_changed),
                    utc(victim.first_write_s),
                    utc(victim.last_write_s),
                    save_dir,
                    victim.node
                ));
            }
            o.push_str(&format!(
                "  {} keeps its {}; the resync to {} moves {moves}\n",
                survivor.node,
                kib(survivor.blocks_changed),
                victim.node
            ));
        }
        o
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(86_400 * 365), "1971-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
    }
}
