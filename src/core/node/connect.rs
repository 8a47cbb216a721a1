//! What a connect decides and what a lost link leaves: the generation
//! UUIDs compared (DRBD 8.4's rule table, `generation::compare`), a split
//! brain resolved by the `after-sb-*` policies or refused, the victim's
//! diverged blocks saved before anything overwrites them, the sync
//! direction taken; and on a disconnect, the writes waiting for the peer
//! completed degraded (their blocks out of sync) and the peer fenced
//! where the configuration says so.

use super::super::generation::{self, uuid_flags, Sync, UuidReport};
use super::super::split_brain::{self, Resolution, Sides};
use super::super::state::{ConnState, DiskState, Role};
use super::super::{Action, Handler, ReqId};
use super::Node;
use crate::meta::{Divergence, MdFlags};

/// The outcome of comparing with a peer on connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The sync to perform (from this node's side), if the link is accepted.
    pub sync: Option<Sync>,
    /// Why the link is refused, if it is.
    pub refuse: Option<String>,
    /// UUID tuples, rule and the plain sentence, for the log.
    pub lines: Vec<String>,
    /// Set when the UUIDs show a split brain.
    pub split_brain: Option<SplitBrainOutcome>,
}

/// What became of a split brain found on connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBrainOutcome {
    /// No policy and no `--discard-my-data` chose: the link is refused.
    Unresolved,
    /// Resolved; `victim_is_me`: this node's changes are discarded.
    Resolved { victim_is_me: bool },
    /// This node was Primary and lost; `demoted` if it could be (no NBD
    /// clients), else the link is refused and `pri-lost-after-sb` runs.
    PrimaryLost { demoted: bool },
}

impl Node {
    /// What connecting to a peer with this report decides, and the log
    /// lines that explain it. Pure: used on connect and by `--dry-run`.
    pub fn decide(&self, peer: &UuidReport, peer_data_bytes: u64) -> Verdict {
        let peer_name = self.peer.clone().unwrap_or_default();
        let me = self.uuid_report(self.discard_my_data);
        let mut lines = vec![
            format!("{}: self {}", self.resource, generation::uuid_line(&me)),
            format!("{}: peer {}", self.resource, generation::uuid_line(peer)),
        ];
        if peer_data_bytes != self.data_bytes {
            let why = format!(
                "{}: peer {peer_name} has {peer_data_bytes} bytes of data, this node {}; sizes must match",
                self.resource, self.data_bytes
            );
            return Verdict {
                sync: None,
                refuse: Some(why),
                lines,
                split_brain: None,
            };
        }
        // A side without a disk has no data to compare, send or receive:
        // the link comes up and the one with a disk serves and keeps the
        // bitmap of what the other's next disk needs.
        let without_disk = match (self.disk == DiskState::Diskless, peer.flags & uuid_flags::DISKLESS != 0) {
            (true, true) => Some("neither side has a disk".to_owned()),
            (true, false) => Some(format!("{} has no disk", self.node)),
            (false, true) => Some(format!("{peer_name} has no disk")),
            (false, false) => None,
        };
        if let Some(who) = without_disk {
            lines.push(format!("{}: {who}; connected without a resync", self.resource));
            return Verdict {
                sync: Some(Sync::None),
                refuse: None,
                lines,
                split_brain: None,
            };
        }
        let tie_break = self.node < peer_name;
        let mut decision = generation::compare(&me, peer, tie_break);
        lines.push(format!(
            "{}: uuid_compare()={} by rule {}",
            self.resource,
            decision.sync.drbd_code(),
            decision.rule
        ));
        // Disk states override: an Inconsistent side is always the target.
        let me_bad = self.disk <= DiskState::Inconsistent;
        let peer_bad = peer.flags & uuid_flags::INCONSISTENT != 0;
        let overridden = match (me_bad, peer_bad) {
            (true, false) if !matches!(decision.sync, Sync::TargetBitmap | Sync::TargetFull) => Some(Sync::TargetFull),
            (false, true) if !matches!(decision.sync, Sync::SourceBitmap | Sync::SourceFull) => Some(Sync::SourceFull),
            _ => None,
        };
        if let Some(sync) = overridden {
            decision.sync = sync;
            let side = if matches!(sync, Sync::SourceFull) {
                "source"
            } else {
                "target"
            };
            lines.push(format!("{}: becoming sync {side} due to disk states", self.resource));
        }
        let sentence = generation::explain(decision, &self.node, &peer_name, me.bitmap_bits, peer.bitmap_bits);
        if let Sync::SplitBrain { same_parent } = decision.sync {
            return self.decide_split_brain(&me, peer, same_parent, &sentence, lines);
        }
        let refuse = match decision.sync {
            Sync::Unrelated => Some(format!("{}: Unrelated data, aborting: {sentence}", self.resource)),
            Sync::TargetBitmap | Sync::TargetFull if self.role == Role::Primary && !me_bad => Some(format!(
                "{}: I shall become SyncTarget, but I am primary! ({sentence})",
                self.resource
            )),
            _ => None,
        };
        if refuse.is_none() {
            lines.push(format!("{}: {sentence}", self.resource));
        }
        Verdict {
            sync: Some(decision.sync),
            refuse,
            lines,
            split_brain: None,
        }
    }

