//! The node's unit tests: each drives one `Node` through events and
//! checks the actions it queues. What a flush covers, the barriers and
//! the completion marks have a file of their own (`flushes`).

use super::resync::RESYNC_INFLIGHT_MAX;
use super::*;
use crate::core::errno;

mod flushes;

fn attached(flags: MdFlags) -> Node {
    let mut n = Node::new("r0", 0, "alpha", None, 'C');
    n.attach(AttachInfo {
        data_bytes: 1 << 20,
        uuids: GenerationUuids::new_created(),
        flags,
        divergence: Divergence::default(),
    })
    .unwrap();
    while n.poll_action().is_some() {}
    n
}

fn drain(n: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

/// A Primary with a peer configured (so with an activity log of
/// `al_extents`), the peer away, `extents` 4 MiB extents of data.
fn primary_with_activity_log(al_extents: u32, extents: u64) -> Node {
    let mut n = Node::new("r0", 0, "alpha", Some("beta"), 'C');
    n.set_al_extents(al_extents);
    n.attach(AttachInfo {
        data_bytes: extents << AL_EXTENT_SHIFT,
        uuids: GenerationUuids::new_created(),
        flags: MdFlags::CONSISTENT,
        divergence: Divergence::default(),
    })
    .unwrap();
    n.promote(true, 2).unwrap();
    drain(&mut n);
    n
}

#[test]
fn a_write_the_full_activity_log_cannot_take_waits_for_a_write_to_finish() {
    use crate::meta::al::EXTENTS_MAX;
    const EXTENT: u64 = 1 << AL_EXTENT_SHIFT;
    let mut n = primary_with_activity_log(8, EXTENTS_MAX as u64 + 8);
    let write = |e: u64| IoRequest {
        kind: IoKind::Write { fua: false },
        offset: e * EXTENT,
        len: 4096,
    };
    let started = |actions: &[Action], id: ReqId| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Disk { id: i, .. } if *i == id))
    };
    // As many writes in flight as the log can hold, each in its own
    // extent: the set outgrows al-extents (busy extents stay) up to the ring.
    for e in 0..EXTENTS_MAX as u64 {
        n.handle(Event::NbdRequest { id: e, io: write(e) });
        let a = drain(&mut n);
        assert!(started(&a, e), "write {e} started");
    }
    // One more extent: it waits, and is logged nowhere yet.
    let last = EXTENTS_MAX as u64;
    n.handle(Event::NbdRequest {
        id: last,
        io: write(last),
    });
    let a = drain(&mut n);
    assert!(
        !started(&a, last) && !a.iter().any(|a| matches!(a, Action::PersistAl(_))),
        "{a:?}"
    );
    // A write into a logged extent does not wait.
    n.handle(Event::NbdRequest {
        id: last + 1,
        io: write(5),
    });
    let a = drain(&mut n);
    assert!(!started(&a, last + 1), "overlaps write 5, which is in flight");
    // Write 3 finishes: extent 3 can leave, and the waiting write starts
    // after a transaction that fits the ring.
    n.handle(Event::DiskDone { id: 3, result: Ok(()) });
    let a = drain(&mut n);
    assert!(started(&a, last), "{a:?}");
    let blocks = a
        .iter()
        .find_map(|a| match a {
            Action::PersistAl(b) => Some(b.clone()),
            _ => None,
        })
        .expect("a transaction before the write");
    let extents: Vec<u32> = blocks.iter().flat_map(|b| b.extents.iter().copied()).collect();
    assert_eq!(extents.len(), EXTENTS_MAX);
    assert!(extents.contains(&(last as u32)) && !extents.contains(&3));
}

#[test]
fn the_activity_log_keeps_the_extents_written_most_recently() {
    const EXTENT: u64 = 1 << AL_EXTENT_SHIFT;
    let mut n = primary_with_activity_log(2, 8);
    let mut logged = Vec::new();
    for (id, e) in [(1, 0), (2, 1), (3, 0), (4, 2)] {
        let io = IoRequest {
            kind: IoKind::Write { fua: false },
            offset: e * EXTENT,
            len: 4096,
        };
        n.handle(Event::NbdRequest { id, io });
        for a in drain(&mut n) {
            if let Action::PersistAl(blocks) = a {
                logged.push(blocks[0].extents.clone());
            }
        }
        n.handle(Event::DiskDone { id, result: Ok(()) });
        drain(&mut n);
    }
    // Extent 0, written again after 1, is the one kept when 2 comes.
    assert_eq!(logged, vec![vec![0], vec![0, 1], vec![0, 2]]);
}

#[test]
fn fresh_metadata_needs_force_to_become_primary() {
    let mut n = attached(MdFlags::default());
    assert_eq!(n.disk_state(), DiskState::Inconsistent);
    let e = n.promote(false, 0xabc0).unwrap_err();
    assert_eq!(e.rv, StateRv::NoUpToDateDisk);
    assert!(e
        .to_string()
        .starts_with("State change failed: (-2) Need access to UpToDate data"));
    n.promote(true, 0xabc0).unwrap();
    assert_eq!((n.role(), n.disk_state()), (Role::Primary, DiskState::UpToDate));
    assert!(n.flags().contains(MdFlags::CONSISTENT) && n.flags().contains(MdFlags::PRIMARY_IND));
    let u = n.uuids().unwrap();
    assert_eq!(u.current, 0xabc1, "new generation, role bit set");
    assert_eq!(drain(&mut n), vec![Action::PersistMeta, Action::StateChanged]);
}

