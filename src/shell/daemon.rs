//! `tandemd`: owns every resource of this node, serves the control socket,
//! keeps the status file current, and shuts down cleanly on SIGTERM.

use super::meta_store::{MetaStore, MetaStoreError};
use super::resource::Resource;
use super::{nbd_server, status_file};
use crate::config::{self, Config};
use crate::control::{exit, Command, Request, Response};
use crate::core::limits;
use crate::core::{Event, Refusal, Snapshot};
use crate::status;
use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, Notify};

pub struct Options {
    pub config_path: PathBuf,
    pub node: String,
    pub run_dir: PathBuf,
    /// Split-brain victims' blocks go here (`--save-dir`).
    pub save_dir: PathBuf,
    /// Members of this group (gid) may use the control socket as root can.
    pub admin_gid: Option<u32>,
}

/// A group name or number as `--admin-group` takes it.
pub fn resolve_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad group name {name:?}"))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it and
    // its length is passed; `out` is checked before use.
    let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return Err(format!("no group named {name:?}"));
    }
    Ok(grp.gr_gid)
}

/// Whether process `pid` (a control-socket caller) is in group `gid`:
/// its primary or any supplementary group, as the kernel reports them.
fn caller_in_group(pid: Option<i32>, primary_gid: u32, gid: u32) -> bool {
    if primary_gid == gid {
        return true;
    }
    let Some(pid) = pid else { return false };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

/// The control socket inside the run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("tandemd.sock")
}

pub struct Daemon {
    pub opts: Options,
    pub config: Config,
    /// This node's resources, in config order (the position is the minor).
    pub resources: Vec<Rc<Resource>>,
    pub changed: Rc<Notify>,
    pub events: broadcast::Sender<String>,
    /// Every resource's last published snapshot (events are diffs of these).
    last: RefCell<Vec<Option<Snapshot>>>,
    /// Resync progress samples per resource, for the speed and ETA.
    speeds: RefCell<std::collections::HashMap<String, SpeedSamples>>,
    pub status_file: status_file::Writer,
}

/// (time, KiB left) samples of one resync.
struct SpeedSamples {
    start: (std::time::Instant, u64),
    recent: std::collections::VecDeque<(std::time::Instant, u64)>,
}

/// DRBD computes the recent speed over roughly the last 18 seconds.
const SPEED_WINDOW: Duration = Duration::from_secs(18);

/// The io_uring runtime, with COOP_TASKRUN (Linux 5.19): a completion that
/// arrives while this thread runs is handled at its next system call instead
/// of interrupting it with an inter-processor interrupt, which in a virtual
/// machine is an exit to the hypervisor. The thread that waits for
/// completions is the one that submits, the case io_uring_setup(2)
/// recommends the flag for. An older kernel refuses it: then without.
fn uring_runtime() -> std::io::Result<tokio_uring::Runtime> {
    let mut coop = tokio_uring::uring_builder();
    coop.setup_coop_taskrun();
    match tokio_uring::Runtime::new(tokio_uring::builder().uring_builder(&coop)) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => tokio_uring::Runtime::new(&tokio_uring::builder()),
        other => other,
    }
}

/// In a KVM guest whose idle vCPUs halt at once (`haltpoll` with
/// `guest_halt_poll_ns` 0; the kernel's default is 200000), every hop of a
/// replicated write that lands on an idle vCPU waits for the hypervisor to
/// wake it: about 40% of a QD1 write on the VMs of BENCHMARKS.md. Worth a
/// line in the log, since no Tandem setting changes it.
fn idle_polling_hint() -> Option<String> {
    let driver = std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver").ok()?;
    let poll_ns = std::fs::read_to_string(HALT_POLL_NS).ok()?;
    idle_polling_hint_for(&driver, &poll_ns)
}

const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// [`idle_polling_hint`] for the cpuidle driver and `guest_halt_poll_ns`
/// as sysfs gives them.
fn idle_polling_hint_for(driver: &str, poll_ns: &str) -> Option<String> {
    (driver.trim() == "haltpoll" && poll_ns.trim() == "0").then(|| {
        format!(
            "this VM's idle vCPUs halt without polling ({HALT_POLL_NS} is 0): each wake-up of one costs a trip \
             through the hypervisor; 200000 takes about 40% off a replicated write at queue depth 1 \
             (docs/troubleshooting.md, \"Writes are slower than expected\")"
        )
    })
}

