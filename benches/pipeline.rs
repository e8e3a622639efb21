//! Throughput of the whole pipeline against the broker's own limit, in one run:
//!
//! 1. A backlog of three-channel jobs is published to a fresh quorum queue, and a trivial
//!    lapin consumer with Herald's default prefetch drains it, acknowledging each delivery.
//!    This is the most any consumer on this machine and broker can do.
//! 2. The same backlog is published to another fresh queue, and the release `herald run`
//!    binary drains it, sending every channel through `herald sandbox` at zero latency.
//!
//! Both phases time from the first settled delivery to the last, so connection set-up and
//! the publishing of the backlog are left out. Herald's rate limits and per-provider
//! concurrency are raised far above the offered load, so neither one paces the run.
//!
//! Run with `cargo bench --bench pipeline`; `HERALD_BENCH_JOBS` sets the backlog size.
//! It needs RabbitMQ at 127.0.0.1:5672 (`bash .ci/services` starts it).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Herald's default `broker.prefetch`, used by the raw consumer too.
const PREFETCH: u16 = 256;
const DEFAULT_JOBS: usize = 20_000;
const JOBS_VARIABLE: &str = "HERALD_BENCH_JOBS";
/// Rate and burst far above what Herald reaches against the sandbox, and an in-flight cap
/// above the 256 workers of `pool.workers`, so neither the token bucket nor the cap paces
/// the run.
const UNLIMITED_RATE: &str = "1000000";
const UNLIMITED_IN_FLIGHT: &str = "4096";
const PROVIDERS: [&str; 3] = ["SENDGRID", "TWILIO", "FCM"];
const CHANNELS: [&str; 3] = ["email", "sms", "push"];
/// How often Herald's metrics are read while it drains the queue. It bounds the timing
/// error at the start and end of the measured window.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const SERVICE_ACCOUNT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fcm-service-account.json"
);
/// Cargo builds this binary with the bench profile, which inherits `release`, before it
/// runs the bench, so it is the same binary `cargo build --release` produces.
const HERALD_BINARY: &str = env!("CARGO_BIN_EXE_herald");

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("failed to start the tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pipeline bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let jobs = jobs_from_env()?;
    let scratch = tempfile::tempdir().context("failed to create a temporary directory")?;
    let backlog = write_backlog(scratch.path(), jobs)?;
    println!("pipeline bench: {jobs} jobs, each requesting email, sms and push");
    println!("herald binary: {HERALD_BINARY} (release profile, built by cargo before the run)");
    println!(
        "provider limits raised for the run: per_second and burst {UNLIMITED_RATE}, \
         max_in_flight {UNLIMITED_IN_FLIGHT}"
    );
    // Other work on the machine shares the cores with both phases, so the load is part of
    // the result.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before the run (1, 5, 15 min): {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let raw_queue = Topology::new("raw");
    let raw = measure_phase(&raw_queue, || measure_raw(&raw_queue, &backlog, jobs)).await;
    let herald_queue = Topology::new("herald");
    let herald = measure_phase(&herald_queue, || {
        measure_herald(&herald_queue, &backlog, jobs, scratch.path())
    })
    .await;

    print_results(jobs, &raw?, &herald?);
    Ok(())
}

fn jobs_from_env() -> anyhow::Result<usize> {
    let Ok(text) = std::env::var(JOBS_VARIABLE) else {
        return Ok(DEFAULT_JOBS);
    };
    let jobs: usize = text
        .parse()
        .with_context(|| format!("{JOBS_VARIABLE}={text} is not a whole number"))?;
    ensure!(jobs >= 2, "{JOBS_VARIABLE} must be at least 2, got {jobs}");
    Ok(jobs)
}

