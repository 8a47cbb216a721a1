//! Flushes: early ones, group commit, barriers and their completion
//! marks, `Flushed`, and what each answers.

use super::*;

/// Disk request `id` (a write, a flush) finishes well.
fn disk_done(n: &mut Node, id: ReqId) {
    n.handle(Event::DiskDone { id, result: Ok(()) });
}

/// The Secondary's side of one commit: the peer's 4 KiB write `seq`
/// (request `id`) arrives and completes on the disk. The actions after.
fn peer_write_completes(n: &mut Node, id: ReqId, seq: u64) -> Vec<Action> {
    peer_write_with_flags_completes(n, id, seq, 0)
}

/// The same with these `Data` flags.
fn peer_write_with_flags_completes(n: &mut Node, id: ReqId, seq: u64, flags: u32) -> Vec<Action> {
    n.handle(Event::PeerWrite {
        id,
        seq,
        offset: 8192,
        len: 4096,
        flags,
    });
    drain(n);
    disk_done(n, id);
    drain(n)
}

fn flushes(actions: &[Action]) -> Vec<ReqId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Disk { id, op: DiskOp::Flush } => Some(*id),
            _ => None,
        })
        .collect()
}

fn barrier_acked(actions: &[Action], epoch: u64) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::SendPeer(Message::BarrierAck { epoch: e, .. }) if *e == epoch))
}

/// A Primary with no peer, its disk UpToDate.
fn standalone_primary() -> Node {
    let mut n = attached(MdFlags(MdFlags::CONSISTENT.0 | MdFlags::WAS_UP_TO_DATE.0));
    n.promote(false, 9).unwrap();
    drain(&mut n);
    n
}

/// A Primary with no peer whose client has committed five times (a
/// write, then a flush, each done before the next), so that the next
/// write's reply predicts a flush. Request ids below 50.
fn committing_primary() -> Node {
    let mut n = standalone_primary();
    for round in 0..5u64 {
        let after = write_completes(&mut n, 10 * round + 1, 0);
        assert!(flushes(&after).is_empty(), "round {round}: no pattern yet");
        flush_request(&mut n, 10 * round + 2);
        assert_eq!(flushes(&drain(&mut n)), vec![10 * round + 2], "its own flush");
        disk_done(&mut n, 10 * round + 2);
        drain(&mut n);
    }
    n
}

fn flush_request(n: &mut Node, id: ReqId) {
    n.handle(Event::NbdRequest {
        id,
        io: IoRequest {
            kind: IoKind::Flush,
            offset: 0,
            len: 0,
        },
    });
}

fn reply(actions: &[Action], id: ReqId) -> Option<u32> {
    actions.iter().find_map(|a| match a {
        Action::Reply { id: i, error } if *i == id => Some(*error),
        _ => None,
    })
}

#[test]
fn a_committing_clients_flush_finds_the_disk_flushed_as_its_write_completed() {
    let mut n = committing_primary();
    let after = write_completes(&mut n, 101, 0);
    assert_eq!(reply(&after, 101), Some(0));
    let early = flushes(&after);
    assert_eq!(early.len(), 1, "{after:?}");
    let reply_at = after.iter().position(|a| matches!(a, Action::Reply { .. }));
    let flush_at = after.iter().position(|a| matches!(a, Action::Disk { .. }));
    assert!(reply_at < flush_at, "the write's reply does not wait for the flush");
    // The FLUSH arrives while it is on the disk: it waits for it, with
    // no flush of its own.
    flush_request(&mut n, 102);
    let a = drain(&mut n);
    assert!(flushes(&a).is_empty() && reply(&a, 102).is_none(), "{a:?}");
    disk_done(&mut n, early[0]);
    assert_eq!(reply(&drain(&mut n), 102), Some(0));
    // Once it is done, the next FLUSH is answered at once.
    let early = flushes(&write_completes(&mut n, 111, 0));
    disk_done(&mut n, early[0]);
    drain(&mut n);
    flush_request(&mut n, 112);
    let a = drain(&mut n);
    assert!(flushes(&a).is_empty() && reply(&a, 112) == Some(0), "{a:?}");
    let c = n.flush_counts();
    // Seven FLUSHes: the five of the history, and these two.
    assert_eq!((c.app, c.app_early, c.app_covered), (7, 2, 2));
}

