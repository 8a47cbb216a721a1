//! `tandemd`: the Tandem daemon. One per node; owns every resource of it.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tandem::shell::daemon::{self, Options};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "tandemd", version, about = "Tandem replication daemon")]
struct Args {
    /// Configuration file (DRBD .res grammar).
    #[arg(short = 'c', long = "config", default_value = "/etc/tandem/tandem.conf")]
    config: PathBuf,
    /// Which `on NAME` section is this node (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Control socket and status file directory.
    #[arg(long = "run-dir", default_value = "/run/tandem")]
    run_dir: PathBuf,
    /// Members of this group (name or gid) may use tandemadm as root can.
    #[arg(long = "admin-group")]
    admin_group: Option<String>,
    /// Where a split-brain victim's blocks are saved before they are
    /// overwritten (default: RUN_DIR/saved). Put it on persistent storage:
    /// the run directory is usually a tmpfs.
    #[arg(long = "save-dir")]
    save_dir: Option<PathBuf>,
    /// Print the tandemd(8) man page and exit.
    #[arg(long = "man", hide = true)]
    man: bool,
}

fn main() -> ExitCode {
    let filter = std::env::var("TANDEM_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.man {
        use clap::CommandFactory;
        let rendered = clap_mangen::Man::new(Args::command())
            .section("8")
            .render(&mut std::io::stdout());
        return if rendered.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let admin_gid = match args.admin_group.as_deref().map(daemon::resolve_group).transpose() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("tandemd: --admin-group: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        config_path: args.config,
        node: args.node.unwrap_or_else(daemon::host_name),
        save_dir: args.save_dir.unwrap_or_else(|| args.run_dir.join("saved")),
        run_dir: args.run_dir,
        admin_gid,
    };
    match daemon::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandemd: {e:#}");
            ExitCode::from(1)
        }
    }
}
