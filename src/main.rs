//! The `probity` command: parses flags (each also an environment variable) and hands off to the
//! library. Nothing here decides anything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use probity::api::{crd, duration, validate::Defaults};
use probity::cli;
use probity::kube::{self, KubeConfig, LeaseConfig, Namespaces, Retention};
use probity::local::{self, LocalConfig};
use probity::metrics::MetricsConfig;
use probity::serve::Settings;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "probity",
    version,
    about = "Synthetic checks for Kubernetes that speak Kuberhealthy's API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scheduler, report endpoint, status page and metrics.
    Serve(Box<ServeArgs>),
    /// Run every check in FILE once, print each verdict; exit 0 iff all pass.
    Run {
        file: PathBuf,
        #[command(flatten)]
        defaults: DefaultArgs,
    },
    /// Report this run's result to probity (from inside a check; reads the KH_* variables), or
    /// ping a heartbeat check (--heartbeat).
    Report(ReportArgs),
    /// Make a token for a heartbeat check: prints the token (for the job's Secret) and its
    /// tokenHash (for the check's spec.heartbeat).
    HeartbeatToken,
    /// Check HealthCheck files for errors; exit 0 iff every check is valid.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        defaults: DefaultArgs,
    },
    /// Run a built-in check in a check pod (reads the KH_* variables and the check's settings
    /// from the environment; exits 0 once its verdict is reported, pass or fail).
    Check {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(probity::checks::NAMES))]
        name: String,
    },
    /// Print the HealthCheck CustomResourceDefinition.
    Crd,
    /// Convert Kuberhealthy v2 KuberhealthyCheck/KuberhealthyJob manifests to HealthChecks: YAML
    /// to stdout, what could not be carried over to stderr; other objects pass through.
    /// With --from gatus: a Gatus configuration's endpoints become HealthChecks (HTTP with
    /// their conditions as assertions, DNS, TCP, ICMP as ping); what cannot is named on stderr.
    Migrate {
        /// What the files are: kuberhealthy (v2 manifests) or gatus (a Gatus config.yaml).
        #[arg(long, env = "PROBITY_MIGRATE_FROM", default_value = "kuberhealthy", value_parser = ["kuberhealthy", "gatus"])]
        from: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, duration::DurationError> {
    duration::parse(s)
}

#[derive(Args, Debug, Clone)]
struct DefaultArgs {
    /// Run interval of checks that set neither runInterval nor schedule.
    #[arg(long, env = "KH_DEFAULT_RUN_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    default_run_interval: Duration,
    /// Timeout of checks that set no timeout.
    #[arg(long, env = "KH_DEFAULT_CHECK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    default_timeout: Duration,
}

impl DefaultArgs {
    fn defaults(&self) -> Defaults {
        Defaults {
            run_interval: self.default_run_interval,
            timeout: self.default_timeout,
            ..Defaults::default()
        }
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address the HTTP server listens on.
    #[arg(long, env = "KH_LISTEN_ADDRESS", default_value = "0.0.0.0:8080")]
    listen_address: String,
    /// Directory of HealthCheck YAML files (local backend); changes are picked up while running.
    #[arg(long, env = "PROBITY_CHECKS", default_value = "checks")]
    checks: PathBuf,
    /// Directory where check state is kept between restarts (local backend).
    #[arg(long, env = "PROBITY_STATE_DIR", default_value = ".probity-state")]
    state_dir: PathBuf,
    /// Base URL checks report to (KH_REPORTING_URL is this plus /check); default: the listening address locally, the probity Service's ClusterIP in a cluster.
    #[arg(long, env = "KH_CHECK_REPORT_URL")]
    report_url: Option<String>,
    /// Most runs in flight at once, 0 for no limit; default 100 locally, 1000 in a cluster (where pods take seconds to start).
    #[arg(long, env = "PROBITY_MAX_CONCURRENT_RUNS")]
    max_concurrent_runs: Option<usize>,
    /// Checks that have never run start within this window after start-up (spread over it), not over their interval.
    #[arg(long, env = "PROBITY_FIRST_RUN_WINDOW", default_value = "10s", value_parser = parse_duration)]
    first_run_window: Duration,
    /// Leave the error label out of kuberhealthy_check.
    #[arg(long, env = "KH_PROM_SUPPRESS_ERROR_LABEL", default_value_t = false)]
    prom_suppress_error_label: bool,
    /// Longest error label value on kuberhealthy_check, in characters.
    #[arg(long, env = "KH_PROM_ERROR_LABEL_MAX_LENGTH", default_value_t = 256)]
    prom_error_label_max_length: usize,
    /// Also export per-check detail: the run-duration histograms per check
    /// (kuberhealthy_check_run_duration_seconds, probity_probe_duration_seconds), the uptime
    /// ratios and the next run's time: 28 more series per check. Without it a check has
    /// Kuberhealthy's six, and durations are aggregated by namespace.
    #[arg(long, env = "PROBITY_PER_CHECK_DETAIL", default_value_t = false)]
    per_check_detail: bool,
    /// After a stop signal, how long runs in flight may finish before probity exits.
    #[arg(long, env = "PROBITY_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// How often the checks directory is re-read.
    #[arg(long, env = "PROBITY_WATCH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    watch_interval: Duration,
    /// Local backend: the kubeconfig resource and Knative probes read (default: KUBECONFIG, then ~/.kube/config), connected when the first one runs.
    #[arg(long, env = "PROBITY_KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Bearer token that POST /api/run?namespace=&healthcheck= (run a check now) requires; empty: that API is off.
    #[arg(
        long,
        env = "PROBITY_RUN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    run_token: String,
    /// Notification receivers, routes and maintenance windows (YAML; see README "Alerts"); unset: no notifications. Read again when the file changes and on SIGHUP; a bad edit keeps the last good one.
    #[arg(long, env = "PROBITY_ALERTING_CONFIG")]
    alerting_config: Option<PathBuf>,
    /// This replica's name, shown as AuthoritativePod and CurrentMaster; default: POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[command(flatten)]
    defaults: DefaultArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    kube: KubeArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "HTTP server limits")]
struct HttpArgs {
    /// A request's headers must arrive within this (slow clients are disconnected).
    #[arg(long, env = "PROBITY_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    http_header_timeout: Duration,
    /// A connection with no request in flight and nothing sent for this long is closed.
    #[arg(long, env = "PROBITY_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    http_idle_timeout: Duration,
    /// Open connections at most (lowered to fit the open-files limit, keeping descriptors for runs); at the cap the idlest is closed for a new one.
    #[arg(long, env = "PROBITY_HTTP_MAX_CONNECTIONS", default_value_t = 512)]
    http_max_connections: usize,
    /// Requests handled at once at most (health probes aside); more are answered 503.
    #[arg(long, env = "PROBITY_HTTP_MAX_REQUESTS", default_value_t = 256)]
    http_max_requests: usize,
    /// Largest request head (request line and headers) in bytes; at least 8192.
    #[arg(long, env = "PROBITY_HTTP_MAX_HEADER_BYTES", default_value_t = 16384)]
    http_max_header_bytes: usize,
}

impl HttpArgs {
    fn limits(&self) -> probity::server::Limits {
        probity::server::Limits {
            header_read_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections.max(1),
            max_requests: self.http_max_requests.max(1),
            max_header_bytes: self.http_max_header_bytes,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Kubernetes backend")]
struct KubeArgs {
    /// Use the kubernetes backend (kubeconfig as kubectl finds it); on by itself inside a pod.
    #[arg(long, env = "PROBITY_KUBERNETES", value_parser = clap::builder::FalseyValueParser::new(), default_value = "false")]
    kubernetes: bool,
    /// Namespaces whose HealthChecks are run, comma-separated; empty for all.
    #[arg(long, env = "KH_TARGET_NAMESPACE", default_value = "")]
    namespace: String,
    /// Name of the Lease replicas elect a leader with.
    #[arg(
        long,
        env = "KH_LEADER_ELECTION_NAME",
        default_value = "probity-controller"
    )]
    lease_name: String,
    /// Namespace of the Lease; default: POD_NAMESPACE, else "default".
    #[arg(long, env = "KH_LEADER_ELECTION_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a lease is good for without renewal.
    #[arg(long, env = "KH_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// The leader steps down when it could not renew for this long (shorter than the lease).
    #[arg(long, env = "KH_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often the lease is renewed or tried.
    #[arg(long, env = "KH_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// Succeeded check pods kept per check.
    #[arg(long, env = "KH_MAX_COMPLETED_POD_COUNT", default_value_t = 1)]
    max_completed_pods: usize,
    /// Failed check pods kept per check.
    #[arg(long, env = "KH_MAX_ERROR_POD_COUNT", default_value_t = 2)]
    max_error_pods: usize,
    /// Failed check pods older than this are deleted.
    #[arg(long, env = "KH_ERROR_POD_RETENTION_TIME", default_value = "36h", value_parser = parse_duration)]
    error_pod_retention: Duration,
}

#[derive(Args, Debug)]
struct ReportArgs {
    #[command(flatten)]
    verdict: Verdict,
    /// A number to report beside the verdict, NAME=NUMBER (repeatable, at most 16): kept in the
    /// run's history, drawn on the check's page, exported as probity_check_value.
    #[arg(long = "value", value_name = "NAME=NUMBER", value_parser = parse_value)]
    values: Vec<(String, f64)>,
    /// Ping heartbeat check NAMESPACE/NAME instead of reporting a run: --ok (the job ran),
    /// --error MSG (it failed) or --start (it begins). The token comes from
    /// PROBITY_HEARTBEAT_TOKEN or --token-file.
    #[arg(long, env = "PROBITY_HEARTBEAT", value_name = "NAMESPACE/NAME")]
    heartbeat: Option<String>,
    /// probity's address, for --heartbeat.
    #[arg(
        long,
        env = "PROBITY_URL",
        default_value = "http://probity.probity.svc"
    )]
    url: String,
    /// A file holding the heartbeat token (a mounted Secret's key), for --heartbeat.
    #[arg(long, env = "PROBITY_HEARTBEAT_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Verdict {
    /// The check passed.
    #[arg(long)]
    ok: bool,
    /// The check failed with these errors (one or more).
    #[arg(long = "error", num_args = 1.., value_name = "MSG")]
    errors: Vec<String>,
    /// With --heartbeat: the job begins now (its duration is measured to its next ping).
    #[arg(long, requires = "heartbeat")]
    start: bool,
}

