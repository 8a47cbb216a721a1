//! The DRBD `.res` configuration grammar, parsed into [`Config`].
//!
//! Two passes: [`syntax`] turns text into a uniform statement tree (syntax
//! errors carry `file:line:column` and what was expected), then [`parser`]
//! (option sections, `global`, `common`) and [`resource`] (resources, hosts,
//! devices, addresses) give the tree its meaning, in DRBD 8.3 and 8.4
//! spellings. Reading the file and what it includes is the only I/O;
//! nothing is resolved over the network.
//!
//! Like drbdadm, the whole configuration is read before any resource is
//! built, so `common` applies to every resource wherever it was written, and
//! the checks that span resources (two resources on one address) see them
//! all. The first error ends the parse; warnings (DRBD options Tandem does
//! not implement, mapped `/dev/drbdN` devices, …) are collected in
//! [`Config::warnings`].

pub mod model;
pub mod parser;
pub mod resource;
pub mod syntax;

pub use model::*;

pub use resource::NBD_PORT_DEFAULT;

use parser::{err, Ctx, Options};
use resource::HostSpots;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use syntax::{shown, Arg, Stmt};

/// Includes nested deeper than this are refused.
const INCLUDE_DEPTH_MAX: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text does not follow the grammar: `FILE:LINE:COL: expected …, found …`.
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },
    /// Well-formed, but wrong in meaning (an unknown option, a bad value, a
    /// resource without hosts, an include cycle, …), where it was written.
    #[error("{location}: {message}")]
    At { location: Location, message: String },
    /// The configuration file itself cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl ConfigError {
    /// Where the error was written, if it is about the text.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { location, .. } | ConfigError::At { location, .. } => Some(location),
            ConfigError::Io { .. } => None,
        }
    }
}

impl From<syntax::SyntaxError> for ConfigError {
    fn from(e: syntax::SyntaxError) -> Self {
        ConfigError::Syntax {
            location: e.location,
            message: e.message,
        }
    }
}

/// Read and parse the configuration at `path`, with its includes.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&source, path)
}

/// Parse `source` as if read from `file`: `file` names it in messages, and
/// relative `include` patterns resolve against its directory (the included
/// files are read from disk; `file` itself need not exist).
pub fn parse_str(source: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut gathered = Gathered::default();
    let mut stack = vec![identity(file)];
    gathered.file(source, file, &mut stack)?;
    gathered.build()
}

/// A file's identity for cycle detection: its canonical path if it exists.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// The top-level statements of the main file and its includes, gathered
/// before any is given meaning.
#[derive(Default)]
struct Gathered {
    warnings: Vec<Warning>,
    global: Option<Location>,
    metrics: Option<std::net::SocketAddr>,
    common: Option<Stmt>,
    resources: Vec<Stmt>,
}