#[test]
fn a_flush_request_that_an_early_flush_does_not_cover_waits_for_it_and_gets_the_next() {
    let mut n = committing_primary();
    let early = flushes(&write_completes(&mut n, 101, 0));
    // Another write completes while the early flush is on the disk:
    // the FLUSH after it needs a flush issued after that.
    let after = write_completes(&mut n, 103, 8192);
    assert!(
        flushes(&after).is_empty(),
        "after a write where a flush was predicted, another history decides"
    );
    flush_request(&mut n, 104);
    assert!(flushes(&drain(&mut n)).is_empty(), "the disk is flushing: it waits");
    disk_done(&mut n, early[0]);
    let a = drain(&mut n);
    assert_eq!(reply(&a, 104), None);
    let next = flushes(&a);
    assert_eq!(next.len(), 1, "the next flush, for it: {a:?}");
    disk_done(&mut n, next[0]);
    assert_eq!(reply(&drain(&mut n), 104), Some(0));
    assert_eq!(n.flush_counts().app_grouped, 1);
}

#[test]
fn flush_requests_that_arrive_while_the_disk_flushes_share_the_next_flush() {
    // Four clients committing at once: their writes never go quiet,
    // and each FLUSH needs more than the flush on the disk covers.
    let mut n = standalone_primary();
    write_completes(&mut n, 1, 0);
    flush_request(&mut n, 2);
    assert_eq!(flushes(&drain(&mut n)), vec![2], "nothing on the disk: it goes itself");
    for k in 0..3u64 {
        write_completes(&mut n, 10 + 2 * k, 8192 * (k + 1));
        flush_request(&mut n, 11 + 2 * k);
        assert!(flushes(&drain(&mut n)).is_empty(), "FLUSH {k} waits");
    }
    disk_done(&mut n, 2);
    let a = drain(&mut n);
    assert_eq!(reply(&a, 2), Some(0));
    let next = flushes(&a);
    assert_eq!(next.len(), 1, "one flush for the three: {a:?}");
    disk_done(&mut n, next[0]);
    let a = drain(&mut n);
    for id in [11, 13, 15] {
        assert_eq!(reply(&a, id), Some(0), "{id}: {a:?}");
    }
    assert!(flushes(&a).is_empty());
    let c = n.flush_counts();
    assert_eq!(
        (c.app, c.app_grouped),
        (4, 3),
        "each FLUSH counts once, however answered"
    );
}

#[test]
fn flush_requests_waiting_for_a_flush_that_fails_the_disk_fail() {
    let mut n = standalone_primary();
    write_completes(&mut n, 1, 0);
    flush_request(&mut n, 2);
    drain(&mut n);
    write_completes(&mut n, 3, 8192);
    flush_request(&mut n, 4);
    drain(&mut n);
    n.handle(Event::DiskDone { id: 2, result: Err(5) });
    let a = drain(&mut n);
    assert!(reply(&a, 2).is_some_and(|e| e != 0), "{a:?}");
    assert!(reply(&a, 4).is_some_and(|e| e != 0), "{a:?}");
    assert!(flushes(&a).is_empty(), "no flush to a failed disk");
}

#[test]
fn a_flush_request_waiting_for_an_early_flush_that_fails_fails_with_it() {
    let mut n = committing_primary();
    let early = flushes(&write_completes(&mut n, 101, 0));
    flush_request(&mut n, 102);
    drain(&mut n);
    n.handle(Event::DiskDone {
        id: early[0],
        result: Err(5),
    });
    assert_eq!(reply(&drain(&mut n), 102), Some(errno::EIO));
}

#[test]
fn a_fresh_node_flushes_for_the_first_flush_request_whatever_it_has_written() {
    // What a killed daemon wrote may still sit in the disk's cache.
    let mut n = standalone_primary();
    flush_request(&mut n, 1);
    assert_eq!(flushes(&drain(&mut n)), vec![1]);
}

/// A Secondary that has seen five commits the plain way (a write, then
/// a barrier once it went quiet, the flush waiting for the barrier),
/// enough to predict the next: writes 100 to 104, seqs 1 to 10.
fn secondary_expecting_commits() -> Node {
    secondary_expecting_commits_to(crate::wire::handshake::FEATURES)
}

