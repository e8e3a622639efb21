//! Shared fixtures: a fresh RabbitMQ topology per test, provider mocks, and Herald run as
//! a child process with JSON logs captured for assertions.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432";
pub const RECIPIENT_HASH_KEY: &str = "e2e-test-recipient-hash-key-0123456789";
pub const TWILIO_SID: &str = "AC00000000000000000000000000000000";
pub const FCM_PROJECT: &str = "herald-test";
pub const SERVICE_ACCOUNT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fcm-service-account.json"
);

/// Opens a connection to the test broker, failing the test with instructions when RabbitMQ
/// is not running.
pub async fn broker() -> Connection {
    Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap_or_else(|error| {
            panic!(
                "these tests need RabbitMQ at 127.0.0.1:5672 (guest/guest), which failed: {error}. \
                 Start it with `bash .ci/services`."
            )
        })
}

/// Opens a pool on the server's `postgres` database, failing the test with instructions
/// when PostgreSQL is not running.
pub async fn postgres() -> sqlx::PgPool {
    sqlx::PgPool::connect(&format!("{POSTGRES_URL}/postgres"))
        .await
        .unwrap_or_else(|error| {
            panic!(
                "these tests need PostgreSQL at 127.0.0.1:5432 (user postgres, no password), which failed: {error}. \
                 Start it with `bash .ci/services`."
            )
        })
}

/// Creates the ledger database that `env` points Herald at, unless it exists.
pub async fn create_ledger_database(env: &[(String, String)]) {
    let Some((_, url)) = env.iter().find(|(key, _)| key == "HERALD__LEDGER__URL") else {
        return;
    };
    let name = url.rsplit('/').next().unwrap();
    let admin = postgres().await;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&admin)
        .await
        .unwrap();
    if exists.is_none() {
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
}

/// Exchange and queue names unique to one test, so tests can run in parallel.
pub struct Topology {
    /// The ledger database of this test, created when Herald first starts on it.
    pub database: String,
    pub exchange: String,
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub delay_exchange: String,
    pub delay_queue_prefix: String,
    pub events_exchange: String,
    /// A queue bound to the events exchange, for tests that read events.
    pub events_queue: String,
}

/// Delay tiers of test runs, in seconds: short, so delayed retries come back quickly.
pub const DELAY_TIERS: [u64; 2] = [1, 2];

impl Topology {
    pub fn new(test: &str) -> Topology {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("herald-test.{test}.{nanos}");
        Topology {
            database: format!("herald_e2e_{}_{nanos}", test.replace('-', "_")),
            exchange: format!("{prefix}.exchange"),
            queue: format!("{prefix}.jobs"),
            dead_letter_exchange: format!("{prefix}.dead-exchange"),
            dead_letter_queue: format!("{prefix}.dead"),
            delay_exchange: format!("{prefix}.delay-exchange"),
            delay_queue_prefix: format!("{prefix}.delay"),
            events_exchange: format!("{prefix}.events"),
            events_queue: format!("{prefix}.events-seen"),
        }
    }

    /// Returns the delay queue of `seconds`.
    pub fn delay_queue(&self, seconds: u64) -> String {
        format!("{}.{seconds}s", self.delay_queue_prefix)
    }

