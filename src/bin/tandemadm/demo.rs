//! `tandemadm demo`: Tandem's main job on a built-in default, with nothing to
//! prepare. A sparse image in a temporary directory, a `tandemd` serving it
//! over NBD on loopback as Primary, and the status shown live until Ctrl-C.

use super::call;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tandem::control::{exit, Command, Request};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// NBD port on 127.0.0.1.
    #[arg(long, default_value_t = 10809)]
    port: u16,
    /// Size of the sparse backing image (K/M/G suffixes).
    #[arg(long, default_value = "1G")]
    size: String,
    /// Stop by itself after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Keep the demo directory afterwards instead of deleting it.
    #[arg(long)]
    keep: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Demo {
    dir: PathBuf,
    daemons: Vec<Child>,
    keep: bool,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for mut child in self.daemons.drain(..) {
            // SIGTERM lets tandemd finish I/O and leave clean metadata.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

pub fn run(args: &DemoArgs) -> i32 {
    let Some(size) = parse_size(&args.size).filter(|&s| s >= 16 << 20) else {
        eprintln!("demo: --size must be at least 16M, e.g. 1G");
        return exit::USAGE;
    };
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let dir = std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id()));
    let mut demo = Demo {
        dir: dir.clone(),
        daemons: Vec::new(),
        keep: args.keep,
    };
    match start(&mut demo, args, size) {
        Ok(()) => {}
        Err(msg) => {
            eprintln!("demo: {msg}");
            return exit::FAILED;
        }
    }
    if let Err(msg) = story(&demo, args) {
        eprintln!("demo: {msg}");
        return exit::FAILED;
    }
    watch(&demo, args)
}

const NODES: [&str; 2] = ["alpha", "beta"];