/// The same, connected to a peer whose hello had `features`.
fn secondary_expecting_commits_to(features: u64) -> Node {
    let mut n = connected_in_sync_to(features);
    for round in 0..5u64 {
        let after_write = peer_write_completes(&mut n, 100 + round, 2 * round + 1);
        assert!(flushes(&after_write).is_empty(), "round {round}: no pattern yet");
        n.handle(Event::PeerBarrier {
            epoch: 2 * round + 2,
            needs: None,
        });
        let flush = flushes(&drain(&mut n));
        assert_eq!(flush.len(), 1, "round {round}");
        disk_done(&mut n, flush[0]);
        assert!(barrier_acked(&drain(&mut n), 2 * round + 2));
    }
    n
}

#[test]
fn a_secondary_whose_barriers_follow_each_write_flushes_as_the_writes_go_quiet() {
    let mut n = secondary_expecting_commits();
    // The third write: the flush leaves with its ack, before the barrier.
    let after_write = peer_write_completes(&mut n, 110, 11);
    let ack_at = after_write
        .iter()
        .position(|a| matches!(a, Action::SendPeer(Message::DataAck { seq: 11, .. })));
    let early = flushes(&after_write);
    assert_eq!(early.len(), 1, "{after_write:?}");
    let flush_at = after_write
        .iter()
        .position(|a| matches!(a, Action::Disk { op: DiskOp::Flush, .. }));
    assert!(ack_at < flush_at, "the write's ack does not wait for the flush");
    // The barrier finds it on the disk: no second flush, the ack waits
    // for the early one.
    n.handle(Event::PeerBarrier { epoch: 12, needs: None });
    let on_barrier = drain(&mut n);
    assert!(flushes(&on_barrier).is_empty() && !barrier_acked(&on_barrier, 12));
    disk_done(&mut n, early[0]);
    assert!(barrier_acked(&drain(&mut n), 12));
    // The next barrier finds the flush already done: acked at once.
    let early = flushes(&peer_write_completes(&mut n, 111, 13));
    disk_done(&mut n, early[0]);
    drain(&mut n);
    n.handle(Event::PeerBarrier { epoch: 14, needs: None });
    let on_barrier = drain(&mut n);
    assert!(flushes(&on_barrier).is_empty() && barrier_acked(&on_barrier, 14));
    let c = n.flush_counts();
    assert_eq!((c.peer_early, c.peer_on_barrier), (2, 5));
}

#[test]
fn an_early_flush_does_not_answer_for_a_write_that_completed_after_it_began() {
    let mut n = secondary_expecting_commits();
    let early = flushes(&peer_write_completes(&mut n, 110, 11));
    assert_eq!(early.len(), 1);
    // Not the commit it predicted: another write, completed while the
    // early flush is still on the disk, then the barrier.
    let after = peer_write_completes(&mut n, 111, 12);
    assert!(flushes(&after).is_empty(), "the streak is over");
    n.handle(Event::PeerBarrier { epoch: 13, needs: None });
    assert!(
        flushes(&drain(&mut n)).is_empty(),
        "the disk is flushing: the barrier's flush waits for it"
    );
    disk_done(&mut n, early[0]);
    let a = drain(&mut n);
    assert!(!barrier_acked(&a, 13), "the early flush covers write 11 only");
    let own = flushes(&a);
    assert_eq!(own.len(), 1, "the barrier needs a flush issued after write 12");
    disk_done(&mut n, own[0]);
    assert!(barrier_acked(&drain(&mut n), 13));
}

#[test]
fn a_failed_early_flush_fails_the_disk_before_the_barrier_is_answered() {
    let mut n = secondary_expecting_commits();
    let early = flushes(&peer_write_completes(&mut n, 110, 11));
    n.handle(Event::PeerBarrier { epoch: 12, needs: None });
    drain(&mut n);
    n.handle(Event::DiskDone {
        id: early[0],
        result: Err(5),
    });
    let after = drain(&mut n);
    let state_at = after
        .iter()
        .position(|a| matches!(a, Action::SendPeer(Message::State { .. })));
    let ack_at = after
        .iter()
        .position(|a| matches!(a, Action::SendPeer(Message::BarrierAck { epoch: 12, .. })));
    assert!(state_at.is_some() && state_at < ack_at, "{after:?}");
    assert!(n.disk_state() < DiskState::UpToDate);
}

fn told_flushed(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendPeer(Message::Flushed { through, .. }) => Some(*through),
            _ => None,
        })
        .collect()
}