/// Writes `jobs` sample jobs, one JSON object per line, for `herald publish`.
fn write_backlog(dir: &Path, jobs: usize) -> anyhow::Result<PathBuf> {
    let channels = CHANNELS.map(String::from);
    let mut text = Vec::new();
    for body in herald::publish::example_bodies(jobs as u64, &channels) {
        text.extend_from_slice(&body);
        text.push(b'\n');
    }
    let path = dir.join("backlog.jsonl");
    std::fs::write(&path, text).context("failed to write the backlog file")?;
    Ok(path)
}

/// Runs one phase and then deletes its queues and exchanges, whether the phase succeeded.
async fn measure_phase<T, F>(topology: &Topology, phase: impl FnOnce() -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let result = phase().await;
    if let Err(error) = topology.delete().await {
        eprintln!(
            "failed to delete the queues and exchanges named {}.*: {error:#}",
            topology.prefix
        );
    }
    result
}

/// A drained backlog: how many deliveries were timed and how long they took.
struct Measurement {
    /// Deliveries settled after the first one, which opens the timed window.
    settled: u64,
    elapsed: Duration,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.settled as f64 / self.elapsed.as_secs_f64()
    }
}

/// Measures a trivial consumer: take a delivery, acknowledge it, repeat.
async fn measure_raw(
    topology: &Topology,
    backlog: &Path,
    jobs: usize,
) -> anyhow::Result<Measurement> {
    println!("\nphase 1: raw consume-and-ack");
    publish_backlog(topology, backlog, jobs).await?;

    let connection = connect().await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            topology.queue().as_str().into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let deadline = Instant::now() + drain_timeout(jobs);
    let mut first = None;
    let mut acked = 0;
    while acked < jobs {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .with_context(|| format!("timed out: only {acked} of {jobs} deliveries arrived"))?;
        let delivery = next.context("the broker cancelled the consumer")??;
        delivery.ack(BasicAckOptions::default()).await?;
        acked += 1;
        first.get_or_insert_with(Instant::now);
    }
    let elapsed = first.map(|start| start.elapsed()).unwrap_or_default();
    let _ = connection.close(200, "bench done".into()).await;

    let measurement = Measurement {
        settled: jobs as u64 - 1,
        elapsed,
    };
    println!("  drained in {:.2} s", measurement.elapsed.as_secs_f64());
    Ok(measurement)
}

/// Herald's end-to-end result: throughput and the process's peak resident memory.
struct HeraldRun {
    measurement: Measurement,
    peak_rss_kib: u64,
}

/// Measures `herald run` draining the backlog through the sandbox.
async fn measure_herald(
    topology: &Topology,
    backlog: &Path,
    jobs: usize,
    scratch: &Path,
) -> anyhow::Result<HeraldRun> {
    println!("\nphase 2: herald run end to end, through herald sandbox at zero latency");
    topology.create_database().await?;
    publish_backlog(topology, backlog, jobs).await?;

    let sandbox = Sandbox::start().await?;
    let mut herald = HeraldProcess::start(topology, &sandbox.url, scratch).await?;
    println!(
        "  herald pid {}, admin {}, sandbox {}",
        herald.pid, herald.admin, sandbox.url
    );

    let drained = herald.wait_until_completed(jobs).await;
    let peak_rss_kib = peak_rss_kib(herald.pid);
    herald.stop().await;
    let checked = match &drained {
        Ok(_) => check_sandbox(&sandbox.url, jobs).await,
        Err(_) => Ok(()),
    };
    sandbox.stop().await;

    let measurement = drained?;
    checked?;
    println!("  drained in {:.2} s", measurement.elapsed.as_secs_f64());
    Ok(HeraldRun {
        measurement,
        peak_rss_kib: peak_rss_kib?,
    })
}

/// Generous time for one drain: a minute plus 10 ms a job, far beyond either phase's pace.
fn drain_timeout(jobs: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(10) * jobs as u32
}