    /// Returns the jobs still waiting: ready in the work queue or in a delay queue.
    pub async fn waiting(&self) -> u32 {
        let mut total = self.depth(&self.queue).await;
        for seconds in DELAY_TIERS {
            total += self.depth(&self.delay_queue(seconds)).await;
        }
        total
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            env_pair("HERALD__BROKER__URL", AMQP_URL),
            env_pair("HERALD__BROKER__EXCHANGE", &self.exchange),
            env_pair("HERALD__BROKER__QUEUE", &self.queue),
            env_pair(
                "HERALD__BROKER__DEAD_LETTER_EXCHANGE",
                &self.dead_letter_exchange,
            ),
            env_pair("HERALD__BROKER__DEAD_LETTER_QUEUE", &self.dead_letter_queue),
            env_pair(
                "HERALD__LEDGER__URL",
                &format!("{POSTGRES_URL}/{}", self.database),
            ),
            env_pair("HERALD__LEDGER__RECIPIENT_HASH_KEY", RECIPIENT_HASH_KEY),
            env_pair("HERALD__BROKER__DELAY_EXCHANGE", &self.delay_exchange),
            env_pair(
                "HERALD__BROKER__DELAY_QUEUE_PREFIX",
                &self.delay_queue_prefix,
            ),
            env_pair("HERALD__BROKER__EVENTS_EXCHANGE", &self.events_exchange),
            env_pair(
                "HERALD__RETRY__DELAY_TIERS_SECS",
                &DELAY_TIERS.map(|tier| tier.to_string()).join(","),
            ),
        ]
    }

    /// Publishes raw bodies to the work exchange and waits for the broker's confirms.
    pub async fn publish(&self, bodies: &[Vec<u8>]) {
        let connection = broker().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    "jobs".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await.unwrap();
            assert!(confirmation.is_ack(), "broker did not confirm a publish");
            assert!(
                confirmation.take_message().is_none(),
                "a publish was unroutable"
            );
        }
        connection.close(200, "done".into()).await.unwrap();
    }

    pub async fn publish_jobs(&self, jobs: &[serde_json::Value]) {
        let bodies: Vec<Vec<u8>> = jobs
            .iter()
            .map(|job| job.to_string().into_bytes())
            .collect();
        self.publish(&bodies).await;
    }

    /// Returns the number of ready messages in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        let connection = broker().await;
        let channel = connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        connection.close(200, "done".into()).await.unwrap();
        declared.message_count()
    }

    /// Takes every message from `queue`, acknowledging each.
    pub async fn drain(&self, queue: &str) -> Vec<Message> {
        let connection = broker().await;
        let channel = connection.create_channel().await.unwrap();
        let mut messages = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            message
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
            messages.push(Message {
                routing_key: message.delivery.routing_key.to_string(),
                body: message.delivery.data.clone(),
                headers: text_headers(message.delivery.properties.headers().as_ref()),
            });
        }
        connection.close(200, "done".into()).await.unwrap();
        messages
    }

    /// Declares the events exchange as Herald does and binds [`Topology::events_queue`] to
    /// it with `pattern`, so events published from now on wait there.
    pub async fn bind_events(&self, pattern: &str) {
        let connection = broker().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                self.events_exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(
                self.events_queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                self.events_queue.as_str().into(),
                self.events_exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        connection.close(200, "done".into()).await.unwrap();
    }

    /// Deletes the test's queues, exchanges and ledger database.
    pub async fn delete(&self) {
        let admin = postgres().await;
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
        admin.close().await;

        let connection = broker().await;
        let channel = connection.create_channel().await.unwrap();
        let mut queues = vec![
            self.queue.clone(),
            self.dead_letter_queue.clone(),
            self.events_queue.clone(),
        ];
        queues.extend(DELAY_TIERS.map(|seconds| self.delay_queue(seconds)));
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [
            &self.exchange,
            &self.dead_letter_exchange,
            &self.delay_exchange,
            &self.events_exchange,
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

/// Waits until `expected` jobs wait in the work and delay queues together. Moving between
/// them takes the broker a moment, so the count is polled.
pub async fn assert_eventually_waiting(topology: &Topology, expected: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = topology.waiting().await;
        if waiting == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} jobs wait in the queues, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A message read back from a queue.
pub struct Message {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: HashMap<String, String>,
}

fn text_headers(table: Option<&FieldTable>) -> HashMap<String, String> {
    let Some(table) = table else {
        return HashMap::new();
    };
    table
        .inner()
        .iter()
        .filter_map(|(name, value)| match value {
            AMQPValue::LongString(text) => Some((
                name.to_string(),
                String::from_utf8_lossy(text.as_bytes()).into_owned(),
            )),
            AMQPValue::ShortString(text) => Some((name.to_string(), text.to_string())),
            _ => None,
        })
        .collect()
}

pub fn env_pair(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

/// Mock servers for the three providers, which return success replies by default.
pub struct Providers {
    pub sendgrid: MockServer,
    pub twilio: MockServer,
    pub fcm: MockServer,
}

impl Providers {
    pub async fn start() -> Providers {
        Providers {
            sendgrid: MockServer::start().await,
            twilio: MockServer::start().await,
            fcm: MockServer::start().await,
        }
    }

    /// Mounts documented success replies on every endpoint, at a lower priority than
    /// mocks a test mounts itself.
    pub async fn accept_all(&self) {
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-message-1"))
            .with_priority(10)
            .mount(&self.sendgrid)
            .await;
        Mock::given(method("POST"))
            .and(path(format!(
                "/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
            )))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "sid": "SM00000000000000000000000000000001",
                "status": "queued",
                "error_code": null,
                "error_message": null,
            })))
            .with_priority(10)
            .mount(&self.twilio)
            .await;
        self.accept_tokens().await;
        Mock::given(method("POST"))
            .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "name": format!("projects/{FCM_PROJECT}/messages/0:1")
            })))
            .with_priority(10)
            .mount(&self.fcm)
            .await;
    }

    /// Mounts the OAuth2 token endpoint on the FCM mock.
    pub async fn accept_tokens(&self) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "ya29.test-access-token",
                "expires_in": 3600,
                "token_type": "Bearer",
            })))
            .with_priority(10)
            .mount(&self.fcm)
            .await;
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            env_pair(
                "HERALD__PROVIDERS__SENDGRID__BASE_URL",
                &self.sendgrid.uri(),
            ),
            env_pair("HERALD__PROVIDERS__SENDGRID__API_KEY", "SG.test-key"),
            env_pair("HERALD__PROVIDERS__TWILIO__BASE_URL", &self.twilio.uri()),
            env_pair("HERALD__PROVIDERS__TWILIO__ACCOUNT_SID", TWILIO_SID),
            env_pair("HERALD__PROVIDERS__TWILIO__AUTH_TOKEN", "twilio-test-token"),
            env_pair("HERALD__PROVIDERS__TWILIO__FROM", "+15555550100"),
            env_pair("HERALD__PROVIDERS__FCM__BASE_URL", &self.fcm.uri()),
            env_pair(
                "HERALD__PROVIDERS__FCM__TOKEN_URL",
                &format!("{}/token", self.fcm.uri()),
            ),
            env_pair(
                "HERALD__PROVIDERS__FCM__SERVICE_ACCOUNT_FILE",
                SERVICE_ACCOUNT,
            ),
        ]
    }

    /// Returns the requests `server` received on `path`.
    pub async fn requests(server: &MockServer, path: &str) -> Vec<wiremock::Request> {
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|request| request.url.path() == path)
            .collect()
    }

    pub async fn email_requests(&self) -> Vec<wiremock::Request> {
        Self::requests(&self.sendgrid, "/v3/mail/send").await
    }

    pub async fn sms_requests(&self) -> Vec<wiremock::Request> {
        Self::requests(
            &self.twilio,
            &format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"),
        )
        .await
    }

    pub async fn push_requests(&self) -> Vec<wiremock::Request> {
        Self::requests(
            &self.fcm,
            &format!("/v1/projects/{FCM_PROJECT}/messages:send"),
        )
        .await
    }
}

