//! The DRBD `.res` configuration grammar, parsed into [`Config`].
//!
//! Two passes: [`syntax`] turns text into a uniform statement tree (syntax
//! errors carry `file:line:column` and what was expected), [`parser`] gives
//! the tree its meaning (DRBD 8.3 and 8.4 spellings, `common` defaults,
//! `include` globs). Reading included files is the only I/O.

pub mod model;
pub mod parser;
pub mod syntax;

pub use model::*;

use parser::{Ctx, Defaults};
use std::path::{Path, PathBuf};

/// Includes nested deeper than this are refused (it is a cycle).
const INCLUDE_DEPTH_MAX: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Anything wrong with what was written, where it was written.
    #[error("{location}: {message}")]
    At { location: Location, message: String },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl ConfigError {
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::At { location, .. } => Some(location),
            ConfigError::Io { .. } => None,
        }
    }
}

impl From<syntax::SyntaxError> for ConfigError {
    fn from(e: syntax::SyntaxError) -> Self {
        ConfigError::At {
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

/// Parse `source` as if read from `file` (includes resolve relative to it).
pub fn parse_str(source: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut common = Defaults::default();
    let mut warnings = Vec::new();
    parse_file(source, file, 0, &mut config, &mut common, &mut warnings)?;
    config.warnings = warnings;
    Ok(config)
}

fn parse_file(
    source: &str,
    file: &Path,
    depth: u32,
    config: &mut Config,
    common: &mut Defaults,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let stmts = syntax::parse(source, file)?;
    for s in &stmts {
        let mut ctx = Ctx { warnings };
        match s.keyword.as_str() {
            "global" => parser::global(&mut ctx, s)?,
            "common" => {
                let Some(block) = &s.block else {
                    return Err(ConfigError::At {
                        location: s.location.clone(),
                        message: "expected '{' after 'common'".into(),
                    });
                };
                for o in block {
                    if !parser::section(&mut ctx, common, o)? {
                        return Err(ConfigError::At {
                            location: o.location.clone(),
                            message: format!("'{}' cannot appear in the common section", o.keyword),
                        });
                    }
                }
            }
            "include" => {
                let [pattern] = s.args.as_slice() else {
                    return Err(ConfigError::At {
                        location: s.location.clone(),
                        message: "'include' takes one quoted file pattern".into(),
                    });
                };
                if depth + 1 > INCLUDE_DEPTH_MAX {
                    return Err(ConfigError::At {
                        location: s.location.clone(),
                        message: format!("includes nested more than {INCLUDE_DEPTH_MAX} deep (an include cycle?)"),
                    });
                }
                for path in parser::include_paths(pattern, file)? {
                    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    parse_file(&text, &path, depth + 1, config, common, ctx.warnings)?;
                }
            }
            "resource" => {
                let r = parser::resource(&mut ctx, s, common)?;
                if let Some(prev) = config.resource(&r.name) {
                    return Err(ConfigError::At {
                        location: r.location.clone(),
                        message: format!("resource {} is already defined at {}", r.name, prev.location),
                    });
                }
                config.resources.push(r);
            }
            other => {
                return Err(ConfigError::At {
                    location: s.location.clone(),
                    message: format!("expected 'global', 'common', 'include' or 'resource', found '{other}'"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
