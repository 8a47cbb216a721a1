//! The typed configuration that the `.res` grammar parses into.
//!
//! Every field has DRBD 8.4's default (`user/v84/linux/drbd_limits.h`), so a
//! resource that names nothing but its hosts behaves as DRBD would. Units are
//! kept in the field names, because DRBD mixes seconds and tenths of seconds.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where in which file a statement was written; every diagnostic carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Something the parser accepted but wants the operator to know about, such as
/// a DRBD option Tandem does not implement. Never silently dropped: the daemon
/// logs every warning at start and `tandemadm` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.location, self.message)
    }
}

/// A whole configuration: the main file plus everything it includes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// In the order they appear (includes expanded in place). The position is
    /// the resource's minor number in the status file.
    pub resources: Vec<Resource>,
    pub warnings: Vec<Warning>,
    /// `global { metrics ADDR:PORT; }`: where tandemd serves Prometheus
    /// metrics (off unless set).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }
}

/// DRBD's replication protocols; see `CONTRACT.md` for when a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    A,
    B,
    #[default]
    C,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::A => "A",
            Protocol::B => "B",
            Protocol::C => "C",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub protocol: Protocol,
    pub net: NetOptions,
    pub disk: DiskOptions,
    pub startup: StartupOptions,
    /// Handler name (`split-brain`, `fence-peer`, …) to shell command.
    pub handlers: BTreeMap<String, String>,
    /// The `on NAME { }` sections, in file order. One section = standalone.
    pub hosts: Vec<Host>,
    /// Where `resource NAME {` was written.
    pub location: Location,
}

impl Resource {
    pub fn host(&self, node: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == node)
    }

    /// The other node, if this resource has one.
    pub fn peer_of(&self, node: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name != node)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub device: NbdEndpoint,
    /// Backing file or block device.
    pub disk: PathBuf,
    /// Replication endpoint. Optional only for a standalone resource.
    pub address: Option<SocketAddr>,
    pub meta_disk: MetaDisk,
    pub location: Location,
}

/// Where the Primary serves its NBD export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdEndpoint {
    /// `nbd://HOST:PORT/EXPORT` (port defaults to 10809, export to the resource name).
    Tcp { addr: SocketAddr, export: String },
    /// `nbd+unix:///EXPORT?socket=PATH`.
    Unix { path: PathBuf, export: String },
}

impl NbdEndpoint {
    pub fn export_name(&self) -> &str {
        match self {
            NbdEndpoint::Tcp { export, .. } | NbdEndpoint::Unix { export, .. } => export,
        }
    }
}

impl fmt::Display for NbdEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdEndpoint::Tcp { addr, export } => write!(f, "nbd://{addr}/{export}"),
            NbdEndpoint::Unix { path, export } => {
                write!(f, "nbd+unix:///{export}?socket={}", path.display())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaDisk {
    /// At the end of the backing disk; the exported size shrinks accordingly.
    Internal,
    /// A separate file or device holding only metadata.
    External(PathBuf),
}

/// `after-sb-0pri`: neither node is Primary when the split brain is found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AfterSb0Pri {
    #[default]
    Disconnect,
    DiscardYoungerPrimary,
    DiscardOlderPrimary,
    DiscardZeroChanges,
    DiscardLeastChanges,
    DiscardNode(String),
}

/// `after-sb-1pri`: one node is Primary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AfterSb1Pri {
    #[default]
    Disconnect,
    Consensus,
    DiscardSecondary,
    CallPriLostAfterSb,
    ViolentlyAs0p,
}

/// `after-sb-2pri`: both nodes are Primary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AfterSb2Pri {
    #[default]
    Disconnect,
    CallPriLostAfterSb,
    ViolentlyAs0p,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fencing {
    #[default]
    DontCare,
    ResourceOnly,
    ResourceAndStonith,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    pub shared_secret: Option<String>,
    pub cram_hmac_alg: Option<String>,
    pub ping_int_s: u32,
    pub ping_timeout_ds: u32,
    pub connect_int_s: u32,
    pub timeout_ds: u32,
    pub ko_count: u32,
    pub max_buffers: u32,
    pub max_epoch_size: u32,
    pub sndbuf_size_bytes: u64,
    pub rcvbuf_size_bytes: u64,
    pub after_sb_0pri: AfterSb0Pri,
    pub after_sb_1pri: AfterSb1Pri,
    pub after_sb_2pri: AfterSb2Pri,
    pub allow_two_primaries: bool,
    pub csums_alg: Option<String>,
    pub verify_alg: Option<String>,
    pub data_integrity_alg: Option<String>,
    pub fencing: Fencing,
    /// `allow-insecure yes`: permit a link without a shared secret.
    pub allow_insecure: bool,
    /// `nbd-allow NET…;`: NBD clients over TCP must come from one of these
    /// (empty: anyone who reaches the `device` address).
    pub nbd_allow: Vec<AllowNet>,
    /// `tls yes` (DRBD 9.2's name): the link runs over TLS with mutual
    /// certificate authentication.
    pub tls: bool,
    pub tls_certificate: Option<PathBuf>,
    pub tls_privkey: Option<PathBuf>,
    /// The CA whose signature the peer's certificate must carry.
    pub tls_ca: Option<PathBuf>,
    /// `nbd-tls-certificate` and `nbd-tls-privkey`: NBD clients must
    /// STARTTLS before anything else.
    pub nbd_tls_certificate: Option<PathBuf>,
    pub nbd_tls_privkey: Option<PathBuf>,
    /// With `nbd-tls-ca`, clients must also present a certificate it signed.
    pub nbd_tls_ca: Option<PathBuf>,
}