#[test]
fn demotion_is_refused_while_a_client_holds_the_export() {
    let mut n = attached(MdFlags::CONSISTENT);
    n.promote(false, 2).unwrap();
    n.nbd_client_opened();
    let e = n.demote(false, "NBD client 10.0.0.5:51234").unwrap_err();
    assert_eq!(
        format!("r0: {e}"),
        "r0: State change failed: (-12) Device is held open by someone (NBD client 10.0.0.5:51234)"
    );
    n.nbd_client_closed();
    n.demote(false, "").unwrap();
    assert_eq!(n.role(), Role::Secondary);
    assert!(!n.flags().contains(MdFlags::PRIMARY_IND));
    assert!(n.export_refusal().unwrap().contains("r0 is Secondary on alpha"));
}

#[test]
fn a_write_is_answered_only_after_its_disk_write_completes() {
    let mut n = attached(MdFlags::CONSISTENT);
    n.promote(false, 2).unwrap();
    drain(&mut n);
    let io = IoRequest {
        kind: IoKind::Write { fua: true },
        offset: 4096,
        len: 8192,
    };
    n.handle(Event::NbdRequest { id: 7, io });
    assert_eq!(
        drain(&mut n),
        vec![Action::Disk {
            id: 7,
            op: DiskOp::Write {
                offset: 4096,
                len: 8192,
                fua: true
            }
        }]
    );
    assert_eq!(n.snapshot().counters.lo, 1);
    n.handle(Event::DiskDone { id: 7, result: Ok(()) });
    assert_eq!(drain(&mut n), vec![Action::Reply { id: 7, error: 0 }]);
    let c = n.snapshot().counters;
    assert_eq!((c.dw, c.lo, c.ap), (8, 0, 0));
}

#[test]
fn a_write_error_detaches_the_disk_and_reaches_a_client_with_no_peer() {
    let mut n = attached(MdFlags::CONSISTENT);
    n.promote(false, 2).unwrap();
    drain(&mut n);
    write_4k(&mut n, 1, 0);
    drain(&mut n);
    n.handle(Event::DiskDone { id: 1, result: Err(5) });
    let acts = drain(&mut n);
    assert!(
        acts.contains(&Action::Reply {
            id: 1,
            error: errno::EIO
        }),
        "{acts:?}"
    );
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Log { warn: true, message } if message.contains("I/O error"))));
    assert!(acts.contains(&Action::DetachDisk), "{acts:?}");
    assert_eq!(n.disk_state(), DiskState::Diskless);
    n.handle(Event::NbdRequest {
        id: 2,
        io: IoRequest {
            kind: IoKind::Read,
            offset: 0,
            len: 4096,
        },
    });
    assert_eq!(
        drain(&mut n),
        vec![Action::Reply {
            id: 2,
            error: errno::EIO
        }]
    );
}

/// A Secondary of 1 MiB connected to a peer of the same generation:
/// nothing to resync.
fn connected_in_sync() -> Node {
    connected_in_sync_to(crate::wire::handshake::FEATURES)
}

/// Connected to a peer whose hello had `features`, both UpToDate.
fn connected_in_sync_to(features: u64) -> Node {
    connected_in_sync_sized(features, 1 << 20)
}

fn connected_in_sync_sized(features: u64, data_bytes: u64) -> Node {
    connected_from(
        MdFlags(MdFlags::CONSISTENT.0 | MdFlags::WAS_UP_TO_DATE.0),
        features,
        data_bytes,
    )
}

/// Attached with metadata `flags`, then connected to a peer of the same
/// generation, both with `data_bytes` of data; the peer's hello had
/// `features`.
fn connected_from(flags: MdFlags, features: u64, data_bytes: u64) -> Node {
    let uuids = GenerationUuids {
        current: 0x5eed_0000_0000_0004,
        ..GenerationUuids::default()
    };
    let mut n = Node::new("r0", 0, "alpha", Some("beta"), 'C');
    n.attach(AttachInfo {
        data_bytes,
        uuids,
        flags,
        divergence: Divergence::default(),
    })
    .unwrap();
    n.connecting();
    n.handle(Event::PeerConnected {
        peer: UuidReport {
            uuids,
            bitmap_bits: 0,
            flags: 0,
            primary: false,
            divergence: Divergence::default(),
        },
        peer_data_bytes: data_bytes,
        peer_features: features,
    });
    drain(&mut n);
    n
}

/// Primary, connected to an UpToDate Secondary, on a disk of `data_bytes`.
fn connected_primary(data_bytes: u64) -> Node {
    let mut n = connected_in_sync_sized(crate::wire::handshake::FEATURES, data_bytes);
    n.handle(Event::PeerState {
        primary: false,
        disk: DiskState::UpToDate,
    });
    n.promote(false, 9).unwrap();
    drain(&mut n);
    n
}

/// An NBD client's 4 KiB write at `offset`.
fn write_4k(n: &mut Node, id: ReqId, offset: u64) {
    n.handle(Event::NbdRequest {
        id,
        io: IoRequest {
            kind: IoKind::Write { fua: false },
            offset,
            len: 4096,
        },
    });
}

/// The client's 4 KiB write `id` at `offset`, done on the disk: the
/// actions after.
fn write_completes(n: &mut Node, id: ReqId, offset: u64) -> Vec<Action> {
    write_4k(n, id, offset);
    drain(n);
    n.handle(Event::DiskDone { id, result: Ok(()) });
    drain(n)
}