impl Gathered {
    /// One file's statements; `stack` holds the files including it (and
    /// itself), to refuse cycles.
    fn file(&mut self, source: &str, file: &Path, stack: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
        for s in syntax::parse(source, file)? {
            match s.keyword.as_str() {
                "global" => {
                    if let Some(first) = &self.global {
                        return Err(err(
                            &s.location,
                            format!("a second 'global' section (the first is at {first}); there can be one"),
                        ));
                    }
                    let mut ctx = Ctx {
                        warnings: &mut self.warnings,
                    };
                    if !self.resources.is_empty() {
                        // drbdadm says the same, and goes on.
                        ctx.warn(
                            &s.location,
                            "the global section should come before any resource section",
                        );
                    }
                    self.metrics = parser::global(&mut ctx, &s)?;
                    self.global = Some(s.location);
                }
                "common" => {
                    if let Some(first) = &self.common {
                        return Err(err(
                            &s.location,
                            format!(
                                "a second 'common' section (the first is at {}); write its options in one section",
                                first.location
                            ),
                        ));
                    }
                    self.common = Some(s);
                }
                "include" => self.include(&s, file, stack)?,
                "resource" => self.resources.push(s),
                other => {
                    let hint = match other {
                        "on" | "net" | "disk" | "device" | "address" | "meta-disk" | "startup" | "handlers"
                        | "syncer" | "protocol" | "volume" => format!(" ('{other}' belongs inside a resource section)"),
                        _ => String::new(),
                    };
                    return Err(err(
                        &s.location,
                        format!(
                            "expected 'global', 'common', 'include' or 'resource', found '{}'{hint}",
                            shown(other)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `include "glob";`: the matching files, sorted, read in place.
    fn include(&mut self, s: &Stmt, file: &Path, stack: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
        let pattern = match (s.args.as_slice(), &s.block) {
            ([p], None) => p,
            ([], _) => {
                return Err(err(
                    &s.end,
                    "expected a quoted file pattern after 'include', such as \"drbd.d/*.res\"",
                ))
            }
            ([_, extra, ..], _) => {
                return Err(err(
                    &extra.location,
                    format!("expected ';' after value of 'include', found '{}'", shown(&extra.text)),
                ))
            }
            ([_], Some(_)) => return Err(err(&s.end, "expected ';' after value of 'include', found '{'")),
        };
        for path in include_paths(pattern, file)? {
            let id = identity(&path);
            if stack.contains(&id) {
                return Err(err(
                    &s.location,
                    format!("include cycle: {} is already being read", path.display()),
                ));
            }
            if stack.len() > INCLUDE_DEPTH_MAX {
                return Err(err(
                    &s.location,
                    format!("includes nested more than {INCLUDE_DEPTH_MAX} deep"),
                ));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                err(
                    &s.location,
                    format!("cannot read included file {}: {e}", path.display()),
                )
            })?;
            stack.push(id);
            let read = self.file(&text, &path, stack);
            stack.pop();
            read?;
        }
        Ok(())
    }

    /// Give the gathered statements their meaning.
    fn build(mut self) -> Result<Config, ConfigError> {
        let mut ctx = Ctx {
            warnings: &mut self.warnings,
        };
        let common = match &self.common {
            Some(s) => parser::common(&mut ctx, s)?,
            None => Options::default(),
        };
        let mut config = Config::default();
        let mut spots: Vec<Vec<HostSpots>> = Vec::new();
        for s in &self.resources {
            let (r, at) = resource::resource(&mut ctx, s, &common)?;
            if let Some(prev) = config.resource(&r.name) {
                return Err(err(
                    &r.location,
                    format!("resource {} is already defined at {}", r.name, prev.location),
                ));
            }
            check_conflicts(&config, &spots, &r, &at)?;
            config.resources.push(r);
            spots.push(at);
        }
        config.warnings = self.warnings;
        config.metrics = self.metrics;
        Ok(config)
    }
}

/// The files an `include` names, sorted: its glob relative to the including
/// file's directory. A pattern matching nothing is fine (as in drbdadm: an
/// empty `drbd.d/` is normal), but a plain file name must exist.
fn include_paths(a: &Arg, including: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let pattern = if Path::new(&a.text).is_absolute() {
        a.text.clone()
    } else {
        let dir = including
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The directory is taken literally, even if its name has '[' or '*'.
        format!("{}/{}", glob::Pattern::escape(&dir.to_string_lossy()), a.text)
    };
    let entries =
        glob::glob(&pattern).map_err(|e| err(&a.location, format!("bad include pattern '{}': {e}", shown(&a.text))))?;
    let mut out = Vec::new();
    for entry in entries {
        out.push(entry.map_err(|e| err(&a.location, format!("cannot read {}", e)))?);
    }
    out.sort();
    if out.is_empty() && !a.text.contains(['*', '?', '[']) {
        return Err(err(&a.location, format!("included file {pattern} does not exist")));
    }
    Ok(out)
}

/// Two listeners that cannot both bind: the same port, and the same IP or
/// one of them the wildcard.
fn clash(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// What drbdadm checks across the configuration, for Tandem's endpoints: the
/// two nodes of a resource need different addresses; a replication address
/// belongs to one resource (a loopback address only per node, since every
/// node has its own); and one node cannot serve two resources' NBD exports on
/// one endpoint (each resource has its own listener).
fn check_conflicts(
    config: &Config,
    spots: &[Vec<HostSpots>],
    r: &Resource,
    at: &[HostSpots],
) -> Result<(), ConfigError> {
    if let ([a, b], [_, b_at]) = (r.hosts.as_slice(), at) {
        if let (Some(x), Some(y), Some(y_at)) = (a.address, b.address, &b_at.address) {
            if x == y {
                return Err(err(
                    y_at,
                    format!(
                        "'on {}' and 'on {}' both use address {x}; each node needs its own",
                        a.name, b.name
                    ),
                ));
            }
        }
    }
    for (h, h_at) in r.hosts.iter().zip(at) {
        for (prev, prev_spots) in config.resources.iter().zip(spots) {
            for (p, p_at) in prev.hosts.iter().zip(prev_spots) {
                let same_node = p.name == h.name;
                if let (Some(x), Some(y), Some(x_at)) = (h.address, p.address, &h_at.address) {
                    if x == y && (same_node || !x.ip().is_loopback()) {
                        return Err(err(
                            x_at,
                            format!(
                                "address {x} is already used by resource {} ('on {}' at {})",
                                prev.name,
                                p.name,
                                p_at.address.as_ref().unwrap_or(&p.location)
                            ),
                        ));
                    }
                }
                if !same_node {
                    continue;
                }
                let shared = match (&h.device, &p.device) {
                    (NbdEndpoint::Tcp { addr: x, .. }, NbdEndpoint::Tcp { addr: y, .. }) => clash(x, y),
                    (NbdEndpoint::Unix { path: x, .. }, NbdEndpoint::Unix { path: y, .. }) => x == y,
                    _ => false,
                };
                if shared {
                    return Err(err(
                        &h_at.device,
                        format!(
                            "NBD endpoint {} of 'on {}' is already used by resource {} (at {}); give each resource its own port or socket",
                            h.device, h.name, prev.name, p_at.device
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