/// `NAME=NUMBER`, the name as a report's `Values` takes it.
fn parse_value(s: &str) -> Result<(String, f64), String> {
    let (name, number) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=NUMBER"))?;
    if let Some(why) = probity::api::run::value_name_problem(name) {
        return Err(why);
    }
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => Ok((name.to_string(), n)),
        _ => Err(format!("{number:?} is not a number")),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One signal (Ctrl-C or SIGTERM) fans out to everything through this channel.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("stopping: finishing runs in flight");
        let _ = tx.send(true);
    });
    rx
}

#[tokio::main]
async fn main() -> ExitCode {
    probity::tune_allocator();
    let cli = Cli::parse();
    // A server logs what it does; one-shot commands only what went wrong.
    // A check pod's log says what its check did, step by step.
    let default_level = if matches!(cli.command, Command::Serve(_) | Command::Check { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in `kubectl logs` or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic is a bug: say so in the log (where operators look), then let the default hook
    // print it as well. The task it happened in ends, and `serve` turns that into exit 2.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("bug: {info}; please report it with this log");
        default_hook(info);
    }));
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("probity: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            print!("{}", crd::yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files, defaults } => {
            let ok = cli::validate_files(&files, &defaults.defaults(), &mut std::io::stdout())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Check { name } => {
            probity::checks::run(&name).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { from, files } => {
            let from = match from.as_str() {
                "gatus" => probity::migrate::Source::Gatus,
                _ => probity::migrate::Source::Kuberhealthy,
            };
            let ok = probity::migrate::migrate_files(
                &files,
                from,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Report(args) if args.heartbeat.is_some() => {
            use probity::api::heartbeat::Beat;
            let check = args.heartbeat.unwrap_or_default();
            let token = match (&args.token_file, std::env::var("PROBITY_HEARTBEAT_TOKEN")) {
                (Some(path), _) => std::fs::read_to_string(path)
                    .with_context(|| format!("--token-file {}", path.display()))?,
                (None, Ok(t)) if !t.trim().is_empty() => t,
                _ => anyhow::bail!(
                    "--heartbeat needs its token: set PROBITY_HEARTBEAT_TOKEN or --token-file"
                ),
            };
            let beat = match (args.verdict.start, args.verdict.ok) {
                (true, _) => Beat::Start,
                (false, true) => Beat::Success,
                (false, false) => Beat::Fail(args.verdict.errors.join("; ")),
            };
            probity::client::heartbeat(&args.url, &check, &beat, &token).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::HeartbeatToken => {
            let token = probity::api::heartbeat::new_token();
            println!("token: {token}");
            println!("tokenHash: {}", probity::api::heartbeat::token_hash(&token));
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            if args.verdict.start {
                anyhow::bail!("--start is for --heartbeat");
            }
            let target = probity::client::this_run()?;
            let values: probity::api::Values = args.values.into_iter().collect();
            if values.len() > probity::api::run::MAX_VALUES {
                anyhow::bail!(
                    "--value: {} values; at most {}",
                    values.len(),
                    probity::api::run::MAX_VALUES
                );
            }
            let result = probity::api::RunResult::reported(args.verdict.ok, args.verdict.errors)
                .with_values(values);
            probity::client::send(&target, &result).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { file, defaults } => {
            let (verdicts, file_errors) = cli::run_file(&file, defaults.defaults(), &host_name())
                .await
                .with_context(|| format!("running {}", file.display()))?;
            for e in &file_errors {
                println!("ERROR {e}");
            }
            for v in &verdicts {
                println!("{v}");
            }
            let ok =
                file_errors.is_empty() && !verdicts.is_empty() && verdicts.iter().all(|v| v.ok());
            if verdicts.is_empty() {
                println!("no checks in {}", file.display());
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Serve(a) => {
            let identity = a
                .identity
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(host_name);
            let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
            let kubernetes = a.kube.kubernetes || in_cluster;
            // A mistake in the file stops the start, naming the field: a configuration that
            // silently sends nothing is found at the first outage.
            let alerting = match &a.alerting_config {
                Some(p) => Some(
                    probity::alert::reload::Source::load(p.clone()).context("--alerting-config")?,
                ),
                None => None,
            };
            let settings = Settings {
                listen_address: a.listen_address,
                identity: identity.clone(),
                defaults: a.defaults.defaults(),
                // Pods take seconds to start: a cluster keeps more in flight.
                max_concurrent_runs: a.max_concurrent_runs.unwrap_or(if kubernetes {
                    1000
                } else {
                    100
                }),
                first_run_window: a.first_run_window,
                metrics: MetricsConfig {
                    suppress_error_label: a.prom_suppress_error_label,
                    error_label_max_length: a.prom_error_label_max_length,
                    per_check_detail: a.per_check_detail,
                },
                run_token: Some(a.run_token).filter(|t| !t.is_empty()),
                http: a.http.limits(),
                alerting,
            };
            if kubernetes {
                let k = a.kube;
                let pod_namespace = std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty());
                let lease_namespace = k
                    .lease_namespace
                    .filter(|s| !s.is_empty())
                    .or(pod_namespace.clone())
                    .unwrap_or_else(|| "default".into());
                let report_url = a.report_url.unwrap_or_else(|| {
                    kube::default_report_url(
                        pod_namespace.as_deref().unwrap_or(&lease_namespace),
                        |k| std::env::var(k).ok(),
                    )
                });
                let cfg = KubeConfig {
                    report_url,
                    namespaces: Namespaces::parse(&k.namespace),
                    lease: LeaseConfig {
                        name: k.lease_name,
                        namespace: lease_namespace,
                        identity,
                        lease_duration: k.lease_duration,
                        renew_deadline: k.renew_deadline,
                        retry_period: k.retry_period,
                    },
                    retention: Retention {
                        succeeded: k.max_completed_pods,
                        failed: k.max_error_pods,
                        failed_max_age: k.error_pod_retention,
                    },
                };
                kube::serve(settings, cfg, shutdown_signal()).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let cfg = LocalConfig {
                checks_dir: a.checks,
                state_dir: a.state_dir,
                report_url: a.report_url,
                shutdown_grace: a.shutdown_grace,
                poll_interval: a.watch_interval,
                kubeconfig: a.kubeconfig,
            };
            local::serve(settings, cfg, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
