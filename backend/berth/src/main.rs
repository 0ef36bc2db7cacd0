//! The `berth` command: one binary, one subcommand per role.

use std::process::ExitCode;

use berth::config::{DbConfig, LogFormat, RegistryMode, RegistryRoleConfig, ServeConfig, WorkerConfig};
use berth::db::Database;
use clap::{Parser, Subcommand};

/// mimalloc: request handling allocates many small, short-lived buffers. Together with thin LTO it
/// raised list throughput by about 13% over glibc's allocator in the benchmark (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "berth", version, about = "Multi-tenant Containers-as-a-Service on Docker Swarm")]
struct Cli {
    /// Log format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest settings does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the API (and, in later versions, the console, workers and reconcilers) in one process.
    Serve(ServeConfig),
    /// Run only job workers, sharing the queue with other Berth processes.
    Worker(WorkerConfig),
    /// Run only the built-in registry (with its token service), for operators who run it apart.
    Registry(RegistryRoleConfig),
    /// Run only a router (HAProxy kept in step with the route table), e.g. one per ingress machine.
    Router(berth::config::RouterRoleConfig),
    /// Apply database migrations and exit.
    Migrate(DbConfig),
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    berth::telemetry::init(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line a user can act on; the chain of causes says what failed where.
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(cfg) => berth::serve::run(cfg).await,
        Command::Worker(cfg) => {
            let secret = berth::crypto::load_or_create_secret(cfg.secret.as_deref(), &cfg.db.data_dir)?;
            let keys = berth::crypto::Keys::from_secret(&secret)?;
            let database = Database::open(&cfg.db).await?;
            berth::db::wait_for_migrations(&database.pools.system).await?;
            let trust = match cfg.registry.mode {
                RegistryMode::Builtin => {
                    Some(berth::registry::RegistryTrust::load(&database.pools.system, &keys, &cfg.registry).await?)
                }
                RegistryMode::Off => None,
            };
            let env =
                berth::clusters::WorkerEnv::new(keys, cfg.db.data_dir.clone(), cfg.existing.clone(), trust, cfg.acme.clone());
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                berth::serve::shutdown_signal().await;
                let _ = stop.send(true);
            });
            let dns = berth::custom_domains::proof::DnsResolver::parse(&cfg.dns_resolver)?;
            let result = berth::worker::run(database.pools.system.clone(), env, dns, stopped).await;
            database.close().await;
            result
        }
        Command::Registry(cfg) => berth::registry::run_role(cfg).await,
        Command::Router(cfg) => berth::routing::run_role(cfg).await,
        Command::Migrate(cfg) => {
            let database = Database::open(&cfg).await?;
            let result = berth::db::migrate(&database.pools.system).await;
            database.close().await;
            result?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&berth::api::openapi())?);
            Ok(())
        }
    }
}
