//! The `kata` command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::builder::TypedValueParser as _;
use clap::{CommandFactory, Parser, Subcommand};

use crate::policy::LogFormat;
use crate::workspace::Workspace;

/// kata: an always-on agent host whose channels, services and tools are
/// sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "kata", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The workspace directory (holds kata.toml). Default: the nearest
    /// directory upwards with a kata.toml, else the per-user default workspace.
    #[arg(short, long, global = true, env = "KATA_WORKSPACE", value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// Log format on stderr (overrides `[daemon] log_format`).
    #[arg(long, global = true, value_name = "FORMAT", value_parser = clap::builder::EnumValueParser::<LogFormatArg>::new().map(LogFormat::from))]
    pub log_format: Option<LogFormat>,

    /// More log output (-v debug, -vv trace). `KATA_LOG` takes a full filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a workspace: a commented kata.toml and the .kata/ state directory.
    Init {
        /// Where to create it (default: the current directory).
        dir: Option<PathBuf>,
        /// Overwrite an existing kata.toml with the default one.
        #[arg(long)]
        force: bool,
    },
    /// Run the daemon in the foreground until SIGINT or SIGTERM (SIGHUP
    /// reloads kata.toml). `kata daemon start` runs it in the background.
    Run,
    /// Show the running daemon: each plugin's state, circuit breaker, last
    /// error, counters and queue depths.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop the running daemon gracefully (replies in flight are finished).
    Stop,
    /// Make the running daemon re-read kata.toml and its plugins; queued
    /// messages are kept. A broken kata.toml is reported and changes nothing.
    Reload,
    /// Show the running daemon's recent log events.
    Logs {
        /// Keep following new events until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// How many recent events to show first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// Print events as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Send a message to a conversation through a running channel plugin.
    Send {
        /// The channel plugin's name (as in kata.toml).
        channel: String,
        /// The conversation: chat id, room, channel or nick, as the plugin names it.
        to: String,
        /// The text to send.
        text: String,
        /// Post in this thread of the conversation.
        #[arg(long)]
        thread: Option<String>,
    },
    /// Talk to the agent through the running daemon, line by line.
    Chat {
        /// The session's name; the same name continues the same session.
        #[arg(long, default_value = "chat/local")]
        session: String,
    },
    /// List replies that could not be delivered (dead letters), or requeue them.
    Retry {
        /// Outbox ids to requeue (as listed).
        ids: Vec<i64>,
        /// Requeue all dead letters (of --plugin, if given).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Only this channel plugin's.
        #[arg(long)]
        plugin: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Run kata in the background, or install it as a user service.
    #[command(subcommand)]
    Daemon(crate::daemonize::DaemonCommand),
    /// Build, inspect and manage plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Validate the policy (kata.toml) or show what a plugin is granted.
    #[command(subcommand)]
    Policy(crate::policy_cmd::PolicyCommand),
    /// Show the audit log: every network decision, refused secret, blocked
    /// leak, redaction and limit hit.
    Audit(crate::policy_cmd::AuditArgs),
    /// Keep secrets in kata's encrypted store, for `secrets = { NAME = "kata:NAME" }`.
    #[command(subcommand)]
    Secret(crate::secret_cmd::SecretCommand),
    /// Approve or deny senders who asked to talk to the agent (pairing).
    #[command(subcommand)]
    Pair(PairCommand),
    /// Schedule prompts for the agent: cron, intervals or one-shot times.
    #[command(subcommand)]
    Task(crate::task_cmd::TaskCommand),
    /// List agent tool calls waiting for a person's approval (`[tools] mode = "ask"`).
    Approvals {
        /// Also show decided and expired calls (the newest 100).
        #[arg(long)]
        all: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The agent's tools: which the permission mode lets run and why (`list`),
    /// and one call through the daemon's own checks (`call`).
    #[command(subcommand)]
    Tool(crate::tool_cmd::ToolCommand),
    /// The agent's sessions: history and the tokens each used.
    #[command(subcommand)]
    Session(crate::session_cmd::SessionCommand),
    /// Let a waiting tool call run (its id is in `kata approvals` and the daemon's log).
    Approve {
        /// The approval id.
        id: i64,
    },
    /// Refuse a waiting tool call; the agent is told it was denied.
    Deny {
        /// The approval id.
        id: i64,
    },
    /// Print shell completions for kata.
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `kata pair …`
#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// List senders who wrote to the agent through a channel without being allowed.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Let the sender with this pairing code reach the agent from now on.
    Approve {
        /// The code the sender received.
        code: String,
    },
    /// Refuse the sender with this pairing code (they get no further replies).
    Deny {
        /// The code the sender received.
        code: String,
    },
}

/// `kata plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Build a plugin project (Rust, JavaScript, TypeScript, Python, C or Go;
    /// the language is read from its files) into a component with its
    /// plugin.toml embedded. Unchanged projects are not rebuilt.
    Build {
        /// The project directory (default: the current directory).
        dir: Option<PathBuf>,
        /// Where to write the component (default: build/NAME.wasm in the
        /// project; for Rust, next to the core module in cargo's target dir).
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Turn a core WebAssembly module built with wit-bindgen for a kata world
    /// (C, Zig, TinyGo, AssemblyScript, your own build…) into a component,
    /// adapting its WASI preview1 imports with the reactor adapter, and embed
    /// its manifest.
    Componentize {
        /// The core module (.wasm).
        module: PathBuf,
        /// The plugin.toml to embed: what the plugin asks for (network,
        /// files, secrets), shown by `kata plugin add`. Without one, the
        /// plugin gets only what kata.toml grants by hand.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Where to write the component.
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the bindings for a kata world in a language that needs generated
    /// code (C, Go), from the WIT built into this kata.
    Bindings {
        /// The language to write bindings for.
        #[arg(long, value_enum)]
        lang: crate::build::Lang,
        /// Which world (`channel-tools`: a channel that also offers tools).
        #[arg(long, value_parser = ["channel", "tools", "service", "channel-tools"], default_value = "channel")]
        world: String,
        /// The directory to write them into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Run a plugin project's own native tests (`cargo test`, `npm test`,
    /// `python3 -m unittest`, `make test`, `go test ./...`) with kata's
    /// toolchains on PATH.
    Test {
        /// The project directory (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// Install or check the toolchains that build plugins in each language
    /// (pinned versions, in kata's own directory).
    Toolchain {
        /// What to do.
        #[command(subcommand)]
        cmd: ToolchainCommand,
    },
    /// Create a plugin project from a template; it builds with `kata plugin
    /// build` and passes its own test out of the box.
    New {
        /// The plugin's name (lowercase letters, digits, '-', '_').
        name: String,
        /// What kind of plugin.
        #[arg(long, value_parser = ["channel", "tools", "service"], default_value = "channel")]
        kind: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::build::Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Install a plugin: validate it, show what it asks for next to what
    /// kata.toml grants, store it under .kata/plugins/ and record it in kata.toml.
    Add {
        /// A .wasm component file, an http(s) URL to download it from, or an
        /// OCI reference: oci://REGISTRY/NAME:TAG or oci://REGISTRY/NAME@sha256:DIGEST.
        source: String,
        /// Install under this name (default: the name in its manifest).
        #[arg(long)]
        name: Option<String>,
        /// Checksum, consent and size options.
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// List the workspace's plugins: kind, version, WIT version, hash and grants.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show what a plugin (by name) or a .wasm file is: world, WIT version,
    /// imports, exports, what it asks for and what is granted, cache state.
    Inspect {
        /// A plugin name in this workspace, or a .wasm file.
        target: String,
    },
    /// Remove a plugin from kata.toml and the store; its state is kept unless --purge.
    Remove {
        /// The plugin's name in kata.toml.
        name: String,
        /// Also delete its stored state and poll cursor.
        #[arg(long)]
        purge: bool,
    },
    /// Replace a plugin's code, keeping its state and grants; new capability
    /// requests are refused unless --yes grants them, and code signed by
    /// another publisher unless --allow-publisher-change.
    Upgrade {
        /// The plugin's name in kata.toml.
        name: String,
        /// The new .wasm component file, http(s) URL or oci:// reference
        /// (default: where it was installed from, as kata.toml records).
        source: Option<String>,
        /// Accept code signed by another publisher than the installed
        /// version's (or unsigned).
        #[arg(long)]
        allow_publisher_change: bool,
        /// Checksum, consent and size options.
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Create an Ed25519 key pair for signing plugins; prints the public key
    /// id (`ed25519:…`) users list in [trust] publishers.
    Keygen {
        /// Where to write the private key (default: kata's data directory,
        /// e.g. ~/.local/share/kata/keys/publisher.pem); the public key id
        /// goes to PATH.pub.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Replace an existing key at that path.
        #[arg(long)]
        force: bool,
    },
    /// Sign a component: the signature and the publisher's key go into its
    /// `signature` custom section and cover every other byte, its embedded
    /// manifest (grants) included.
    Sign {
        /// The component (.wasm), signed in place unless --out.
        file: PathBuf,
        /// The private key (default: the one `kata plugin keygen` made).
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
        /// Write the signed component here instead.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a component's signature and say who signed it and whether this
    /// workspace trusts them; fails if it is unsigned or does not verify.
    Verify {
        /// The component (.wasm).
        file: PathBuf,
        /// Require this publisher key (`ed25519:…`).
        #[arg(long, value_name = "KEY")]
        publisher: Option<String>,
    },
    /// Push a component to an OCI registry in the WebAssembly artifact
    /// layout (wkg, Spin); credentials come from the Docker config.
    Publish {
        /// The component (.wasm); sign it first with `kata plugin sign`.
        file: PathBuf,
        /// Where: oci://REGISTRY/NAME:TAG.
        reference: String,
    },
    /// Check where each plugin came from for something newer: later version
    /// tags (or new content under the same tag) in OCI registries, changed
    /// source files.
    Outdated {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `kata plugin toolchain …`
#[derive(Debug, Subcommand)]
pub enum ToolchainCommand {
    /// Install the pinned toolchain for each language given (all when none):
    /// npm and pip packages into kata's toolchain directory, from lockfiles.
    Install {
        /// The languages (default: all).
        #[arg(value_enum)]
        langs: Vec<crate::build::Lang>,
    },
    /// Show which toolchains are installed, and how to install the others.
    Status,
}

/// How `add` and `upgrade` fetch and accept a component.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Refuse unless the bytes have this sha256 (hex).
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// Write the grants it asks for (and kata.toml lacks) into kata.toml,
    /// and trust a publisher key seen for the first time (recorded in
    /// [trust] publishers). Not enough for an unsigned plugin: see
    /// --allow-unsigned.
    #[arg(short, long)]
    yes: bool,
    /// Install a plugin nobody signed (when [trust] unsigned = "ask", the
    /// default; "refuse" refuses it regardless).
    #[arg(long)]
    allow_unsigned: bool,
    /// Largest file or download accepted, e.g. 64MiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size_arg)]
    max_size: u64,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::policy::parse_size(s).map(|n| n as u64)
}

/// `--log-format`'s values: [`LogFormat`] as clap sees it (kata-policy has no clap).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(a: LogFormatArg) -> Self {
        match a {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// The crates kata's modules now live in, by module: log targets name the
/// crate (`kata_daemon::channel`), while filters written when kata was one
/// crate say `kata::channel` or `kata`.
const MODULE_CRATES: &[(&str, &[&str])] = &[
    ("kata_policy", &["policy", "manifest", "util"]),
    ("kata_store", &["store", "session", "history", "tasks", "approvals"]),
    ("kata_host", &["admit", "audit", "componentize", "engine", "host", "limits", "outlet", "plugin", "sandbox", "secret_store", "sink"]),
    (
        "kata_daemon",
        &[
            "agent",
            "channel",
            "command",
            "control",
            "daemon",
            "events",
            "health",
            "openai",
            "permissions",
            "router",
            "scheduler",
            "senders",
            "service",
            "sinks",
            "stream",
            "tools",
            "turn",
            "workspace",
        ],
    ),
];

/// A `KATA_LOG` filter with its `kata…` directives pointed at the crates:
/// `kata=debug` also covers every kata crate, `kata::channel=debug` becomes
/// `kata_daemon::channel=debug`.
fn crate_targets(filter: &str) -> String {
    let mut out = Vec::new();
    for d in filter.split(',') {
        let (target, rest) = d.split_once(['=', '[']).map_or((d, ""), |(t, _)| (t, &d[t.len()..]));
        if target == "kata" {
            out.push(d.to_string());
            out.extend(MODULE_CRATES.iter().map(|(c, _)| format!("{c}{rest}")));
        } else if let Some(path) = target.strip_prefix("kata::")
            && let Some((krate, _)) = MODULE_CRATES.iter().find(|(_, mods)| mods.contains(&path.split("::").next().unwrap_or("")))
        {
            out.push(format!("{krate}::{path}{rest}"));
        } else {
            out.push(d.to_string());
        }
    }
    out.join(",")
}

/// The log filter for a command: `KATA_LOG` wins, else by verbosity.
fn log_filter(verbose: u8, default: &str) -> tracing_subscriber::EnvFilter {
    if let Ok(f) = std::env::var("KATA_LOG")
        && let Ok(filter) = tracing_subscriber::EnvFilter::try_new(crate_targets(&f))
    {
        return filter;
    }
    let level = match verbose {
        0 => default,
        1 => "kata=debug,kata_policy=debug,kata_store=debug,kata_host=debug,kata_daemon=debug,info",
        _ => "trace",
    };
    tracing_subscriber::EnvFilter::new(level)
}

pub(crate) fn init_logging(format: LogFormat, verbose: u8, default: &str) {
    init_logging_with(format, verbose, default, None);
}

/// Log to stderr, and when `events` is given also to the daemon's event
/// stream (what `kata logs` shows).
fn init_logging_with(format: LogFormat, verbose: u8, default: &str, events: Option<&crate::events::Events>) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let fmt: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = match format {
        LogFormat::Human => Box::new(fmt.with_target(false)),
        LogFormat::Json => Box::new(fmt.json()),
    };
    let _ = tracing_subscriber::registry().with(log_filter(verbose, default)).with(fmt).with(events.map(|e| e.layer())).try_init();
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { dir, force } => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            let dir = match dir.or(cli.workspace) {
                Some(d) => d,
                None => std::env::current_dir().context("cannot read the current directory")?,
            };
            let ws = Workspace::init(&dir, force)?;
            println!("Created a kata workspace in {}", ws.root().display());
            println!("Edit {} to add plugins, then run `kata run`.", ws.policy_path().display());
            Ok(())
        }
        Command::Run => {
            // The runtime and the SIGINT/SIGTERM handlers first, before the
            // policy is read or a plugin compiled: a stop asked for at any
            // point after this ends the daemon cleanly, instead of by the
            // signal's default action (a service manager's stop right after
            // its start, say).
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
            let shutdown = {
                let _in_runtime = runtime.enter();
                crate::daemon::shutdown_signal()
            };
            let ws = Workspace::discover(cli.workspace.as_deref())?;
            // The policy decides the log format unless the flag does; a broken
            // policy is reported by Daemon::load below.
            let format = cli.log_format.unwrap_or_else(|| {
                crate::policy::Policy::load(&ws.policy_path(), ws.root()).map(|p| p.file.daemon.log_format).unwrap_or_default()
            });
            let events = crate::events::Events::new();
            init_logging_with(format, cli.verbose, "info", Some(&events));
            runtime.block_on(async {
                let daemon = crate::daemon::Daemon::load_with_events(ws, events)?;
                daemon.run(shutdown).await
            })
        }
        Command::Status { json } => crate::client::status(&Workspace::discover(cli.workspace.as_deref())?, json),
        Command::Stop => crate::client::stop(&Workspace::discover(cli.workspace.as_deref())?),
        Command::Reload => crate::client::reload(&Workspace::discover(cli.workspace.as_deref())?),
        Command::Logs { follow, lines, json } => crate::client::logs(&Workspace::discover(cli.workspace.as_deref())?, follow, lines, json),
        Command::Send { channel, to, text, thread } => {
            crate::client::send(&Workspace::discover(cli.workspace.as_deref())?, channel, to, text, thread)
        }
        Command::Chat { session } => crate::client::chat(&Workspace::discover(cli.workspace.as_deref())?, session),
        Command::Retry { ids, all, plugin, json } => {
            crate::client::retry(&Workspace::discover(cli.workspace.as_deref())?, ids, all, plugin, json)
        }
        Command::Daemon(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            crate::daemonize::command(cli.workspace.as_deref(), cmd)
        }
        Command::Plugin(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            plugin_command(cli.workspace.as_deref(), cmd)
        }
        Command::Policy(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            crate::policy_cmd::policy(cli.workspace.as_deref(), cmd, &mut std::io::stdout().lock())
        }
        Command::Audit(args) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            crate::policy_cmd::audit(cli.workspace.as_deref(), &args, &mut std::io::stdout().lock())
        }
        Command::Secret(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            crate::secret_cmd::secret(cli.workspace.as_deref(), cmd, &mut std::io::stdout().lock())
        }
        Command::Pair(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            pair_command(cli.workspace.as_deref(), cmd)
        }
        Command::Task(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            crate::task_cmd::task(cli.workspace.as_deref(), cmd, &mut std::io::stdout().lock())
        }
        Command::Approvals { all, json } => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            let ws = Workspace::discover(cli.workspace.as_deref())?;
            let db = crate::store::Db::open(&ws.db_path())?;
            crate::permissions::print_approvals(&db, all, json, &mut std::io::stdout().lock())
        }
        Command::Tool(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            crate::tool_cmd::tool(cli.workspace.as_deref(), cmd, &mut std::io::stdout().lock())
        }
        Command::Session(cmd) => {
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            crate::session_cmd::session(cli.workspace.as_deref(), cmd, &mut std::io::stdout().lock())
        }
        Command::Approve { id } | Command::Deny { id } => {
            let approve = matches!(cli.command, Command::Approve { .. });
            init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
            let ws = Workspace::discover(cli.workspace.as_deref())?;
            let db = crate::store::Db::open(&ws.db_path())?;
            decide_approval(&db, id, approve, &mut std::io::stdout().lock())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kata", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn decide_approval(db: &crate::store::Db, id: i64, approve: bool, out: &mut impl Write) -> Result<()> {
    let Some(a) = db.approval_decide(id, approve, if approve { "kata approve" } else { "kata deny" })? else {
        anyhow::bail!("no tool call has approval id {id}; `kata approvals` lists the waiting ones");
    };
    let tool = format!("{}.{}", a.plugin, a.tool);
    match (a.status.as_str(), approve) {
        ("approved", true) => writeln!(out, "Approved {id}: {tool} runs now (session {}).", a.session_key)?,
        ("denied", false) => writeln!(out, "Denied {id}: {tool} does not run; the agent is told so.")?,
        (status, _) => {
            anyhow::bail!("approval {id} ({tool}) is already {status}; nothing changed (a call waits at most [tools] ask_timeout)")
        }
    }
    Ok(())
}

fn pair_command(workspace: Option<&Path>, cmd: PairCommand) -> Result<()> {
    let ws = Workspace::discover(workspace)?;
    let db = crate::store::Db::open(&ws.db_path())?;
    let mut out = std::io::stdout().lock();
    match cmd {
        PairCommand::List { json } => {
            let all = db.pairings()?;
            if json {
                serde_json::to_writer_pretty(&mut out, &all)?;
                writeln!(out)?;
            } else if all.is_empty() {
                writeln!(out, "No one has asked to pair.")?;
            } else {
                writeln!(out, "{:<8} {:<9} {:<14} SENDER", "CODE", "STATUS", "CHANNEL")?;
                for p in all {
                    let who = match &p.sender_name {
                        Some(n) => format!("{} ({n})", p.sender),
                        None => p.sender.clone(),
                    };
                    writeln!(out, "{:<8} {:<9} {:<14} {who}", p.code, p.status, p.plugin)?;
                }
            }
        }
        PairCommand::Approve { code } => match db.pairing_decide(&code, true)? {
            Some(p) => writeln!(out, "Approved {} on {}: their next message reaches the agent.", p.sender, p.plugin)?,
            None => anyhow::bail!("no pairing has the code {code}; `kata pair list` shows the codes"),
        },
        PairCommand::Deny { code } => match db.pairing_decide(&code, false)? {
            Some(p) => writeln!(out, "Denied {} on {}: they get no replies.", p.sender, p.plugin)?,
            None => anyhow::bail!("no pairing has the code {code}; `kata pair list` shows the codes"),
        },
    }
    Ok(())
}

fn plugin_command(workspace: Option<&Path>, cmd: PluginCommand) -> Result<()> {
    use crate::install;
    let mut out = std::io::stdout().lock();
    match cmd {
        // The authoring commands live in kata-dev (crate::dev): the daemon's
        // binary carries no toolchain drivers, componentizer or bindings writers.
        PluginCommand::Build { .. }
        | PluginCommand::Componentize { .. }
        | PluginCommand::Bindings { .. }
        | PluginCommand::Test { .. }
        | PluginCommand::Toolchain { .. }
        | PluginCommand::New { .. } => crate::dev::hand_off()?,
        PluginCommand::Add { source, name, fetch } => {
            let ws = Workspace::discover(workspace)?;
            let opts = install::AddOptions {
                source: &source,
                name: name.as_deref(),
                sha256: fetch.sha256.as_deref(),
                yes: fetch.yes,
                max_size: fetch.max_size,
                consent: crate::provenance::Consent { yes: fetch.yes, allow_unsigned: fetch.allow_unsigned, allow_publisher_change: false },
            };
            install::add(&ws, &opts, &mut out)?;
        }
        PluginCommand::List { json } => {
            let ws = Workspace::discover(workspace)?;
            let rows = install::list(&ws)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                install::print_list(&rows, &mut out)?;
            }
        }
        PluginCommand::Inspect { target } => {
            // A workspace is optional: a file can be inspected anywhere.
            let ws = Workspace::discover(workspace).ok();
            install::inspect(ws.as_ref(), &target, &mut out)?;
        }
        PluginCommand::Remove { name, purge } => {
            let ws = Workspace::discover(workspace)?;
            install::remove(&ws, &name, purge, &mut out)?;
        }
        PluginCommand::Upgrade { name, source, allow_publisher_change, fetch } => {
            let ws = Workspace::discover(workspace)?;
            let source = match source {
                Some(s) => s,
                None => crate::policy::Policy::load(&ws.policy_path(), ws.root())?
                    .file
                    .plugins
                    .get(&name)
                    .and_then(|e| e.source.clone())
                    .with_context(|| {
                    format!("kata.toml records no source for {name}; name the new code: `kata plugin upgrade {name} FILE|URL|oci://…`")
                })?,
            };
            let opts = install::AddOptions {
                source: &source,
                name: Some(&name),
                sha256: fetch.sha256.as_deref(),
                yes: fetch.yes,
                max_size: fetch.max_size,
                consent: crate::provenance::Consent { yes: fetch.yes, allow_unsigned: fetch.allow_unsigned, allow_publisher_change },
            };
            install::upgrade(&ws, &name, &opts, &mut out)?;
        }
        PluginCommand::Keygen { out: path, force } => crate::provenance::keygen(path, force, &mut out)?,
        PluginCommand::Sign { file, key, out: dest } => crate::provenance::sign(&file, key.as_deref(), dest.as_deref(), &mut out)?,
        PluginCommand::Verify { file, publisher } => {
            // A workspace is optional: it only says whether the key is trusted.
            let ws = Workspace::discover(workspace).ok();
            crate::provenance::verify(ws.as_ref(), &file, publisher.as_deref(), &mut out)?;
        }
        PluginCommand::Publish { file, reference } => crate::provenance::publish(&file, &reference, &mut out)?,
        PluginCommand::Outdated { json } => {
            let ws = Workspace::discover(workspace)?;
            let rows = crate::provenance::outdated(&ws)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                crate::provenance::print_outdated(&rows, &mut out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_written_for_one_crate_reach_the_crates() {
        assert_eq!(crate_targets("kata=debug"), "kata=debug,kata_policy=debug,kata_store=debug,kata_host=debug,kata_daemon=debug");
        assert_eq!(crate_targets("warn,kata::channel=trace,kata::cli=info"), "warn,kata_daemon::channel=trace,kata::cli=info");
        assert_eq!(crate_targets("kata::sandbox::pool[conn]=debug"), "kata_host::sandbox::pool[conn]=debug");
        assert_eq!(crate_targets("off"), "off");
    }
}