#[test]
fn a_secondary_tells_the_primary_when_its_early_flush_has_made_the_writes_stable() {
    let mut n = secondary_expecting_commits();
    let after_write = peer_write_completes(&mut n, 110, 11);
    let early = flushes(&after_write);
    assert!(told_flushed(&after_write).is_empty(), "not before the flush is done");
    disk_done(&mut n, early[0]);
    // Every write below seq 12 (the one just written included).
    assert_eq!(told_flushed(&drain(&mut n)), vec![12]);
    n.handle(Event::PeerBarrier { epoch: 12, needs: None });
    assert!(barrier_acked(&drain(&mut n), 12));
    // A barrier that arrives while the flush is on the disk: its ack
    // says it all.
    let early = flushes(&peer_write_completes(&mut n, 111, 13));
    assert_eq!(early.len(), 1);
    n.handle(Event::PeerBarrier { epoch: 14, needs: None });
    drain(&mut n);
    disk_done(&mut n, early[0]);
    let a = drain(&mut n);
    assert!(barrier_acked(&a, 14) && told_flushed(&a).is_empty(), "{a:?}");
    // A flush on a barrier's demand is answered by the barrier's ack
    // alone.
    let mut n = connected_in_sync();
    assert!(flushes(&peer_write_completes(&mut n, 100, 1)).is_empty());
    n.handle(Event::PeerBarrier { epoch: 2, needs: None });
    let own = flushes(&drain(&mut n));
    assert_eq!(own.len(), 1);
    disk_done(&mut n, own[0]);
    let a = drain(&mut n);
    assert!(barrier_acked(&a, 2) && told_flushed(&a).is_empty(), "{a:?}");
}

#[test]
fn a_secondary_says_nothing_of_a_flush_that_failed_or_outlived_its_link_or_to_an_older_peer() {
    // Failed: the disk's new state goes out instead.
    let mut n = secondary_expecting_commits();
    let early = flushes(&peer_write_completes(&mut n, 110, 11));
    n.handle(Event::DiskDone {
        id: early[0],
        result: Err(5),
    });
    assert!(told_flushed(&drain(&mut n)).is_empty());
    // The link dropped while it was on the disk: its seqs were the old
    // link's.
    let mut n = secondary_expecting_commits();
    let early = flushes(&peer_write_completes(&mut n, 110, 11));
    n.handle(Event::PeerDisconnected { fresh_uuid: 0x77 });
    drain(&mut n);
    disk_done(&mut n, early[0]);
    assert!(told_flushed(&drain(&mut n)).is_empty());
    // A peer that does not know the message would drop the link on it.
    let mut n = secondary_expecting_commits_to(crate::wire::handshake::FEATURE_VERIFY_STATE);
    let early = flushes(&peer_write_completes(&mut n, 110, 11));
    assert_eq!(early.len(), 1, "it flushes ahead all the same");
    disk_done(&mut n, early[0]);
    assert!(told_flushed(&drain(&mut n)).is_empty());
}

/// A connected Primary's client write `id` at `offset`, done on both
/// disks and replied, the peer's ack carrying completion mark `mark`; its
/// seq.
fn replicated_write_marked(n: &mut Node, id: ReqId, offset: u64, mark: Option<u64>) -> u64 {
    write_4k(n, id, offset);
    let seq = shipped_seq(&drain(n));
    disk_done(n, id);
    n.handle(Event::PeerAck {
        seq,
        status: 0,
        completed: mark,
    });
    assert_eq!(reply(&drain(n), id), Some(0));
    seq
}

/// The same from a peer that sends no marks.
fn replicated_write(n: &mut Node, id: ReqId, offset: u64) -> u64 {
    replicated_write_marked(n, id, offset, None)
}

/// The barrier these actions send: its epoch, and the mark it needs.
fn barrier(actions: &[Action]) -> Option<(u64, Option<u64>)> {
    actions.iter().find_map(|a| match a {
        Action::SendPeer(Message::Barrier { epoch, needs }) => Some((*epoch, *needs)),
        _ => None,
    })
}

fn barrier_sent(actions: &[Action]) -> Option<u64> {
    barrier(actions).map(|(epoch, _)| epoch)
}

fn barrier_needs(actions: &[Action]) -> Option<Option<u64>> {
    barrier(actions).map(|(_, needs)| needs)
}