/// Run the daemon until SIGTERM/SIGINT. Returns an error for start-up failures.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let config = config::load(&opts.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Some(hint) = idle_polling_hint() {
        tracing::info!("{hint}");
    }
    std::fs::create_dir_all(&opts.run_dir)
        .map_err(|e| anyhow::anyhow!("cannot create run directory {}: {e}", opts.run_dir.display()))?;
    let sock = socket_path(&opts.run_dir);
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        anyhow::bail!(
            "tandemd is already running for {} (its control socket {} answers)",
            opts.run_dir.display(),
            sock.display()
        );
    }
    let _ = std::fs::remove_file(&sock);

    let runtime = uring_runtime().map_err(|e| anyhow::anyhow!("cannot set up io_uring: {e}"))?;
    runtime.block_on(async move {
        let changed = Rc::new(Notify::new());
        let mut resources = Vec::new();
        for (minor, r) in config.resources.iter().enumerate() {
            match r.host(&opts.node) {
                Some(host) => resources.push(Rc::new(Resource::new(
                    r.clone(),
                    host.clone(),
                    minor as u32,
                    &opts.node,
                    Rc::clone(&changed),
                    opts.save_dir.clone(),
                ))),
                None => {
                    tracing::info!(resource = %r.name, node = %opts.node, "resource has no 'on {}' section; not ours", opts.node)
                }
            }
        }
        if resources.is_empty() {
            tracing::warn!(node = %opts.node, config = %opts.config_path.display(), "no resource in the configuration has an 'on {}' section; is --node right?", opts.node);
        }
        let (events, _) = broadcast::channel(1024);
        let status_file = status_file::Writer::start(&opts.run_dir)?;
        let daemon = Rc::new(Daemon {
            status_file,
            speeds: RefCell::new(std::collections::HashMap::new()),
            last: RefCell::new(vec![None; resources.len()]),
            opts,
            config,
            resources,
            changed,
            events,
        });
        // Before the control socket exists: whoever sees the daemon answer
        // (a test, a cluster agent that started it) may read the file next.
        status_file::write(&daemon).await?;
        let listener = UnixListener::bind(&sock)
            .map_err(|e| anyhow::anyhow!("cannot bind control socket {}: {e}", sock.display()))?;
        match daemon.opts.admin_gid {
            None => std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?,
            Some(gid) => {
                // The admin group reaches the socket; the credential check
                // below still decides who may use it.
                std::os::unix::fs::chown(&sock, None, Some(gid))?;
                std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660))?;
            }
        }
        tokio_uring::spawn(status_file::keep_current(Rc::clone(&daemon)));
        tokio_uring::spawn(disk_clock(Rc::clone(&daemon)));
        if let Some(addr) = daemon.config.metrics {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
            tokio_uring::spawn(super::metrics::serve(Rc::clone(&daemon), l));
        }
        tracing::info!(node = %daemon.opts.node, socket = %sock.display(), "tandemd ready; resources are down until 'tandemadm up'");
        notify_systemd("READY=1");

        // Everything runs in tasks of its own; the future handed to
        // block_on only waits for the signal. tokio-uring's LocalSet polls
        // that future again each time any task wakes, once or more per I/O,
        // so a select over the signals and the control socket there would
        // be polled on every request's path.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio_uring::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            let _ = stop.send(());
        });
        let control = tokio_uring::spawn(accept_control(Rc::clone(&daemon), listener));
        let _ = stopped.await;
        control.abort();
        notify_systemd("STOPPING=1");
        tracing::info!("shutting down: finishing in-flight I/O and persisting metadata");
        daemon.shutdown().await;
        let _ = std::fs::remove_file(&sock);
        Ok(())
    })
}

/// The clock `disk-timeout` runs on, for each resource that sets it,
/// connected or not (the link's ticks stop with the link).
async fn disk_clock(daemon: Rc<Daemon>) {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(100);
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(PERIOD).await;
        let now = std::time::Instant::now();
        let elapsed_us = now.duration_since(last).as_micros() as u64;
        last = now;
        for res in &daemon.resources {
            if res.cfg.borrow().disk.disk_timeout_ds > 0 {
                res.event(Event::DiskClock { elapsed_us });
            }
        }
    }
}

/// Serve the control socket: each connection in a task of its own.
async fn accept_control(daemon: Rc<Daemon>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let d = Rc::clone(&daemon);
                tokio_uring::spawn(async move { serve_control(d, stream).await });
            }
            Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
        }
    }
}

