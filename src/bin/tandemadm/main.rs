//! `tandemadm`: the administration CLI, shaped like `drbdadm`.
//!
//! It sends one request over the control socket and prints the answer;
//! `create-md` and `dump-md` work on the disk directly, as drbdmeta does.

mod demo;
mod progress;
mod verify;

use clap::{Parser, Subcommand};
use progress::{InPipe, Look, Progress};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tandem::config;
use tandem::control::{exit, Command, Request, Response};
use tandem::shell::daemon::socket_path;
use tandem::shell::meta_store;

#[derive(Parser, Debug)]
#[command(
    name = "tandemadm",
    version,
    about = "Administer Tandem replicated block devices (drbdadm-compatible)"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "/etc/tandem/tandem.conf"
    )]
    config: PathBuf,
    /// Which `on NAME` section is this node (default: the host name).
    #[arg(long, global = true)]
    node: Option<String>,
    /// The daemon's run directory (control socket, status file).
    #[arg(long = "run-dir", global = true, default_value = "/run/tandem")]
    run_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write fresh metadata (superblock, generation UUIDs, activity log, bitmap).
    CreateMd {
        resource: String,
        /// Overwrite valid metadata.
        #[arg(long)]
        force: bool,
    },
    /// Print the metadata readably.
    DumpMd { resource: String },
    /// Attach the backing disk and connect to the peer.
    Up { resource: String },
    /// Disconnect and detach.
    Down {
        resource: String,
        #[arg(long)]
        force: bool,
    },
    /// Open the backing disk.
    Attach { resource: String },
    /// Close the backing disk.
    Detach { resource: String },
    /// Join the peer.
    Connect {
        resource: String,
        /// Make this node the sync target after a split brain.
        #[arg(long)]
        discard_my_data: bool,
        /// Say what connecting would decide without doing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Leave the peer.
    Disconnect { resource: String },
    /// Promote to Primary.
    Primary {
        resource: String,
        /// Promote even without UpToDate data (initial sync source).
        #[arg(long, visible_alias = "overwrite-data-of-peer")]
        force: bool,
    },
    /// Demote to Secondary.
    Secondary {
        resource: String,
        /// Demote even while NBD clients are connected (their I/O then fails).
        #[arg(long)]
        force: bool,
    },
    /// Print the roles, local/peer (`state`, drbdadm 8.3's name, works too).
    #[command(visible_alias = "state")]
    Role { resource: String },
    /// Print the connection state.
    Cstate { resource: String },
    /// Print the disk states, local/peer.
    Dstate { resource: String },
    /// Show the status (DRBD 9 style).
    Status {
        #[arg(default_value = "all")]
        resource: String,
        #[arg(long, short = 'v')]
        verbose: bool,
        #[arg(long)]
        json: bool,
    },
    /// Apply configuration changes to a running resource.
    Adjust { resource: String },
    /// Mark the local data Outdated (fencing): it will not be promoted alone.
    Outdate { resource: String },
    /// Discard this node's data: full resync from the peer.
    Invalidate { resource: String },
    /// Discard the peer's data: full resync to the peer.
    InvalidateRemote { resource: String },
    /// Pause the running resync (on the SyncSource).
    PauseSync { resource: String },
    /// Resume a paused resync where it stopped.
    ResumeSync { resource: String },
    /// Start a new data generation; with --clear-bitmap skip the initial sync
    /// of a freshly created, connected pair whose disks are identical.
    NewCurrentUuid {
        resource: String,
        #[arg(long)]
        clear_bitmap: bool,
    },
    /// After a split brain: what each side changed since, and what
    /// discarding either side's data would throw away.
    SplitBrainReport {
        resource: String,
        #[arg(long)]
        json: bool,
    },
    /// Online verify: compare every block's digest with the peer's.
    Verify {
        resource: String,
        /// Follow the verify to its end (a bar with blocks, speed and ETA
        /// on a terminal, a line per tenth otherwise), then print how many
        /// blocks differ. Interrupting the wait leaves the verify running.
        #[arg(long)]
        wait: bool,
    },
    /// Resync the blocks verify found out of sync, without reconnecting.
    ResyncOos { resource: String },
    /// Release writes held because fencing failed (you vouch that the peer
    /// cannot be promoted without them).
    ResumeIo { resource: String },
    /// Wait until the resource (each one, for `all`) is connected to its peer.
    WaitConnect {
        resource: String,
        /// Give up after this many seconds (0: wait forever).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Wait until no resync is running and both disks are UpToDate (on each
    /// resource, for `all`).
    WaitSync {
        resource: String,
        /// Give up after this many seconds (0: wait forever).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Stream state changes as JSON lines.
    Events {
        #[arg(default_value = "all")]
        resource: String,
    },
    /// Run the built-in demonstration on loopback with sparse images.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (tandemadm(8) and one per command) into DIR.
    Man { dir: PathBuf },
}

fn main() -> ExitCode {
    let args = normalize_args(std::env::args().collect());
    let cli = Cli::parse_from(args);
    let code = run(cli);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Accept drbdadm's spellings: `tandemadm -- --discard-my-data connect r0`
/// puts backend options before the command, and guides copied through word
/// processors carry an en dash (`–force`).
fn normalize_args(args: Vec<String>) -> Vec<String> {
    let args: Vec<String> = args
        .into_iter()
        .map(
            |a| match a.strip_prefix('\u{2013}').or_else(|| a.strip_prefix('\u{2014}')) {
                Some(rest) => format!("--{rest}"),
                None => a,
            },
        )
        .collect();
    let Some(pos) = args.iter().position(|a| a == "--") else {
        return args;
    };
    let backend: Vec<String> = args[pos + 1..]
        .iter()
        .take_while(|a| a.starts_with("--"))
        .cloned()
        .collect();
    let rest = &args[pos + 1 + backend.len()..];
    let Some((command, operands)) = rest.split_first() else {
        return args;
    };
    let mut out: Vec<String> = args[..pos].to_vec();
    out.push(command.clone());
    out.extend(backend);
    out.extend(operands.iter().cloned());
    out
}

/// tandemadm(8) and tandemadm-COMMAND(8), from the same definition that
/// parses the command line, so they cannot drift apart.
fn man_pages(dir: &Path) -> i32 {
    use clap::CommandFactory;
    let write = |cmd: clap::Command, name: &str| -> std::io::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).section("8").render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.8")), out)
    };
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        let top = Cli::command();
        for sub in top.get_subcommands() {
            let name = format!("tandemadm-{}", sub.get_name());
            write(sub.clone().name(name.clone()), &name)?;
        }
        write(top, "tandemadm")
    });
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("tandemadm man: cannot write into {}: {e}", dir.display());
            exit::FAILED
        }
    }
}