#[test]
fn a_primary_answers_a_flush_the_peer_has_flushed_ahead_of_without_the_barriers_round_trip() {
    let mut n = connected_primary(1 << 20);
    let seq = replicated_write(&mut n, 1, 0);
    n.handle(Event::PeerFlushed {
        through: seq + 1,
        covers: None,
    });
    assert!(drain(&mut n).is_empty());
    flush_request(&mut n, 2);
    let a = drain(&mut n);
    assert_eq!(barrier_sent(&a), None, "no barrier: nothing to wait for");
    assert_eq!(flushes(&a), vec![2], "the local disk is flushed all the same");
    disk_done(&mut n, 2);
    assert_eq!(reply(&drain(&mut n), 2), Some(0));
    assert_eq!(n.snapshot().counters.pe, 0);
    assert_eq!(n.flush_counts().app_peer_ahead, 1);
    // The next write tells the peer a FLUSH came, for its prediction;
    // the one after it has nothing to tell.
    let data_flags = |n: &mut Node, id: ReqId| {
        write_4k(n, id, 4096 * id);
        drain(n).iter().find_map(|a| match a {
            Action::SendPeerData {
                msg: Message::Data { flags, .. },
                ..
            } => Some(*flags),
            _ => None,
        })
    };
    assert_eq!(data_flags(&mut n, 3), Some(wire::DATA_FLAG_AFTER_FLUSH));
    assert_eq!(data_flags(&mut n, 4), Some(0));
}

/// The completion mark a Secondary's `DataAck` for `seq` carried.
fn ack_mark(actions: &[Action], seq: u64) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::SendPeer(Message::DataAck { seq: s, completed, .. }) if *s == seq => *completed,
        _ => None,
    })
}

fn barrier_ack_covers(actions: &[Action], epoch: u64) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::SendPeer(Message::BarrierAck { epoch: e, covers }) if *e == epoch => *covers,
        _ => None,
    })
}

/// A Secondary of two committers: write 1 (seq 1) is done and
/// acknowledged, write 2 (seq 2, request 101, the other client's) still on
/// the disk. The mark write 1's ack carried.
fn secondary_with_a_write_on_the_disk() -> (Node, u64) {
    let mut n = connected_in_sync();
    let mark = ack_mark(&peer_write_completes(&mut n, 100, 1), 1).expect("a mark");
    n.handle(Event::PeerWrite {
        id: 101,
        seq: 2,
        offset: 16384,
        len: 4096,
        flags: 0,
    });
    drain(&mut n);
    (n, mark)
}

#[test]
fn a_barrier_with_a_mark_waits_for_no_write_its_flush_does_not_cover() {
    // The barrier of write 1's FLUSH.
    let (mut n, mark) = secondary_with_a_write_on_the_disk();
    n.handle(Event::PeerBarrier {
        epoch: 3,
        needs: Some(mark),
    });
    let own = flushes(&drain(&mut n));
    assert_eq!(own.len(), 1, "flushed at once, not after write 2");
    disk_done(&mut n, own[0]);
    let a = drain(&mut n);
    assert_eq!(barrier_ack_covers(&a, 3), Some(mark), "{a:?}");
    // Without a mark, the barrier waits for write 2 as before.
    let (mut n, _) = secondary_with_a_write_on_the_disk();
    n.handle(Event::PeerBarrier { epoch: 3, needs: None });
    assert!(flushes(&drain(&mut n)).is_empty(), "write 2 comes first");
    disk_done(&mut n, 101);
    assert_eq!(flushes(&drain(&mut n)).len(), 1);
}

#[test]
fn a_mark_beyond_what_the_secondary_completed_cannot_hold_its_barrier_forever() {
    let mut n = connected_in_sync();
    let mark = ack_mark(&peer_write_completes(&mut n, 100, 1), 1).expect("a mark");
    n.handle(Event::PeerBarrier {
        epoch: 2,
        needs: Some(mark + 1000),
    });
    let own = flushes(&drain(&mut n));
    assert_eq!(own.len(), 1);
    disk_done(&mut n, own[0]);
    assert!(barrier_acked(&drain(&mut n), 2));
}