/// Tell systemd (Type=notify) about readiness; a no-op outside systemd.
fn notify_systemd(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
            let _ = sock.send_to(state.as_bytes(), path);
        }
    }
}

async fn serve_control(daemon: Rc<Daemon>, stream: UnixStream) {
    let caller = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read control client credentials");
            return;
        }
    };
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(limits::CONTROL_LINE_BYTES_MAX as u64 + 1));
    let mut line = Vec::new();
    let response = match lines.read_until(b'\n', &mut line).await {
        Ok(0) => return,
        Ok(n) if n > limits::CONTROL_LINE_BYTES_MAX => Response::err(exit::USAGE, "control request too long"),
        Ok(_) => match Request::decode(&line) {
            Err(e) => Response::err(exit::USAGE, e),
            Ok(_)
                if caller.uid() != 0
                    && caller.uid() != owner
                    && !daemon
                        .opts
                        .admin_gid
                        .is_some_and(|g| caller_in_group(caller.pid(), caller.gid(), g)) =>
            {
                tracing::warn!(
                    uid = caller.uid(),
                    pid = caller.pid().unwrap_or(0),
                    "control request refused: not root, not the daemon's user, not in the admin group"
                );
                Response::err(
                    exit::FAILED,
                    format!(
                        "permission denied: uid {} may not control tandemd (root, uid {owner}{})",
                        caller.uid(),
                        daemon
                            .opts
                            .admin_gid
                            .map(|g| format!(" or group {g}"))
                            .unwrap_or_default()
                    ),
                )
            }
            Ok(req) if req.command == Command::Events => {
                stream_events(&daemon, &req, &mut write).await;
                return;
            }
            Ok(req) => {
                if !matches!(
                    req.command,
                    Command::Role | Command::Cstate | Command::Dstate | Command::Status | Command::Attached
                ) {
                    tracing::info!(uid = caller.uid(), gid = caller.gid(), pid = caller.pid().unwrap_or(0), command = ?req.command, resource = %req.resource, force = req.force, "control request");
                }
                let response = daemon.dispatch(&req).await;
                // The operator reads the status file right after a command
                // returns: it must already say what the command did.
                daemon.publish_changes();
                if let Err(e) = status_file::write(&daemon).await {
                    tracing::warn!(error = %e, "cannot write status file");
                }
                response
            }
        },
        Err(e) => Response::err(exit::USAGE, format!("cannot read control request: {e}")),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}