/// A tick of 100 ms; the actions it caused.
fn tick_100ms(n: &mut Node) -> Vec<Action> {
    n.handle(Event::Tick {
        elapsed_us: 100_000,
        latency: Default::default(),
    });
    drain(n)
}

fn resets(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ResetLink { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_peer_that_completes_no_write_for_timeout_times_ko_count_is_dropped_and_the_write_completes_here() {
    let mut n = connected_primary(1 << 20);
    n.set_ko_limit_us(3_000_000); // timeout 1 s × ko-count 3
    write_4k(&mut n, 1, 8192);
    drain(&mut n);
    n.handle(Event::DiskDone { id: 1, result: Ok(()) });
    assert!(
        !drain(&mut n).iter().any(|a| matches!(a, Action::Reply { .. })),
        "protocol C waits for the peer"
    );
    // The first tick finds the write waiting; 3 s after it the link goes.
    for i in 0..30 {
        let a = tick_100ms(&mut n);
        assert!(resets(&a).is_empty(), "tick {i}: {a:?}");
    }
    let a = tick_100ms(&mut n);
    let reasons = resets(&a);
    assert_eq!(reasons.len(), 1, "{a:?}");
    assert!(
        reasons[0].contains(
            "Remote failed to finish a request within ko-count * timeout: beta left one unanswered for 3.0 s"
        ),
        "{}",
        reasons[0]
    );
    // The shell drops the link: the write completes here, its block out of sync.
    n.handle(Event::PeerDisconnected {
        fresh_uuid: 0x5eed_0000_0003_0000,
    });
    let a = drain(&mut n);
    assert!(
        a.iter().any(|a| matches!(a, Action::Reply { id: 1, error: 0 })),
        "{a:?}"
    );
    assert_eq!(n.snapshot().counters.oos, 4);
    assert!(resets(&tick_100ms(&mut n)).is_empty(), "once");
}

/// The seq of the write `actions` shipped to the peer.
fn shipped_seq(actions: &[Action]) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::SendPeerData {
                msg: Message::Data { seq, .. },
                ..
            } => Some(*seq),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no data shipped: {actions:?}"))
}

/// 100 ms of the `disk-timeout` clock; the actions it caused.
fn disk_clock_100ms(n: &mut Node) -> Vec<Action> {
    n.handle(Event::DiskClock { elapsed_us: 100_000 });
    drain(n)
}

fn logs(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn an_attachable_disk() -> AttachInfo {
    AttachInfo {
        data_bytes: 1 << 20,
        uuids: GenerationUuids::new_created(),
        flags: MdFlags::CONSISTENT,
        divergence: Divergence::default(),
    }
}

#[test]
fn a_primary_disk_that_leaves_a_write_unanswered_for_disk_timeout_is_detached_and_the_write_completes_on_the_peer() {
    let mut n = connected_primary(1 << 20);
    n.set_disk_timeout_us(2_000_000);
    // A write that leaves at 1 s: the limit counts from it, not from
    // the clock's start.
    for _ in 0..10 {
        disk_clock_100ms(&mut n);
    }
    write_4k(&mut n, 1, 8192);
    let seq = shipped_seq(&drain(&mut n));
    n.handle(Event::PeerAck {
        seq,
        status: 0,
        completed: None,
    });
    assert!(drain(&mut n).is_empty(), "protocol C waits for the local disk too");
    for i in 0..19 {
        let a = disk_clock_100ms(&mut n);
        assert!(a.is_empty(), "tick {i}: {a:?}");
    }
    let a = disk_clock_100ms(&mut n);
    assert!(
        logs(&a).contains("local disk left a request unanswered for 2.0 s (disk-timeout 2.0 s): disk detached as failed, 1 request(s) on it abandoned"),
        "{a:?}"
    );
    assert!(a.iter().any(|a| matches!(a, Action::DetachDisk)), "{a:?}");
    // The hung disk would hang a bitmap write too.
    assert!(!a.iter().any(|a| matches!(a, Action::PersistBitmap)), "{a:?}");
    assert!(
        a.iter().any(|a| matches!(a, Action::Reply { id: 1, error: 0 })),
        "the peer holds it: {a:?}"
    );
    assert_eq!(n.disk_state(), DiskState::Diskless);
    assert_eq!(n.snapshot().counters.lo, 0);

    // Until the abandoned write comes back, no disk is attached: it
    // could still land on the old one.
    assert_eq!(n.abandoned_requests(), 1);
    assert!(n.is_abandoned(1));
    let refused = n.attach(an_attachable_disk()).expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("1 request(s) that disk-timeout gave up on have not come back"),
        "{refused}"
    );
    n.handle(Event::DiskDone { id: 1, result: Ok(()) });
    let a = drain(&mut n);
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::Reply { .. } | Action::Release { .. })),
        "{a:?}"
    );
    assert!(
        logs(&a).contains("none is outstanding now: the disk may be attached again"),
        "{a:?}"
    );
    assert_eq!(n.abandoned_requests(), 0);
    n.attach(an_attachable_disk()).expect("attached");
}

