//! Request validation before anything runs, modelled on nbdkit's
//! `validate_request`: each refusal is the exact errno a client expects.
//!
//! Tandem's contract answers every out-of-range or oversize request with
//! EINVAL (including writes, where the spec would also allow ENOSPC), so that
//! one errno means "your request was wrong" and ENOSPC keeps meaning "the
//! backing store is full".

use super::consts::*;
use super::handshake::ExportInfo;
use super::request::{Command, Request};

pub fn validate(req: &Request, export: &ExportInfo, structured: bool) -> Result<(), u32> {
    let tf = export.transmission_flags;
    let advertised = |flag: u16| tf & flag != 0;
    let allowed_flags = match req.command {
        Command::Read if structured && advertised(NBD_FLAG_SEND_DF) => NBD_CMD_FLAG_DF,
        Command::Read => 0,
        Command::Write if advertised(NBD_FLAG_SEND_FUA) => NBD_CMD_FLAG_FUA,
        Command::Write => 0,
        Command::Trim if advertised(NBD_FLAG_SEND_TRIM) && advertised(NBD_FLAG_SEND_FUA) => NBD_CMD_FLAG_FUA,
        Command::Trim if advertised(NBD_FLAG_SEND_TRIM) => 0,
        Command::WriteZeroes if advertised(NBD_FLAG_SEND_WRITE_ZEROES) => {
            let mut f = NBD_CMD_FLAG_NO_HOLE;
            if advertised(NBD_FLAG_SEND_FUA) {
                f |= NBD_CMD_FLAG_FUA;
            }
            if advertised(NBD_FLAG_SEND_FAST_ZERO) {
                f |= NBD_CMD_FLAG_FAST_ZERO;
            }
            f
        }
        Command::Flush if advertised(NBD_FLAG_SEND_FLUSH) => 0,
        Command::Cache if advertised(NBD_FLAG_SEND_CACHE) => 0,
        Command::Disc => 0,
        // Not advertised (or not a command at all).
        _ => return Err(NBD_EINVAL),
    };
    // The spec: once SEND_FUA is negotiated the server MUST accept FUA on
    // every command (it is meaningless, and ignored, on reads and flushes).
    let allowed_flags = if advertised(NBD_FLAG_SEND_FUA) {
        allowed_flags | NBD_CMD_FLAG_FUA
    } else {
        allowed_flags
    };
    if req.flags & !allowed_flags != 0 {
        return Err(NBD_EINVAL);
    }
    match req.command {
        Command::Read | Command::Write | Command::Trim | Command::WriteZeroes | Command::Cache => {
            if req.length == 0 {
                return Err(NBD_EINVAL);
            }
            let end = req.offset.checked_add(u64::from(req.length)).ok_or(NBD_EINVAL)?;
            if end > export.size {
                return Err(NBD_EINVAL);
            }
            if matches!(req.command, Command::Read | Command::Write) && req.length > export.block_size_max {
                return Err(NBD_EINVAL);
            }
            if advertised(NBD_FLAG_READ_ONLY) && !matches!(req.command, Command::Read | Command::Cache) {
                return Err(NBD_EPERM);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(flags: u16) -> ExportInfo {
        ExportInfo {
            name: "r0".into(),
            description: String::new(),
            size: 1 << 20,
            transmission_flags: NBD_FLAG_HAS_FLAGS | flags,
            block_size_min: 512,
            block_size_preferred: 4096,
            block_size_max: 64 << 10,
        }
    }

    fn req(command: Command, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            command,
            cookie: 1,
            offset,
            length,
        }
    }

    const ALL: u16 = NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;

    #[test]
    fn the_table() {
        let e = export(ALL);
        let cases: &[(Request, Result<(), u32>)] = &[
            (req(Command::Read, 0, 0, 4096), Ok(())),
            (req(Command::Read, 0, (1 << 20) - 4096, 4096), Ok(())),
            (req(Command::Read, 0, (1 << 20) - 512, 4096), Err(NBD_EINVAL)),
            (req(Command::Read, 0, u64::MAX, 1), Err(NBD_EINVAL)),
            (req(Command::Read, 0, 0, 0), Err(NBD_EINVAL)),
            (req(Command::Read, 0, 0, 128 << 10), Err(NBD_EINVAL)),
            (req(Command::Read, NBD_CMD_FLAG_FUA, 0, 4096), Ok(())),
            (req(Command::Read, NBD_CMD_FLAG_DF, 0, 4096), Err(NBD_EINVAL)),
            (req(Command::Write, NBD_CMD_FLAG_FUA, 0, 4096), Ok(())),
            (req(Command::Write, NBD_CMD_FLAG_NO_HOLE, 0, 4096), Err(NBD_EINVAL)),
            (req(Command::Write, 0, 1 << 20, 4096), Err(NBD_EINVAL)),
            (req(Command::Trim, NBD_CMD_FLAG_FUA, 0, 1 << 20), Ok(())),
            (req(Command::Trim, 0, 4096, 1 << 20), Err(NBD_EINVAL)),
            (
                req(
                    Command::WriteZeroes,
                    NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA,
                    0,
                    1 << 20,
                ),
                Ok(()),
            ),
            (
                req(Command::WriteZeroes, NBD_CMD_FLAG_FAST_ZERO, 0, 4096),
                Err(NBD_EINVAL),
            ),
            (req(Command::Flush, 0, 0, 0), Ok(())),
            (req(Command::Disc, 0, 0, 0), Ok(())),
            (req(Command::Cache, 0, 0, 4096), Err(NBD_EINVAL)),
            (req(Command::BlockStatus, 0, 0, 4096), Err(NBD_EINVAL)),
            (req(Command::Unknown(77), 0, 0, 4096), Err(NBD_EINVAL)),
            (req(Command::Write, 1 << 9, 0, 4096), Err(NBD_EINVAL)),
        ];
        for (r, want) in cases {
            assert_eq!(validate(r, &e, false), *want, "{r:?}");
        }
    }

    #[test]
    fn commands_not_advertised_are_refused() {
        let e = export(0);
        assert_eq!(validate(&req(Command::Flush, 0, 0, 0), &e, false), Err(NBD_EINVAL));
        assert_eq!(validate(&req(Command::Trim, 0, 0, 4096), &e, false), Err(NBD_EINVAL));
        assert_eq!(
            validate(&req(Command::Write, NBD_CMD_FLAG_FUA, 0, 4096), &e, false),
            Err(NBD_EINVAL)
        );
        let ro = export(NBD_FLAG_READ_ONLY);
        assert_eq!(validate(&req(Command::Write, 0, 0, 4096), &ro, false), Err(NBD_EPERM));
    }
}
