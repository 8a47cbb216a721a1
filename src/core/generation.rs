//! Generation UUIDs as DRBD 8.4 maintains them, and the decision on connect.
//!
//! Bit 0 of the current UUID records the role (1 while Primary) and is masked
//! out of every comparison, so promotion alone never looks like new data.
//!
//! [`compare`] is DRBD 8.4's `drbd_uuid_compare` rule table
//! (`reference/drbd.md` §b5): given both nodes' UUID tuples it says who
//! resyncs from whom, whether the bitmap suffices or everything must move,
//! or that the data diverged (split brain) or is unrelated. The rule number
//! that fired is kept: operators grep DRBD's `uuid_compare()=X by rule R`.

use crate::meta::GenerationUuids;
use std::fmt;

/// DRBD's `UUID_NEW_BM_OFFSET`: added to the bitmap UUID at resync start.
pub const UUID_NEW_BM_OFFSET: u64 = 0x0001_0000_0000_0000;

/// Start a new data generation: the old current UUID becomes the bitmap UUID
/// (the point from which the bitmap tracks changes) and `fresh` becomes current.
///
/// The bitmap UUID keeps the old current UUID's bit 0 (as DRBD does): it
/// records whether this node was Primary when the generation diverged, which
/// `discard-younger-primary` and `discard-older-primary` read.
pub fn new_current(uuids: &mut GenerationUuids, fresh: u64) {
    let primary = uuids.current & 1;
    if uuids.bitmap == 0 {
        uuids.bitmap = uuids.current;
    }
    uuids.current = (fresh & !1) | primary;
}

pub fn set_role_bit(uuids: &mut GenerationUuids, primary: bool) {
    uuids.current = (uuids.current & !1) | u64::from(primary);
}

/// `uuid_flags` exchanged with the UUIDs (DRBD's P_UUIDS).
pub mod uuid_flags {
    /// The sender was told `--discard-my-data`.
    pub const DISCARD_MY_DATA: u32 = 1;
    /// The sender crashed while Primary.
    pub const CRASHED_PRIMARY: u32 = 2;
    /// The sender's disk is (or will be) Inconsistent.
    pub const INCONSISTENT: u32 = 4;
    /// Skip the initial sync (new-current-uuid --clear-bitmap).
    pub const SKIP_INITIAL_SYNC: u32 = 8;
    /// The sender has no disk (it failed and was detached): there is
    /// nothing to resync to or from it.
    pub const DISKLESS: u32 = 16;
}

/// One side's view, as exchanged on connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UuidReport {
    pub uuids: GenerationUuids,
    /// Set bits in the sender's bitmap (4 KiB blocks).
    pub bitmap_bits: u64,
    pub flags: u32,
    pub primary: bool,
    /// When the sender wrote what the receiver has not seen.
    pub divergence: crate::meta::Divergence,
}

impl UuidReport {
    /// The message this report travels in.
    pub fn to_message(&self) -> crate::wire::Message {
        crate::wire::Message::Uuids {
            current: self.uuids.current,
            bitmap: self.uuids.bitmap,
            history: self.uuids.history,
            bitmap_bits: self.bitmap_bits,
            flags: self.flags,
            primary: self.primary,
            first_write_s: self.divergence.first_write_s,
            last_write_s: self.divergence.last_write_s,
        }
    }

    /// The report a `Uuids` message carries (`None` for any other message).
    pub fn from_message(msg: &crate::wire::Message) -> Option<UuidReport> {
        match *msg {
            crate::wire::Message::Uuids {
                current,
                bitmap,
                history,
                bitmap_bits,
                flags,
                primary,
                first_write_s,
                last_write_s,
            } => Some(UuidReport {
                uuids: GenerationUuids {
                    current,
                    bitmap,
                    history,
                },
                bitmap_bits,
                flags,
                primary,
                divergence: crate::meta::Divergence {
                    first_write_s,
                    last_write_s,
                },
            }),
            _ => None,
        }
    }

    fn crashed_primary(&self) -> bool {
        self.flags & uuid_flags::CRASHED_PRIMARY != 0
    }
}