#[test]
fn an_activity_log_write_that_hangs_fails_the_disk_and_the_write_behind_it_never_reaches_it() {
    let mut n = connected_primary(1 << 20);
    n.set_disk_timeout_us(2_000_000);
    write_4k(&mut n, 1, 8192);
    // The shell runs the actions in order; the activity-log write is
    // the one that does not come back within disk-timeout.
    let mut before = Vec::new();
    loop {
        let a = n.poll_action().expect("an activity-log write first");
        let persist = matches!(a, Action::PersistAl(_));
        before.push(a);
        if persist {
            break;
        }
    }
    n.handle(Event::MetaHung {
        id: 100,
        what: "activity log",
    });
    let a = drain(&mut n);
    assert!(
        logs(&a).contains("the activity log write did not finish within disk-timeout (2.0 s): disk detached as failed, 0 request(s) on it abandoned"),
        "{a:?}"
    );
    assert!(!a.iter().any(|a| matches!(a, Action::Disk { .. })), "{a:?}");
    assert!(a.iter().any(|a| matches!(a, Action::DetachDisk)), "{a:?}");
    assert!(!n.is_abandoned(1), "it never reached the disk");
    assert_eq!(n.abandoned_requests(), 1, "the activity-log write is the kernel's now");
    // The peer has it: the client's write completes.
    let seq = shipped_seq(&[before, a].concat());
    n.handle(Event::PeerAck {
        seq,
        status: 0,
        completed: None,
    });
    assert!(drain(&mut n)
        .iter()
        .any(|a| matches!(a, Action::Reply { id: 1, error: 0 })));
    // Until it is back, no disk is attached: it could still land.
    assert!(n.attach(an_attachable_disk()).is_err());
    n.handle(Event::DiskDone {
        id: 100,
        result: Ok(()),
    });
    n.attach(an_attachable_disk()).expect("nothing left on the old disk");
}

/// The first `PersistAl` in `n`'s queue, and what the shell writes for
/// it: the transactions folded into it (`fold_queued_al`).
fn fold_first_al(n: &mut Node) -> Vec<u32> {
    let first = loop {
        if let Action::PersistAl(tr) = n.poll_action().expect("a transaction") {
            break tr;
        }
    };
    let (written, _) = n.fold_queued_al(first);
    written.iter().flat_map(|b| b.extents.iter().copied()).collect()
}

#[test]
fn writes_into_cold_extents_queued_together_cost_one_activity_log_write_until_an_eviction() {
    let write = |n: &mut Node, id: ReqId, extent: u64| {
        // A clock: the divergence's start is written once, not per write.
        n.set_clock(1_800_000_000);
        n.handle(Event::NbdRequest {
            id,
            io: IoRequest {
                kind: IoKind::Write { fua: false },
                offset: extent << AL_EXTENT_SHIFT,
                len: 4096,
            },
        })
    };
    let mut n = primary_with_activity_log(8, 16);
    let al_before = n.snapshot().counters.al;

    // Three writes into three cold extents, handled before the shell
    // runs any of their actions (they arrived in one batch).
    for (id, extent) in [(1, 0), (2, 1), (3, 2)] {
        write(&mut n, id, extent);
    }
    assert_eq!(fold_first_al(&mut n), vec![0, 1, 2], "the newest set covers all three");
    let rest = drain(&mut n);
    assert!(!rest.iter().any(|a| matches!(a, Action::PersistAl(_))), "{rest:?}");
    assert_eq!(
        rest.iter().filter(|a| matches!(a, Action::Disk { .. })).count(),
        3,
        "the data writes stay queued after it"
    );
    assert_eq!(n.snapshot().counters.al - al_before, 1, "al counts what is written");

    // A log of two extents: the third write evicts extent 0, whose
    // bits must be on disk before a transaction without it; nothing is
    // folded across that bitmap write.
    let mut n = primary_with_activity_log(2, 16);
    for (id, extent) in [(1, 0), (2, 1)] {
        write(&mut n, id, extent);
    }
    for id in [1, 2] {
        n.handle(Event::DiskDone { id, result: Ok(()) });
    }
    drain(&mut n);
    for (id, extent) in [(3, 2), (4, 3)] {
        write(&mut n, id, extent);
    }
    let first = fold_first_al(&mut n);
    let rest = drain(&mut n);
    let bitmap = rest.iter().position(|a| matches!(a, Action::PersistBitmap));
    let later_al = rest.iter().position(|a| matches!(a, Action::PersistAl(_)));
    assert!(
        matches!((bitmap, later_al), (Some(b), Some(a)) if b < a),
        "{first:?} then {rest:?}"
    );
}

#[test]
fn without_a_peer_a_write_the_disk_leaves_unanswered_fails_after_disk_timeout_and_disk_timeout_0_waits_forever() {
    for (limit_us, fails) in [(500_000, true), (0, false)] {
        let mut n = attached(MdFlags::CONSISTENT);
        n.promote(false, 9).unwrap();
        drain(&mut n);
        n.set_disk_timeout_us(limit_us);
        write_4k(&mut n, 1, 0);
        drain(&mut n);
        let mut replies = Vec::new();
        for _ in 0..100 {
            replies.extend(
                disk_clock_100ms(&mut n)
                    .into_iter()
                    .filter(|a| matches!(a, Action::Reply { .. })),
            );
        }
        if fails {
            // No good copy anywhere: the client is told, not left waiting.
            assert!(
                matches!(
                    replies[..],
                    [Action::Reply {
                        id: 1,
                        error: errno::EIO
                    }]
                ),
                "{replies:?}"
            );
            assert_eq!(n.disk_state(), DiskState::Diskless);
        } else {
            assert!(replies.is_empty(), "{replies:?}");
            assert_ne!(n.disk_state(), DiskState::Diskless);
        }
    }
}

