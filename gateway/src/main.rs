//! anygate: a CloudBase-style access gateway on Pingora.

use anygate::snapshot::Store;
use anygate::{demo, server, source, token};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

// mimalloc: per-thread free lists suit Pingora's many short-lived per-request allocations
// better than glibc's malloc (see bench/RESULTS.md). The `system-allocator` feature leaves
// glibc's in place, for heap profilers that hook malloc (heaptrack, valgrind's DHAT).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: anygate::alloc::MiMalloc = anygate::alloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "anygate",
    version,
    about = "A CloudBase-style access gateway on Pingora",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default)
    Run(RunArgs),
    /// Validate a config file: every problem at once, as FILE:LINE:COL: message
    ///
    /// Exits 1 on an error. An unset secret variable or an instance name that does not resolve
    /// on this machine is a warning (exit 0) unless --strict.
    Check {
        /// The config file
        #[arg(short = 'c', long = "conf", value_name = "FILE", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        /// Treat warnings as errors: pass only what `run` would accept on this machine
        #[arg(long)]
        strict: bool,
    },
    /// An upstream that answers every request with JSON describing it
    Echo {
        /// The address to listen on
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        listen: String,
        /// Worker threads
        #[arg(long, value_name = "N", default_value_t = 1)]
        threads: usize,
    },
    /// Print a session token for a user, signed with the config's key (to test backends
    /// without WeChat)
    Token {
        /// The config file (its `identity` plugin in `mode: session` names the key)
        #[arg(short = 'c', long = "conf", value_name = "FILE", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        /// The app (default: the owner app)
        #[arg(long, value_name = "APPID")]
        appid: Option<String>,
        /// The user's openid in that app (sent upstream as X-WX-OPENID)
        #[arg(long, value_name = "OPENID")]
        openid: String,
        /// The user's unionid, if any (sent upstream as X-WX-UNIONID)
        #[arg(long, value_name = "UNIONID")]
        unionid: Option<String>,
        /// How long the token is valid, e.g. 30m, 2h (default: the config's token_ttl)
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// Run the gateway, an echo upstream and the admin listener from an embedded config, and
    /// print curl lines to try
    Demo {
        /// The gateway's address
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The echo upstream's address
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        echo: String,
        /// The admin listener's address (/metrics, /healthz, /readyz)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9091")]
        admin: String,
    },
    /// Cluster mode: the config document in etcd (SPEC §13), through the bootstrap file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A stand-in for WeChat's jscode2session on loopback, to try the login flow locally
    ///
    /// The code `test:OPENID` (or `test:OPENID:UNIONID`) logs in as that user; any other code
    /// is refused with errcode 40029, as WeChat refuses a bad code.
    WechatStub {
        /// The address to listen on (loopback only); point `code2session_url` at
        /// http://ADDR/sns/jscode2session
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8082")]
        listen: String,
    },
}

