//! One standalone node served to the real NBD clients users have: qemu-io,
//! nbdinfo, nbdcopy, fio's nbd engine, and ext4 through nbdfuse + loop.

mod common;

use common::*;
use std::process::Command;

const MIB: u64 = 1 << 20;

#[test]
fn qemu_io_pattern_writes_read_back_at_many_offsets_and_sizes() {
    require_tool("qemu-io", "qemu-utils");
    let node = Node::primary(256 * MIB);
    let uri = node.uri();
    // (pattern, offset, length): aligned and unaligned, small and large,
    // the very first and the very last bytes of the export.
    let size = node.export_size();
    let cases: Vec<(u8, u64, u64)> = vec![
        (0x11, 0, 4096),
        (0x22, 8192 + 512, 512),
        (0x33, 1 << 20, 64 << 10),
        (0x44, 10 << 20, 4 << 20),
        (0x55, 16384 + 7, 3), // byte-granular: qemu does read-modify-write itself
        (0x66, size - 4096, 4096),
        (0x77, 100 << 20, 32 << 20),
    ];
    let mut args = vec!["-f".to_owned(), "raw".to_owned()];
    for (p, off, len) in &cases {
        args.extend(["-c".to_owned(), format!("write -P {p:#x} {off} {len}")]);
    }
    for (p, off, len) in &cases {
        args.extend(["-c".to_owned(), format!("read -P {p:#x} {off} {len}")]);
    }
    // FUA writes and zeroes and discards, each verified.
    args.extend(
        [
            "write -f -P 0x88 20M 128k",
            "read -P 0x88 20M 128k",
            "write -z 20M 64k",
            "read -P 0 20M 64k",
            "read -P 0x88 21037056 64k",
            "discard 40M 1M",
            "flush",
        ]
        .iter()
        .flat_map(|c| ["-c".to_owned(), (*c).to_owned()]),
    );
    args.push(uri);
    let out = run_ok(Command::new("qemu-io").args(&args));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(!out.to_lowercase().contains("error"), "{out}");
    // The data really is on the backing file, where qemu-io put it.
    let image = std::fs::read(&node.image).expect("read image");
    assert!(image[1 << 20..(1 << 20) + (64 << 10)].iter().all(|&b| b == 0x33));
    assert_eq!(&image[16384 + 7..16384 + 10], &[0x55, 0x55, 0x55]);
    assert_eq!(image[16384 + 6], 0);
}

#[test]
fn nbdinfo_sees_every_capability_and_the_export_list() {
    require_tool("nbdinfo", "libnbd-bin");
    let node = Node::primary(64 * MIB);
    for can in ["flush", "trim", "zero", "fua", "multi-conn"] {
        let out = run(Command::new("nbdinfo").args(["--can", can, &node.uri()]));
        assert!(out.status.success(), "nbdinfo --can {can}: {:?}", out);
    }
    // Read-only is not something a Primary is.
    let out = run(Command::new("nbdinfo").args(["--is", "read-only", &node.uri()]));
    assert!(!out.status.success());
    let list = run_ok(Command::new("nbdinfo").args(["--list", &format!("nbd://127.0.0.1:{}", node.port)]));
    assert!(list.contains("export=\"r0\"") || list.contains("r0"), "{list}");
    let info = run_ok(Command::new("nbdinfo").arg(node.uri()));
    assert!(info.contains("block_size_preferred: 4096"), "{info}");
    // Internal metadata sits at the end: the export is smaller than the file.
    let size = node.export_size();
    assert!(size < 64 * MIB && size > 60 * MIB, "export size {size}");
    assert_eq!(size % 4096, 0);
}

#[test]
fn nbdcopy_a_random_image_in_and_out_is_identical() {
    require_tool("nbdcopy", "libnbd-bin");
    let node = Node::primary(80 * MIB);
    let src = node.dir.path().join("src.img");
    let back = node.dir.path().join("back.img");
    std::fs::write(&src, pattern(42, 64 * MIB as usize)).expect("write source");
    run_ok(Command::new("nbdcopy").args([&src.to_string_lossy(), &node.uri() as &str]));
    run_ok(Command::new("nbdcopy").args([&node.uri() as &str, &back.to_string_lossy()]));
    let back_bytes = std::fs::read(&back).expect("read copy");
    let src_bytes = std::fs::read(&src).expect("read source");
    assert_eq!(back_bytes.len() as u64, node.export_size());
    assert!(
        back_bytes[..src_bytes.len()] == src_bytes[..],
        "copy differs from source"
    );
    assert!(back_bytes[src_bytes.len()..].iter().all(|&b| b == 0));
}

fn fio_verify(iodepth: u32) {
    let node = Node::primary(128 * MIB);
    let out = fio_verified(
        &node.uri(),
        &[
            "--name=verify",
            "--size=64m",
            "--bs=4k",
            &format!("--iodepth={iodepth}"),
            "--rw=randwrite",
            "--do_verify=1",
            "--verify_backlog=1024",
            "--output-format=terse",
        ],
    );
    assert!(!out.contains("verify:"), "{out}");
    // Verify again from a fresh connection: the data is really on the server.
    fio_verified(
        &node.uri(),
        &[
            "--name=verify",
            "--size=64m",
            "--bs=4k",
            "--iodepth=8",
            "--rw=randwrite",
            "--verify_only=1",
        ],
    );
}

#[test]
fn fio_crc32c_verify_at_queue_depth_1() {
    fio_verify(1);
}

#[test]
fn fio_crc32c_verify_at_queue_depth_32() {
    fio_verify(32);
}
