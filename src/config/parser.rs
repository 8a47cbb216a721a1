//! Meaning for the statement tree's option sections (`net`, `disk`,
//! `startup`, `handlers`, `options`, the 8.3 `syncer`), `global` and
//! `common`, with DRBD 8.3 and 8.4 spellings; the value parsers and statement
//! shapes that `resource.rs` shares.
//!
//! Three kinds of option word exist here: those Tandem implements (parsed
//! into the model), those DRBD has but Tandem does not implement (accepted
//! with a warning naming them, so a DRBD config keeps working and nobody is
//! misled), and words DRBD does not know either (an error, with a suggestion
//! when the word is a near miss). Nothing is dropped silently.
//!
//! Duplicates follow drbdadm: a second section of the same kind in one
//! resource (two `net { }`) is an error; an option set twice is a warning and
//! the later value counts (drbdadm passes both on and the later wins).

use super::model::*;
use super::syntax::{shown, Arg, Stmt};
use super::ConfigError;
use std::collections::{BTreeMap, HashMap};

/// DRBD's `al-extents` range as Tandem accepts it (DRBD 8.3's lower bound;
/// 8.4 raised it to 67, but 8.3 configs with small values must still load).
const AL_EXTENTS: (u64, u64) = (7, 65534);

pub(super) fn err(location: &Location, message: impl Into<String>) -> ConfigError {
    ConfigError::At {
        location: location.clone(),
        message: message.into(),
    }
}

/// `first`'s place as seen from `here`: `line:column` within the same file,
/// the full location otherwise.
pub(super) fn place(first: &Location, here: &Location) -> String {
    if first.file == here.file {
        format!("{}:{}", first.line, first.column)
    } else {
        first.to_string()
    }
}

/// Where warnings go while a configuration is being read.
pub struct Ctx<'a> {
    pub warnings: &'a mut Vec<Warning>,
}

impl Ctx<'_> {
    pub fn warn(&mut self, location: &Location, message: impl Into<String>) {
        self.warnings.push(Warning {
            location: location.clone(),
            message: message.into(),
        });
    }

    /// A DRBD option Tandem accepts but does not act on.
    pub(super) fn no_effect(&mut self, s: &Stmt) {
        self.warn(
            &s.location,
            format!("option '{}' is accepted but has no effect in Tandem", s.keyword),
        );
    }
}

/// The option values of one scope: the `common` section, or a resource
/// (which starts from a copy of `common`'s).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub protocol: Protocol,
    pub net: NetOptions,
    pub disk: DiskOptions,
    pub startup: StartupOptions,
    pub handlers: BTreeMap<String, String>,
}

/// What one scope has set so far, to catch duplicates.
pub(super) struct Scope {
    /// "resource r0" or "the common section", for messages.
    name: String,
    options: HashMap<String, Location>,
    sections: HashMap<String, Location>,
}

impl Scope {
    pub(super) fn new(name: String) -> Self {
        Scope {
            name,
            options: HashMap::new(),
            sections: HashMap::new(),
        }
    }

    /// Record that option `key` was set at `at`; warn if it already was.
    fn option(&mut self, ctx: &mut Ctx<'_>, key: &str, at: &Location) {
        match self.options.get(key) {
            Some(first) => ctx.warn(
                at,
                format!(
                    "{key} is set again in {} (first at {}); the later value counts",
                    self.name,
                    place(first, at)
                ),
            ),
            None => {
                self.options.insert(key.to_owned(), at.clone());
            }
        }
    }

