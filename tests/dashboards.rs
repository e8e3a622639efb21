#![allow(unreachable_pub)]

//! Checks that every metric the Grafana dashboard and the chart's alert rules query is one
//! that Herald exports. Herald runs in-process against RabbitMQ at 127.0.0.1:5672
//! (guest/guest), with its own exchanges and queues, and the test reads the `# TYPE` lines
//! of its `/metrics`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use herald::app::Herald;
use herald::config::Settings;
use herald::shutdown::Shutdown;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Port 9 (discard) on loopback: nothing listens, and this test sends nothing to providers.
const NO_PROVIDER: &str = "http://127.0.0.1:9";

/// Files whose queries must name only exported metrics, relative to the crate root.
const QUERY_SOURCES: &[&str] = &[
    "docs/grafana/herald-dashboard.json",
    "helm/herald/files/herald-dashboard.json",
    "helm/herald/templates/prometheusrule.yaml",
];

#[tokio::test]
async fn dashboard_and_alert_metrics_are_exported() {
    let referenced = referenced_metrics();
    assert!(
        referenced.len() >= 10,
        "found only {referenced:?} in {QUERY_SOURCES:?}; the extraction is broken"
    );

    let names = Names::unique();
    require_broker().await;
    names.create_database().await;
    let shutdown = Shutdown::new();
    let herald = Herald::start(settings(&names), shutdown.clone())
        .await
        .expect("Herald starts with the test settings");
    let metrics = wait_for_consuming(herald.admin_addr()).await;
    let exported = exported_families(&metrics);

    shutdown.stop();
    tokio::time::timeout(Duration::from_secs(30), herald.wait())
        .await
        .expect("Herald stops within 30 s");
    names.delete().await;

    // A name that src/metrics.rs does not define is a typo in a query. This check holds
    // whichever label sets Herald has used.
    let defined = defined_metrics();
    let undefined: Vec<&String> = referenced.difference(&defined).collect();
    assert!(
        undefined.is_empty(),
        "dashboard or alert rules query metrics that src/metrics.rs does not define: {undefined:?}"
    );

    let missing: Vec<&String> = referenced.difference(&exported).collect();
    // NOTE: the prometheus crate lists a labelled family only after one of its label sets
    // has been used. Until Herald registers its known label sets at start, families such as
    // herald_channel_sends_total are missing from a Herald that has handled no job, and this
    // assertion fails. A failure that names only labelled families has that cause.
    assert!(
        missing.is_empty(),
        "dashboard or alert rules query metrics that /metrics does not list: {missing:?}\n\
         exported families: {exported:?}"
    );
}

/// Returns every `herald_*` metric name in the query sources, histogram series mapped to
/// their family name.
fn referenced_metrics() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = BTreeSet::new();
    for source in QUERY_SOURCES {
        let path = root.join(source);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
        names.extend(metric_names(&text).map(|name| family_name(&name).to_owned()));
    }
    names
}

/// Returns the metric names that src/metrics.rs passes to the prometheus crate.
fn defined_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
    source
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix('"')?.strip_suffix("\","))
        .filter(|name| name.starts_with("herald_"))
        .map(str::to_owned)
        .collect()
}

/// Yields each `herald_[a-z_]+` token of `text` that does not continue a longer identifier.
fn metric_names(text: &str) -> impl Iterator<Item = String> + '_ {
    let bytes = text.as_bytes();
    text.match_indices("herald_").filter_map(move |(start, _)| {
        let preceded_by_identifier =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if preceded_by_identifier {
            return None;
        }
        let length = text[start..]
            .bytes()
            .take_while(|byte| byte.is_ascii_lowercase() || *byte == b'_')
            .count();
        Some(text[start..start + length].trim_end_matches('_').to_owned())
    })
}

/// Maps a histogram series (`_bucket`, `_sum`, `_count`) to its family name.
fn family_name(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}

/// Returns the family names of the `# TYPE` lines in a Prometheus text exposition.
fn exported_families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_extracts_whole_tokens() {
    let text = r#"rate(herald_provider_request_duration_seconds_bucket{job="x"}[5m]) my_herald_x herald.fullname"#;
    let names: Vec<String> = metric_names(text).collect();
    assert_eq!(names, ["herald_provider_request_duration_seconds_bucket"]);
    assert_eq!(
        family_name("herald_provider_request_duration_seconds_bucket"),
        "herald_provider_request_duration_seconds"
    );
    assert_eq!(
        family_name("herald_jobs_received_total"),
        "herald_jobs_received_total"
    );
}

/// Exchange and queue names unique to one run, so runs cannot interfere.
struct Names {
    exchange: String,
    queue: String,
    dead_letter_exchange: String,
    dead_letter_queue: String,
    delay_exchange: String,
    delay_queue_prefix: String,
    database: String,
}

/// The one delay tier this test declares, in seconds.
const DELAY_TIER: &str = "1";

impl Names {
    fn unique() -> Names {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let prefix = format!("herald-test.dashboards.{nanos}");
        Names {
            exchange: format!("{prefix}.exchange"),
            queue: format!("{prefix}.jobs"),
            dead_letter_exchange: format!("{prefix}.dead-exchange"),
            dead_letter_queue: format!("{prefix}.dead"),
            delay_exchange: format!("{prefix}.delay-exchange"),
            delay_queue_prefix: format!("{prefix}.delay"),
            database: format!("herald_dashboards_{nanos}"),
        }
    }