/// An address or a CIDR prefix, as `nbd-allow` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl AllowNet {
    pub fn parse(s: &str) -> Option<AllowNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(AllowNet { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for AllowNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            shared_secret: None,
            cram_hmac_alg: None,
            ping_int_s: 10,
            ping_timeout_ds: 5,
            connect_int_s: 10,
            timeout_ds: 60,
            ko_count: 7,
            max_buffers: 2048,
            max_epoch_size: 2048,
            sndbuf_size_bytes: 0,
            rcvbuf_size_bytes: 0,
            after_sb_0pri: AfterSb0Pri::default(),
            after_sb_1pri: AfterSb1Pri::default(),
            after_sb_2pri: AfterSb2Pri::default(),
            allow_two_primaries: false,
            csums_alg: None,
            verify_alg: None,
            data_integrity_alg: None,
            fencing: Fencing::default(),
            allow_insecure: false,
            nbd_allow: Vec::new(),
            tls: false,
            tls_certificate: None,
            tls_privkey: None,
            tls_ca: None,
            nbd_tls_certificate: None,
            nbd_tls_privkey: None,
            nbd_tls_ca: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnIoError {
    PassOn,
    CallLocalIoError,
    #[default]
    Detach,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    pub on_io_error: OnIoError,
    /// `disk-timeout`, tenths of a second: a local request unanswered this
    /// long fails the disk as an I/O error would (detached whatever
    /// `on-io-error` says, as in DRBD); 0 = wait forever (DRBD's default).
    pub disk_timeout_ds: u32,
    /// `resync-rate` (8.3: `syncer { rate }`); a bare number is KiB/s as in DRBD.
    pub resync_rate_kib_s: u64,
    pub c_plan_ahead_ds: u32,
    pub c_fill_target_sectors: u64,
    pub c_max_rate_kib_s: u64,
    /// `c-min-rate`: under application load the resync yields down to this
    /// rate; 0 = it never yields; None (unset) = it yields only by keeping
    /// fewer requests in flight (DRBD's default is 250 KiB/s).
    pub c_min_rate_kib_s: Option<u64>,
    /// `al-extents` (8.3: `syncer { al-extents }`).
    pub al_extents: u32,
    pub al_updates: bool,
    pub disk_flushes: bool,
    pub md_flushes: bool,
    /// `size`: use only this many bytes of the backing disk.
    pub size_bytes: Option<u64>,
}

impl NetOptions {
    /// `timeout × ko-count`, µs: how long the peer may leave one request
    /// unanswered before the link is dropped; 0 (`ko-count 0`): forever.
    pub fn ko_limit_us(&self) -> u64 {
        u64::from(self.timeout_ds) * 100_000 * u64::from(self.ko_count)
    }
}

impl DiskOptions {
    /// `disk-timeout`, µs; 0: forever.
    pub fn disk_timeout_us(&self) -> u64 {
        u64::from(self.disk_timeout_ds) * 100_000
    }

    /// The resync's rate cap, KiB/s: `c-max-rate` under the default
    /// `c-plan-ahead` (below the cap, `core::throttle` sizes the resync by
    /// the application's latency, not by DRBD's fill or delay targets),
    /// `resync-rate` with `c-plan-ahead 0`, as in DRBD.
    pub fn resync_cap_kib_s(&self) -> u64 {
        if self.c_plan_ahead_ds > 0 {
            self.c_max_rate_kib_s
        } else {
            self.resync_rate_kib_s
        }
    }
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            on_io_error: OnIoError::default(),
            disk_timeout_ds: 0,
            resync_rate_kib_s: 250,
            c_plan_ahead_ds: 20,
            c_fill_target_sectors: 100,
            c_max_rate_kib_s: 102_400,
            c_min_rate_kib_s: None,
            al_extents: 1237,
            al_updates: true,
            disk_flushes: true,
            md_flushes: true,
            size_bytes: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupOptions {
    pub wfc_timeout_s: u32,
    pub degr_wfc_timeout_s: u32,
    pub outdated_wfc_timeout_s: u32,
    pub become_primary_on: Option<String>,
}
