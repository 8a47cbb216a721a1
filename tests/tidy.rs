//! Mechanical checks that hold the architecture's lines.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The pure modules decide and encode; they never touch sockets, files, the
/// clock or a random source. That is what lets a simulation drive them.
#[test]
fn pure_modules_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let banned = [
        "tokio",
        "tokio_uring",
        "std::fs",
        "std::net::Tcp",
        "std::os::unix::net",
        "Instant::now",
        "SystemTime::now",
        "thread_rng",
        "getrandom",
        "std::process",
    ];
    for module in ["core", "meta", "nbd", "status", "control", "wire", "sim"] {
        let mut files = Vec::new();
        rust_files(&root.join(module), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read source");
            for b in banned {
                assert!(!text.contains(b), "{} uses {b}: pure modules do no I/O", f.display());
            }
        }
    }
}

#[test]
fn no_leftover_markers() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        for marker in ["FIXME", "todo!(", "unimplemented!(", "dbg!("] {
            assert!(!text.contains(marker), "{} contains {marker}", f.display());
        }
    }
}
