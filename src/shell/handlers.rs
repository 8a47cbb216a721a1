//! Running the `handlers` section's commands, as DRBD's kernel module asks
//! drbdadm to: `/bin/sh -c COMMAND` with `DRBD_RESOURCE`, `DRBD_MINOR`,
//! `DRBD_CONF`, `DRBD_PEER_ADDRESS`, `DRBD_PEER_AF` and `DRBD_PEERS` in the
//! environment, so that DRBD's own scripts (`notify-split-brain.sh`,
//! `crm-fence-peer.sh`) work unchanged.
//!
//! The command runs on a thread of its own: a handler may take long (a fence
//! handler may wait for a cluster manager), and the I/O loop must not.

use super::resource::Resource;
use crate::core::{Event, Handler};
use std::process::{Command, Stdio};
use std::rc::Rc;

/// Start `handler` if the configuration names a command for it. Awaited
/// handlers report their exit code back to the node; one that is not
/// configured reports `None` at once.
pub fn run(res: &Rc<Resource>, handler: Handler) {
    let command = res.cfg.borrow().handlers.get(handler.name()).cloned();
    let Some(command) = command else {
        if handler.awaited() {
            tracing::warn!(resource = %res.name, "no {} handler is configured", handler.name());
            res.event(Event::HandlerDone { handler, exit: None });
        }
        return;
    };
    let env = environment(res);
    tracing::info!(resource = %res.name, handler = handler.name(), command = %command, "running handler");
    let name = res.name.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("handler-{}", handler.name()))
        .spawn(move || {
            let status = Command::new("/bin/sh")
                .arg("-c")
                .arg(&command)
                .envs(env)
                .stdin(Stdio::null())
                .status();
            let exit = match status {
                Ok(s) => {
                    tracing::info!(resource = %name, handler = handler.name(), exit = ?s.code(), "handler finished");
                    s.code()
                }
                Err(e) => {
                    tracing::error!(resource = %name, handler = handler.name(), error = %e, "handler could not run");
                    None
                }
            };
            let _ = tx.send(exit);
        });
    if let Err(e) = spawned {
        tracing::error!(resource = %res.name, handler = handler.name(), error = %e, "cannot start a handler thread");
        if handler.awaited() {
            res.event(Event::HandlerDone { handler, exit: None });
        }
        return;
    }
    if handler.awaited() {
        let res = Rc::clone(res);
        tokio_uring::spawn(async move {
            let exit = rx.await.unwrap_or(None);
            res.event(Event::HandlerDone { handler, exit });
        });
    }
}

fn environment(res: &Resource) -> Vec<(String, String)> {
    let cfg = res.cfg.borrow();
    let node = res.host.borrow().name.clone();
    let minor = res.node.borrow().snapshot().minor;
    let mut env = vec![
        ("DRBD_RESOURCE".to_owned(), res.name.clone()),
        ("DRBD_MINOR".to_owned(), minor.to_string()),
        ("DRBD_VOLUME".to_owned(), "0".to_owned()),
        ("TANDEM_NODE".to_owned(), node.clone()),
    ];
    env.push(("DRBD_CONF".to_owned(), cfg.location.file.display().to_string()));
    if let Some(peer) = cfg.peer_of(&node) {
        env.push(("DRBD_PEERS".to_owned(), peer.name.clone()));
        env.push(("DRBD_PEER".to_owned(), peer.name.clone()));
        if let Some(addr) = peer.address {
            env.push(("DRBD_PEER_ADDRESS".to_owned(), addr.ip().to_string()));
            let af = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
            env.push(("DRBD_PEER_AF".to_owned(), af.to_owned()));
        }
    }
    env
}