#[test]
fn a_slow_peer_that_keeps_completing_writes_and_a_ko_count_of_0_keep_the_link() {
    for (ko_count, acks) in [(3, true), (0, false)] {
        let mut n = connected_primary(1 << 20);
        n.set_ko_limit_us(ko_count * 1_000_000); // timeout 1 s
        let mut sent = VecDeque::new();
        for id in 1..=100u64 {
            // A write a tick, each acknowledged two ticks later: the
            // peer is always busy, never stuck on one request.
            write_4k(&mut n, id, (id % 64) * 4096);
            for a in drain(&mut n) {
                if let Action::SendPeerData {
                    msg: Message::Data { seq, .. },
                    ..
                } = a
                {
                    sent.push_back(seq);
                }
            }
            n.handle(Event::DiskDone { id, result: Ok(()) });
            if acks && sent.len() > 2 {
                let seq = sent.pop_front().unwrap_or_default();
                n.handle(Event::PeerAck {
                    seq,
                    status: 0,
                    completed: None,
                });
            }
            let a = tick_100ms(&mut n);
            assert!(resets(&a).is_empty(), "ko-count {ko_count}, write {id}: {a:?}");
        }
    }
}

#[test]
fn a_replicated_write_and_flush_leave_for_the_peer_before_their_local_disk_operation() {
    let mut n = connected_primary(1 << 20);
    let position = |actions: &[Action], what: &dyn Fn(&Action) -> bool| {
        actions.iter().position(what).unwrap_or_else(|| panic!("{actions:?}"))
    };
    // The peer's leg is the longer one: it goes into the batch first.
    for (id, kind) in [(1, IoKind::Write { fua: false }), (2, IoKind::Flush)] {
        let len = if kind == IoKind::Flush { 0 } else { 4096 };
        n.handle(Event::NbdRequest {
            id,
            io: IoRequest { kind, offset: 0, len },
        });
        let a = drain(&mut n);
        let peer = position(&a, &|a| {
            matches!(
                a,
                Action::SendPeerData { id: i, .. } if *i == id
            ) || matches!(a, Action::SendPeer(Message::Barrier { .. }))
        });
        let disk = position(&a, &|a| matches!(a, Action::Disk { id: i, .. } if *i == id));
        assert!(peer < disk, "{a:?}");
    }
}

/// A Primary's full resync to its peer over `secs` seconds of 10 ms
/// ticks, every read and send completing at once, while an application
/// write stays in flight if `loaded`. Returns the KiB the resync read
/// and the most resync reads it had in flight at once.
fn resync_for(secs: u64, c_min_rate: Option<u64>, loaded: bool) -> (u64, usize) {
    let mut n = connected_primary(256 << 20);
    n.set_resync_rate(0, c_min_rate);
    if loaded {
        write_4k(&mut n, 1, 0);
        drain(&mut n);
    }
    n.invalidate(false, 7).unwrap();
    let (mut read_kib, mut most) = (0, 0);
    for _ in 0..secs * 100 {
        n.handle(Event::Tick {
            elapsed_us: 10_000,
            latency: Default::default(),
        });
        loop {
            let actions = drain(&mut n);
            let reads: Vec<_> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Disk {
                        id,
                        op: DiskOp::Read { len, .. },
                    } if *id >= CORE_ID_BASE => Some((*id, *len)),
                    _ => None,
                })
                .collect();
            let sent: Vec<u64> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::SendPeerData {
                        msg: Message::Data { seq, .. },
                        ..
                    } => Some(*seq),
                    _ => None,
                })
                .collect();
            if reads.is_empty() && sent.is_empty() {
                break;
            }
            most = most.max(n.resync.as_ref().map_or(0, |r| r.inflight.len()));
            for (id, len) in reads {
                read_kib += u64::from(len) / 1024;
                n.handle(Event::DiskDone { id, result: Ok(()) });
            }
            for seq in sent {
                n.handle(Event::PeerAck {
                    seq,
                    status: 0,
                    completed: None,
                });
            }
        }
    }
    (read_kib, most)
}

#[test]
fn under_application_load_the_resync_gives_way_down_to_c_min_rate() {
    // Idle, the resync runs at full width and, here, speed.
    let (idle_kib, idle_most) = resync_for(2, Some(4096), false);
    assert_eq!(idle_most, RESYNC_INFLIGHT_MAX);
    assert_eq!(idle_kib, 256 << 10, "all of it");
    // Loaded, c-min-rate 4 MiB/s: about 4 MiB a second (the rate is
    // measured in slots of a tenth of a second), two at a time.
    let (kib, most) = resync_for(5, Some(4096), true);
    assert!(most <= crate::core::throttle::INFLIGHT_UNDER_LOAD, "{most} in flight");
    assert!(
        (5 * 4096 * 9 / 10..=5 * 4096 * 11 / 10).contains(&kib),
        "moved {kib} KiB"
    );
    // c-min-rate 0: the resync does not give way at all. (The chunk
    // under the write in flight waits for it.)
    let all_but_the_written = (256 << 10) - 256;
    let (kib, most) = resync_for(2, Some(0), true);
    assert_eq!((kib, most), (all_but_the_written, RESYNC_INFLIGHT_MAX));
    // Unset: only the width shrinks.
    let (kib, most) = resync_for(2, None, true);
    assert_eq!(
        (kib, most),
        (all_but_the_written, crate::core::throttle::INFLIGHT_UNDER_LOAD)
    );
}