const DEFAULT_CONFIG: &str = "/etc/anygate/anygate.yaml";

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE like `check`, then write it to the etcd key, refused if the key changed
    /// since this push read it (compare-and-swap on its revision)
    Push {
        /// The bootstrap file (with `config_source.etcd`)
        #[arg(short = 'c', long = "conf", value_name = "BOOT", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        /// The config document to push
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The revision FILE was based on (from `config get` or `config history`): refused
        /// if the key is no longer at it
        #[arg(long, value_name = "REV", conflicts_with = "force")]
        expect_revision: Option<i64>,
        /// Write even if someone pushed in between (no compare-and-swap)
        #[arg(long)]
        force: bool,
        /// Validate only; write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// List the key's revisions: revision, time, size, hash, who and what
    History {
        /// The bootstrap file (with `config_source.etcd`)
        #[arg(short = 'c', long = "conf", value_name = "BOOT", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        /// At most this many revisions, newest first
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// Push the document of an earlier revision again (validated first)
    Rollback {
        /// The bootstrap file (with `config_source.etcd`)
        #[arg(short = 'c', long = "conf", value_name = "BOOT", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        /// The revision whose document to restore (see `config history`)
        #[arg(value_name = "REV")]
        revision: i64,
        /// Write even if someone pushed in between (no compare-and-swap)
        #[arg(long)]
        force: bool,
    },
    /// Print the document (the current one, or of --revision) on stdout
    Get {
        /// The bootstrap file (with `config_source.etcd`)
        #[arg(short = 'c', long = "conf", value_name = "BOOT", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        #[arg(long, value_name = "REV")]
        revision: Option<i64>,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The config file
    #[arg(short = 'c', long = "conf", value_name = "FILE", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
    conf: PathBuf,
    /// Run in the background (Pingora daemon mode)
    #[arg(short, long)]
    daemon: bool,
    /// Take over the listeners of a running anygate (Pingora graceful upgrade)
    #[arg(short, long)]
    upgrade: bool,
    /// Check that the server can start, then exit
    #[arg(short, long)]
    test: bool,
    /// Do not watch the config file: reload only on SIGHUP
    #[arg(long)]
    no_watch: bool,
}

fn run(args: RunArgs) -> ExitCode {
    let telemetry = match server::new_telemetry() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    // The file itself, or (cluster mode) the etcd document it points at.
    let (snap, pending) = match source::open(&args.conf, &telemetry, !args.no_watch) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let flags = server::Flags {
        daemon: args.daemon,
        upgrade: args.upgrade,
        test: args.test,
    };
    let store = Arc::new(Store::new(snap));
    let keeper = pending.attach(store.clone());
    server::build(store, flags, None, Some(keeper)).run_forever()
}

fn check(conf: PathBuf, strict: bool) -> ExitCode {
    // A cluster bootstrap file: its own checks (the document lives in etcd).
    if let Some(code) = source::cli::check_bootstrap(&conf, strict) {
        return code;
    }
    let telemetry = match server::new_telemetry() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let checked = server::check_file(&conf, &telemetry);
    let (errors, warnings) = match (checked.snapshot.as_ref().err(), strict) {
        // --strict: a warning is an error like any other.
        (e, true) => {
            let mut all = e.map(|e| e.0.clone()).unwrap_or_default();
            all.extend(checked.warnings);
            all.sort_by_key(|x| (x.mark.line, x.mark.col));
            (all, Vec::new())
        }
        (e, false) => (e.map(|e| e.0.clone()).unwrap_or_default(), checked.warnings),
    };
    // Errors and warnings in file order, like a compiler's.
    let mut lines: Vec<(&anygate::config::ConfigError, bool)> = errors
        .iter()
        .map(|e| (e, false))
        .chain(warnings.iter().map(|w| (w, true)))
        .collect();
    lines.sort_by_key(|(x, _)| (x.mark.line, x.mark.col));
    for (x, warning) in &lines {
        match warning {
            true => eprintln!(
                "{}:{}:{}: warning: {}",
                x.file, x.mark.line, x.mark.col, x.message
            ),
            false => eprintln!("{x}"),
        }
    }
    match (&checked.snapshot, errors.is_empty()) {
        (Ok(snap), true) => {
            let warned = match warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".to_string(),
                n => format!(", {n} warnings"),
            };
            let streams = match snap.streams.len() {
                0 => String::new(),
                n => format!(", {n} streams"),
            };
            println!(
                "{}: ok{warned} (chain: {}; {} instances, {} routes{streams})",
                conf.display(),
                snap.chain.names().join(", "),
                snap.routes.instances().count(),
                snap.routes.routes().len()
            );
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(1),
    }
}

fn mint_token(conf: PathBuf, req: token::Request) -> ExitCode {
    match token::mint(&conf, &req, &|k| std::env::var(k).ok()) {
        Ok((token, ttl)) => {
            eprintln!("token valid for {}s", ttl.as_secs());
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    anygate::alloc::no_huge_pages();
    anygate::logging::init();
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::Check { conf, strict }) => check(conf, strict),
        Some(Command::Config(c)) => match c {
            ConfigCommand::Push {
                conf,
                file,
                expect_revision,
                force,
                dry_run,
            } => source::cli::push(&conf, &file, force, expect_revision, dry_run),
            ConfigCommand::History { conf, limit } => source::cli::history(&conf, limit),
            ConfigCommand::Rollback {
                conf,
                revision,
                force,
            } => source::cli::rollback(&conf, revision, force),
            ConfigCommand::Get { conf, revision } => source::cli::get(&conf, revision),
        },
        Some(Command::Echo { listen, threads }) => server::run_echo(&listen, threads),
        Some(Command::Token {
            conf,
            appid,
            openid,
            unionid,
            ttl,
        }) => mint_token(
            conf,
            token::Request {
                appid: appid.as_deref(),
                openid: &openid,
                unionid: unionid.as_deref(),
                ttl: ttl.as_deref(),
            },
        ),
        Some(Command::Demo {
            listen,
            echo,
            admin,
        }) => ExitCode::from(demo::run(&listen, &echo, &admin) as u8),
        Some(Command::WechatStub { listen }) => match listen.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => server::run_wechat_stub(&listen),
            _ => {
                eprintln!("wechat-stub: `{listen}` is not a loopback address (it logs anyone in: keep it on 127.0.0.1 or [::1])");
                ExitCode::from(2)
            }
        },
    }
}