    /// The UUIDs show a split brain: `--discard-my-data` on one side
    /// resolves it, else the `after-sb-*` policies may, else the link is
    /// refused. Never merged silently: every path logs "Split-Brain".
    fn decide_split_brain(
        &self,
        me: &UuidReport,
        peer: &UuidReport,
        same_parent: bool,
        sentence: &str,
        mut lines: Vec<String>,
    ) -> Verdict {
        let res = &self.resource;
        let peer_name = self.peer.clone().unwrap_or_default();
        let (source, target) = if same_parent {
            (Sync::SourceBitmap, Sync::TargetBitmap)
        } else {
            (Sync::SourceFull, Sync::TargetFull)
        };
        let verdict = |sync: Option<Sync>, refuse: Option<String>, lines, outcome| Verdict {
            sync,
            refuse,
            lines,
            split_brain: Some(outcome),
        };
        let mine = self.discard_my_data;
        let theirs = peer.flags & uuid_flags::DISCARD_MY_DATA != 0;
        match (mine, theirs) {
            (true, true) => {
                let why = format!("{res}: incompatible discard-my-data settings: both nodes would discard their data");
                return verdict(None, Some(why), lines, SplitBrainOutcome::Unresolved);
            }
            (true, false) | (false, true) => {
                let victim = if mine { &self.node } else { &peer_name };
                lines.push(format!(
                    "{res}: Split-Brain detected, manually solved: {sentence}; {victim} discards its changes"
                ));
                let sync = if mine { target } else { source };
                return verdict(
                    Some(sync),
                    None,
                    lines,
                    SplitBrainOutcome::Resolved { victim_is_me: mine },
                );
            }
            (false, false) => {}
        }
        let i_am_primary = self.role == Role::Primary;
        let sides = Sides {
            me,
            peer,
            my_name: &self.node,
            peer_name: &peer_name,
            i_am_primary,
            i_lose_ties: self.node > peer_name,
        };
        let primaries = u32::from(i_am_primary) + u32::from(peer.primary);
        let (resolution, why) = split_brain::recover(&self.policies, &sides);
        // A Primary never becomes SyncTarget under its clients' feet: it
        // is demoted first, which needs it to be unused.
        let resolution = match resolution {
            Some(Resolution::Target) if i_am_primary => Some(Resolution::PrimaryLost),
            r => r,
        };
        match resolution {
            Some(Resolution::Source) => {
                lines.push(format!(
                    "{res}: Split-Brain detected, {primaries} primaries, automatically solved ({why}). Sync from this node; {peer_name} discards its changes"
                ));
                verdict(
                    Some(source),
                    None,
                    lines,
                    SplitBrainOutcome::Resolved { victim_is_me: false },
                )
            }
            Some(Resolution::Target) => {
                lines.push(format!(
                    "{res}: Split-Brain detected, {primaries} primaries, automatically solved ({why}). Sync from peer node; {} discards its changes",
                    self.node
                ));
                verdict(
                    Some(target),
                    None,
                    lines,
                    SplitBrainOutcome::Resolved { victim_is_me: true },
                )
            }
            Some(Resolution::PrimaryLost) if self.nbd_clients == 0 => {
                lines.push(format!(
                    "{res}: Split-Brain detected, {primaries} primaries, automatically solved ({why}). This Primary lost: it is demoted and syncs from {peer_name}"
                ));
                verdict(
                    Some(target),
                    None,
                    lines,
                    SplitBrainOutcome::PrimaryLost { demoted: true },
                )
            }
            Some(Resolution::PrimaryLost) => {
                let why = format!(
                    "{res}: Split-Brain detected ({why}): this Primary lost but {} NBD client(s) hold it, so it cannot be demoted; running pri-lost-after-sb and dropping the connection",
                    self.nbd_clients
                );
                verdict(
                    None,
                    Some(why),
                    lines,
                    SplitBrainOutcome::PrimaryLost { demoted: false },
                )
            }
            None => {
                let why =
                    format!("{res}: Split-Brain detected but unresolved, dropping connection: {sentence} ({why})");
                verdict(None, Some(why), lines, SplitBrainOutcome::Unresolved)
            }
        }
    }