/// A fresh topology and provider mocks that accept every request. Mocks a test mounts
/// itself take precedence over the accepting ones.
pub struct Fixture {
    pub topology: Topology,
    pub providers: Providers,
}

impl Fixture {
    pub async fn new(test: &str) -> Fixture {
        let providers = Providers::start().await;
        providers.accept_all().await;
        Fixture {
            topology: Topology::new(test),
            providers,
        }
    }

    /// Starts Herald on this fixture's topology and mocks, with `extra` settings on top.
    pub async fn start(&self, extra: &[(&str, &str)]) -> RunningHerald {
        let mut env = self.topology.env();
        env.extend(self.providers.env());
        env.extend(extra.iter().map(|(key, value)| env_pair(key, value)));
        RunningHerald::start(env).await
    }
}

/// Builds a job requesting `channels`, with recipients derived from `index`.
pub fn job(id: &str, index: u64, channels: &[&str]) -> serde_json::Value {
    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    herald::publish::example_job(id, index, &channels)
}

/// Herald running as a child process, with its JSON log lines collected.
pub struct RunningHerald {
    child: Child,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    log_added: Arc<Notify>,
    pub admin: String,
}

impl RunningHerald {
    /// Starts `herald run` with `env` on top of test defaults and waits until it consumes.
    pub async fn start(env: Vec<(String, String)>) -> RunningHerald {
        create_ledger_database(&env).await;
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HERALD__ADMIN__LISTEN", "127.0.0.1:0")
            .env("HERALD__LOG__FORMAT", "json")
            .env("HERALD__LOG__LEVEL", "info")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("failed to start the herald binary");

        let logs = Arc::new(Mutex::new(Vec::new()));
        let log_added = Arc::new(Notify::new());
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(collect_logs(stderr, logs.clone(), log_added.clone()));

        let mut herald = RunningHerald {
            child,
            logs,
            log_added,
            admin: String::new(),
        };
        let started = herald
            .wait_for_log(Duration::from_secs(20), |line| {
                message(line) == "admin server listening"
            })
            .await;
        herald.admin = started["admin"].as_str().unwrap().to_owned();
        herald
            .wait_for_log(Duration::from_secs(30), |line| message(line) == "consuming")
            .await;
        herald
    }