fn start(demo: &mut Demo, args: &DemoArgs, size: u64) -> Result<(), String> {
    let dir = demo.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let p = args.port;
    let mut hosts = String::new();
    for (i, node) in NODES.iter().enumerate() {
        let image = dir.join(format!("{node}.img"));
        let f = std::fs::File::create(&image).map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        f.set_len(size)
            .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
        hosts.push_str(&format!(
            "  on {node} {{\n    device    nbd://127.0.0.1:{}/r0;\n    disk      {};\n    address   127.0.0.1:{};\n    meta-disk internal;\n  }}\n",
            p + i as u16,
            image.display(),
            p + 2 + i as u16
        ));
    }
    let conf = dir.join("tandem.conf");
    let text = format!(
        "# Written by 'tandemadm demo': two nodes on loopback.\nresource r0 {{\n  protocol C;\n  net {{ shared-secret \"demo-{}\"; connect-int 1; ping-int 2; }}\n  disk {{ c-max-rate 400M; }}\n{hosts}}}\n",
        std::process::id()
    );
    std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;

    let tandemadm = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let tandemd = sibling(&tandemadm, "tandemd");
    let conf_s = conf.to_string_lossy().into_owned();
    let step = |node: &str, what: &[&str]| -> Result<(), String> {
        let run_dir = dir.join(node).to_string_lossy().into_owned();
        let out = Process::new(&tandemadm)
            .args(["-c", &conf_s, "--node", node, "--run-dir", &run_dir])
            .args(what)
            .output()
            .map_err(|e| format!("cannot run tandemadm: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{node}: 'tandemadm {}' failed: {}",
                what.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    for node in NODES {
        step(node, &["create-md", "r0"])?;
        let log = std::fs::File::create(dir.join(format!("{node}.log"))).map_err(|e| e.to_string())?;
        let run_dir = dir.join(node);
        let child = Process::new(&tandemd)
            .args(["-c", &conf_s, "--node", node, "--run-dir"])
            .arg(&run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", tandemd.display()))?;
        demo.daemons.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tandem::shell::daemon::socket_path(&run_dir).exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "tandemd {node} did not start; see {}",
                    dir.join(format!("{node}.log")).display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        step(node, &["up", "r0"])?;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(dir.join("alpha/drbd"))
        .unwrap_or_default()
        .contains("cs:Connected")
    {
        if Instant::now() > deadline {
            return Err(format!("the nodes did not connect; see {}/alpha.log", dir.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Fresh images: declare alpha's authoritative; the initial sync starts.
    step("alpha", &["primary", "--force", "r0"])?;
    Ok(())
}

fn sibling(exe: &Path, name: &str) -> PathBuf {
    exe.parent()
        .map(|p| p.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn watch(demo: &Demo, args: &DemoArgs) -> i32 {
    let uri = format!("nbd://127.0.0.1:{}/r0", args.port);
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let banner = format!(
        "Tandem demo: resource r0 replicated between alpha and beta (protocol C, loopback),\n\
         {} sparse images in {}\n\
         NBD export of the Primary (alpha): {uri}\n\
         Try:  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' {uri}\n      \
         fio --name=t --ioengine=nbd --uri={uri} --rw=randwrite --bs=4k --iodepth=32 --size=256M --runtime=10 --time_based\n      \
         tandemadm -c {}/tandem.conf --node beta --run-dir {}/beta disconnect r0   (then write, then connect)\n\
         Ctrl-C stops the demo{}.\n",
        args.size,
        demo.dir.display(),
        demo.dir.display(),
        demo.dir.display(),
        if args.keep { " and keeps the directory" } else { " and removes the directory" },
    );
    print!("{banner}");
    // Into a pipe or a log, a screen is written when it differs from the
    // last: an idle pair would otherwise repeat itself every second.
    let mut last = String::new();
    while !STOP.load(Ordering::SeqCst) {
        if args.duration > 0 && started.elapsed() >= Duration::from_secs(args.duration) {
            break;
        }
        let mut screen = String::new();
        for node in NODES {
            let run_dir = demo.dir.join(node);
            let status = call(
                &run_dir,
                &Request {
                    verbose: true,
                    color: tty,
                    ..Request::new(Command::Status, "r0")
                },
            );
            match status {
                Ok(resp) => screen.push_str(&format!("── {node} ──\n{}", resp.output)),
                Err(code) => return code,
            }
        }
        let procfile = std::fs::read_to_string(demo.dir.join("alpha/drbd")).unwrap_or_default();
        let screen = format!(
            "{screen}\nalpha's status file ({}):\n{procfile}\n",
            demo.dir.join("alpha/drbd").display()
        );
        if tty || screen != last {
            let mut out = std::io::stdout().lock();
            if tty {
                let _ = writeln!(out, "\x1b[2J\x1b[H{banner}");
            }
            let _ = write!(out, "{screen}");
            let _ = out.flush();
            last = screen;
        }
        for _ in 0..10 {
            if STOP.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("stopping demo");
    exit::OK
}

/// The scripted part of the demo: write through the export, cut the link,
/// write more, reconnect, and show that only the dirty blocks moved.
fn story(demo: &Demo, args: &DemoArgs) -> Result<(), String> {
    let alpha = demo.dir.join("alpha");
    let adm = |node: &str, what: &[&str]| -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Process::new(exe)
            .args([
                "-c",
                &demo.dir.join("tandem.conf").to_string_lossy(),
                "--node",
                node,
                "--run-dir",
            ])
            .arg(demo.dir.join(node))
            .args(what)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{node}: tandemadm {}: {}",
                what.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let counter = |key: &str| -> u64 {
        std::fs::read_to_string(alpha.join("drbd"))
            .unwrap_or_default()
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}:")).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    println!("1. initial sync alpha → beta ...");
    adm("alpha", &["wait-sync", "--timeout", "300", "r0"])?;
    println!("   done: {} KiB sent", counter("ns"));
    println!("2. writing 8 MiB through the NBD export (protocol C: on both disks when acknowledged)");
    nbd_write(args.port, 0, 8 << 20, 0xa1)?;
    println!("3. cutting the link (beta: disconnect) and writing 4 MiB more on alpha");
    adm("beta", &["disconnect", "r0"])?;
    std::thread::sleep(Duration::from_millis(300));
    nbd_write(args.port, 64 << 20, 4 << 20, 0xb2)?;
    std::thread::sleep(Duration::from_millis(300));
    println!("   alpha now has {} KiB out of sync with beta", counter("oos"));
    let before = counter("ns");
    println!("4. reconnecting (beta: connect): a bitmap resync moves only those blocks");
    adm("beta", &["connect", "r0"])?;
    adm("alpha", &["wait-sync", "--timeout", "60", "r0"])?;
    println!("   resync sent {} KiB", counter("ns") - before);
    let same = files_identical(&demo.dir.join("alpha.img"), &demo.dir.join("beta.img"))?;
    println!("5. replicas identical: {}", if same { "yes" } else { "NO" });
    Ok(())
}

/// A minimal NBD client: fixed newstyle, OPT_GO, one pattern write, FLUSH, DISC.
fn nbd_write(port: u16, offset: u64, len: usize, pattern: u8) -> Result<(), String> {
    use std::io::{Read, Write as _};
    let e = |e: std::io::Error| format!("NBD client: {e}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(e)?;
    let mut greet = [0u8; 18];
    s.read_exact(&mut greet).map_err(e)?;
    s.write_all(&3u32.to_be_bytes()).map_err(e)?;
    let mut opt = b"IHAVEOPT".to_vec();
    opt.extend_from_slice(&7u32.to_be_bytes());
    opt.extend_from_slice(&8u32.to_be_bytes());
    opt.extend_from_slice(&2u32.to_be_bytes());
    opt.extend_from_slice(b"r0");
    opt.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&opt).map_err(e)?;
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).map_err(e)?;
        let ty = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let n = u32::from_be_bytes([h[16], h[17], h[18], h[19]]) as usize;
        let mut d = vec![0u8; n];
        s.read_exact(&mut d).map_err(e)?;
        match ty {
            1 => break,
            3 => {}
            _ => return Err(format!("export refused: {}", String::from_utf8_lossy(&d))),
        }
    }
    let request =
        |s: &mut std::net::TcpStream, cmd: u16, cookie: u64, off: u64, n: u32, data: &[u8]| -> Result<(), String> {
            let mut r = 0x2560_9513u32.to_be_bytes().to_vec();
            r.extend_from_slice(&0u16.to_be_bytes());
            r.extend_from_slice(&cmd.to_be_bytes());
            r.extend_from_slice(&cookie.to_be_bytes());
            r.extend_from_slice(&off.to_be_bytes());
            r.extend_from_slice(&n.to_be_bytes());
            r.extend_from_slice(data);
            s.write_all(&r).map_err(e)?;
            let mut reply = [0u8; 16];
            s.read_exact(&mut reply).map_err(e)?;
            match u32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]) {
                0 => Ok(()),
                err => Err(format!("NBD error {err}")),
            }
        };
    let chunk = vec![pattern; 1 << 20];
    for (i, at) in (0..len).step_by(chunk.len()).enumerate() {
        request(&mut s, 1, i as u64, offset + at as u64, chunk.len() as u32, &chunk)?;
    }
    request(&mut s, 3, 9999, 0, 0, &[])?;
    let mut disc = 0x2560_9513u32.to_be_bytes().to_vec();
    disc.extend_from_slice(&[0, 0, 0, 2]);
    disc.extend_from_slice(&[0u8; 20]);
    s.write_all(&disc).map_err(e)
}

/// Compare the two backing files over the data area (the internal metadata
/// at the end legitimately differs: it names each node).
fn files_identical(a: &Path, b: &Path) -> Result<bool, String> {
    use std::io::Read;
    let data = |p: &Path| -> Result<u64, String> { Ok(std::fs::metadata(p).map_err(|e| e.to_string())?.len()) };
    let size = data(a)?.min(data(b)?);
    let layout =
        tandem::meta::Layout::internal(size, tandem::meta::AL_RING_BLOCKS_DEFAULT).map_err(|e| e.to_string())?;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).map_err(|e| e.to_string())?,
        std::fs::File::open(b).map_err(|e| e.to_string())?,
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut left = layout.data_bytes;
    while left > 0 {
        let n = left.min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n]).map_err(|e| e.to_string())?;
        fb.read_exact(&mut bb[..n]).map_err(|e| e.to_string())?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}