fn node_name(cli: &Cli) -> String {
    cli.node.clone().unwrap_or_else(tandem::shell::daemon::host_name)
}

fn run(cli: Cli) -> i32 {
    let color = std::io::stdout().is_terminal();
    let request = |command: Command, resource: &str| Request::new(command, resource);
    let req = match &cli.command {
        Cmd::CreateMd { resource, force } => return create_md(&cli, resource, *force),
        Cmd::DumpMd { resource } => return dump_md(&cli, resource),
        Cmd::Demo(args) => return demo::run(args),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "tandemadm", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::stdout().write_all(&script);
            return exit::OK;
        }
        Cmd::Man { dir } => return man_pages(dir),
        Cmd::Up { resource } => request(Command::Up, resource),
        Cmd::Down { resource, force } => Request {
            force: *force,
            ..request(Command::Down, resource)
        },
        Cmd::Attach { resource } => request(Command::Attach, resource),
        Cmd::Detach { resource } => request(Command::Detach, resource),
        Cmd::Connect {
            resource,
            discard_my_data,
            dry_run,
        } => Request {
            discard_my_data: *discard_my_data,
            dry_run: *dry_run,
            ..request(Command::Connect, resource)
        },
        Cmd::Disconnect { resource } => request(Command::Disconnect, resource),
        Cmd::Primary { resource, force } => Request {
            force: *force,
            ..request(Command::Primary, resource)
        },
        Cmd::Secondary { resource, force } => Request {
            force: *force,
            ..request(Command::Secondary, resource)
        },
        Cmd::Role { resource } => request(Command::Role, resource),
        Cmd::Cstate { resource } => request(Command::Cstate, resource),
        Cmd::Dstate { resource } => request(Command::Dstate, resource),
        Cmd::Status {
            resource,
            verbose,
            json,
        } => Request {
            verbose: *verbose,
            json: *json,
            color,
            ..request(Command::Status, resource)
        },
        Cmd::Events { resource } => return events(&cli.run_dir, resource),
        Cmd::Invalidate { resource } => request(Command::Invalidate, resource),
        Cmd::Outdate { resource } => request(Command::Outdate, resource),
        Cmd::Adjust { resource } => request(Command::Adjust, resource),
        Cmd::InvalidateRemote { resource } => request(Command::InvalidateRemote, resource),
        Cmd::PauseSync { resource } => request(Command::PauseSync, resource),
        Cmd::ResumeSync { resource } => request(Command::ResumeSync, resource),
        Cmd::NewCurrentUuid { resource, clear_bitmap } => Request {
            force: *clear_bitmap,
            ..request(Command::NewCurrentUuid, resource)
        },
        Cmd::SplitBrainReport { resource, json } => Request {
            json: *json,
            ..request(Command::SplitBrainReport, resource)
        },
        Cmd::Verify { resource, wait: false } => request(Command::Verify, resource),
        Cmd::Verify { resource, wait: true } => return verify::start_and_follow(&cli.run_dir, resource),
        Cmd::ResyncOos { resource } => request(Command::ResyncOos, resource),
        Cmd::ResumeIo { resource } => request(Command::ResumeIo, resource),
        Cmd::WaitConnect { resource, timeout } => return wait(&cli.run_dir, resource, *timeout, false),
        Cmd::WaitSync { resource, timeout } => return wait(&cli.run_dir, resource, *timeout, true),
    };
    match call(&cli.run_dir, &req) {
        Ok(resp) => print_response(&resp),
        Err(code) => code,
    }
}

