//! anygate: a CloudBase-style access gateway on Pingora.

use anygate::reload::Reloader;
use anygate::snapshot::Store;
use anygate::{demo, server, token};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

// mimalloc: per-thread free lists suit Pingora's many short-lived per-request allocations
// better than glibc's malloc (see bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Validate a config file: exit 0, or 1 with FILE:LINE:COL: message for every error
    Check {
        #[arg(short = 'c', long = "conf", value_name = "FILE", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
    },
    /// An upstream that answers every request with JSON describing it
    Echo {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        listen: String,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Print a session token for a user, signed with the config's key (to test backends
    /// without WeChat)
    Token {
        #[arg(short = 'c', long = "conf", value_name = "FILE", env = "ANYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        /// The app (default: the owner app)
        #[arg(long)]
        appid: Option<String>,
        #[arg(long)]
        openid: String,
        #[arg(long)]
        unionid: Option<String>,
        /// How long the token is valid, e.g. 30m, 2h (default: the config's token_ttl)
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Run the gateway and an echo upstream from an embedded config, and print curl lines
    Demo {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        echo: String,
    },
}

const DEFAULT_CONFIG: &str = "/etc/anygate/anygate.yaml";

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
    let (snap, text) = match server::load_initial(&args.conf, &telemetry) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let flags = server::Flags {
        daemon: args.daemon,
        upgrade: args.upgrade,
        test: args.test,
    };
    let store = Arc::new(Store::new(snap));
    let reloader = Arc::new(Reloader::new(
        args.conf.clone(),
        store.clone(),
        &text,
        !args.no_watch,
    ));
    server::build(store, flags, None, Some(reloader)).run_forever()
}

fn check(conf: PathBuf) -> ExitCode {
    let telemetry = match server::new_telemetry() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    match server::load_snapshot(&conf, &telemetry) {
        Ok(snap) => {
            let streams = match snap.streams.len() {
                0 => String::new(),
                n => format!(", {n} streams"),
            };
            println!(
                "{}: ok (chain: {}; {} instances, {} routes{streams})",
                conf.display(),
                snap.chain.names().join(", "),
                snap.routes.instances().count(),
                snap.routes.routes().len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::Check { conf }) => check(conf),
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
        Some(Command::Demo { listen, echo }) => ExitCode::from(demo::run(&listen, &echo) as u8),
    }
}
