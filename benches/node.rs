//! Micro-benchmark of the core's write path: one 4 KiB NBD write through a
//! Primary's `core::Node`, driven as the shell drives it (the request, the
//! disk's completion and, with a peer, its acknowledgement; every queued
//! action drained), with no I/O at all. What it measures is the logic's own
//! cost per write: the decision, the in-flight bookkeeping, the activity
//! log and the bitmap.
//!
//! `cargo bench --bench node` (BENCHMARKS.md, "Micro-benchmarks").

mod common;

use divan::{black_box, Bencher};
use tandem::core::{Action, AttachInfo, Event, IoKind, IoRequest, Node, ReqId, Role};
use tandem::core::{ConnState, UuidReport};
use tandem::meta::{Divergence, GenerationUuids, MdFlags};
use tandem::wire::Message;

fn main() {
    common::main();
}

/// A 1 TiB device.
const DATA_BYTES: u64 = 1 << 40;

/// The writes cycle through the first 64 MiB: 16 activity-log extents,
/// all hot after the warm-up pass, as under a steady workload.
const SPAN_BYTES: u64 = 64 << 20;

const UUIDS: GenerationUuids = GenerationUuids {
    current: 0x5eed_0000_0000_0004,
    bitmap: 0,
    history: [0, 0],
};

/// An UpToDate Primary; `peer`: the configured peer, if any.
fn primary(peer: Option<&str>, connect: bool) -> Node {
    let mut node = Node::new("r0", 0, "alpha", peer, 'C');
    node.attach(AttachInfo {
        data_bytes: DATA_BYTES,
        uuids: UUIDS,
        flags: MdFlags(MdFlags::CONSISTENT.0 | MdFlags::WAS_UP_TO_DATE.0),
        divergence: Divergence::default(),
    })
    .expect("attach");
    if connect {
        // The peer holds the same generation: connected, nothing to sync.
        node.connecting();
        node.handle(Event::PeerConnected {
            peer: UuidReport {
                uuids: UUIDS,
                bitmap_bits: 0,
                flags: 0,
                primary: false,
                divergence: Divergence::default(),
            },
            peer_data_bytes: DATA_BYTES,
            peer_features: tandem::wire::handshake::FEATURES,
        });
        assert_eq!(node.cstate(), ConnState::Connected);
    }
    node.promote(false, 0x5eed_0000_0001_0000).expect("promote");
    assert_eq!(node.role(), Role::Primary);
    while node.poll_action().is_some() {}
    node
}

/// Carry out what the node queued, as far as this benchmark needs: note the
/// `Data` message's sequence number and the reply. Disk writes, activity-log
/// transactions and state changes are the shell's; here they cost nothing.
fn drain(node: &mut Node, seq: &mut Option<u64>, reply: &mut Option<u32>) {
    while let Some(action) = node.poll_action() {
        match action {
            Action::SendPeerData {
                msg: Message::Data { seq: s, .. },
                ..
            } => *seq = Some(s),
            Action::Reply { error, .. } => *reply = Some(error),
            _ => {}
        }
    }
}

/// One 4 KiB write, from the request to its reply; the reply's errno.
fn write_round_trip(node: &mut Node, id: ReqId, offset: u64) -> Option<u32> {
    let (mut seq, mut reply) = (None, None);
    node.handle(Event::NbdRequest {
        id,
        io: IoRequest {
            kind: IoKind::Write { fua: false },
            offset,
            len: 4096,
        },
    });
    drain(node, &mut seq, &mut reply);
    node.handle(Event::DiskDone { id, result: Ok(()) });
    drain(node, &mut seq, &mut reply);
    if let Some(seq) = seq.take() {
        node.handle(Event::PeerAck {
            seq,
            status: 0,
            completed: None,
        });
        drain(node, &mut None, &mut reply);
    }
    reply
}

fn bench_writes(bencher: Bencher, mut node: Node) {
    // Warm-up pass: every extent of the span hot, every write answered.
    for (id, offset) in (0..SPAN_BYTES).step_by(4096).enumerate() {
        assert_eq!(write_round_trip(&mut node, id as ReqId, offset), Some(0));
    }
    let mut id: ReqId = 1 << 32;
    bencher.bench_local(|| {
        id += 1;
        let offset = (id * 4096) % SPAN_BYTES;
        write_round_trip(&mut node, id, black_box(offset))
    });
}

/// No peer configured: no bitmap, no activity log.
#[divan::bench(sample_size = 100)]
fn write_4k_standalone(bencher: Bencher) {
    bench_writes(bencher, primary(None, false));
}

/// A peer configured but gone: each write marks its block out of sync.
#[divan::bench(sample_size = 100)]
fn write_4k_degraded(bencher: Bencher) {
    bench_writes(bencher, primary(Some("beta"), false));
}

/// Connected, protocol C: the write is also sent (`SendPeerData`) and the
/// reply waits for the peer's `DataAck` too.
#[divan::bench(sample_size = 100)]
fn write_4k_connected(bencher: Bencher) {
    bench_writes(bencher, primary(Some("beta"), true));
}