#[test]
fn a_secondary_resyncing_its_primary_gives_way_to_the_primarys_writes() {
    // The Primary's disk was replaced: this Secondary is the source.
    let mut n = connected_in_sync_sized(crate::wire::handshake::FEATURES, 64 << 20);
    n.handle(Event::PeerState {
        primary: true,
        disk: DiskState::UpToDate,
    });
    drain(&mut n);
    n.handle(Event::PeerStartResync {
        source_is_sender: false,
        full: true,
    });
    let reads = |a: &[Action]| -> Vec<ReqId> {
        a.iter()
            .filter_map(|a| match a {
                Action::Disk {
                    id,
                    op: DiskOp::Read { .. },
                } if *id >= CORE_ID_BASE => Some(*id),
                _ => None,
            })
            .collect()
    };
    let first = reads(&drain(&mut n));
    assert_eq!(first.len(), RESYNC_INFLIGHT_MAX, "idle: full width");
    // The Primary's application writes, replicated here.
    n.handle(Event::PeerWrite {
        id: 7,
        seq: 1 << 40,
        offset: 60 << 20,
        len: 4096,
        flags: 0,
    });
    drain(&mut n);
    // As the reads finish and their data is acknowledged, no more than
    // two take their place.
    let mut next = Vec::new();
    for id in first {
        n.handle(Event::DiskDone { id, result: Ok(()) });
        for a in drain(&mut n) {
            if let Action::SendPeerData {
                msg: Message::Data { seq, .. },
                ..
            } = a
            {
                n.handle(Event::PeerAck {
                    seq,
                    status: 0,
                    completed: None,
                });
            }
        }
        next.extend(reads(&drain(&mut n)));
        let inflight = n.resync.as_ref().map_or(0, |r| r.inflight.len() + r.sent.len());
        assert!(inflight <= RESYNC_INFLIGHT_MAX, "{inflight}");
    }
    let width = n.resync.as_ref().map_or(0, |r| r.inflight.len() + r.sent.len());
    assert!(
        !next.is_empty() && width <= crate::core::throttle::INFLIGHT_UNDER_LOAD,
        "{width} in flight"
    );
}

/// A Primary whose disk failed under a write, serving through its
/// UpToDate peer; its lineage is `connected_in_sync`'s.
fn diskless_primary() -> Node {
    let mut n = connected_primary(1 << 20);
    write_4k(&mut n, 1, 0);
    let seq = shipped_seq(&drain(&mut n));
    n.handle(Event::DiskDone { id: 1, result: Err(5) });
    n.handle(Event::PeerAck {
        seq,
        status: 0,
        completed: None,
    });
    drain(&mut n);
    assert_eq!(n.disk_state(), DiskState::Diskless);
    n
}

#[test]
fn a_link_that_comes_back_to_a_node_without_a_disk_connects_without_a_resync() {
    // The Primary whose disk failed: it reconnects, serves through the
    // peer, and has nothing to resync (it would be a SyncTarget with
    // no disk to write to).
    let mut n = diskless_primary();
    let u = n.uuids().unwrap_or_default();
    n.handle(Event::PeerDisconnected { fresh_uuid: 0x77 });
    drain(&mut n);
    n.connecting();
    let beta = UuidReport {
        uuids: u,
        bitmap_bits: 0,
        flags: 0,
        primary: false,
        divergence: Divergence::default(),
    };
    n.handle(Event::PeerConnected {
        peer: beta,
        peer_data_bytes: 1 << 20,
        peer_features: crate::wire::handshake::FEATURES,
    });
    let a = drain(&mut n);
    assert!(
        logs(&a).contains("alpha has no disk; connected without a resync"),
        "{a:?}"
    );
    assert!(
        !a.iter().any(|a| matches!(a, Action::SendPeer(Message::Bitmap { .. }))),
        "{a:?}"
    );
    assert_eq!(
        (n.cstate(), n.disk_state()),
        (ConnState::Connected, DiskState::Diskless)
    );
    n.handle(Event::NbdRequest {
        id: 9,
        io: IoRequest {
            kind: IoKind::Read,
            offset: 0,
            len: 4096,
        },
    });
    assert!(
        drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::ForwardRead { id: 9, .. })),
        "reads go to the peer"
    );

    // The side with the disk: no resync either, and what it writes
    // stays in its bitmap for the other's next disk.
    let mut s = connected_primary(1 << 20);
    s.handle(Event::PeerDisconnected { fresh_uuid: 0x78 });
    drain(&mut s);
    s.connecting();
    s.handle(Event::PeerConnected {
        peer: n.uuid_report(false),
        peer_data_bytes: 1 << 20,
        peer_features: crate::wire::handshake::FEATURES,
    });
    let a = drain(&mut s);
    assert!(
        logs(&a).contains("beta has no disk; connected without a resync"),
        "{a:?}"
    );
    assert_eq!(s.cstate(), ConnState::Connected);
    let oos = s.snapshot().counters.oos;
    write_4k(&mut s, 20, 64 << 10);
    assert!(!drain(&mut s).iter().any(|a| matches!(a, Action::SendPeerData { .. })));
    assert_eq!(s.snapshot().counters.oos, oos + 4);
}