/// What the comparison decided, from this node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// In sync; nothing moves.
    None,
    /// This node is the sync source; the bitmap says what moves.
    SourceBitmap,
    /// This node is the sync source; everything moves.
    SourceFull,
    TargetBitmap,
    TargetFull,
    /// Both sides changed data since a common parent generation.
    SplitBrain {
        same_parent: bool,
    },
    /// No common history at all.
    Unrelated,
}

impl Sync {
    /// DRBD's numeric result, for the log line admins grep.
    pub fn drbd_code(self) -> i32 {
        match self {
            Sync::None => 0,
            Sync::SourceBitmap => 1,
            Sync::SourceFull => 2,
            Sync::TargetBitmap => -1,
            Sync::TargetFull => -2,
            Sync::SplitBrain { same_parent: true } => 100,
            Sync::SplitBrain { same_parent: false } => -100,
            Sync::Unrelated => -1000,
        }
    }

    /// The same decision seen from the peer.
    pub fn mirrored(self) -> Sync {
        match self {
            Sync::SourceBitmap => Sync::TargetBitmap,
            Sync::SourceFull => Sync::TargetFull,
            Sync::TargetBitmap => Sync::SourceBitmap,
            Sync::TargetFull => Sync::SourceFull,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub sync: Sync,
    /// DRBD 8.4's rule number.
    pub rule: u32,
}

const JUST_CREATED: u64 = GenerationUuids::JUST_CREATED;

/// DRBD 8.4's `drbd_uuid_compare`. `tie_break` settles the case where both
/// nodes crashed while Primary and had identical data (DRBD uses the
/// `RESOLVE_CONFLICTS` flag, which exactly one side of a connection holds).
pub fn compare(me: &UuidReport, peer: &UuidReport, tie_break: bool) -> Decision {
    let m = |u: u64| u & !1;
    let (s, p) = (m(me.uuids.current), m(peer.uuids.current));
    let (sb, pb) = (m(me.uuids.bitmap), m(peer.uuids.bitmap));
    let (sh, ph) = (
        [m(me.uuids.history[0]), m(me.uuids.history[1])],
        [m(peer.uuids.history[0]), m(peer.uuids.history[1])],
    );
    let d = |sync, rule| Decision { sync, rule };

    if s == JUST_CREATED && p == JUST_CREATED {
        return d(Sync::None, 10);
    }
    if (s == JUST_CREATED || s == 0) && p != JUST_CREATED {
        return d(Sync::TargetFull, 20);
    }
    if s != JUST_CREATED && (p == JUST_CREATED || p == 0) {
        return d(Sync::SourceFull, 30);
    }
    if s == p {
        if pb == 0 && sb != 0 {
            // I was sync source and missed the peer's "resync finished".
            return d(Sync::SourceBitmap, 34);
        }
        if sb == 0 && pb != 0 {
            return d(Sync::TargetBitmap, 35);
        }
        let rct = u32::from(me.crashed_primary()) + 2 * u32::from(peer.crashed_primary());
        if rct == 0 {
            return d(Sync::None, 40);
        }
        match (me.primary, peer.primary) {
            (true, true) => return d(Sync::SplitBrain { same_parent: false }, 41),
            (true, false) => return d(Sync::SourceBitmap, 41),
            (false, true) => return d(Sync::TargetBitmap, 41),
            (false, false) => {}
        }
        return match rct {
            1 => d(Sync::SourceBitmap, 40),
            2 => d(Sync::TargetBitmap, 40),
            _ if tie_break => d(Sync::SourceBitmap, 40),
            _ => d(Sync::TargetBitmap, 40),
        };
    }
    if s == pb {
        return d(Sync::TargetBitmap, 50);
    }
    if pb != 0 && s == ph[0] && ph[0].wrapping_add(UUID_NEW_BM_OFFSET) == pb {
        return d(Sync::TargetBitmap, 51);
    }
    if ph.iter().any(|&h| h != 0 && h == s) {
        return d(Sync::TargetFull, 60);
    }
    if sb == p {
        return d(Sync::SourceBitmap, 70);
    }
    if sb != 0 && sh[0] == p && sh[0].wrapping_add(UUID_NEW_BM_OFFSET) == sb {
        return d(Sync::SourceBitmap, 71);
    }
    if sh.iter().any(|&h| h != 0 && h == p) {
        return d(Sync::SourceFull, 80);
    }
    if sb == pb && sb != 0 {
        return d(Sync::SplitBrain { same_parent: true }, 90);
    }
    // Unlike DRBD 8.4, empty history slots are not a common ancestor (as in
    // DRBD 9): two fresh-ish nodes with zeroes there are unrelated, not split.
    if sh.iter().any(|&a| a != 0 && ph.contains(&a)) {
        return d(Sync::SplitBrain { same_parent: false }, 100);
    }
    d(Sync::Unrelated, 0)
}

/// The plain sentence every connect logs, e.g. "beta has 1 200 blocks newer
/// than alpha; alpha becomes SyncTarget".
pub fn explain(decision: Decision, me: &str, peer: &str, my_bits: u64, peer_bits: u64) -> String {
    let blocks = |n: u64| Spaced(n);
    match decision.sync {
        Sync::None => format!("{me} and {peer} hold the same data generation; no resync needed"),
        Sync::SourceBitmap => format!(
            "{me} has {} blocks newer than {peer}; {me} becomes SyncSource",
            blocks(my_bits.max(peer_bits))
        ),
        Sync::TargetBitmap => format!(
            "{peer} has {} blocks newer than {me}; {me} becomes SyncTarget",
            blocks(my_bits.max(peer_bits))
        ),
        Sync::SourceFull => format!("{peer}'s data is older than {me}'s bitmap covers; full sync, {me} becomes SyncSource"),
        Sync::TargetFull => format!("{me}'s data is older than {peer}'s bitmap covers; full sync, {me} becomes SyncTarget"),
        Sync::SplitBrain { same_parent } => format!(
            "split brain: {me} changed {} blocks and {peer} changed {} blocks since they last agreed{}; nothing is merged",
            blocks(my_bits),
            blocks(peer_bits),
            if same_parent { " (same parent generation)" } else { "" }
        ),
        Sync::Unrelated => format!("{me} and {peer} have no data generation in common: unrelated data, refusing to connect"),
    }
}

/// A count with thin spaces between thousands, as the sentences read.
struct Spaced(u64);

impl fmt::Display for Spaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                f.write_str(" ")?;
            }
            write!(f, "{ch}")?;
        }
        Ok(())
    }
}