    /// `connect --discard-my-data` for the next connection.
    pub fn set_discard_my_data(&mut self, discard: bool) {
        self.discard_my_data = discard;
    }

    pub(super) fn on_peer_connected(&mut self, peer: UuidReport, peer_data_bytes: u64, peer_features: u64) {
        if self.peer.is_none() {
            return;
        }
        self.peer_features = peer_features;
        self.forget_link_flushes();
        self.peer_role = if peer.primary { Role::Primary } else { Role::Secondary };
        self.peer_disk = if peer.flags & uuid_flags::DISKLESS != 0 {
            DiskState::Diskless
        } else if peer.flags & uuid_flags::INCONSISTENT != 0 {
            DiskState::Inconsistent
        } else {
            DiskState::UpToDate
        };
        let verdict = self.decide(&peer, peer_data_bytes);
        self.discard_my_data = false;
        for line in verdict.lines {
            self.log(false, line);
        }
        let mut victim = false;
        if verdict.split_brain.is_none() {
            self.split_brain_seen = None;
        }
        if let Some(outcome) = verdict.split_brain {
            self.split_brain_seen = Some((self.uuid_report(false), peer));
            self.act(Action::RunHandler(Handler::InitialSplitBrain));
            match outcome {
                SplitBrainOutcome::Unresolved => {
                    self.split_brain_unresolved = true;
                    self.act(Action::RunHandler(Handler::SplitBrain));
                }
                SplitBrainOutcome::PrimaryLost { demoted: false } => {
                    self.split_brain_unresolved = true;
                    self.act(Action::RunHandler(Handler::PriLostAfterSb));
                }
                SplitBrainOutcome::PrimaryLost { demoted: true } => {
                    self.role = Role::Secondary;
                    self.flags.remove(MdFlags::PRIMARY_IND);
                    if let Some(u) = self.uuids.as_mut() {
                        generation::set_role_bit(u, false);
                    }
                    victim = true;
                }
                SplitBrainOutcome::Resolved { victim_is_me } => victim = victim_is_me,
            }
        }
        let sync = match (verdict.refuse, verdict.sync) {
            (Some(why), _) => {
                self.refuse_link(why);
                return;
            }
            (None, None) => {
                self.refuse_link(format!("{}: no connect decision", self.resource));
                return;
            }
            (None, Some(sync)) => sync,
        };
        self.cstate = ConnState::Connected;
        self.split_brain_unresolved = false;
        self.flags.remove(MdFlags::PEER_OUT_DATED);
        if self.suspended.is_some() {
            self.log(
                false,
                format!("{}: the peer is back; held writes complete", self.resource),
            );
            self.release_held();
        }
        self.flags.insert(MdFlags::CONNECTED_IND);
        // The loser's own changes exist nowhere else: saved before the
        // peer learns it may overwrite them (our bitmap tells it so).
        let diverged = if victim { self.bitmap_runs() } else { Vec::new() };
        if matches!(sync, Sync::SourceFull | Sync::TargetFull) {
            self.mark_all_out_of_sync();
        }
        if sync == Sync::None && self.disk != DiskState::Diskless && self.peer_disk != DiskState::Diskless {
            self.divergence = Divergence::default();
        }
        self.pending_sync = match sync {
            Sync::None => None,
            s => Some(s),
        };
        if sync == Sync::None
            && matches!(self.disk, DiskState::Outdated | DiskState::Consistent)
            && self.peer_disk == DiskState::UpToDate
        {
            // Same generation as an UpToDate peer: the data is current.
            self.disk = DiskState::UpToDate;
            self.flags.insert(MdFlags::WAS_UP_TO_DATE);
            self.send_state();
        }
        self.forget_crash_once_in_sync();
        self.peer_bitmap_done = false;
        if self.pending_sync.is_some() {
            self.cstate = if matches!(sync, Sync::SourceBitmap | Sync::SourceFull) {
                ConnState::WFBitMapS
            } else {
                ConnState::WFBitMapT
            };
            if diverged.is_empty() {
                self.send_bitmap();
            } else {
                self.saving_diverged = true;
                self.act(Action::SaveDiverged { runs: diverged });
            }
        }
        self.act(Action::PersistMeta);
        self.act(Action::StateChanged);
    }

