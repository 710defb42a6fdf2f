//! `postern`: the daemon and its command line.
//!
//! `run` is the daemon. The other subcommands: `check-config` validates a configuration file and
//! every file it includes; `config effective` shows the options in force
//! for one (binding, domain) queue and where each came from; `config
//! reference` prints the configuration reference generated from the
//! directive table; `routes` resolves and prints one queue's routing
//! table; `verify-gateway` tries a route's first host step by step.

/// jemalloc instead of glibc's allocator: glibc's consolidation of freed
/// chunks took about a tenth of the daemon's CPU in S1; jemalloc lowered
/// CPU per message by 10–13 % with S2's memory within 3 % (ADR 0009).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin_cmd;
mod config_cmd;
mod daemon;
mod routes_cmd;
mod table;
mod verify_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The configuration file used when none is named.
const DEFAULT_CONFIG: &str = "conf/postern.conf";

#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version,
    about = "High-volume outbound mail transfer agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: recover the spool, start delivering, accept mail on
    /// the listener. SIGTERM stops it cleanly.
    Run {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration file and its includes; exit 2 listing every
    /// error (file:line:col) if it is not valid.
    CheckConfig {
        /// The file to check.
        #[arg(default_value = DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Inspect a configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Resolve and print the routing table for mail of BINDING to DOMAIN:
    /// preference levels, hosts, addresses, ports, TLS, limits, refresh
    /// time and why. Exit 1 when the domain has no route now.
    Routes {
        /// The destination domain.
        domain: String,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// A running daemon's summary: connections, queues, totals, rates,
    /// uptime.
    Summary(QueueArgs),
    /// One queue of a running daemon: its routing table with per-host
    /// connections, limits and failures; its queue sizes.
    Domain {
        /// The destination domain.
        domain: String,
        #[command(flatten)]
        console: QueueArgs,
    },
    /// The queues of a running daemon with the most mail.
    Queue {
        /// How many to show.
        #[arg(long, default_value = "20")]
        limit: usize,
        #[command(flatten)]
        console: QueueArgs,
    },
    /// The MX hosts of a running daemon: connections, configured and
    /// effective limits, effective rate, reachability, and the last reply
    /// that made the adaptive loop change them.
    Hosts(QueueArgs),
    /// The cluster of a running daemon: the nodes Redis knows, the
    /// connection leases each holds per host, and whether Redis answers.
    Cluster(QueueArgs),
    /// Retry a queue's delayed mail now.
    Flush {
        /// The destination domain.
        domain: String,
        #[command(flatten)]
        console: QueueArgs,
    },
    /// Hold a queue: nothing is delivered (or failed) until resumed.
    Suspend {
        /// The destination domain.
        domain: String,
        #[command(flatten)]
        console: QueueArgs,
    },
    /// Deliver a held queue again.
    Resume {
        /// The destination domain.
        domain: String,
        #[command(flatten)]
        console: QueueArgs,
    },
    /// Connect to a route's first host with the route's settings (TLS,
    /// AUTH, port, protocol), print each step (greeting, EHLO, STARTTLS,
    /// AUTH, QUIT) with its reply, and exit 0 only if all passed.
    VerifyGateway {
        /// The route: `host[:port]`, `[v6]:port`, or
        /// `smtp|smtps|lmtp://host[:port]?tls=..&tls_verify=..&auth=NAME`.
        url: String,
        /// The domain whose options apply (TLS, timeouts, ...); default:
        /// the route's host.
        #[arg(long)]
        domain: Option<String>,
        /// The binding whose options apply.
        #[arg(long, default_value = "default")]
        binding: String,
        /// The configuration file (for Auth stanzas, TLS_CA, Hostname,
        /// Resolver).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Options of the commands about one queue: `routes` and the console.
#[derive(Debug, clap::Args)]
struct QueueArgs {
    /// The binding (`default` for mail not assigned to one).
    #[arg(long, default_value = "default")]
    binding: String,
    /// The configuration file (the console finds the daemon's
    /// `Metrics_Listen` there).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn console(c: &QueueArgs, ask: &admin_cmd::Ask) -> ExitCode {
    admin_cmd::run(&c.config, ask, c.json)
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every option in force for mail of BINDING to DOMAIN, with the
    /// scope (and file:line:col) it comes from.
    Effective {
        /// The destination domain.
        #[arg(long)]
        domain: String,
        /// The binding (`default` for mail not assigned to one).
        #[arg(long, default_value = "default")]
        binding: String,
        /// The configuration file.
        #[arg(default_value = DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Print the configuration reference (Markdown) generated from the
    /// directive table.
    Reference,
}

fn act(c: &QueueArgs, action: &'static str, domain: String) -> ExitCode {
    let binding = c.binding.clone();
    console(
        c,
        &admin_cmd::Ask::Act {
            action,
            domain,
            binding,
        },
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => daemon::run(&config),
        Command::Summary(c) => console(&c, &admin_cmd::Ask::Summary),
        Command::Hosts(c) => console(&c, &admin_cmd::Ask::Hosts),
        Command::Cluster(c) => console(&c, &admin_cmd::Ask::Cluster),
        Command::Queue { limit, console: c } => console(&c, &admin_cmd::Ask::Queues { limit }),
        Command::Domain { domain, console: c } => {
            let binding = c.binding.clone();
            console(&c, &admin_cmd::Ask::Domain { domain, binding })
        }
        Command::Flush { domain, console: c } => act(&c, "flush", domain),
        Command::Suspend { domain, console: c } => act(&c, "suspend", domain),
        Command::Resume { domain, console: c } => act(&c, "resume", domain),
        Command::CheckConfig { file } => config_cmd::check(&file),
        Command::Config { command } => match command {
            ConfigCommand::Effective {
                domain,
                binding,
                file,
            } => config_cmd::effective(&file, &binding, &domain),
            ConfigCommand::Reference => {
                print!("{}", postern_conf::reference_markdown());
                ExitCode::SUCCESS
            }
        },
        Command::Routes { domain, queue } => {
            routes_cmd::routes(&queue.config, &queue.binding, &domain, queue.json)
        }
        Command::VerifyGateway {
            url,
            domain,
            binding,
            config,
        } => verify_cmd::verify(&config, &binding, &url, domain.as_deref()),
    }
}