#[test]
fn a_secondary_sends_no_marks_to_a_peer_that_does_not_read_them() {
    use crate::wire::handshake::{FEATURES, FEATURE_FLUSH_MARKS};
    let mut n = connected_in_sync_to(FEATURES & !FEATURE_FLUSH_MARKS);
    let a = peer_write_completes(&mut n, 100, 1);
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::SendPeer(Message::DataAck {
                seq: 1,
                completed: None,
                ..
            })
        )),
        "{a:?}"
    );
    n.handle(Event::PeerBarrier { epoch: 2, needs: None });
    let own = flushes(&drain(&mut n));
    disk_done(&mut n, own[0]);
    let a = drain(&mut n);
    assert!(barrier_acked(&a, 2) && barrier_ack_covers(&a, 2).is_none(), "{a:?}");
}

/// A connected Primary's client write `id` at `offset`, shipped and not
/// yet acknowledged by the peer; its seq.
fn write_in_flight(n: &mut Node, id: ReqId, offset: u64) -> u64 {
    write_4k(n, id, offset);
    let seq = shipped_seq(&drain(n));
    disk_done(n, id);
    assert_eq!(reply(&drain(n), id), None);
    seq
}

#[test]
fn a_primarys_barrier_asks_only_for_the_writes_its_flush_covers() {
    let mut n = connected_primary(1 << 20);
    // Before any ack on this link, a barrier means what it always did.
    flush_request(&mut n, 1);
    assert_eq!(barrier_needs(&drain(&mut n)), Some(None));
    // Another client's write in flight, this client's acknowledged.
    let other = write_in_flight(&mut n, 2, 0);
    replicated_write_marked(&mut n, 3, 4096, Some(40));
    flush_request(&mut n, 4);
    let a = drain(&mut n);
    assert_eq!(barrier_needs(&a), Some(Some(40)), "{a:?}");
    let epoch = barrier_sent(&a).expect("barrier");
    disk_done(&mut n, 4);
    drain(&mut n);
    // The peer's flush covers mark 40 while write 2 is still out:
    // told so (`Flushed`), the FLUSH is answered before its barrier's
    // ack and before write 2.
    n.handle(Event::PeerFlushed {
        through: other,
        covers: Some(40),
    });
    assert_eq!(reply(&drain(&mut n), 4), Some(0));
    // FLUSH 1 too: every write sent before it is below `through`.
    assert_eq!(n.flush_counts().app_peer_ahead, 2);
    n.handle(Event::PeerBarrierAck {
        epoch,
        covers: Some(40),
    });
    assert!(drain(&mut n).is_empty(), "a late ack is ignored");
    // The next FLUSH needs no more than the peer's flushes cover: no
    // barrier at all.
    flush_request(&mut n, 5);
    let a = drain(&mut n);
    assert_eq!(barrier_sent(&a), None, "{a:?}");
}

#[test]
fn a_barriers_ack_answers_the_flushes_its_flush_covered() {
    let mut n = connected_primary(1 << 20);
    replicated_write_marked(&mut n, 1, 0, Some(10));
    flush_request(&mut n, 2);
    let first = barrier_sent(&drain(&mut n)).expect("barrier");
    disk_done(&mut n, 2);
    replicated_write_marked(&mut n, 3, 4096, Some(11));
    flush_request(&mut n, 4);
    let second = barrier_sent(&drain(&mut n)).expect("barrier");
    disk_done(&mut n, 4);
    drain(&mut n);
    // The first barrier's flush began after write 3 completed there.
    n.handle(Event::PeerBarrierAck {
        epoch: first,
        covers: Some(11),
    });
    let a = drain(&mut n);
    assert_eq!((reply(&a, 2), reply(&a, 4)), (Some(0), Some(0)), "{a:?}");
    assert_eq!(n.snapshot().counters.pe, 0);
    n.handle(Event::PeerBarrierAck {
        epoch: second,
        covers: Some(11),
    });
    assert!(drain(&mut n).is_empty());
}

