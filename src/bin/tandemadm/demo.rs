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
    daemon: Option<Child>,
    keep: bool,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
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
        daemon: None,
        keep: args.keep,
    };
    match start(&mut demo, args, size) {
        Ok(()) => {}
        Err(msg) => {
            eprintln!("demo: {msg}");
            return exit::FAILED;
        }
    }
    watch(&demo, args)
}

fn start(demo: &mut Demo, args: &DemoArgs, size: u64) -> Result<(), String> {
    let dir = &demo.dir;
    std::fs::create_dir_all(dir.join("run")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let image = dir.join("r0.img");
    let f = std::fs::File::create(&image).map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    f.set_len(size)
        .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
    let conf = dir.join("tandem.conf");
    let text = format!(
        "# Written by 'tandemadm demo'.\nresource r0 {{\n  on alpha {{\n    device    nbd://127.0.0.1:{port}/r0;\n    disk      {img};\n    meta-disk internal;\n  }}\n}}\n",
        port = args.port,
        img = image.display()
    );
    std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;

    let tandemadm = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let tandemd = sibling(&tandemadm, "tandemd");
    let run_dir = dir.join("run");
    let step = |what: &[&str]| -> Result<(), String> {
        let out = Process::new(&tandemadm)
            .args([
                "-c",
                &conf.to_string_lossy(),
                "--node",
                "alpha",
                "--run-dir",
                &run_dir.to_string_lossy(),
            ])
            .args(what)
            .output()
            .map_err(|e| format!("cannot run tandemadm: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "'tandemadm {}' failed: {}",
                what.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    step(&["create-md", "r0"])?;
    let log = std::fs::File::create(dir.join("tandemd.log")).map_err(|e| e.to_string())?;
    let child = Process::new(&tandemd)
        .args([
            "-c",
            &conf.to_string_lossy(),
            "--node",
            "alpha",
            "--run-dir",
            &run_dir.to_string_lossy(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", tandemd.display()))?;
    demo.daemon = Some(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tandem::shell::daemon::socket_path(&run_dir).exists() {
        if Instant::now() > deadline {
            return Err(format!(
                "tandemd did not start; see {}",
                dir.join("tandemd.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    step(&["up", "r0"])?;
    // A fresh image has no authoritative copy yet: declare this one so.
    step(&["primary", "--force", "r0"])?;
    Ok(())
}

fn sibling(exe: &Path, name: &str) -> PathBuf {
    exe.parent()
        .map(|p| p.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn watch(demo: &Demo, args: &DemoArgs) -> i32 {
    let run_dir = demo.dir.join("run");
    let uri = format!("nbd://127.0.0.1:{}/r0", args.port);
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let banner = format!(
        "Tandem demo: resource r0, {} sparse image in {}\n\
         NBD export: {uri}\n\
         Try:  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' {uri}\n      \
         nbdinfo {uri}\n      \
         fio --name=t --ioengine=nbd --uri={uri} --rw=randwrite --bs=4k --iodepth=32 --size=256M --runtime=10 --time_based\n\
         Ctrl-C stops the demo{}.\n",
        args.size,
        demo.dir.display(),
        if args.keep { " and keeps the directory" } else { " and removes the directory" },
    );
    print!("{banner}");
    while !STOP.load(Ordering::SeqCst) {
        if args.duration > 0 && started.elapsed() >= Duration::from_secs(args.duration) {
            break;
        }
        let status = call(
            &run_dir,
            &Request {
                verbose: true,
                color: tty,
                ..Request::new(Command::Status, "r0")
            },
        );
        let procfile = std::fs::read_to_string(run_dir.join("drbd")).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = writeln!(out, "\x1b[2J\x1b[H{banner}");
        }
        match status {
            Ok(resp) => {
                let file = run_dir.join("drbd");
                let _ = write!(out, "{}\nstatus file: {}\n{procfile}", resp.output, file.display());
            }
            Err(code) => return code,
        }
        let _ = out.flush();
        drop(out);
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