    /// Record a section; a second one of the same kind is an error.
    fn section(&mut self, s: &Stmt) -> Result<(), ConfigError> {
        if let Some(first) = self.sections.get(&s.keyword) {
            return Err(err(
                &s.location,
                format!(
                    "a second '{}' section in {} (the first is at {}); write its options in one section",
                    s.keyword,
                    self.name,
                    place(first, &s.location)
                ),
            ));
        }
        self.sections.insert(s.keyword.clone(), s.location.clone());
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Statement shapes

/// What stood after the last argument: the `{` of a block or the `;`.
pub(super) fn terminator(s: &Stmt) -> &'static str {
    if s.block.is_some() {
        "'{'"
    } else {
        "';'"
    }
}

/// The single value of `keyword value;`.
pub(super) fn value(s: &Stmt) -> Result<&Arg, ConfigError> {
    match s.args.as_slice() {
        [] => Err(err(
            &s.end,
            format!("expected a value after '{}', found {}", s.keyword, terminator(s)),
        )),
        [a] if s.block.is_none() => Ok(a),
        [_] => Err(err(
            &s.end,
            format!("expected ';' after value of '{}', found '{{'", s.keyword),
        )),
        [_, extra, ..] => Err(err(
            &extra.location,
            format!(
                "expected ';' after value of '{}', found '{}'",
                s.keyword,
                shown(&extra.text)
            ),
        )),
    }
}

/// A statement that takes no value at all (`no-disk-flushes;`).
fn bare(s: &Stmt) -> Result<(), ConfigError> {
    match (s.args.first(), &s.block) {
        (Some(a), _) => Err(err(
            &a.location,
            format!("expected ';' after '{}', found '{}'", s.keyword, shown(&a.text)),
        )),
        (None, Some(_)) => Err(err(&s.end, format!("expected ';' after '{}', found '{{'", s.keyword))),
        (None, None) => Ok(()),
    }
}

/// The body of `keyword NAME… { … }`, which must have exactly `names` names;
/// `what` says what a name is ("a host name").
pub(super) fn body<'s>(s: &'s Stmt, names: usize, what: &str) -> Result<&'s [Stmt], ConfigError> {
    let head = std::iter::once(s.keyword.as_str())
        .chain(s.args.iter().take(names).map(|a| a.text.as_str()))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(extra) = s.args.get(names) {
        return Err(err(
            &extra.location,
            format!("expected '{{' after '{}', found '{}'", shown(&head), shown(&extra.text)),
        ));
    }
    if s.args.len() < names {
        return Err(err(
            &s.end,
            format!("expected {what} after '{}', found {}", s.keyword, terminator(s)),
        ));
    }
    s.block
        .as_deref()
        .ok_or_else(|| err(&s.end, format!("expected '{{' after '{}', found ';'", shown(&head))))
}

// ---------------------------------------------------------------------------
// Values

pub(super) fn number(a: &Arg, what: &str) -> Result<u64, ConfigError> {
    // Digits only: `u64::from_str` would also take a leading '+'.
    if a.text.is_empty() || !a.text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(
            &a.location,
            format!("{what} must be a whole number, found '{}'", shown(&a.text)),
        ));
    }
    a.text
        .parse()
        .map_err(|_| err(&a.location, format!("{what} '{}' is too large", shown(&a.text))))
}

/// A whole number within DRBD's range for it (`drbd_limits.h`); `unit` names
/// the unit for the message.
fn ranged(a: &Arg, what: &str, (lo, hi): (u64, u64), unit: &str) -> Result<u32, ConfigError> {
    let n = number(a, what)?;
    check_range(a, what, n, (lo, hi), unit)?;
    u32::try_from(n).map_err(|_| err(&a.location, format!("{what} {n} is too large")))
}

fn check_range(a: &Arg, what: &str, n: u64, (lo, hi): (u64, u64), unit: &str) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&n) {
        return Ok(());
    }
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    Err(err(
        &a.location,
        format!("{what} must be between {lo} and {hi}{unit}, found '{}'", shown(&a.text)),
    ))
}

/// `N` with an optional suffix, in bytes: `K`, `M`, `G`, `T` (any case, also
/// `KiB`…; powers of two, as in DRBD) or `s` (512-byte sectors). `bare` is
/// what a number without a suffix counts (DRBD's per-option default unit).
pub fn size_with_suffix(a: &Arg, bare: u64, what: &str) -> Result<u64, ConfigError> {
    let t = a.text.as_str();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let bad = || {
        err(
            &a.location,
            format!(
                "{what} must be a number with an optional K, M or G suffix (or s for 512-byte sectors), found '{}'",
                shown(t)
            ),
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" => bare,
        "s" => 512,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| err(&a.location, format!("{what} '{}' is too large", shown(t))))
}

/// A rate in KiB/s: a bare number is KiB/s (DRBD), a suffix converts.
fn rate_kib(a: &Arg, what: &str, range: (u64, u64)) -> Result<u64, ConfigError> {
    let kib = size_with_suffix(a, 1024, what)? / 1024;
    check_range(a, what, kib, range, "KiB/s")?;
    Ok(kib)
}

/// `keyword;` (yes), `keyword yes;` or `keyword no;`.
fn flag(s: &Stmt) -> Result<bool, ConfigError> {
    if s.args.is_empty() {
        bare(s)?;
        return Ok(true);
    }
    let a = value(s)?;
    match a.text.as_str() {
        "yes" | "on" | "true" => Ok(true),
        "no" | "off" | "false" => Ok(false),
        other => Err(err(
            &a.location,
            format!("'{}' must be yes or no, found '{}'", s.keyword, shown(other)),
        )),
    }
}

fn protocol(a: &Arg) -> Result<Protocol, ConfigError> {
    match a.text.as_str() {
        "A" | "a" => Ok(Protocol::A),
        "B" | "b" => Ok(Protocol::B),
        "C" | "c" => Ok(Protocol::C),
        other => Err(err(
            &a.location,
            format!("protocol must be A, B or C, found '{}'", shown(other)),
        )),
    }
}

/// One of a fixed set of words.
fn choice<T: Clone>(a: &Arg, what: &str, table: &[(&str, T)]) -> Result<T, ConfigError> {
    table
        .iter()
        .find(|(w, _)| *w == a.text)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| {
            let valid: Vec<&str> = table.iter().map(|(w, _)| *w).collect();
            err(
                &a.location,
                format!("{what} must be one of {}; found '{}'", valid.join(", "), shown(&a.text)),
            )
        })
}