    async fn create_database(&self) {
        let admin = postgres().await;
        let create = format!("CREATE DATABASE \"{}\"", self.database);
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
            .expect("the test database is created");
        admin.close().await;
    }

    async fn delete(&self) {
        let admin = postgres().await;
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
        admin.close().await;
        let connection = connect().await;
        let channel = connection.create_channel().await.expect("channel opens");
        let delay_queue = format!("{}.{DELAY_TIER}s", self.delay_queue_prefix);
        for queue in [&self.queue, &self.dead_letter_queue, &delay_queue] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [
            &self.exchange,
            &self.dead_letter_exchange,
            &self.delay_exchange,
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

fn settings(names: &Names) -> Settings {
    let ledger_url = format!("{POSTGRES_URL}/{}", names.database);
    let service_account = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fcm-service-account.json"
    );
    let env = [
        ("HERALD__ADMIN__LISTEN", "127.0.0.1:0"),
        ("HERALD__BROKER__URL", AMQP_URL),
        ("HERALD__BROKER__EXCHANGE", names.exchange.as_str()),
        ("HERALD__BROKER__QUEUE", names.queue.as_str()),
        (
            "HERALD__BROKER__DEAD_LETTER_EXCHANGE",
            names.dead_letter_exchange.as_str(),
        ),
        (
            "HERALD__BROKER__DEAD_LETTER_QUEUE",
            names.dead_letter_queue.as_str(),
        ),
        (
            "HERALD__BROKER__DELAY_EXCHANGE",
            names.delay_exchange.as_str(),
        ),
        (
            "HERALD__BROKER__DELAY_QUEUE_PREFIX",
            names.delay_queue_prefix.as_str(),
        ),
        ("HERALD__RETRY__DELAY_TIERS_SECS", DELAY_TIER),
        ("HERALD__LEDGER__URL", ledger_url.as_str()),
        (
            "HERALD__LEDGER__RECIPIENT_HASH_KEY",
            "dashboards-test-recipient-hash-key",
        ),
        ("HERALD__PROVIDERS__SENDGRID__BASE_URL", NO_PROVIDER),
        ("HERALD__PROVIDERS__SENDGRID__API_KEY", "SG.test-key"),
        // A second email provider, so the failover series exist.
        ("HERALD__PROVIDERS__BACKUP__KIND", "sendgrid"),
        ("HERALD__PROVIDERS__BACKUP__BASE_URL", NO_PROVIDER),
        ("HERALD__PROVIDERS__BACKUP__API_KEY", "SG.backup-key"),
        (
            "HERALD__PROVIDERS__BACKUP__FROM_EMAIL",
            "backup@example.com",
        ),
        ("HERALD__PROVIDERS__BACKUP__MAX_IN_FLIGHT", "4"),
        ("HERALD__PROVIDERS__BACKUP__RATE_LIMIT__PER_SECOND", "5"),
        ("HERALD__PROVIDERS__BACKUP__RATE_LIMIT__BURST", "5"),
        ("HERALD__CHANNELS__EMAIL", "sendgrid,backup"),
        ("HERALD__PROVIDERS__TWILIO__BASE_URL", NO_PROVIDER),
        (
            "HERALD__PROVIDERS__TWILIO__ACCOUNT_SID",
            "AC00000000000000000000000000000000",
        ),
        ("HERALD__PROVIDERS__TWILIO__AUTH_TOKEN", "twilio-test-token"),
        ("HERALD__PROVIDERS__TWILIO__FROM", "+15555550100"),
        ("HERALD__PROVIDERS__FCM__BASE_URL", NO_PROVIDER),
        ("HERALD__PROVIDERS__FCM__TOKEN_URL", NO_PROVIDER),
        ("HERALD__PROVIDERS__FCM__PROJECT_ID", "herald-test"),
        (
            "HERALD__PROVIDERS__FCM__SERVICE_ACCOUNT_FILE",
            service_account,
        ),
        // One webhook endpoint, so the per-endpoint series exist.
        ("HERALD__CHANNELS__WEBHOOK", "webhook"),
        (
            "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__EXAMPLE__URL",
            NO_PROVIDER,
        ),
        (
            "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__EXAMPLE__SIGNING_SECRETS",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    Settings::load_with_env(None, env).expect("the test settings are valid")
}

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// Opens a pool on the server's `postgres` database, failing the test with instructions
/// when PostgreSQL is not running.
async fn postgres() -> sqlx::PgPool {
    sqlx::PgPool::connect(&format!("{POSTGRES_URL}/postgres"))
        .await
        .unwrap_or_else(|error| {
            panic!("this test needs PostgreSQL at 127.0.0.1:5432 (user postgres), which failed: {error}; start it with `bash .ci/services`")
        })
}

async fn connect() -> Connection {
    Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap_or_else(|error| {
            panic!(
                "this test needs RabbitMQ at 127.0.0.1:5672 (guest/guest), which failed: {error}"
            )
        })
}

/// Fails the test with instructions when RabbitMQ is not reachable.
async fn require_broker() {
    let connection = connect().await;
    let _ = connection.close(200, "reachable".into()).await;
}

/// Polls `/metrics` until Herald reports that it consumes, and returns that exposition.
async fn wait_for_consuming(admin: std::net::SocketAddr) -> String {
    let url = format!("http://{admin}/metrics");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = client
            .get(&url)
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .expect("GET /metrics succeeds")
            .text()
            .await
            .expect("/metrics returns text");
        if body.lines().any(|line| line == "herald_consuming 1") {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Herald did not start consuming within 30 s; last /metrics:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