fn print_response(resp: &Response) -> i32 {
    print!("{}", resp.output);
    let _ = std::io::stdout().flush();
    if resp.ok {
        exit::OK
    } else {
        eprintln!("{}", resp.error);
        resp.exit_code
    }
}

/// Send one request and read one response.
pub fn call(run_dir: &Path, req: &Request) -> Result<Response, i32> {
    let stream = connect(run_dir)?;
    exchange(&stream, req).map_err(|e| {
        eprintln!("{e}");
        exit::FAILED
    })
}

/// One request line out, one response line back.
fn exchange(stream: &UnixStream, req: &Request) -> Result<Response, String> {
    let mut line = serde_json::to_vec(req).map_err(|e| format!("cannot encode request: {e}"))?;
    line.push(b'\n');
    let mut w = stream;
    w.write_all(&line).map_err(|e| format!("cannot talk to tandemd: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("cannot read tandemd's answer: {e}"))?;
    serde_json::from_str(&reply)
        .map_err(|e| format!("tandemd sent a malformed answer ({e}); are tandemd and tandemadm the same version?"))
}

/// Exit status 3 means tandemd is not running, nothing else: cluster agents
/// read it as "stopped". A socket we may not use, or any other failure to
/// reach a daemon that is there, is a failure (10), not a stop.
fn connect(run_dir: &Path) -> Result<UnixStream, i32> {
    let sock = socket_path(run_dir);
    UnixStream::connect(&sock).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            eprintln!(
                "tandemd is not running (no answer on {}); start it with 'tandemd -c CONFIG --run-dir {}' or 'systemctl start tandemd'",
                sock.display(),
                run_dir.display()
            );
            exit::NOT_RUNNING
        }
        std::io::ErrorKind::PermissionDenied => {
            eprintln!(
                "permission denied on {}: only root or the user running tandemd may control it",
                sock.display()
            );
            exit::FAILED
        }
        _ => {
            eprintln!("cannot connect to tandemd at {}: {e}", sock.display());
            exit::FAILED
        }
    })
}