fn disk_of(current: u64) -> AttachInfo {
    AttachInfo {
        data_bytes: 1 << 20,
        uuids: GenerationUuids {
            current,
            ..GenerationUuids::default()
        },
        flags: MdFlags(MdFlags::CONSISTENT.0 | MdFlags::WAS_UP_TO_DATE.0),
        divergence: Divergence::default(),
    }
}

/// `diskless_primary` with the disk it detached attached again, and
/// what that attach did.
fn reattached_primary() -> (Node, Vec<Action>) {
    let ours = diskless_primary().uuids.map(|u| u.current).unwrap();
    let mut n = diskless_primary();
    n.attach(disk_of(ours)).unwrap();
    assert!(n.resync_attached_disk());
    let a = drain(&mut n);
    (n, a)
}

#[test]
fn a_primary_attaching_a_disk_resyncs_it_over_the_link_and_never_one_of_another_generation() {
    // The disk it detached: the peer sends what the bitmap says.
    let (n, a) = reattached_primary();
    let bitmap = a
        .iter()
        .position(|a| matches!(a, Action::SendPeer(Message::Bitmap { last: true, .. })));
    let start = a.iter().position(|a| {
        matches!(
            a,
            Action::SendPeer(Message::StartResync {
                source_is_sender: false,
                full: false
            })
        )
    });
    assert!(bitmap.is_some() && bitmap < start, "{a:?}");
    assert_eq!(
        (n.cstate, n.disk_state()),
        (ConnState::SyncTarget, DiskState::Inconsistent)
    );
    // A blank disk, or an older copy of this data: every block.
    for current in [GenerationUuids::JUST_CREATED, 0x5eed_0000_0000_0004] {
        let mut n = diskless_primary();
        if let Some(u) = n.uuids.as_mut() {
            u.history[0] = 0x5eed_0000_0000_0004;
            u.current = 0x7777_0000_0000_0009;
        }
        n.attach(disk_of(current)).unwrap();
        assert!(n.resync_attached_disk());
        let a = drain(&mut n);
        assert!(
            a.contains(&Action::SendPeer(Message::StartResync {
                source_is_sender: false,
                full: true
            })),
            "{a:?}"
        );
    }
    // A disk of a generation this Primary never had may hold writes
    // made nowhere else: refused, saying what to do.
    let mut n = diskless_primary();
    let e = n.attach(disk_of(0x1234_0000_0000_0000)).unwrap_err();
    assert!(
        e.detail.contains("generation it never had") && e.detail.contains("create-md --force"),
        "{e}"
    );
    assert_eq!(n.disk_state(), DiskState::Diskless);
    assert!(!n.resync_attached_disk());
}

#[test]
fn a_primary_resyncing_its_reattached_disk_reads_from_the_peer_what_only_the_peers_bitmap_knows() {
    let (mut n, _) = reattached_primary();
    let read_from = |n: &mut Node, id: ReqId, block: u64| -> &'static str {
        n.handle(Event::NbdRequest {
            id,
            io: IoRequest {
                kind: IoKind::Read,
                offset: block * BM_BLOCK_BYTES,
                len: 4096,
            },
        });
        let a = drain(n);
        if a.iter().any(|a| matches!(a, Action::ForwardRead { .. })) {
            "peer"
        } else if a.iter().any(|a| {
            matches!(
                a,
                Action::Disk {
                    op: DiskOp::Read { .. },
                    ..
                }
            )
        }) {
            "disk"
        } else {
            panic!("{a:?}")
        }
    };
    // Block 200 was written while this node was diskless: only the
    // peer's bitmap says so, and it has not arrived.
    assert_eq!(read_from(&mut n, 10, 200), "peer");
    n.handle(Event::PeerBitmap {
        runs: vec![(200, 1)],
        last: true,
    });
    drain(&mut n);
    assert_eq!(read_from(&mut n, 11, 200), "peer", "out of sync until resynced");
    assert_eq!(read_from(&mut n, 12, 201), "disk", "in sync on both sides");
    // The source's side: asked to resync a re-attached disk, it sends
    // the union of both bitmaps back before any block.
    let mut src = connected_in_sync_sized(crate::wire::handshake::FEATURES, 1 << 20);
    src.handle(Event::PeerBitmap {
        runs: vec![(3, 1)],
        last: true,
    });
    src.handle(Event::PeerStartResync {
        source_is_sender: false,
        full: false,
    });
    let a = drain(&mut src);
    let back = a
        .iter()
        .position(|a| matches!(a, Action::SendPeer(Message::Bitmap { runs, last: true }) if runs == &vec![(3, 1)]));
    let first_block = a.iter().position(|a| {
        matches!(
            a,
            Action::Disk {
                op: DiskOp::Read { .. },
                ..
            }
        )
    });
    assert!(back.is_some() && back < first_block, "{a:?}");
}

