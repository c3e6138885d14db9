//! # layerctl: the command-line front end of the layer store
//!
//! `lib.rs` holds the clap structures and [`run`]; `main.rs` only calls [`main_entry`].
//! Each command lives in `cmd/<name>.rs`; configuration loading is in `config.rs`,
//! driver selection and store opening in `open.rs`, error -> exit code mapping in
//! `exit.rs`. See the README for the contract (commands, exit codes, JSON fields).

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cmd;
mod config;
mod exit;
mod open;
mod output;
pub mod runtime;

pub use exit::{exit_code, message_of, CheckFailed, CheckRepaired, ConfigError, ExitCode};

/// Store container image layers and assemble container root filesystems.
#[derive(Debug, Parser)]
#[command(name = "layerctl", version, about)]
pub struct Cli {
    /// Configuration file (default: $LAYERCTL_CONFIG, then /etc/layerctl/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store root directory (default /var/lib/layerctl).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Storage driver (default: the one the root records, else the best supported).
    #[arg(long, global = true, value_name = "NAME")]
    pub driver: Option<String>,
    /// JSON output for commands that list things.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v debug, -vv trace); RUST_LOG overrides. Before the
    /// command only: `run -v` / `bundle -v` is a volume.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import a flat rootfs tar, docker-save archive, OCI layout dir or OCI archive ("-" = stdin).
    Import {
        /// The input file or directory, or "-" for standard input.
        file: String,
        /// Name for the imported image.
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Images,
    /// List all layers, or an image's chain bottom to top.
    Layers {
        /// Image name, id or unique id prefix.
        image: Option<String>,
    },
    /// List containers.
    Ps,
    /// Create a container from an image.
    Create {
        /// Container name.
        container: String,
        /// Image name, id or unique id prefix.
        image: String,
    },
    /// Mount a container's root filesystem and print its path.
    Mount {
        /// Container name.
        container: String,
    },
    /// Drop one mount reference of a container.
    Umount {
        /// Container name.
        container: String,
    },
    /// Remove a container.
    Rm {
        /// Unmount all references first.
        #[arg(long, short)]
        force: bool,
        /// Container name.
        container: String,
    },
    /// Remove an image (or only the given name, when the image has others) and free the
    /// layers no other image uses.
    Rmi {
        /// Image name, id or unique id prefix.
        image: String,
    },
    /// Show the root, driver, backing filesystem and supported drivers.
    Info,
    /// Verify the store; exit 8 when problems remain.
    Check {
        /// Remove what is broken.
        #[arg(long)]
        repair: bool,
        /// Also recompute every layer's DiffID from its content and name layers that
        /// changed on disk.
        #[arg(long)]
        verify_content: bool,
    },
    /// Compare the drivers (and with --peers, the tools users pick instead) on one
    /// scenario in throwaway stores: import, create, mount, cold and warm full read, stat
    /// walk, small-file writes, copy-up, commit, umount, rm. Prints a table with ratios to
    /// the fastest per step; writes results.json, chart.svg and chart.png to --out.
    Bench {
        /// Drivers to run, comma-separated (default: every driver the kernel supports).
        #[arg(long, value_delimiter = ',')]
        drivers: Option<Vec<String>>,
        /// Input: a flat rootfs tar (or an image archive; the peers need a flat tar).
        /// Default: a generated tree of realistic shape.
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
        /// Runs per target (median, min and max are reported) [default: 3; 1 with --quick].
        #[arg(long)]
        runs: Option<usize>,
        /// Where results.json, chart.svg and chart.png go.
        #[arg(long, value_name = "DIR", default_value = "layerctl-bench")]
        out: PathBuf,
        /// Where the throwaway stores go (default /var/tmp); removed afterwards.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Also time the peers: tar -x, containers-storage (overlay, vfs), kernel
        /// overlay mounted by hand, fuse-overlayfs (missing ones are listed as skipped).
        #[arg(long)]
        peers: bool,
        /// A tiny generated input and one run (seconds; for tests and a first look).
        #[arg(long)]
        quick: bool,
    },
    /// Show the changes of a container's read-write layer (docker diff style).
    Diff {
        /// Container name.
        container: String,
    },
    /// Make a new image of a container's changes on top of its image; prints its id.
    Commit {
        /// Container name.
        container: String,
        /// Name for the new image.
        #[arg(long)]
        name: Option<String>,
        /// Comment of the new history entry.
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Write the flat root filesystem tar (no whiteouts) of a container or an image.
    Export {
        /// Container name (looked up first), or image name, id or unique id prefix.
        target: String,
        /// Output file, or "-" for standard output.
        #[arg(short, long, value_name = "FILE")]
        output: String,
    },
    /// Write images as one archive that is both an OCI image layout and a docker-save
    /// archive (Docker 25+ form); layers verified against their DiffIDs.
    Save {
        /// Image names, ids or unique id prefixes.
        #[arg(required = true)]
        images: Vec<String>,
        /// Output file, or "-" for standard output.
        #[arg(short, long, value_name = "FILE")]
        output: String,
        /// Compress the layer blobs (manifests name the compressed digests).
        #[arg(long, value_enum)]
        compress: Option<cmd::save::Compress>,
    },
    /// Disk usage per image (unique and shared) and container (changes), with totals.
    Du,
    /// Remove layers no image or container needs, orphan driver layers and leftovers;
    /// print the bytes freed.
    Gc {
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show an image's layers and history entries, bottom to top.
    History {
        /// Image name, id or unique id prefix.
        image: String,
    },
    /// Give an image another name (taken from any image that had it).
    Tag {
        /// Image name, id or unique id prefix.
        image: String,
        /// The new name.
        name: String,
    },
    /// Take a name away from its image (the image stays).
    Untag {
        /// The name.
        name: String,
    },
    /// Run a command in a new (or the --name) container through an OCI runtime; exits
    /// with the command's status.
    Run {
        /// Container name (reused when it exists; default: run-<12 hex>).
        #[arg(long)]
        name: Option<String>,
        /// Remove the container (rw layer included) after the run.
        #[arg(long)]
        rm: bool,
        /// Hostname (also in the init layer's /etc/hostname and /etc/hosts; default:
        /// the container name).
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        spec: SpecFlags,
        /// OCI runtime: libcontainer (in-process, default) or a runc-compatible binary
        /// (overrides config `[run] runtime`).
        #[arg(long, value_name = "NAME")]
        runtime: Option<String>,
        /// Image name, id or unique id prefix.
        image: String,
        /// Command and arguments (default: the image's Entrypoint + Cmd).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Mount a container and write an OCI runtime bundle (config.json) for it into DIR;
    /// `layerctl umount CONTAINER` releases it.
    Bundle {
        /// Container name.
        container: String,
        /// Bundle directory (made when missing).
        dir: PathBuf,
        #[command(flatten)]
        spec: SpecFlags,
        /// Command and arguments (default: the image's Entrypoint + Cmd).
        #[arg(last = true)]
        command: Vec<String>,
    },
}

/// Process and mount flags shared by `run` and `bundle`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecFlags {
    /// Volume HOST:CONTAINER[:ro|:rw] (absolute paths; HOST made when missing).
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// Environment variable K=V (after the image's Env).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory in the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User: UID[:GID] or names from the container's /etc/passwd and /etc/group.
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Pass the terminal through (the runtime's terminal mode).
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Network: none (a new namespace with loopback only, default) or host.
    #[arg(long, value_name = "host|none")]
    pub net: Option<String>,
}

impl SpecFlags {
    fn to_args(&self) -> cmd::run::RunArgs {
        cmd::run::RunArgs {
            volumes: self.volumes.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            tty: self.tty,
            net: self.net.clone(),
            ..Default::default()
        }
    }
}

/// Parses the command line, runs it and returns the process exit code.
pub fn main_entry() -> i32 {
    // The userspace aufs server (started by the aufs driver's mount): not a command.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(open::AUFS_SERVER_ARG)) {
        return driver_aufs::server::main_with_args(std::env::args_os().skip(2));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.verbose);
    match run(&cli) {
        Ok(()) => 0,
        // `run`: the container process's own status, no message of ours.
        Err(e) if matches!(e.downcast_ref(), Some(runtime::RunError::Exited(_))) => exit_code(&e).0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "layerctl: {}", message_of(&e));
            match exit_code(&e).0 {
                // A failure of ours with no class of its own (a full disk, an I/O error)
                // must not pass for the process's own status 1: Docker's 125.
                1 if matches!(cli.command, Command::Run { .. }) => runtime::EXIT_RUNTIME,
                code => code,
            }
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(match verbose {
            // libcontainer logs each failure in every process it forks; its error
            // comes back to `run` as one line, so its own logging waits for -v.
            0 => "warn,libcontainer=off,libcgroups=off",
            1 => "debug",
            _ => "trace",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs one parsed command.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let cfg = config::Settings::load(cli)?;
    match &cli.command {
        Command::Import { file, name } => cmd::import::run(&cfg, file, name.as_deref()),
        Command::Images => cmd::images::run(&cfg),
        Command::Layers { image } => cmd::layers::run(&cfg, image.as_deref()),
        Command::Ps => cmd::ps::run(&cfg),
        Command::Create { container, image } => cmd::create::run(&cfg, container, image),
        Command::Mount { container } => cmd::mount::mount(&cfg, container),
        Command::Umount { container } => cmd::mount::umount(&cfg, container),
        Command::Rm { force, container } => cmd::rm::run(&cfg, container, *force),
        Command::Rmi { image } => cmd::rmi::run(&cfg, image),
        Command::Info => cmd::info::run(&cfg),
        Command::Check {
            repair,
            verify_content,
        } => {
            if *verify_content {
                cmd::check::run_verifying_content(&cfg, *repair)
            } else {
                cmd::check::run(&cfg, *repair)
            }
        }
        Command::Diff { container } => cmd::diff::run(&cfg, container),
        Command::Commit {
            container,
            name,
            message,
        } => cmd::commit::run(&cfg, container, name.as_deref(), message.as_deref()),
        Command::Export { target, output } => cmd::export::run(&cfg, target, output),
        Command::Save {
            images,
            output,
            compress,
        } => cmd::save::run(&cfg, images, output, *compress),
        Command::Du => cmd::du::run(&cfg),
        Command::Gc { dry_run } => cmd::gc::run(&cfg, *dry_run),
        Command::History { image } => cmd::history::run(&cfg, image),
        Command::Tag { image, name } => cmd::tag::tag(&cfg, image, name),
        Command::Untag { name } => cmd::tag::untag(&cfg, name),
        Command::Bench {
            drivers,
            image,
            runs,
            out,
            dir,
            peers,
            quick,
        } => cmd::bench::run(
            &cfg,
            &cmd::bench::BenchOpts {
                drivers: drivers.clone(),
                image: image.clone(),
                runs: *runs,
                out: out.clone(),
                dir: dir.clone(),
                peers: *peers,
                quick: *quick,
            },
        ),
        Command::Run {
            name,
            rm,
            hostname,
            spec,
            runtime,
            image,
            command,
        } => cmd::run::run(
            &cfg,
            &cmd::run::RunArgs {
                name: name.clone(),
                rm: *rm,
                hostname: hostname.clone(),
                runtime: runtime.clone(),
                image: image.clone(),
                command: command.clone(),
                ..spec.to_args()
            },
        ),
        Command::Bundle {
            container,
            dir,
            spec,
            command,
        } => cmd::bundle::run(
            &cfg,
            container,
            dir,
            &cmd::run::RunArgs {
                command: command.clone(),
                ..spec.to_args()
            },
        ),
    }
}