fn events(run_dir: &Path, resource: &str) -> i32 {
    let Ok(stream) = connect(run_dir) else {
        return exit::NOT_RUNNING;
    };
    let mut line = match serde_json::to_vec(&Request::new(Command::Events, resource)) {
        Ok(l) => l,
        Err(_) => return exit::FAILED,
    };
    line.push(b'\n');
    if (&stream).write_all(&line).is_err() {
        return exit::FAILED;
    }
    let stdout = std::io::stdout();
    for l in BufReader::new(&stream).lines() {
        match l {
            Ok(l) => {
                let mut out = stdout.lock();
                if writeln!(out, "{l}").and_then(|_| out.flush()).is_err() {
                    return exit::OK;
                }
            }
            Err(_) => break,
        }
    }
    exit::OK
}

/// The daemon's view of `resource` (every resource, for `all`; never
/// none), as `status --json` gives it; a refusal is printed and becomes the
/// exit status.
fn statuses(run_dir: &Path, resource: &str) -> Result<Vec<serde_json::Value>, i32> {
    let req = Request {
        json: true,
        ..Request::new(Command::Status, resource)
    };
    let resp = match call(run_dir, &req) {
        Ok(r) if r.ok => r,
        Ok(r) => return Err(print_response(&r)),
        Err(code) => return Err(code),
    };
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&resp.output).unwrap_or_default();
    if snaps.is_empty() {
        eprintln!("{resource}: no status");
        return Err(exit::FAILED);
    }
    Ok(snaps)
}

/// `resync_kib` of a snapshot, while a resync (or this node's verify) runs:
/// (KiB left, KiB total).
fn resync_kib(s: &serde_json::Value) -> Option<(u64, u64)> {
    Some((s["resync_kib"][0].as_u64()?, s["resync_kib"][1].as_u64()?))
}

/// The resync as `wait-sync` shows it: bytes moved, speed and ETA on a
/// terminal; nothing in a pipe, where a script reading stderr wants
/// nothing but the outcome.
static RESYNC: Look = Look {
    bar: "{prefix}: {msg} [{wide_bar}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    unit_bytes: 1,
    in_pipe: InPipe::Silent,
};

/// `wait-connect` / `wait-sync`: poll the daemon's view until every
/// resource named (each one, for `all`) is there at once, showing the
/// resyncs on a terminal. The timeout is the whole command's; when it
/// passes, each resource still missing is named with its state.
fn wait(run_dir: &Path, resource: &str, timeout: u64, sync: bool) -> i32 {
    let started = std::time::Instant::now();
    // One bar per resource resyncing: several often resync at once.
    let bars = indicatif::MultiProgress::new();
    let mut progress: HashMap<String, Progress> = HashMap::new();
    loop {
        let snaps = match statuses(run_dir, resource) {
            Ok(snaps) => snaps,
            Err(code) => return code,
        };
        let mut missing = Vec::new();
        for s in &snaps {
            let name = s["resource"].as_str().unwrap_or(resource);
            let cstate = s["cstate"].as_str().unwrap_or("");
            let there = arrived(s, sync);
            if !there {
                missing.push(format!("{name}: still {cstate}"));
            }
            if !sync {
                continue;
            }
            let shown = progress
                .entry(name.to_owned())
                .or_insert_with(|| Progress::new(name, &RESYNC, &bars));
            match resync_kib(s) {
                Some((left, total)) if !there => shown.update(cstate, total.saturating_sub(left) * 1024, total * 1024),
                _ => shown.finish(),
            }
        }
        if missing.is_empty() {
            return exit::OK;
        }
        if timeout > 0 && started.elapsed() >= std::time::Duration::from_secs(timeout) {
            for p in progress.values() {
                p.abandon();
            }
            for m in missing {
                eprintln!("{m} after {timeout}s");
            }
            return exit::FAILED;
        }
        std::thread::sleep(progress::POLL_INTERVAL);
    }
}