fn fencing(a: &Arg) -> Result<Fencing, ConfigError> {
    choice(
        a,
        "fencing",
        &[
            ("dont-care", Fencing::DontCare),
            ("resource-only", Fencing::ResourceOnly),
            ("resource-and-stonith", Fencing::ResourceAndStonith),
        ],
    )
}

/// Digest algorithms Tandem knows by name.
const KNOWN_ALGORITHMS: &[&str] = &["crc32c", "crc32", "md5", "sha1", "sha256"];

/// An algorithm name: any word is kept as written, but one Tandem does not
/// know is worth a warning, because Tandem's own digest is used instead.
fn algorithm(ctx: &mut Ctx<'_>, o: &Stmt, instead: &str) -> Result<String, ConfigError> {
    let a = value(o)?;
    if !KNOWN_ALGORITHMS.contains(&a.text.as_str()) {
        ctx.warn(
            &a.location,
            format!(
                "{} '{}' is not an algorithm Tandem knows; {instead} will be used",
                o.keyword,
                shown(&a.text)
            ),
        );
    }
    Ok(a.text.clone())
}

// ---------------------------------------------------------------------------
// Option sections

/// Options of each section that Tandem implements: the match arms below.
/// Kept as lists for "did you mean" and for the test that every listed word
/// is really handled.
pub(super) const NET_OPTIONS: &[&str] = &[
    "protocol",
    "shared-secret",
    "cram-hmac-alg",
    "ping-int",
    "ping-timeout",
    "connect-int",
    "timeout",
    "ko-count",
    "max-buffers",
    "max-epoch-size",
    "sndbuf-size",
    "rcvbuf-size",
    "after-sb-0pri",
    "after-sb-1pri",
    "after-sb-2pri",
    "allow-two-primaries",
    "allow-insecure",
    "nbd-allow",
    "csums-alg",
    "verify-alg",
    "data-integrity-alg",
    "fencing",
];
/// DRBD net options Tandem accepts without acting on them.
pub(super) const NET_NO_EFFECT: &[&str] = &[
    "rr-conflict",
    "tcp-cork",
    "use-rle",
    "on-congestion",
    "congestion-fill",
    "congestion-extents",
    "always-asbp",
    "csums-after-crash-only",
    "socket-check-timeout",
    "unplug-watermark",
    "discard-my-data",
    "transport",
    "verify-alg-options",
    "no-tcp-cork",
];
pub(super) const DISK_OPTIONS: &[&str] = &[
    "on-io-error",
    "disk-timeout",
    "resync-rate",
    "rate",
    "c-plan-ahead",
    "c-fill-target",
    "c-max-rate",
    "c-min-rate",
    "al-extents",
    "al-updates",
    "disk-flushes",
    "no-disk-flushes",
    "md-flushes",
    "no-md-flushes",
    "size",
    "fencing",
];
pub(super) const DISK_NO_EFFECT: &[&str] = &[
    "disk-barrier",
    "disk-drain",
    "no-disk-barrier",
    "no-disk-drain",
    "resync-after",
    "after",
    "c-delay-target",
    "discard-zeroes-if-aligned",
    "rs-discard-granularity",
    "read-balancing",
    "max-bio-bvecs",
    "disable-write-same",
    "use-bmbv",
    "no-disk-flushes-on-resync",
];
pub(super) const STARTUP_OPTIONS: &[&str] = &[
    "wfc-timeout",
    "degr-wfc-timeout",
    "outdated-wfc-timeout",
    "become-primary-on",
];
pub(super) const STARTUP_NO_EFFECT: &[&str] = &["wait-after-sb", "stacked-timeouts"];
/// The 8.3 `syncer` section's options, which 8.4 moved to `disk` and `net`.
pub(super) const SYNCER_OPTIONS: &[&str] = &[
    "rate",
    "resync-rate",
    "al-extents",
    "verify-alg",
    "csums-alg",
    "c-plan-ahead",
    "c-fill-target",
    "c-max-rate",
    "c-min-rate",
];
pub(super) const SYNCER_NO_EFFECT: &[&str] = &[
    "after",
    "cpu-mask",
    "use-rle",
    "delay-probe-volume",
    "delay-probe-interval",
    "c-delay-target",
    "on-no-data-accessible",
];
pub(super) const OPTIONS_NO_EFFECT: &[&str] = &[
    "cpu-mask",
    "on-no-data-accessible",
    "auto-promote",
    "auto-promote-timeout",
    "quorum",
    "on-no-quorum",
    "quorum-minimum-redundancy",
    "on-suspended-primary-outdated",
    "twopc-timeout",
    "twopc-retry-timeout",
    "peer-ack-window",
    "peer-ack-delay",
    "max-io-depth",
];
pub(super) const GLOBAL_NO_EFFECT: &[&str] = &[
    "usage-count",
    "minor-count",
    "dialog-refresh",
    "disable-ip-verification",
    "udev-always-use-vnr",
    "cmd-timeout-short",
    "cmd-timeout-medium",
    "cmd-timeout-long",
];

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// The known word closest to `word`, if it is a plausible typo of it.
pub(super) fn closest<'w>(word: &str, lists: &[&[&'w str]]) -> Option<&'w str> {
    if word.len() > 64 {
        return None;
    }
    lists
        .iter()
        .flat_map(|l| l.iter().copied())
        .map(|k| (distance(word, k), k))
        .filter(|&(d, k)| d <= 2 && d * 3 <= k.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// "unknown option 'X' in net section", with a suggestion for a near miss.
fn unknown(o: &Stmt, section: &str, lists: &[&[&str]]) -> ConfigError {
    let mut message = format!("unknown option '{}' in {section} section", shown(&o.keyword));
    if let Some(k) = closest(&o.keyword, lists) {
        message.push_str(&format!("; did you mean '{k}'?"));
    }
    err(&o.location, message)
}

/// The model field an option word sets, so that two spellings of one option
/// (`rate` and `resync-rate`, `no-md-flushes` and `md-flushes`) count as the
/// same option for the duplicate warning.
fn canonical(keyword: &str) -> &str {
    match keyword {
        "rate" => "resync-rate",
        "after" => "resync-after",
        "no-disk-flushes" => "disk-flushes",
        "no-md-flushes" => "md-flushes",
        "no-disk-barrier" => "disk-barrier",
        "no-disk-drain" => "disk-drain",
        "no-tcp-cork" => "tcp-cork",
        k => k,
    }
}

/// How an option is named in the duplicate warning, which is also the key
/// it is tracked under.
fn option_key(keyword: &str) -> String {
    match canonical(keyword) {
        // One option whether written in the resource or in `net`.
        "protocol" => "protocol".into(),
        k => format!("option '{k}'"),
    }
}

/// A `net` option; false if `o` is not one.
/// The handlers the core runs (`core::Handler::name`; a core test keeps the
/// two in step): the config is pure and knows nothing of the core.
pub const HANDLERS_RUN: &[&str] = &[
    "initial-split-brain",
    "split-brain",
    "pri-lost-after-sb",
    "fence-peer",
    "local-io-error",
];

/// Options parsed and range-checked (so a typo is still an error) that
/// Tandem does not act on, with what it does instead: never silently.
const PARSED_NO_EFFECT: &[(&str, &str)] = &[
    ("max-buffers", "Tandem sizes its buffers itself"),
    ("max-epoch-size", "Tandem sizes its epochs itself"),
    ("sndbuf-size", "the kernel auto-tunes the socket buffers"),
    ("rcvbuf-size", "the kernel auto-tunes the socket buffers"),
    (
        "allow-two-primaries",
        "Tandem is single-Primary: promotion is refused while the peer is Primary",
    ),
    (
        "data-integrity-alg",
        "every peer frame carries a crc32c whatever this names",
    ),
    (
        "c-fill-target",
        "the resync's requests in flight follow the application's latency instead (within twice its latency without the resync), capped at c-max-rate and held down by c-min-rate",
    ),
    ("al-updates", "the activity log is always written"),
    ("disk-flushes", "flushes always reach the disk"),
    ("no-disk-flushes", "flushes always reach the disk"),
    ("wfc-timeout", "'tandemadm wait-connect' waits as long as it is told"),
    (
        "degr-wfc-timeout",
        "'tandemadm wait-connect' waits as long as it is told",
    ),
    (
        "outdated-wfc-timeout",
        "'tandemadm wait-connect' waits as long as it is told",
    ),
    (
        "become-primary-on",
        "promote with 'tandemadm primary' or a cluster manager",
    ),
];

fn warn_if_no_effect(ctx: &mut Ctx<'_>, o: &Stmt) {
    let arg = o.args.first().map(|a| a.text.to_ascii_lowercase());
    // What Tandem does anyway is not worth a warning.
    let as_tandem_does = match o.keyword.as_str() {
        "data-integrity-alg" => arg.as_deref() == Some("crc32c"),
        "disk-flushes" | "al-updates" => arg.as_deref().is_none_or(|a| matches!(a, "yes" | "on" | "true")),
        _ => false,
    };
    if as_tandem_does {
        return;
    }
    if let Some((k, instead)) = PARSED_NO_EFFECT.iter().find(|(k, _)| *k == o.keyword) {
        ctx.warn(
            &o.location,
            format!("option '{k}' is accepted but has no effect in Tandem: {instead}"),
        );
    }
}

fn net_option(ctx: &mut Ctx<'_>, d: &mut Options, o: &Stmt) -> Result<bool, ConfigError> {
    warn_if_no_effect(ctx, o);
    let k = o.keyword.as_str();
    if k == "protocol" {
        d.protocol = protocol(value(o)?)?;
        return Ok(true);
    }
    let n = &mut d.net;
    match k {
        "shared-secret" => n.shared_secret = Some(value(o)?.text.clone()),
        "cram-hmac-alg" => n.cram_hmac_alg = Some(algorithm(ctx, o, "HMAC-SHA256")?),
        "ping-int" => n.ping_int_s = ranged(value(o)?, k, (1, 120), "seconds")?,
        "ping-timeout" => n.ping_timeout_ds = ranged(value(o)?, k, (1, 300), "tenths of a second")?,
        "connect-int" => n.connect_int_s = ranged(value(o)?, k, (1, 120), "seconds")?,
        "timeout" => n.timeout_ds = ranged(value(o)?, k, (1, 600), "tenths of a second")?,
        "ko-count" => n.ko_count = ranged(value(o)?, k, (0, 200), "")?,
        "max-buffers" => n.max_buffers = ranged(value(o)?, k, (32, 131_072), "")?,
        "max-epoch-size" => n.max_epoch_size = ranged(value(o)?, k, (1, 20_000), "")?,
        "sndbuf-size" | "rcvbuf-size" => {
            let a = value(o)?;
            let bytes = size_with_suffix(a, 1, k)?;
            check_range(a, k, bytes, (0, 10 << 20), "bytes")?;
            if k == "sndbuf-size" {
                n.sndbuf_size_bytes = bytes;
            } else {
                n.rcvbuf_size_bytes = bytes;
            }
        }
        "after-sb-0pri" => {
            let a = value(o)?;
            n.after_sb_0pri = match a.text.strip_prefix("discard-node-") {
                Some(node) if !node.is_empty() => AfterSb0Pri::DiscardNode(node.to_owned()),
                _ => choice(
                    a,
                    k,
                    &[
                        ("disconnect", AfterSb0Pri::Disconnect),
                        ("discard-younger-primary", AfterSb0Pri::DiscardYoungerPrimary),
                        ("discard-older-primary", AfterSb0Pri::DiscardOlderPrimary),
                        ("discard-zero-changes", AfterSb0Pri::DiscardZeroChanges),
                        ("discard-least-changes", AfterSb0Pri::DiscardLeastChanges),
                        // Only for the list of valid values in the message:
                        // a real discard-node-… was taken above.
                        ("discard-node-NAME", AfterSb0Pri::Disconnect),
                    ],
                )?,
            };
        }
        "after-sb-1pri" => {
            n.after_sb_1pri = choice(
                value(o)?,
                k,
                &[
                    ("disconnect", AfterSb1Pri::Disconnect),
                    ("consensus", AfterSb1Pri::Consensus),
                    ("discard-secondary", AfterSb1Pri::DiscardSecondary),
                    ("call-pri-lost-after-sb", AfterSb1Pri::CallPriLostAfterSb),
                    ("violently-as0p", AfterSb1Pri::ViolentlyAs0p),
                ],
            )?
        }
        "after-sb-2pri" => {
            n.after_sb_2pri = choice(
                value(o)?,
                k,
                &[
                    ("disconnect", AfterSb2Pri::Disconnect),
                    ("call-pri-lost-after-sb", AfterSb2Pri::CallPriLostAfterSb),
                    ("violently-as0p", AfterSb2Pri::ViolentlyAs0p),
                ],
            )?
        }
        "allow-two-primaries" => n.allow_two_primaries = flag(o)?,
        "allow-insecure" => n.allow_insecure = flag(o)?,
        "tls" => n.tls = flag(o)?,
        "tls-certificate" => n.tls_certificate = Some(value(o)?.text.clone().into()),
        "tls-privkey" => n.tls_privkey = Some(value(o)?.text.clone().into()),
        "tls-ca" => n.tls_ca = Some(value(o)?.text.clone().into()),
        "nbd-tls-certificate" => n.nbd_tls_certificate = Some(value(o)?.text.clone().into()),
        "nbd-tls-privkey" => n.nbd_tls_privkey = Some(value(o)?.text.clone().into()),
        "nbd-tls-ca" => n.nbd_tls_ca = Some(value(o)?.text.clone().into()),
        "tls-keyring" => {
            return Err(err(
                &o.location,
                "tls-keyring: Tandem does its own TLS and reads PEM files: give 'tls-certificate', 'tls-privkey' and 'tls-ca' instead"
                    .to_owned(),
            ))
        }
        "nbd-allow" => {
            if o.args.is_empty() || o.block.is_some() {
                return Err(err(
                    &o.end,
                    "expected addresses or CIDR prefixes after 'nbd-allow' (e.g. 'nbd-allow 127.0.0.1 10.0.0.0/24;')"
                        .to_owned(),
                ));
            }
            for a in &o.args {
                let net = AllowNet::parse(&a.text).ok_or_else(|| {
                    err(
                        &a.location,
                        format!(
                            "nbd-allow: '{}' is not an address or CIDR prefix (e.g. 10.0.0.0/24)",
                            shown(&a.text)
                        ),
                    )
                })?;
                n.nbd_allow.push(net);
            }
        }
        "csums-alg" => n.csums_alg = Some(algorithm(ctx, o, "crc32c")?),
        "verify-alg" => n.verify_alg = Some(algorithm(ctx, o, "crc32c")?),
        "data-integrity-alg" => n.data_integrity_alg = Some(algorithm(ctx, o, "crc32c")?),
        "fencing" => n.fencing = fencing(value(o)?)?,
        _ if NET_NO_EFFECT.contains(&k) => ctx.no_effect(o),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A `disk` option (8.4) or one of the 8.3 `syncer` options that moved
/// there; false if `o` is not one.
fn disk_option(ctx: &mut Ctx<'_>, d: &mut Options, o: &Stmt) -> Result<bool, ConfigError> {
    warn_if_no_effect(ctx, o);
    const RATE: (u64, u64) = (1, 4 << 20);
    let k = o.keyword.as_str();
    let dk = &mut d.disk;
    match k {
        "on-io-error" => {
            dk.on_io_error = choice(
                value(o)?,
                k,
                &[
                    ("pass_on", OnIoError::PassOn),
                    ("call-local-io-error", OnIoError::CallLocalIoError),
                    ("detach", OnIoError::Detach),
                ],
            )?
        }
        "disk-timeout" => dk.disk_timeout_ds = ranged(value(o)?, k, (0, 6000), "tenths of a second")?,
        "resync-rate" | "rate" => dk.resync_rate_kib_s = rate_kib(value(o)?, k, RATE)?,
        "c-plan-ahead" => dk.c_plan_ahead_ds = ranged(value(o)?, k, (0, 300), "tenths of a second")?,
        "c-fill-target" => {
            let a = value(o)?;
            let sectors = size_with_suffix(a, 512, k)? / 512;
            check_range(a, k, sectors, (0, 1 << 20), "sectors")?;
            dk.c_fill_target_sectors = sectors;
        }
        "c-max-rate" => dk.c_max_rate_kib_s = rate_kib(value(o)?, k, (250, 4 << 20))?,
        "c-min-rate" => dk.c_min_rate_kib_s = Some(rate_kib(value(o)?, k, (0, 4 << 20))?),
        "al-extents" => {
            dk.al_extents = ranged(value(o)?, k, AL_EXTENTS, "")?;
            let max = crate::meta::al::EXTENTS_MAX as u32;
            if dk.al_extents > max {
                ctx.warn(
                    &o.location,
                    format!(
                        "al-extents {}: Tandem's activity log holds at most {max} extents ({:.1} GiB of hot data); using {max}",
                        dk.al_extents,
                        f64::from(max) * 4.0 / 1024.0
                    ),
                );
                dk.al_extents = max;
            }
        }
        "al-updates" => dk.al_updates = flag(o)?,
        "disk-flushes" => dk.disk_flushes = flag(o)?,
        "md-flushes" => dk.md_flushes = flag(o)?,
        "no-disk-flushes" => {
            bare(o)?;
            dk.disk_flushes = false;
        }
        "no-md-flushes" => {
            bare(o)?;
            dk.md_flushes = false;
        }
        "size" => {
            // A bare number counts 512-byte sectors, as in DRBD; 0 means
            // "the whole backing disk", which is also the default.
            let a = value(o)?;
            let bytes = size_with_suffix(a, 512, k)?;
            check_range(a, k, bytes / 512, (0, 2 << 40), "sectors")?;
            dk.size_bytes = (bytes > 0).then_some(bytes);
        }
        "fencing" => d.net.fencing = fencing(value(o)?)?,
        _ if DISK_NO_EFFECT.contains(&k) => ctx.no_effect(o),
        _ => return Ok(false),
    }
    Ok(true)
}

fn startup_option(ctx: &mut Ctx<'_>, d: &mut Options, o: &Stmt) -> Result<bool, ConfigError> {
    warn_if_no_effect(ctx, o);
    const WFC: (u64, u64) = (0, 300_000);
    let k = o.keyword.as_str();
    let st = &mut d.startup;
    match k {
        "wfc-timeout" => st.wfc_timeout_s = ranged(value(o)?, k, WFC, "seconds")?,
        "degr-wfc-timeout" => st.degr_wfc_timeout_s = ranged(value(o)?, k, WFC, "seconds")?,
        "outdated-wfc-timeout" => st.outdated_wfc_timeout_s = ranged(value(o)?, k, WFC, "seconds")?,
        "become-primary-on" => {
            if let [_, second, ..] = o.args.as_slice() {
                return Err(err(
                    &second.location,
                    "become-primary-on takes one host name, or 'both'",
                ));
            }
            st.become_primary_on = Some(value(o)?.text.clone());
        }
        _ if STARTUP_NO_EFFECT.contains(&k) => ctx.no_effect(o),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A `syncer` option (DRBD 8.3), given the meaning DRBD 8.4 gives it.
fn syncer_option(ctx: &mut Ctx<'_>, d: &mut Options, o: &Stmt) -> Result<bool, ConfigError> {
    let k = o.keyword.as_str();
    if SYNCER_NO_EFFECT.contains(&k) {
        ctx.no_effect(o);
        Ok(true)
    } else if matches!(k, "verify-alg" | "csums-alg") {
        net_option(ctx, d, o)
    } else if SYNCER_OPTIONS.contains(&k) {
        disk_option(ctx, d, o)
    } else {
        Ok(false)
    }
}

/// One statement of a `common` or `resource` body if it is `protocol` or an
/// option section; false if it is neither.
pub(super) fn option_section(
    ctx: &mut Ctx<'_>,
    scope: &mut Scope,
    d: &mut Options,
    s: &Stmt,
) -> Result<bool, ConfigError> {
    type OptionFn = fn(&mut Ctx<'_>, &mut Options, &Stmt) -> Result<bool, ConfigError>;
    let (parse, lists): (OptionFn, &[&[&str]]) = match s.keyword.as_str() {
        "protocol" if s.block.is_none() => {
            d.protocol = protocol(value(s)?)?;
            scope.option(ctx, &option_key("protocol"), &s.location);
            return Ok(true);
        }
        "net" => (net_option, &[NET_OPTIONS, NET_NO_EFFECT]),
        "disk" if s.block.is_some() => (disk_option, &[DISK_OPTIONS, DISK_NO_EFFECT]),
        "startup" => (startup_option, &[STARTUP_OPTIONS, STARTUP_NO_EFFECT]),
        "syncer" => (syncer_option, &[SYNCER_OPTIONS, SYNCER_NO_EFFECT]),
        "options" => (options_option, &[OPTIONS_NO_EFFECT]),
        "handlers" => {
            scope.section(s)?;
            for o in body(s, 0, "")? {
                let command = value(o)?;
                // DRBD's old name for fence-peer.
                let name = if o.keyword == "outdate-peer" {
                    "fence-peer"
                } else {
                    &o.keyword
                };
                scope.option(ctx, &format!("handler '{name}'"), &o.location);
                if !HANDLERS_RUN.contains(&name) {
                    ctx.warn(
                        &o.location,
                        format!(
                            "handler '{name}' is accepted but Tandem never runs it (it runs {})",
                            HANDLERS_RUN.join(", ")
                        ),
                    );
                }
                d.handlers.insert(name.to_owned(), command.text.clone());
            }
            return Ok(true);
        }
        _ => return Ok(false),
    };
    let options = body(s, 0, "")?;
    scope.section(s)?;
    for o in options {
        if !parse(ctx, d, o)? {
            return Err(unknown(o, &s.keyword, lists));
        }
        scope.option(ctx, &option_key(&o.keyword), &o.location);
    }
    Ok(true)
}

/// An `options` (resource options) word: none has an effect in Tandem.
fn options_option(ctx: &mut Ctx<'_>, _: &mut Options, o: &Stmt) -> Result<bool, ConfigError> {
    let known = OPTIONS_NO_EFFECT.contains(&o.keyword.as_str());
    if known {
        ctx.no_effect(o);
    }
    Ok(known)
}

/// `global { … }`: Tandem's own `metrics ADDR:PORT;`; every option DRBD
/// has there is about drbdadm itself, so those are accepted without effect.
/// Returns the metrics address.
pub fn global(ctx: &mut Ctx<'_>, s: &Stmt) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let mut metrics = None;
    for o in body(s, 0, "")? {
        if o.keyword == "metrics" {
            let a = value(o)?;
            metrics = Some(a.text.parse().map_err(|_| {
                err(
                    &a.location,
                    format!(
                        "metrics: '{}' is not an address and port (e.g. 'metrics 127.0.0.1:9942;')",
                        shown(&a.text)
                    ),
                )
            })?);
            continue;
        }
        if !GLOBAL_NO_EFFECT.contains(&o.keyword.as_str()) {
            return Err(unknown(o, "global", &[GLOBAL_NO_EFFECT, &["metrics"]]));
        }
        ctx.no_effect(o);
    }
    Ok(metrics)
}

/// `common { … }`: option sections only; their values are every resource's
/// defaults.
pub fn common(ctx: &mut Ctx<'_>, s: &Stmt) -> Result<Options, ConfigError> {
    let mut d = Options::default();
    let mut scope = Scope::new("the common section".into());
    for o in body(s, 0, "")? {
        if !option_section(ctx, &mut scope, &mut d, o)? {
            return Err(err(
                &o.location,
                format!(
                    "'{}' cannot appear in the common section, which holds protocol, net, disk, syncer, startup, options and handlers",
                    shown(&o.keyword)
                ),
            ));
        }
    }
    Ok(d)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn arg(text: &str) -> Arg {
        Arg {
            text: text.into(),
            quoted: false,
            location: Location {
                file: "t.res".into(),
                line: 1,
                column: 1,
            },
        }
    }

    #[test]
    fn size_suffixes() {
        let bytes = |t: &str, bare: u64| size_with_suffix(&arg(t), bare, "size");
        assert_eq!(bytes("10", 1).unwrap(), 10);
        assert_eq!(bytes("10", 512).unwrap(), 5120);
        assert_eq!(bytes("8s", 1).unwrap(), 4096);
        assert_eq!(bytes("3k", 1).unwrap(), 3 << 10);
        assert_eq!(bytes("3K", 1).unwrap(), 3 << 10);
        assert_eq!(bytes("5M", 1).unwrap(), 5 << 20);
        assert_eq!(bytes("5MiB", 1).unwrap(), 5 << 20);
        assert_eq!(bytes("7g", 1).unwrap(), 7 << 30);
        assert_eq!(bytes("2T", 1).unwrap(), 2 << 40);
        for bad in ["", "G", "1.5G", "-1", "10X", "10 M", "1GB"] {
            assert!(bytes(bad, 1).is_err(), "{bad}");
        }
        let e = bytes("99999999999999999999G", 1).unwrap_err().to_string();
        assert!(e.contains("whole") || e.contains("number"), "{e}");
        let e = bytes("99999999999T", 1).unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn rates_are_kib_per_second() {
        let r = |t: &str| rate_kib(&arg(t), "resync-rate", (1, 4 << 20));
        assert_eq!(r("250").unwrap(), 250);
        assert_eq!(r("100M").unwrap(), 102_400);
        assert_eq!(r("4G").unwrap(), 4 << 20);
        assert!(r("0").unwrap_err().to_string().contains("between 1 and 4194304 KiB/s"));
        assert!(r("5G").is_err());
    }

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(closest("ping-intt", &[NET_OPTIONS]), Some("ping-int"));
        assert_eq!(closest("al-extent", &[DISK_OPTIONS]), Some("al-extents"));
        assert_eq!(closest("frobnicate", &[NET_OPTIONS, NET_NO_EFFECT]), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