/// The UUID tuple as DRBD logs it: `C:B:H1:H2`.
pub fn uuid_line(r: &UuidReport) -> String {
    let u = &r.uuids;
    format!(
        "{:016X}:{:016X}:{:016X}:{:016X} bits:{} flags:{}",
        u.current, u.bitmap, u.history[0], u.history[1], r.bitmap_bits, r.flags
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_while_disconnected_keeps_the_old_generation_as_bitmap_uuid() {
        let mut u = GenerationUuids {
            current: 0x1000,
            bitmap: 0,
            history: [0, 0],
        };
        new_current(&mut u, 0xabcd_ef01);
        set_role_bit(&mut u, true);
        assert_eq!(u.bitmap, 0x1000);
        assert_eq!(u.current, 0xabcd_ef01);
        set_role_bit(&mut u, false);
        assert_eq!(u.current, 0xabcd_ef00);
    }

    fn r(current: u64, bitmap: u64, h0: u64, h1: u64) -> UuidReport {
        UuidReport {
            uuids: GenerationUuids {
                current,
                bitmap,
                history: [h0, h1],
            },
            bitmap_bits: 0,
            flags: 0,
            primary: false,
            divergence: Default::default(),
        }
    }

    /// The decision table, one row per situation an operator meets. Each
    /// case is also checked from the other side, which must mirror it.
    #[test]
    fn the_drbd_84_rule_table() {
        let (a, b, c, x) = (0xA0, 0xB0, 0xC0, 0xF0);
        let cases: &[(&str, UuidReport, UuidReport, Sync, u32)] = &[
            (
                "both fresh from create-md",
                r(4, 0, 0, 0),
                r(4, 0, 0, 0),
                Sync::None,
                10,
            ),
            (
                "I am fresh, the peer has data",
                r(4, 0, 0, 0),
                r(a, 0, 0, 0),
                Sync::TargetFull,
                20,
            ),
            ("the peer is fresh", r(a, 0, 0, 0), r(4, 0, 0, 0), Sync::SourceFull, 30),
            (
                "same generation, clean reconnect",
                r(a, 0, b, 0),
                r(a + 1, 0, b, 0),
                Sync::None,
                40,
            ),
            (
                "I missed the resync-finished event",
                r(a, b, 0, 0),
                r(a, 0, b, 0),
                Sync::SourceBitmap,
                34,
            ),
            (
                "the peer wrote while I was away",
                r(a, 0, 0, 0),
                r(b, a, 0, 0),
                Sync::TargetBitmap,
                50,
            ),
            (
                "I wrote while the peer was away",
                r(b, a, 0, 0),
                r(a, 0, 0, 0),
                Sync::SourceBitmap,
                70,
            ),
            (
                "the peer lost P_SYNC_UUID",
                r(a, 0, 0, 0),
                r(c, a + UUID_NEW_BM_OFFSET, a, 0),
                Sync::TargetBitmap,
                51,
            ),
            (
                "I am in the peer's history only",
                r(a, 0, 0, 0),
                r(c, b, a, 0),
                Sync::TargetFull,
                60,
            ),
            (
                "the peer is in my history only",
                r(c, b, a, 0),
                r(a, 0, 0, 0),
                Sync::SourceFull,
                80,
            ),
            (
                "both promoted apart from the same parent",
                r(b, a, 0, 0),
                r(c, a, 0, 0),
                Sync::SplitBrain { same_parent: true },
                90,
            ),
            (
                "both diverged from older history",
                r(b, c, x, 0),
                r(a, 0xD0, x, 0),
                Sync::SplitBrain { same_parent: false },
                100,
            ),
            ("nothing in common", r(a, 0, 0, 0), r(b, 0, 0, 0), Sync::Unrelated, 0),
        ];
        for (name, me, peer, want, rule) in cases {
            let got = compare(me, peer, true);
            assert_eq!((got.sync, got.rule), (*want, *rule), "{name}");
            let back = compare(peer, me, false);
            assert_eq!(back.sync, want.mirrored(), "{name}, seen from the peer");
        }
    }

    #[test]
    fn crashed_primary_resyncs_its_hot_extents_to_the_peer() {
        let mut me = r(0xA1, 0, 0, 0);
        me.flags = uuid_flags::CRASHED_PRIMARY;
        let peer = r(0xA0, 0, 0, 0);
        assert_eq!(
            compare(&me, &peer, false),
            Decision {
                sync: Sync::SourceBitmap,
                rule: 40
            }
        );
        assert_eq!(compare(&peer, &me, true).sync, Sync::TargetBitmap);
        // If the peer was promoted meanwhile it holds the newer data.
        let mut peer = peer;
        peer.primary = true;
        assert_eq!(
            compare(&me, &peer, false),
            Decision {
                sync: Sync::TargetBitmap,
                rule: 41
            }
        );
    }

    #[test]
    fn reports_round_trip_through_their_message() {
        let mut rep = r(0xA1, 0xB0, 0xC0, 0);
        rep.bitmap_bits = 12;
        rep.flags = uuid_flags::CRASHED_PRIMARY;
        rep.primary = true;
        assert_eq!(UuidReport::from_message(&rep.to_message()), Some(rep));
        assert_eq!(UuidReport::from_message(&crate::wire::Message::Ping), None);
    }

    #[test]
    fn the_sentence_names_the_winner() {
        let d = Decision {
            sync: Sync::TargetBitmap,
            rule: 50,
        };
        assert_eq!(
            explain(d, "alpha", "beta", 0, 1200),
            "beta has 1 200 blocks newer than alpha; alpha becomes SyncTarget"
        );
        let sb = Decision {
            sync: Sync::SplitBrain { same_parent: true },
            rule: 90,
        };
        assert!(explain(sb, "alpha", "beta", 3, 4).contains("nothing is merged"));
    }
}