/// Whether the resource of snapshot `s` is where `wait-connect` (or, with
/// `sync`, `wait-sync`) waits for it.
fn arrived(s: &serde_json::Value, sync: bool) -> bool {
    let cstate = s["cstate"].as_str().unwrap_or("");
    if sync {
        cstate == "Connected" && s["disk"] == "UpToDate" && s["peer_disk"] == "UpToDate"
    } else {
        matches!(
            cstate,
            "Connected" | "SyncSource" | "SyncTarget" | "PausedSyncS" | "PausedSyncT" | "WFBitMapS" | "WFBitMapT"
        )
    }
}

fn load_resource(cli: &Cli, name: &str) -> Result<(config::Resource, config::Host), i32> {
    let cfg = config::load(&cli.config).map_err(|e| {
        eprintln!("{e}");
        exit::CONFIG
    })?;
    for w in &cfg.warnings {
        eprintln!("{w}");
    }
    let node = node_name(cli);
    let Some(res) = cfg.resource(name) else {
        eprintln!("{name}: no such resource in {}", cli.config.display());
        return Err(exit::UNKNOWN_RESOURCE);
    };
    let Some(host) = res.host(&node) else {
        eprintln!(
            "{name}: resource has no 'on {node}' section in {} (use --node NAME to pick one)",
            cli.config.display()
        );
        return Err(exit::UNKNOWN_RESOURCE);
    };
    Ok((res.clone(), host.clone()))
}

fn create_md(cli: &Cli, name: &str, force: bool) -> i32 {
    let (res, host) = match load_resource(cli, name) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // Writing metadata under a running resource would corrupt it.
    if let Ok(resp) = call_quiet(&cli.run_dir, &Request::new(Command::Attached, name)) {
        if resp.attached.iter().any(|a| a == name) {
            eprintln!("{name}: the resource is attached in tandemd; run 'tandemadm down {name}' first");
            return exit::FAILED;
        }
    }
    match meta_store::create_md(&res, &host, force, &node_name(cli)) {
        Ok(msg) => {
            println!("{msg}");
            exit::OK
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            exit::FAILED
        }
    }
}

/// Ask the daemon if it is there; silence when it is not.
fn call_quiet(run_dir: &Path, req: &Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket_path(run_dir)).map_err(|e| e.to_string())?;
    exchange(&stream, req)
}

fn dump_md(cli: &Cli, name: &str) -> i32 {
    let (res, host) = match load_resource(cli, name) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match meta_store::dump_md(&res, &host) {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            exit::FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{arrived, normalize_args};

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn drbdadm_backend_options_move_after_the_command() {
        assert_eq!(
            normalize_args(v("tandemadm -- --discard-my-data connect r0")),
            v("tandemadm connect --discard-my-data r0")
        );
        assert_eq!(
            normalize_args(v("tandemadm -c x.conf -- --overwrite-data-of-peer primary r0")),
            v("tandemadm -c x.conf primary --overwrite-data-of-peer r0")
        );
    }

    #[test]
    fn en_dash_is_read_as_double_dash() {
        assert_eq!(
            normalize_args(v("tandemadm primary \u{2013}force r0")),
            v("tandemadm primary --force r0")
        );
    }

    #[test]
    fn connected_is_any_state_with_the_peer_and_synced_needs_both_disks_up_to_date() {
        let snap = |cstate: &str, disk: &str, peer_disk: &str| serde_json::json!({"resource": "r1", "cstate": cstate, "disk": disk, "peer_disk": peer_disk});
        assert!(!arrived(&snap("WFConnection", "UpToDate", "DUnknown"), false));
        assert!(arrived(&snap("SyncSource", "UpToDate", "Inconsistent"), false));
        assert!(!arrived(&snap("SyncSource", "UpToDate", "Inconsistent"), true));
        assert!(!arrived(&snap("Connected", "UpToDate", "Inconsistent"), true));
        assert!(arrived(&snap("Connected", "UpToDate", "UpToDate"), true));
        assert!(!arrived(&serde_json::json!({}), false));
    }
}