    /// Waits for a log line matching `predicate` and returns it. Fails the test with the
    /// log so far when none arrives within `timeout`.
    pub async fn wait_for_log(
        &self,
        timeout: Duration,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.log_added.notified();
            if let Some(line) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|line| predicate(line))
            {
                return line.clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no matching log line within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// Returns the log lines collected so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.logs()
            .iter()
            .map(|line| line.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Fetches the admin server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("admin server unreachable")
            .text()
            .await
            .unwrap()
    }

    /// Waits until the counter `name` with `labels` reaches `expected`, polling `/metrics`.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        expected: f64,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            let value = metric_value(&text, name, labels);
            if value >= expected {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}{labels:?} is {value}, not {expected}, after {timeout:?}; metrics:\n{text}\nlog:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("herald already exited") as i32
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("failed to run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Sends SIGKILL, as a crash would.
    pub fn kill(&self) {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .expect("failed to run kill");
        assert!(status.success(), "kill -KILL failed");
    }

    /// Waits for a process that was killed by a signal to be gone.
    pub async fn wait_exit_by_signal(&mut self, timeout: Duration) {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("herald did not exit within {timeout:?}"))
            .unwrap();
        assert!(
            status.code().is_none(),
            "herald exited on its own: {status}"
        );
    }

    /// Sends SIGTERM and waits for the process to exit. Returns its exit code.
    pub async fn stop(mut self) -> i32 {
        self.terminate();
        self.wait_exit(Duration::from_secs(60)).await
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "herald did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                )
            })
            .unwrap();
        status.code().expect("herald was killed by a signal")
    }
}

async fn collect_logs(
    stderr: tokio::process::ChildStderr,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    log_added: Arc<Notify>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let value = serde_json::from_str(&line).unwrap_or(serde_json::json!({ "raw": line }));
        logs.lock().unwrap().push(value);
        log_added.notify_waiters();
    }
}

/// Returns a log line's message.
pub fn message(line: &serde_json::Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}

/// Returns the field `name` of a log line, from the event or from any of its spans.
pub fn field<'a>(line: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    line.get(name).or_else(|| {
        line.get("spans")?
            .as_array()?
            .iter()
            .rev()
            .find_map(|span| span.get(name))
    })
}

/// Returns the position of the first log line with `text` as its message and the given
/// field values.
pub fn log_position(
    logs: &[serde_json::Value],
    text: &str,
    fields: &[(&str, &str)],
) -> Option<usize> {
    logs.iter().position(|line| {
        message(line) == text
            && fields
                .iter()
                .all(|(name, value)| field(line, name).and_then(|v| v.as_str()) == Some(*value))
    })
}

/// Sums the samples of metric `name` whose labels include `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Returns how often the broker has logged an acknowledgement for an unknown delivery tag,
/// the channel error of a delivery settled on a channel it did not arrive on.
pub fn unknown_tag_errors() -> usize {
    let entries = std::fs::read_dir("/var/log/rabbitmq").unwrap_or_else(|error| {
        panic!("this check reads RabbitMQ's log in /var/log/rabbitmq, which failed: {error}")
    });
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .map(|text| text.matches("unknown delivery tag").count())
        .sum()
}