#[test]
fn a_clients_flush_does_not_wait_for_a_write_no_client_was_told_is_done() {
    let mut n = connected_primary(1 << 20);
    replicated_write_marked(&mut n, 1, 0, Some(10));
    flush_request(&mut n, 2);
    let a = drain(&mut n);
    assert_eq!(flushes(&a), vec![2]);
    let epoch2 = barrier_sent(&a).expect("barrier");
    // Another client's write completes here while FLUSH 2 is on the
    // disk; the peer has not acknowledged it, so it is not done.
    let other = write_in_flight(&mut n, 3, 4096);
    flush_request(&mut n, 4);
    let epoch4 = barrier_sent(&drain(&mut n)).expect("barrier");
    disk_done(&mut n, 2);
    let a = drain(&mut n);
    assert!(flushes(&a).is_empty(), "FLUSH 2's flush covers FLUSH 4: {a:?}");
    for epoch in [epoch2, epoch4] {
        n.handle(Event::PeerBarrierAck {
            epoch,
            covers: Some(10),
        });
    }
    let a = drain(&mut n);
    assert_eq!((reply(&a, 2), reply(&a, 4)), (Some(0), Some(0)), "{a:?}");
    // Once write 3 is done, the next FLUSH needs it.
    n.handle(Event::PeerAck {
        seq: other,
        status: 0,
        completed: Some(11),
    });
    assert_eq!(reply(&drain(&mut n), 3), Some(0));
    flush_request(&mut n, 5);
    assert_eq!(flushes(&drain(&mut n)), vec![5]);
}

#[test]
fn marks_are_a_links_and_need_protocol_c() {
    let mut n = connected_primary(1 << 20);
    replicated_write_marked(&mut n, 1, 0, Some(10));
    n.handle(Event::PeerDisconnected { fresh_uuid: 0x77 });
    drain(&mut n);
    n.handle(Event::PeerConnected {
        peer: n.uuid_report(false),
        peer_data_bytes: 1 << 20,
        peer_features: crate::wire::handshake::FEATURES,
    });
    drain(&mut n);
    n.handle(Event::PeerState {
        primary: false,
        disk: DiskState::UpToDate,
    });
    drain(&mut n);
    // Write 1 was acknowledged on the last link: only a barrier that
    // asks for everything covers it.
    flush_request(&mut n, 2);
    assert_eq!(barrier_needs(&drain(&mut n)), Some(None));
}

#[test]
fn a_secondary_learns_of_a_flush_that_went_without_a_barrier_from_the_next_write() {
    // Commits whose FLUSHes the Primary answered by our word: no
    // barriers, each write after a FLUSH flagged. The prediction holds.
    let mut n = secondary_expecting_commits();
    for k in 0..8u64 {
        let flags = if k == 0 { 0 } else { wire::DATA_FLAG_AFTER_FLUSH };
        let early = flushes(&peer_write_with_flags_completes(&mut n, 110 + k, 11 + k, flags));
        assert_eq!(early.len(), 1, "commit {k}");
        disk_done(&mut n, early[0]);
        assert_eq!(told_flushed(&drain(&mut n)), vec![12 + k]);
    }
    // Plain writes, unflagged: the prediction stops.
    let mut early = 0;
    for k in 0..8u64 {
        let f = flushes(&peer_write_completes(&mut n, 120 + k, 20 + k));
        for &id in &f {
            disk_done(&mut n, id);
        }
        drain(&mut n);
        early += f.len();
    }
    assert!(early <= 2, "{early} flushes for plain writes");
}

#[test]
fn a_primarys_flush_waits_for_the_peer_until_a_flush_covers_every_write_it_sent() {
    let mut n = connected_primary(1 << 20);
    let first = replicated_write(&mut n, 1, 0);
    n.handle(Event::PeerFlushed {
        through: first + 1,
        covers: None,
    });
    let second = replicated_write(&mut n, 3, 8192);
    flush_request(&mut n, 4);
    let epoch = barrier_sent(&drain(&mut n)).expect("barrier");
    disk_done(&mut n, 4);
    assert_eq!(
        reply(&drain(&mut n), 4),
        None,
        "write {second} is not stable on the peer"
    );
    n.handle(Event::PeerFlushed {
        through: second,
        covers: None,
    });
    assert_eq!(reply(&drain(&mut n), 4), None, "below the second write's seq only");
    // The peer's next flush covers it, before the barrier is acked.
    n.handle(Event::PeerFlushed {
        through: second + 1,
        covers: None,
    });
    assert_eq!(reply(&drain(&mut n), 4), Some(0));
    n.handle(Event::PeerBarrierAck { epoch, covers: None });
    assert!(drain(&mut n).iter().all(|a| !matches!(a, Action::Reply { .. })));
    assert_eq!(n.flush_counts().app_peer_ahead, 1);
}