#[test]
fn a_verify_result_shows_once_the_verify_ends_and_not_for_an_interrupted_one() {
    let mut n = connected_in_sync();
    n.set_digest_algs(Some(crate::digest::DigestAlg::Crc32c), None);
    n.start_verify().unwrap();
    assert_eq!(n.snapshot().verify_found_kib, None, "running");
    // Both sides' digests, played here: the peer's copy of the block
    // at 600 KiB differs, everything else matches.
    let bad = 600 << 10;
    loop {
        let actions = drain(&mut n);
        if actions.is_empty() {
            break;
        }
        for a in actions {
            match a {
                Action::Disk {
                    id,
                    op: DiskOp::Digest { .. },
                } => n.handle(Event::DigestDone {
                    id,
                    result: Ok(vec![0]),
                }),
                Action::SendPeer(Message::DigestCheck { seq, offset, len, .. }) => n.handle(Event::PeerDigestReply {
                    seq,
                    equal: !(offset..offset + u64::from(len)).contains(&bad),
                }),
                _ => {}
            }
        }
    }
    assert_eq!(n.cstate(), ConnState::Connected);
    assert_eq!(n.snapshot().verify_found_kib, Some(4), "one 4 KiB block");
    // The next verify hides that result until it ends; this one never does.
    n.start_verify().unwrap();
    assert_eq!(n.snapshot().verify_found_kib, None);
    n.handle(Event::PeerDisconnected {
        fresh_uuid: 0x5eed_0000_0002_0000,
    });
    assert_eq!(n.snapshot().verify_found_kib, None, "interrupted");
}

#[test]
fn the_target_of_a_verify_shows_verify_t_and_its_progress_until_the_source_says_it_is_over() {
    let mut n = connected_in_sync();
    // 1 MiB: 256 blocks; the source resumes with 200 left.
    n.handle(Event::PeerVerifyState {
        running: true,
        left: 200,
        total: 256,
    });
    assert_eq!(n.cstate(), ConnState::VerifyT);
    assert_eq!(n.snapshot().resync_kib, Some((800, 1024)));
    assert!(n.start_verify().is_err(), "a target does not start a verify of its own");
    n.handle(Event::PeerDigestCheck {
        seq: 1,
        offset: 56 << 12,
        len: 64 << 12,
        purpose: crate::wire::DigestPurpose::Verify,
        alg: crate::digest::DigestAlg::Crc32c as u8,
        digest: vec![0; 4],
    });
    assert_eq!(n.snapshot().resync_kib, Some((544, 1024)));
    drain(&mut n);
    n.handle(Event::PeerVerifyState {
        running: false,
        left: 0,
        total: 256,
    });
    assert_eq!(n.cstate(), ConnState::Connected);
    assert_eq!(n.snapshot().resync_kib, None);
    let a = drain(&mut n);
    assert!(a.iter().any(|a| matches!(a, Action::PersistBitmap)), "{a:?}");
    // A verify that starts while the node is busy otherwise (here: not
    // connected) does not take it over.
    n.handle(Event::PeerDisconnected {
        fresh_uuid: 0x5eed_0000_0002_0000,
    });
    n.handle(Event::PeerVerifyState {
        running: true,
        left: 1,
        total: 1,
    });
    assert_ne!(n.cstate(), ConnState::VerifyT);
}

#[test]
fn a_verify_source_tells_a_peer_that_announced_verify_state_and_not_an_older_one() {
    for (features, told) in [(crate::wire::handshake::FEATURE_VERIFY_STATE, true), (0, false)] {
        let mut n = connected_in_sync_to(features);
        n.set_digest_algs(Some(crate::digest::DigestAlg::Crc32c), None);
        n.start_verify().unwrap();
        let a = drain(&mut n);
        let started = a.iter().any(|a| {
            matches!(
                a,
                Action::SendPeer(Message::VerifyState {
                    running: true,
                    left: 256,
                    total: 256
                })
            )
        });
        assert_eq!(started, told, "features {features}: {a:?}");
    }
}

#[test]
fn a_crashed_primary_is_remembered_on_attach() {
    let n = attached(MdFlags(MdFlags::CONSISTENT.0 | MdFlags::PRIMARY_IND.0));
    assert!(n.flags().contains(MdFlags::CRASHED_PRIMARY));
    assert!(!n.flags().contains(MdFlags::PRIMARY_IND));
}

#[test]
fn a_disk_a_running_primary_attaches_is_marked_as_the_primarys() {
    // Else a common power failure would leave no sign that this copy
    // was the Primary's, and the reconnect could resync from the other.
    let (n, a) = reattached_primary();
    assert!(n.flags().contains(MdFlags::PRIMARY_IND), "{:?}", n.flags());
    assert!(!n.flags().contains(MdFlags::CRASHED_PRIMARY), "it did not crash");
    assert!(a.contains(&Action::PersistMeta));
}

#[test]
fn a_crash_as_primary_is_forgotten_once_both_copies_are_up_to_date() {
    // It died as Primary: its copy has every acknowledged write.
    let flags = MdFlags(MdFlags::CONSISTENT.0 | MdFlags::WAS_UP_TO_DATE.0 | MdFlags::PRIMARY_IND.0);
    let mut n = connected_from(flags, crate::wire::handshake::FEATURES, 1 << 20);
    assert_eq!(
        n.cstate(),
        ConnState::WFBitMapS,
        "the crashed Primary's copy is the source"
    );
    n.handle(Event::PeerBitmap {
        runs: Vec::new(),
        last: true,
    });
    n.handle(Event::PeerState {
        primary: false,
        disk: DiskState::Inconsistent,
    });
    drain(&mut n);
    for _ in 0..3 {
        if n.cstate() == ConnState::Connected {
            break;
        }
        tick_100ms(&mut n);
    }
    assert_eq!(n.cstate(), ConnState::Connected);
    assert!(
        !n.flags().contains(MdFlags::CRASHED_PRIMARY),
        "a stale flag would decide the next common power failure's resync"
    );
}