/// Publishes the backlog with `herald publish`, which declares the same quorum-queue
/// topology that `herald run` declares, so both phases drain identical queues.
async fn publish_backlog(topology: &Topology, backlog: &Path, jobs: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let output = Command::new(HERALD_BINARY)
        .arg("publish")
        .arg(backlog)
        .envs(topology.env())
        .stdin(Stdio::null())
        .output()
        .await
        .context("failed to run herald publish")?;
    if !output.status.success() {
        bail!(
            "herald publish failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    println!(
        "  published {jobs} jobs to {} in {:.2} s",
        topology.queue(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn connect() -> anyhow::Result<Connection> {
    Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context(
            "failed to connect to RabbitMQ at 127.0.0.1:5672; start it with `bash .ci/services`",
        )
}

/// Exchange and queue names unique to one phase of one run.
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432";

struct Topology {
    prefix: String,
}

impl Topology {
    fn new(phase: &str) -> Topology {
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
        Topology {
            prefix: format!("herald-bench.{stamp}.{phase}"),
        }
    }

    fn queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Returns the name of this run's ledger database.
    fn database(&self) -> String {
        self.prefix.replace(['.', '-'], "_")
    }

    /// Creates this run's ledger database, so the measured run starts on an empty ledger.
    async fn create_database(&self) -> anyhow::Result<()> {
        let admin = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/postgres")).await?;
        let create = format!("CREATE DATABASE \"{}\"", self.database());
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(())
    }

    fn exchanges(&self) -> [String; 3] {
        [
            self.prefix.clone(),
            format!("{}.dead", self.prefix),
            format!("{}.delay", self.prefix),
        ]
    }

    /// Returns the broker settings that point Herald at this topology.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("HERALD__BROKER__URL", AMQP_URL.to_owned()),
            ("HERALD__BROKER__EXCHANGE", self.prefix.clone()),
            ("HERALD__BROKER__QUEUE", self.queue()),
            (
                "HERALD__BROKER__DEAD_LETTER_EXCHANGE",
                format!("{}.dead", self.prefix),
            ),
            (
                "HERALD__BROKER__DEAD_LETTER_QUEUE",
                format!("{}.dead", self.prefix),
            ),
            (
                "HERALD__BROKER__DELAY_EXCHANGE",
                format!("{}.delay", self.prefix),
            ),
            (
                "HERALD__BROKER__DELAY_QUEUE_PREFIX",
                format!("{}.delay", self.prefix),
            ),
            ("HERALD__RETRY__DELAY_TIERS_SECS", "5".to_owned()),
            (
                "HERALD__LEDGER__URL",
                format!("{POSTGRES_URL}/{}", self.database()),
            ),
            (
                "HERALD__LEDGER__RECIPIENT_HASH_KEY",
                "herald-bench-recipient-hash-key".to_owned(),
            ),
            ("HERALD__BROKER__PREFETCH", PREFETCH.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    async fn delete(&self) -> anyhow::Result<()> {
        let admin = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/postgres")).await?;
        let drop = format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.database()
        );
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&admin)
            .await?;
        admin.close().await;
        let connection = connect().await?;
        let channel = connection.create_channel().await?;
        for queue in [
            self.queue(),
            format!("{}.dead", self.prefix),
            format!("{}.delay.5s", self.prefix),
        ] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in self.exchanges() {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = connection.close(200, "bench done".into()).await;
        Ok(())
    }
}

/// `herald sandbox` as a child process on a port the OS chose.
struct Sandbox {
    child: Child,
    url: String,
}

impl Sandbox {
    async fn start() -> anyhow::Result<Sandbox> {
        let mut child = Command::new(HERALD_BINARY)
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .env("HERALD__LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start herald sandbox")?;
        let stdout = child
            .stdout
            .take()
            .context("herald sandbox standard output was not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("timed out waiting for herald sandbox to start")??
            .context("herald sandbox exited during start")?;
        let url = line
            .strip_prefix("sandbox listening on ")
            .with_context(|| format!("unexpected first line from herald sandbox: {line}"))?
            .to_owned();
        Ok(Sandbox { child, url })
    }

    async fn stop(mut self) {
        stop_child(&mut self.child, "herald sandbox").await;
    }
}

/// `herald run` as a child process, with its admin address read from its JSON log.
struct HeraldProcess {
    child: Child,
    pid: u32,
    admin: String,
    client: reqwest::Client,
}

impl HeraldProcess {
    async fn start(
        topology: &Topology,
        sandbox_url: &str,
        scratch: &Path,
    ) -> anyhow::Result<HeraldProcess> {
        let mut child = Command::new(HERALD_BINARY)
            .arg("--config")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/sandbox.toml"))
            .arg("run")
            .envs(topology.env())
            .envs(sandbox_env(sandbox_url))
            .envs(unlimited_providers_env())
            .env("HERALD__ADMIN__LISTEN", "127.0.0.1:0")
            .env("HERALD__LOG__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start herald run")?;
        let pid = child.id().context("herald run exited at once")?;
        let stderr = child
            .stderr
            .take()
            .context("herald run standard error was not piped")?;
        let log_path = scratch.join("herald.log");
        let admin = tokio::time::timeout(START_TIMEOUT, watch_log(stderr, log_path.clone()))
            .await
            .with_context(|| {
                format!(
                    "herald run did not bind its admin port in time; see {}",
                    log_path.display()
                )
            })??;
        Ok(HeraldProcess {
            child,
            pid,
            admin,
            client: reqwest::Client::new(),
        })
    }

    /// Polls `herald_jobs_completed_total` until it reaches `jobs`, and times the window from
    /// the first poll that reads a completed job to the poll that reads the last.
    async fn wait_until_completed(&mut self, jobs: usize) -> anyhow::Result<Measurement> {
        let deadline = Instant::now() + drain_timeout(jobs);
        let mut first: Option<(Instant, u64)> = None;
        loop {
            let completed = self.completed_jobs().await?;
            let now = Instant::now();
            if completed > 0 && first.is_none() {
                first = Some((now, completed));
            }
            if completed >= jobs as u64 {
                let (start, at_start) = first.expect("set once completed is above zero");
                return Ok(Measurement {
                    settled: completed - at_start,
                    elapsed: now - start,
                });
            }
            if now >= deadline {
                bail!("timed out: herald completed only {completed} of {jobs} jobs");
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("herald run exited early with {status}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Returns `herald_jobs_completed_total` summed over outcomes, and fails when any job
    /// ended other than delivered, because then the run did not measure the happy path.
    async fn completed_jobs(&self) -> anyhow::Result<u64> {
        let url = format!("http://{}/metrics", self.admin);
        let text = self
            .client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut total = 0;
        for line in text
            .lines()
            .filter(|line| line.starts_with("herald_jobs_completed_total{"))
        {
            let (series, value) = line
                .rsplit_once(' ')
                .context("a metrics line has no value")?;
            let value: f64 = value.parse().context("a metrics value is not a number")?;
            ensure!(
                series.contains("outcome=\"delivered\"") || value == 0.0,
                "some jobs were not delivered: {line}"
            );
            total += value as u64;
        }
        Ok(total)
    }

    async fn stop(mut self) {
        stop_child(&mut self.child, "herald run").await;
    }
}

/// Copies Herald's log to `path`, and returns the admin address from the line that
/// announces it. Copying goes on in the background, so the pipe never fills.
async fn watch_log(stderr: tokio::process::ChildStderr, path: PathBuf) -> anyhow::Result<String> {
    let mut file = tokio::fs::File::create(&path).await?;
    let mut lines = BufReader::new(stderr).lines();
    let (found, admin) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut found = Some(found);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = admin_address(&line)
                && let Some(sender) = found.take()
            {
                let _ = sender.send(address);
            }
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
        let _ = file.flush().await;
    });
    admin
        .await
        .with_context(|| format!("herald run exited during start; see {}", path.display()))
}

fn admin_address(line: &str) -> Option<String> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    if entry.get("message")?.as_str()? != "admin server listening" {
        return None;
    }
    Some(entry.get("admin")?.as_str()?.to_owned())
}

/// Points every provider at the sandbox, with the test fixture's throwaway FCM key.
fn sandbox_env(url: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = PROVIDERS
        .iter()
        .map(|provider| {
            (
                format!("HERALD__PROVIDERS__{provider}__BASE_URL"),
                url.to_owned(),
            )
        })
        .collect();
    env.push((
        "HERALD__PROVIDERS__FCM__TOKEN_URL".to_owned(),
        format!("{url}/token"),
    ));
    env.push((
        "HERALD__PROVIDERS__FCM__SERVICE_ACCOUNT_FILE".to_owned(),
        SERVICE_ACCOUNT.to_owned(),
    ));
    env
}

fn unlimited_providers_env() -> Vec<(String, String)> {
    let mut env = Vec::new();
    for provider in PROVIDERS {
        let prefix = format!("HERALD__PROVIDERS__{provider}");
        env.push((
            format!("{prefix}__RATE_LIMIT__PER_SECOND"),
            UNLIMITED_RATE.to_owned(),
        ));
        env.push((
            format!("{prefix}__RATE_LIMIT__BURST"),
            UNLIMITED_RATE.to_owned(),
        ));
        env.push((
            format!("{prefix}__MAX_IN_FLIGHT"),
            UNLIMITED_IN_FLIGHT.to_owned(),
        ));
    }
    env
}

/// Checks that the sandbox received exactly one request per channel and job, and that it
/// accepted each one (SendGrid replies 202, Twilio 201, FCM 200).
async fn check_sandbox(url: &str, jobs: usize) -> anyhow::Result<()> {
    let stats: herald::sandbox::Stats = reqwest::get(format!("{url}/sandbox/stats"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let expected = (jobs * CHANNELS.len()) as u64;
    let succeeded: u64 = stats
        .by_provider
        .values()
        .flat_map(|statuses| statuses.iter())
        .filter(|(status, _)| (200..300).contains(*status))
        .map(|(_, count)| count)
        .sum();
    ensure!(
        stats.total == expected && succeeded == expected,
        "the sandbox received {} requests ({succeeded} answered 2xx), expected {expected}",
        stats.total
    );
    println!("  sandbox answered all {succeeded} provider requests with 2xx");
    Ok(())
}

/// Reads the peak resident set size (`VmHWM`) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .with_context(|| format!("{path} has no VmHWM line"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("VmHWM in {path} is not a number: {line}"))
}

/// Sends SIGTERM, waits for the process to exit, and kills it if it has not exited in time.
async fn stop_child(child: &mut Child, name: &str) {
    let Some(pid) = child.id() else {
        return;
    };
    let signalled = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .is_ok_and(|status| status.success());
    if signalled
        && tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_ok()
    {
        return;
    }
    eprintln!("{name} did not stop after SIGTERM; killing it");
    let _ = child.kill().await;
}

fn print_results(jobs: usize, raw: &Measurement, herald: &HeraldRun) {
    let raw_rate = raw.per_second();
    let herald_rate = herald.measurement.per_second();
    println!("\n| measurement | jobs | timed | seconds | jobs/s |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| raw lapin consume and ack, prefetch {PREFETCH} | {jobs} | {} | {:.2} | {raw_rate:.0} |",
        raw.settled,
        raw.elapsed.as_secs_f64()
    );
    println!(
        "| herald run, 3 channels through the sandbox | {jobs} | {} | {:.2} | {herald_rate:.0} |",
        herald.measurement.settled,
        herald.measurement.elapsed.as_secs_f64()
    );
    println!("\n| result | value |");
    println!("|---|---:|");
    println!("| herald / raw rate | {:.3} |", herald_rate / raw_rate);
    println!(
        "| herald peak memory (VmHWM) | {:.1} MiB |",
        herald.peak_rss_kib as f64 / 1024.0
    );
}