async fn stream_events(daemon: &Daemon, req: &Request, write: &mut tokio::net::unix::OwnedWriteHalf) {
    let mut rx = daemon.events.subscribe();
    let mut initial = String::new();
    for res in daemon.selected(&req.resource).unwrap_or_default() {
        initial.push_str(&event_line("exists", &res.node.borrow().snapshot()));
    }
    initial.push_str("{\"event\":\"exists\",\"resource\":\"-\"}\n");
    if write.write_all(initial.as_bytes()).await.is_err() {
        return;
    }
    loop {
        match rx.recv().await {
            Ok(line) => {
                let wanted = req.resource == "all" || line.contains(&format!("\"resource\":\"{}\"", req.resource));
                if wanted && write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let _ = write
                    .write_all(format!("{{\"event\":\"lagged\",\"missed\":{n}}}\n").as_bytes())
                    .await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One JSON line for the events stream (like `drbdsetup events2`).
pub fn event_line(verb: &str, s: &Snapshot) -> String {
    let v = serde_json::json!({
        "event": verb,
        "resource": s.resource,
        "role": s.role,
        "disk": s.disk,
        "connection": s.cstate,
        "peer-role": s.peer_role,
        "peer-disk": s.peer_disk,
        "nbd-clients": s.nbd_clients,
        "out-of-sync-kib": s.counters.oos,
    });
    format!("{v}\n")
}

impl Daemon {
    fn selected(&self, name: &str) -> Result<Vec<Rc<Resource>>, Response> {
        if name == "all" {
            return Ok(self.resources.clone());
        }
        if let Some(r) = self.resources.iter().find(|r| r.name == name) {
            return Ok(vec![Rc::clone(r)]);
        }
        let why = if self.config.resource(name).is_some() {
            format!(
                "{name}: resource has no 'on {}' section in {}",
                self.opts.node,
                self.opts.config_path.display()
            )
        } else {
            format!("{name}: no such resource in {}", self.opts.config_path.display())
        };
        Err(Response::err(exit::UNKNOWN_RESOURCE, why))
    }

    async fn dispatch(&self, req: &Request) -> Response {
        let targets = match self.selected(&req.resource) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        if req.command == Command::Status && req.json {
            let snaps: Vec<serde_json::Value> = targets
                .iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r.node.borrow().snapshot()).unwrap_or_default();
                    if let Ok(split) = serde_json::to_value(r.latency.borrow().split()) {
                        v["write_latency_us"] = split;
                    }
                    v
                })
                .collect();
            return Response::ok(serde_json::to_string_pretty(&snaps).unwrap_or_default() + "\n");
        }
        let mut output = String::new();
        let mut attached = Vec::new();
        for res in &targets {
            match self.apply(res, req).await {
                Ok(text) => output.push_str(&text),
                Err(resp) => {
                    let mut resp = resp;
                    resp.output = output;
                    return resp;
                }
            }
            if res.node.borrow().is_attached() {
                attached.push(res.name.clone());
            }
        }
        let mut resp = Response::ok(output);
        resp.attached = attached;
        resp
    }

    async fn apply(&self, res: &Rc<Resource>, req: &Request) -> Result<String, Response> {
        let refused = |e: Refusal| Response::err(exit::STATE_CHANGE_REFUSED, format!("{}: {e}", res.name));
        match req.command {
            Command::Up => {
                self.attach(res)?;
                self.connect(res, req)?;
                Ok(String::new())
            }
            Command::Attach => {
                let rejoin = {
                    let n = res.node.borrow();
                    !n.is_attached() && res.peer_running.get()
                };
                self.attach(res)?;
                let in_band = rejoin && res.node.borrow_mut().resync_attached_disk();
                res.run_actions();
                if rejoin && !in_band {
                    // A node that stayed connected while diskless (a
                    // Secondary after its disk failed, or a Primary whose
                    // peer cannot send it the data) gets its new disk
                    // resynced: a fresh connect decides what moves.
                    self.disconnect(res).await;
                    self.connect(res, &Request::new(Command::Connect, &res.name))?;
                }
                Ok(String::new())
            }
            Command::Down => {
                self.disconnect(res).await;
                if res.node.borrow().is_up() {
                    self.demote(res, req.force).await.map_err(refused)?;
                    self.detach(res).await.map_err(refused)?;
                }
                Ok(String::new())
            }
            Command::Detach => {
                self.detach(res).await.map_err(refused)?;
                Ok(String::new())
            }
            Command::Connect if req.dry_run => {
                if res.cfg.borrow().hosts.len() < 2 {
                    return Err(Response::err(
                        exit::FAILED,
                        format!("{}: standalone resource; nothing to connect to", res.name),
                    ));
                }
                super::peer::dry_run(res)
                    .await
                    .map_err(|e| Response::err(exit::FAILED, e))
            }
            Command::Connect => {
                self.connect(res, req)?;
                Ok(String::new())
            }
            Command::Disconnect => {
                if res.cfg.borrow().hosts.len() < 2 {
                    return Err(refused(Refusal::new(
                        crate::core::StateRv::AlreadyStandAlone,
                        format!("{} has a single 'on' section and runs standalone", res.name),
                    )));
                }
                self.disconnect(res).await;
                Ok(String::new())
            }
            Command::Primary => {
                // The peer's demotion may still be on its way: its
                // `secondary` returns once it is Secondary, not once this
                // node has heard. A cluster manager (or an operator's
                // script) promotes right after; give the news a moment, as
                // DRBD's cluster-wide state change would, before refusing.
                let patience = std::time::Instant::now() + std::time::Duration::from_millis(2000);
                loop {
                    let fresh = random_u64();
                    let tried = res.node.borrow_mut().promote(req.force, fresh);
                    match tried {
                        Ok(()) => break,
                        Err(e)
                            if e.rv == crate::core::refusal::StateRv::MultiplePrimaries
                                && std::time::Instant::now() < patience =>
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        Err(e) => return Err(refused(e)),
                    }
                }
                res.run_actions();
                tracing::info!(resource = %res.name, force = req.force, "promoted to Primary");
                Ok(String::new())
            }
            Command::Secondary => {
                self.demote(res, req.force).await.map_err(refused)?;
                Ok(String::new())
            }
            Command::Role | Command::Cstate | Command::Dstate => {
                let node = res.node.borrow();
                if !node.is_up() {
                    return Err(Response::err(
                        exit::RESOURCE_DOWN,
                        format!(
                            "{}: resource is down; bring it up with 'tandemadm up {}'",
                            res.name, res.name
                        ),
                    ));
                }
                let s = node.snapshot();
                Ok(match req.command {
                    Command::Role => format!("{}/{}\n", s.role, s.peer_role),
                    Command::Cstate => format!("{}\n", s.cstate),
                    _ => format!("{}/{}\n", s.disk, s.peer_disk),
                })
            }
            Command::Status => {
                let node = res.node.borrow();
                if !node.is_up() {
                    return Ok(format!("{} role:Unconfigured\n  disk:Diskless\n", res.name));
                }
                let mut text = status::render_status(&node.snapshot(), req.verbose, req.color);
                if req.verbose {
                    text.push_str(&res.latency.borrow().line());
                }
                Ok(text)
            }
            Command::Invalidate | Command::InvalidateRemote => {
                let local = req.command == Command::Invalidate;
                res.node.borrow_mut().invalidate(local, random_u64()).map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::Adjust => self.adjust(res).await,
            Command::Outdate => {
                res.node.borrow_mut().outdate().map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::PauseSync => {
                res.node.borrow_mut().pause_sync().map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::ResumeSync => {
                res.node.borrow_mut().resume_sync().map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::NewCurrentUuid => {
                let fresh = random_u64();
                res.node
                    .borrow_mut()
                    .new_current_uuid(fresh, req.force)
                    .map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::SplitBrainReport => self.split_brain_report(res, req).await,
            Command::Verify => {
                res.node.borrow_mut().start_verify().map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::ResumeIo => {
                res.node.borrow_mut().resume_io().map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::ResyncOos => {
                res.node.borrow_mut().resync_out_of_sync().map_err(refused)?;
                res.run_actions();
                Ok(String::new())
            }
            Command::Attached | Command::Events => Ok(String::new()),
        }
    }

    /// `split-brain-report`: both sides' changes since the split, from the
    /// reports exchanged at the connect that found it or, failing that,
    /// asked of the peer now (which also yields its bitmap).
    async fn split_brain_report(&self, res: &Rc<Resource>, req: &Request) -> Result<String, Response> {
        use crate::core::split_brain::{Report, SideReport};
        if !res.node.borrow().is_attached() {
            return Err(Response::err(
                exit::FAILED,
                format!("{}: no disk attached; 'tandemadm attach {}' first", res.name, res.name),
            ));
        }
        let peer_name = res
            .cfg
            .borrow()
            .peer_of(&res.host.borrow().name)
            .map(|h| h.name.clone())
            .ok_or_else(|| Response::err(exit::FAILED, format!("{}: standalone resource; no peer", res.name)))?;
        let seen = res.node.borrow().split_brain_seen().map(|(_, p)| *p);
        let (peer, union, source) = match seen {
            Some(p) => (
                p,
                None,
                "as exchanged at the connect that found the split brain".to_owned(),
            ),
            None => {
                let peek = super::peer::peek(res)
                    .await
                    .map_err(|e| Response::err(exit::FAILED, e))?;
                let union = peek.runs.as_ref().map(|r| res.node.borrow().union_weight(r));
                (peek.report, union, format!("asked of {peer_name} just now"))
            }
        };
        let node = res.node.borrow();
        let me = node.uuid_report(false);
        let verdict = node.decide(&peer, node.data_bytes());
        let split_brain = verdict.split_brain.is_some();
        let words = match (&verdict.refuse, verdict.sync) {
            _ if split_brain => "the generation UUIDs show both sides wrote as Primary while apart".to_owned(),
            (Some(why), _) => format!("connecting would be refused: {why}"),
            (None, Some(crate::core::generation::Sync::None)) => "the data is in sync".to_owned(),
            (None, Some(_)) => "an ordinary resync would follow; nothing is lost".to_owned(),
            (None, None) => String::new(),
        };
        let report = Report {
            resource: res.name.clone(),
            split_brain,
            verdict: words,
            me: SideReport::new(&res.host.borrow().name, &me),
            peer: SideReport::new(&peer_name, &peer),
            union_blocks: union,
        };
        if req.json {
            let mut s = serde_json::to_string(&report).unwrap_or_default();
            s.push('\n');
            return Ok(s);
        }
        Ok(report.render(&res.save_dir.display().to_string(), &source))
    }

    fn attach(&self, res: &Rc<Resource>) -> Result<(), Response> {
        if res.node.borrow().is_attached() {
            return Ok(());
        }
        // Before the disk is even opened: it may be the one still hung.
        if let Some(refusal) = res.node.borrow().attach_refusal() {
            return Err(Response::err(
                exit::STATE_CHANGE_REFUSED,
                format!("{}: {refusal}", res.name),
            ));
        }
        let (store, info) = MetaStore::open(&res.cfg.borrow(), &res.host.borrow()).map_err(|e| meta_failure(res, e))?;
        let disk = super::disk::Disk::open(&res.host.borrow().disk).map_err(|e| {
            Response::err(
                exit::FAILED,
                format!(
                    "{}: cannot open backing disk {}: {e}",
                    res.name,
                    res.host.borrow().disk.display()
                ),
            )
        })?;
        *res.disk.borrow_mut() = Some(Rc::new(disk));
        *res.meta.borrow_mut() = Some(store);
        let attached = res.node.borrow_mut().attach(info);
        if let Err(e) = attached {
            // Refused: the disk and metadata stay closed, as before.
            *res.disk.borrow_mut() = None;
            *res.meta.borrow_mut() = None;
            return Err(Response::err(exit::STATE_CHANGE_REFUSED, format!("{}: {e}", res.name)));
        }
        if res.node.borrow().has_peer() {
            if let Err(e) = res.load_bitmap() {
                tracing::error!(resource = %res.name, error = %e, "cannot read the bitmap");
            }
            let crashed = !info.flags.contains(crate::meta::MdFlags::AL_CLEAN);
            if let Err(e) = res.apply_activity_log(crashed) {
                tracing::error!(resource = %res.name, error = %e, "cannot read the activity log");
            }
        }
        res.run_actions();
        if res.listening.get() {
            // A Primary whose disk was detached kept serving through the peer.
            tracing::info!(resource = %res.name, disk = %res.host.borrow().disk.display(), "disk re-attached");
            return Ok(());
        }
        if let Err(e) = nbd_server::start_listener(res) {
            tracing::error!(resource = %res.name, endpoint = %res.host.borrow().device, error = %e, "cannot serve NBD");
            let _ = res.node.borrow_mut().detach();
            *res.disk.borrow_mut() = None;
            *res.meta.borrow_mut() = None;
            res.run_actions();
            return Err(Response::err(
                exit::FAILED,
                format!("{}: cannot listen on {}: {e}", res.name, res.host.borrow().device),
            ));
        }
        tracing::info!(resource = %res.name, disk = %res.host.borrow().disk.display(), bytes = info.data_bytes, state = %res.node.borrow().disk_state(), "attached");
        Ok(())
    }

    fn connect(&self, res: &Rc<Resource>, req: &Request) -> Result<(), Response> {
        if res.cfg.borrow().hosts.len() < 2 {
            // Standalone by configuration: there is no peer to connect to.
            return Ok(());
        }
        if !res.node.borrow().is_attached() {
            return Err(Response::err(
                exit::STATE_CHANGE_REFUSED,
                format!("{}: State change failed: (-11) Device is diskless, the requested operation requires a disk (attach it with 'tandemadm attach {}')", res.name, res.name),
            ));
        }
        if req.discard_my_data {
            if res.node.borrow().role() == crate::core::Role::Primary {
                return Err(Response::err(
                    exit::STATE_CHANGE_REFUSED,
                    format!("{}: --discard-my-data refused: this node is Primary; demote it with 'tandemadm secondary {}' first", res.name, res.name),
                ));
            }
            res.discard_my_data.set(true);
            res.node.borrow_mut().set_discard_my_data(true);
        }
        super::peer::require_secret(res).map_err(|e| Response::err(exit::CONFIG, e))?;
        super::peer::start(res)
            .map_err(|e| Response::err(exit::FAILED, format!("{}: cannot start the peer link: {e}", res.name)))
    }

    /// `adjust`: make the running resource match the configuration file.
    /// Options apply at once (a changed link restarts the link); a changed
    /// disk, device or address needs the resource detached first.
    async fn adjust(&self, res: &Rc<Resource>) -> Result<String, Response> {
        let config = config::load(&self.opts.config_path).map_err(|e| Response::err(exit::CONFIG, e.to_string()))?;
        let node = &self.opts.node;
        let Some(new) = config.resource(&res.name) else {
            return Err(Response::err(
                exit::UNKNOWN_RESOURCE,
                format!(
                    "{}: no longer in {}; take it down with 'tandemadm down {}'",
                    res.name,
                    self.opts.config_path.display(),
                    res.name
                ),
            ));
        };
        let Some(new_host) = new.host(node) else {
            return Err(Response::err(
                exit::UNKNOWN_RESOURCE,
                format!("{}: the configuration has no 'on {node}' section any more", res.name),
            ));
        };
        let mut changes = Vec::new();
        {
            let old = res.host.borrow();
            let moved = old.device != new_host.device
                || old.disk != new_host.disk
                || old.address != new_host.address
                || old.meta_disk != new_host.meta_disk;
            if moved && res.node.borrow().is_attached() {
                return Err(Response::err(
                    exit::STATE_CHANGE_REFUSED,
                    format!(
                        "{}: the device, disk, address or meta-disk of {node} changed; adjust cannot move an attached resource: run 'tandemadm down {}' then 'tandemadm adjust {}' and 'tandemadm up {}'",
                        res.name, res.name, res.name, res.name
                    ),
                ));
            }
            if moved {
                changes.push("host section");
            }
        }
        let (link_changed, disk_changed) = {
            let old = res.cfg.borrow();
            (
                old.net != new.net
                    || old.protocol != new.protocol
                    || old
                        .hosts
                        .iter()
                        .map(|h| (&h.name, h.address))
                        .ne(new.hosts.iter().map(|h| (&h.name, h.address))),
                old.disk != new.disk,
            )
        };
        if link_changed {
            changes.push("net options");
        }
        if disk_changed {
            changes.push("disk options");
        }
        if new.handlers != res.cfg.borrow().handlers || new.startup != res.cfg.borrow().startup {
            changes.push("handlers/startup");
        }
        *res.cfg.borrow_mut() = new.clone();
        *res.host.borrow_mut() = new_host.clone();
        {
            let mut n = res.node.borrow_mut();
            n.set_protocol(new.protocol.to_string().chars().next().unwrap_or('C'));
            super::resource::apply_options(&mut n, new);
        }
        if link_changed && res.peer_running.get() {
            self.disconnect(res).await;
            self.connect(res, &Request::new(Command::Connect, &res.name))?;
        }
        if changes.is_empty() {
            return Ok(format!("{}: nothing to change\n", res.name));
        }
        tracing::info!(resource = %res.name, changed = ?changes, "adjusted to the configuration");
        Ok(format!(
            "{}: applied {}{}\n",
            res.name,
            changes.join(", "),
            if link_changed && res.peer_running.get() {
                "; peer link restarted"
            } else {
                ""
            }
        ))
    }

    /// Drop the peer link and wait until it is down.
    async fn disconnect(&self, res: &Rc<Resource>) {
        if !res.peer_running.get() {
            return;
        }
        res.stop_peer.notify_one();
        for _ in 0..500 {
            if !res.peer_running.get() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn demote(&self, res: &Rc<Resource>, force: bool) -> Result<(), Refusal> {
        // A client that has just closed its connection (a cluster agent
        // demotes right after unmounting) is seen closing a moment later,
        // when its connection's task reads the end of the stream. One that
        // stays is refused after this grace.
        const CLOSING_CLIENT_GRACE: Duration = Duration::from_millis(250);
        if !force && res.node.borrow().role() == crate::core::Role::Primary {
            let deadline = std::time::Instant::now() + CLOSING_CLIENT_GRACE;
            while !res.clients.borrow().is_empty() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let holders: Vec<String> = res.clients.borrow().values().cloned().collect();
        let holders = if holders.is_empty() {
            String::new()
        } else {
            format!("NBD client {}", holders.join(", "))
        };
        res.node.borrow_mut().demote(force, &holders)?;
        if force && !holders.is_empty() {
            tracing::warn!(resource = %res.name, %holders, "forced demotion with NBD clients connected; their I/O now fails with EPERM");
        }
        res.run_actions();
        Ok(())
    }

    async fn detach(&self, res: &Rc<Resource>) -> Result<(), Refusal> {
        if !res.node.borrow().is_attached() {
            return Ok(());
        }
        res.node.borrow_mut().detach()?;
        res.stop_listener.notify_one();
        let disk = res.disk.borrow_mut().take();
        if let Some(disk) = disk {
            if let Err(e) = disk.flush().await {
                tracing::error!(resource = %res.name, error = %e, "flush on detach failed");
            }
        }
        if let Some(mut meta) = res.meta.borrow_mut().take() {
            if let Err(e) = meta.mark_clean() {
                tracing::error!(resource = %res.name, error = %e, "cannot mark metadata clean");
            }
        }
        res.run_actions();
        // The listener task closes the socket when it next runs: let it,
        // so that an `up` right after a `down` can bind the port again.
        for _ in 0..200 {
            if !res.listening.get() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tracing::info!(resource = %res.name, "detached");
        Ok(())
    }

    /// SIGTERM: let in-flight requests finish, flush, and leave clean metadata.
    async fn shutdown(&self) {
        for res in &self.resources {
            self.disconnect(res).await;
            res.stop_listener.notify_one();
            for _ in 0..300 {
                if res.in_flight() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if res.node.borrow().is_attached() {
                let _ = res.node.borrow_mut().demote(true, "");
                res.run_actions();
                let _ = self.detach(res).await;
            }
        }
        let _ = status_file::write(self).await;
    }

    /// The measured speed of a running resync (None when not syncing).
    pub fn resync_speed(&self, resource: &str) -> Option<status::Speed> {
        let res = self.resources.iter().find(|r| r.name == resource)?;
        let mut speeds = self.speeds.borrow_mut();
        let Some((left, _)) = res.node.borrow().snapshot().resync_kib else {
            speeds.remove(resource);
            return None;
        };
        let now = std::time::Instant::now();
        let s = speeds.entry(resource.to_owned()).or_insert_with(|| SpeedSamples {
            start: (now, left),
            recent: std::collections::VecDeque::new(),
        });
        s.recent.push_back((now, left));
        while s.recent.len() > 2 && now.duration_since(s.recent[0].0) > SPEED_WINDOW {
            s.recent.pop_front();
        }
        let rate = |(t0, l0): (std::time::Instant, u64)| {
            let dt = now.duration_since(t0).as_secs_f64();
            if dt < 0.01 {
                0
            } else {
                (l0.saturating_sub(left) as f64 / dt) as u64
            }
        };
        Some(status::Speed {
            recent_kib_s: s.recent.front().map_or(0, |&f| rate(f)),
            average_kib_s: rate(s.start),
        })
    }

    /// Publish snapshots that changed since last time as event lines.
    pub fn publish_changes(&self) {
        let mut last = self.last.borrow_mut();
        for (i, res) in self.resources.iter().enumerate() {
            let snap = res.node.borrow().snapshot();
            let differs = match &last[i] {
                None => true,
                Some(prev) => {
                    prev.role != snap.role
                        || prev.disk != snap.disk
                        || prev.cstate != snap.cstate
                        || prev.peer_disk != snap.peer_disk
                        || prev.peer_role != snap.peer_role
                        || prev.nbd_clients != snap.nbd_clients
                }
            };
            if differs {
                let _ = self.events.send(event_line("change", &snap));
                last[i] = Some(snap);
            }
        }
    }
}

fn meta_failure(res: &Resource, e: MetaStoreError) -> Response {
    Response::err(exit::FAILED, format!("{}: {e}", res.name))
}

/// A fresh generation UUID. Not security-sensitive; it must only differ
/// between generations and nodes, so the kernel's random bytes suffice.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // getrandom on Linux ≥ 3.17 does not fail for 8 bytes; fall back to time.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_ne_bytes(b)
}

/// `uname -n`, which names this node's `on` section by default.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::idle_polling_hint_for;

    #[test]
    fn the_idle_polling_hint_names_the_setting_only_where_a_guest_halts_without_polling() {
        let hint = idle_polling_hint_for("haltpoll\n", "0\n").unwrap_or_default();
        assert!(
            hint.contains("guest_halt_poll_ns is 0") && hint.contains("docs/troubleshooting.md"),
            "{hint}"
        );
        // Polling on (the kernel's default), or another idle driver (bare
        // metal: intel_idle, acpi_idle): nothing to say.
        assert_eq!(idle_polling_hint_for("haltpoll\n", "200000\n"), None);
        assert_eq!(idle_polling_hint_for("intel_idle\n", "0\n"), None);
    }
}
