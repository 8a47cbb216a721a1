//! Two nodes in their own network namespaces joined by a veth pair, with
//! the faults a network can have: iptables partitions (both ways or one),
//! and a bandwidth squeeze (tc htb; this kernel has no netem).

use super::*;

use std::process::Command;

/// The namespaces and veth pair; removed on drop, whatever happened.
pub struct Net {
    pub ns: [String; 2],
    pub ip: [String; 2],
    veth: [String; 2],
}

impl Net {
    pub fn new() -> Net {
        require_tool("ip", "iproute2");
        require_tool("iptables", "iptables");
        let tag = std::process::id() % 10_000;
        let subnet = 10 + tag % 200;
        let ns = [format!("tnA{tag}"), format!("tnB{tag}")];
        let ip = [format!("10.231.{subnet}.1"), format!("10.231.{subnet}.2")];
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        let net = Net {
            ns,
            ip,
            veth: [va.clone(), vb.clone()],
        };
        let (a, b) = (&net.ns[0], &net.ns[1]);
        for cmd in [
            format!("ip netns add {a}"),
            format!("ip netns add {b}"),
            format!("ip link add {va} type veth peer name {vb}"),
            format!("ip link set {va} netns {a}"),
            format!("ip link set {vb} netns {b}"),
            format!("ip -n {a} addr add {}/24 dev {va}", net.ip[0]),
            format!("ip -n {b} addr add {}/24 dev {vb}", net.ip[1]),
            format!("ip -n {a} link set lo up"),
            format!("ip -n {b} link set lo up"),
            format!("ip -n {a} link set {va} up"),
            format!("ip -n {b} link set {vb} up"),
        ] {
            run_ok(Command::new("sh").args(["-c", &cmd]));
        }
        net
    }

    pub fn exec(&self, i: usize, cmd: &str) {
        run_ok(Command::new("ip").args(["netns", "exec", &self.ns[i], "sh", "-c", cmd]));
    }

    /// Drop everything between the two nodes, both ways.
    pub fn partition(&self) {
        self.exec(
            0,
            &format!(
                "iptables -A INPUT -s {0} -j DROP; iptables -A OUTPUT -d {0} -j DROP",
                self.ip[1]
            ),
        );
    }

    pub fn heal(&self) {
        self.exec(0, "iptables -F INPUT; iptables -F OUTPUT");
    }

    /// Drop only what node `from` sends to the other node.
    pub fn one_way(&self, from: usize) {
        self.exec(from, &format!("iptables -A OUTPUT -d {} -j DROP", self.ip[1 - from]));
    }

    pub fn heal_all(&self) {
        for i in 0..2 {
            self.exec(i, "iptables -F INPUT; iptables -F OUTPUT");
        }
    }

    /// Squeeze node `i`'s outgoing link to `rate` (tc htb), or lift it.
    pub fn squeeze(&self, i: usize, rate: Option<&str>) {
        let dev = &self.veth[i];
        match rate {
            Some(r) => self.exec(
                i,
                &format!("tc qdisc replace dev {dev} root handle 1: htb default 10 && tc class replace dev {dev} parent 1: classid 1:10 htb rate {r} ceil {r} burst 32k"),
            ),
            None => self.exec(i, &format!("tc qdisc del dev {dev} root 2>/dev/null; true")),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