    /// The victim's diverged blocks are saved (or could not be).
    pub(super) fn on_diverged_saved(&mut self, result: Result<String, String>) {
        if !std::mem::take(&mut self.saving_diverged) {
            return;
        }
        match result {
            Ok(place) => {
                self.log(
                    true,
                    format!(
                        "{}: this node's changes since the split brain were saved to {place} before the resync overwrites them",
                        self.resource
                    ),
                );
                self.send_bitmap();
            }
            Err(why) => {
                self.pending_sync = None;
                self.refuse_link(format!(
                    "{}: cannot save this node's diverged blocks ({why}); refusing to overwrite them",
                    self.resource
                ));
            }
        }
    }

    pub(super) fn refuse_link(&mut self, reason: String) {
        self.cstate = ConnState::StandAlone;
        self.act(Action::Disconnect { reason });
        self.act(Action::StateChanged);
    }

    pub(super) fn on_peer_disconnected(&mut self, fresh_uuid: u64) {
        if self.peer.is_none() {
            return;
        }
        self.awaiting_source_bitmap = false;
        let was_connected = self.connected();
        let peer_had_data = self.peer_disk >= DiskState::Consistent;
        if was_connected
            && peer_had_data
            && self.role == Role::Primary
            && self.disk == DiskState::UpToDate
            && self.fencing != crate::config::Fencing::DontCare
            && self.suspended.is_none()
        {
            // Before any further write completes, the peer must be fenced:
            // else a cluster manager could promote it without those writes.
            self.suspended = Some("fencing: the fence-peer handler is running".to_owned());
            self.log(
                true,
                format!(
                    "{}: lost {}; writes are held until the fence-peer handler reports it outdated",
                    self.resource,
                    self.peer.clone().unwrap_or_default()
                ),
            );
            self.act(Action::RunHandler(Handler::FencePeer));
        }
        // Writes waiting for the peer complete degraded; the blocks are out of sync.
        let pending: Vec<(u64, ReqId)> = std::mem::take(&mut self.peer_pending).into_iter().collect();
        for (_, id) in &pending {
            if let Some(r) = self.inflight.iter_mut().find(|r| r.id == *id) {
                r.peer_failed = true;
                let (o, l) = (r.io.offset, r.io.len);
                self.mark_out_of_sync(o, l);
            }
        }
        let mut barriers: Vec<(u64, ReqId)> = self.barriers.drain().map(|(epoch, w)| (epoch, w.id)).collect();
        barriers.sort_unstable();
        self.counters.pe = 0;
        self.interrupt_verify();
        self.peer_verify = None;
        self.fail_remote();
        if let Some(rs) = self.resync.take() {
            // Unacknowledged resync blocks stay set in the bitmap.
            for (id, _) in rs.inflight {
                self.act(Action::Release { id });
            }
        }
        for (_, id) in pending {
            self.try_finish(id);
        }
        for (_, id) in barriers {
            self.try_finish(id);
        }
        self.peer_barriers.clear();
        self.forget_link_flushes();
        self.flushes.peer.forget();
        if was_connected && self.role == Role::Primary && self.disk == DiskState::UpToDate {
            if let Some(u) = self.uuids.as_mut() {
                generation::new_current(u, fresh_uuid);
                generation::set_role_bit(u, true);
            }
            self.act(Action::PersistMeta);
        }
        if self.cstate == ConnState::SyncTarget {
            self.log(
                true,
                format!(
                    "{}: connection lost during resync; local data stays Inconsistent",
                    self.resource
                ),
            );
        }
        self.flags.remove(MdFlags::CONNECTED_IND);
        if self.cstate != ConnState::StandAlone {
            self.cstate = ConnState::WFConnection;
        }
        self.peer_role = Role::Unknown;
        self.peer_disk = DiskState::DUnknown;
        self.act(Action::PersistBitmap);
        self.act(Action::StateChanged);
    }
}
