//! Ways a broker session can end that the consume loop must notice. Every worker is busy
//! while a connection closes or the work queue is deleted. A connection closes
//! while consumption is paused for the ledger. A broker accepts TCP but never sends its side
//! of the AMQP handshake, and SIGTERM arrives meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::crash::wait_all_delivered;
use crate::helpers::*;
use crate::ledger_outage::LEDGER_TIMEOUTS;
use crate::proxy::CuttableProxy;

const SESSION_ENDED: &str = "broker session ended; reconnecting";

/// How long one email send takes in the tests that keep the only worker busy.
const SEND_TIME: Duration = Duration::from_secs(10);

/// Closes the connection of Herald process `herald_pid` whose name starts with `name`
/// (`herald-consume` or `herald-publish`) from the broker side.
pub(crate) fn force_close(herald_pid: i32, name: &str) {
    let listing = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    let text = String::from_utf8_lossy(&listing.stdout);
    let suffix = format!("/{herald_pid}\"");
    let line = text
        .lines()
        .find(|line| line.contains(name) && line.contains(&suffix))
        .unwrap_or_else(|| panic!("no {name} connection of pid {herald_pid} in:\n{text}"));
    let connection = line.split_whitespace().next().unwrap();
    let status = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", connection, "closed by a Herald test"])
        .status()
        .unwrap();
    assert!(status.success(), "rabbitmqctl close_connection failed");
}

/// Makes every email send take `delay`.
pub(crate) async fn slow_email(fixture: &Fixture, delay: Duration) {
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Message-Id", "m")
                .set_delay(delay),
        )
        .with_priority(1)
        .mount(&fixture.providers.sendgrid)
        .await;
}

/// Settings with one worker that waits for a slow provider instead of timing out.
const ONE_BUSY_WORKER: [(&str, &str); 3] = [
    ("HERALD__POOL__WORKERS", "1"),
    ("HERALD__BROKER__PREFETCH", "1"),
    ("HERALD__HTTP__REQUEST_TIMEOUT_MS", "30000"),
];

/// Publishes one email job and waits until its send has reached the provider, so the only
/// worker is inside a send that lasts `SEND_TIME`.
async fn occupy_the_worker(fixture: &Fixture, herald: &RunningHerald, id: &str) {
    fixture
        .topology
        .publish_jobs(&[job(id, 0, &["email"])])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fixture.providers.email_requests().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never reached the provider:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns how many times Herald logged `text` so far.
fn count_logs(herald: &RunningHerald, text: &str) -> usize {
    herald
        .logs()
        .iter()
        .filter(|line| message(line) == text)
        .count()
}

/// Waits up to `timeout` for Herald to log `text` more than `before` times. Returns whether
/// it did.
async fn logged_again(
    herald: &RunningHerald,
    text: &str,
    before: usize,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if count_logs(herald, text) > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Closes the connection `name` while the only worker is busy, and checks that the session
/// ends at once for a reason containing one of `reasons`, and that the job under way is not sent again after its
/// redelivery.
async fn assert_close_noticed_while_busy(test: &str, name: &str, reasons: &[&str]) {
    let fixture = Fixture::new(test).await;
    slow_email(&fixture, SEND_TIME).await;
    let herald = fixture.start(&ONE_BUSY_WORKER).await;
    occupy_the_worker(&fixture, &herald, &format!("{test}-0")).await;

    let closed_at = tokio::time::Instant::now();
    force_close(herald.pid(), name);
    let ended = herald
        .wait_for_log(Duration::from_secs(3), |line| {
            message(line) == SESSION_ENDED
        })
        .await;
    let noticed_after = closed_at.elapsed();
    assert!(
        noticed_after < SEND_TIME / 2,
        "closing {name} was noticed after {noticed_after:?}"
    );
    let logged_reason = field(&ended, "error.message")
        .and_then(|value| value.as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        reasons.iter().any(|reason| logged_reason.contains(reason)),
        "the session ended for another reason: {logged_reason}"
    );

    wait_all_delivered(&fixture.topology, 1, Duration::from_secs(60)).await;
    herald
        .wait_for_metric("herald_consuming", &[], 1.0, Duration::from_secs(30))
        .await;
    assert_eventually_waiting(&fixture.topology, 0).await;
    assert_eq!(
        fixture.providers.email_requests().await.len(),
        1,
        "the redelivered job sent its email again"
    );
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

#[tokio::test]
async fn closed_consume_connection_noticed_while_busy() {
    // The consumer's stream or the liveness check may see the close first.
    let reasons = ["CONNECTION_FORCED", "consuming connection"];
    assert_close_noticed_while_busy("busy-consume-close", "herald-consume", &reasons).await;
}

#[tokio::test]
async fn closed_publish_connection_noticed_while_busy() {
    let reasons = ["publishing channel"];
    assert_close_noticed_while_busy("busy-publish-close", "herald-publish", &reasons).await;
}

/// With the only worker busy, deleting the work queue makes RabbitMQ cancel the consumer.
/// Readiness must not stay true until the worker frees up.
#[tokio::test]
async fn deleted_queue_noticed_while_busy() {
    let fixture = Fixture::new("busy-queue-delete").await;
    slow_email(&fixture, SEND_TIME).await;
    let herald = fixture.start(&ONE_BUSY_WORKER).await;
    occupy_the_worker(&fixture, &herald, "busy-delete-0").await;

    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    let deleted_at = tokio::time::Instant::now();
    channel
        .queue_delete(
            fixture.topology.queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    // Waits past SEND_TIME, so a failure shows when the session did end.
    let noticed = logged_again(&herald, SESSION_ENDED, 0, 2 * SEND_TIME).await;
    let noticed_after = deleted_at.elapsed();
    assert!(
        noticed,
        "the deleted queue never ended the session:\n{}",
        herald.log_text()
    );
    assert!(
        noticed_after < Duration::from_secs(3),
        "the cancelled consumer was noticed {noticed_after:?} after deleting the queue, \
         only when the busy worker freed up"
    );
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

/// While consumption is paused because the ledger is unreachable, a closed consuming
/// connection still ends the session, so the broker metrics and logs tell the truth and
/// Herald reconnects without waiting for the ledger.
#[tokio::test]
async fn closed_connection_noticed_while_ledger_paused() {
    let fixture = Fixture::new("paused-close").await;
    create_ledger_database(&fixture.topology.env()).await;
    let ledger_proxy = CuttableProxy::start("127.0.0.1:5432").await;
    let ledger_url = format!(
        "postgres://postgres@{}/{}",
        ledger_proxy.address, fixture.topology.database
    );
    let mut settings = LEDGER_TIMEOUTS.to_vec();
    settings.push(("HERALD__LEDGER__URL", &ledger_url));
    let herald = fixture.start(&settings).await;

    fixture
        .topology
        .publish_jobs(&[job("paused-close-0", 0, &["email"])])
        .await;
    wait_all_delivered(&fixture.topology, 1, Duration::from_secs(30)).await;

    ledger_proxy.cut();
    fixture
        .topology
        .publish_jobs(&[job("paused-close-1", 1, &["email"])])
        .await;
    herald
        .wait_for_log(Duration::from_secs(20), |line| {
            message(line)
                == "ledger unavailable: consumption paused, prefetched jobs returned to the queue"
        })
        .await;

    force_close(herald.pid(), "herald-consume");
    let noticed = logged_again(&herald, SESSION_ENDED, 0, Duration::from_secs(10)).await;
    let broker_connected = metric_value(&herald.metrics().await, "herald_broker_connected", &[]);
    let log_while_paused = herald.log_text();
    ledger_proxy.restore();

    // Recovery is checked first, so a late notice does not hide a lost job.
    wait_all_delivered(&fixture.topology, 2, Duration::from_secs(60)).await;
    assert_eq!(herald.stop().await, 0);
    assert!(
        noticed,
        "a closed consuming connection went unnoticed for 10 s while paused for the ledger \
         (herald_broker_connected = {broker_connected}); log:\n{log_while_paused}"
    );
    drop(ledger_proxy);
    fixture.topology.delete().await;
}

/// While the broker refuses connections Herald is unready and retries with backoff, and
/// SIGTERM during the backoff stops it promptly and cleanly.
#[tokio::test]
async fn sigterm_during_reconnect_backoff_exits() {
    let fixture = Fixture::new("term-backoff").await;
    let broker_proxy = CuttableProxy::start("127.0.0.1:5672").await;
    let proxied = format!("amqp://guest:guest@{}/%2f", broker_proxy.address);
    let mut herald = fixture.start(&[("HERALD__BROKER__URL", &proxied)]).await;

    broker_proxy.cut();
    herald
        .wait_for_log(Duration::from_secs(15), |line| {
            message(line) == SESSION_ENDED
        })
        .await;
    // Two failed attempts after the loss, so the backoff has grown past a second.
    assert!(
        logged_again(&herald, SESSION_ENDED, 2, Duration::from_secs(15)).await,
        "Herald did not retry connecting:\n{}",
        herald.log_text()
    );
    let ready = reqwest::get(format!("http://{}/health/ready", herald.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "ready without a broker");
    let metrics = herald.metrics().await;
    assert_eq!(metric_value(&metrics, "herald_broker_connected", &[]), 0.0);

    let terminated_at = tokio::time::Instant::now();
    herald.terminate();
    let code = herald.wait_exit(Duration::from_secs(30)).await;
    let stopped_after = terminated_at.elapsed();
    assert_eq!(code, 0, "Herald exited with {code}");
    assert!(
        stopped_after < Duration::from_secs(5),
        "SIGTERM during the reconnection backoff took {stopped_after:?}"
    );
    drop(broker_proxy);
    fixture.topology.delete().await;
}

/// A loopback proxy to RabbitMQ that can switch to holding. It then drops the connections
/// it forwards, and accepts new ones but never forwards a byte, like a broker that accepts
/// TCP and never sends its side of the AMQP handshake.
struct HoldingProxy {
    address: std::net::SocketAddr,
    holding: Arc<AtomicBool>,
    forwards: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stalled: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

impl HoldingProxy {
    async fn start() -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let holding = Arc::new(AtomicBool::new(false));
        let forwards = Arc::new(Mutex::new(Vec::new()));
        let stalled = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_or_hold(
            listener,
            holding.clone(),
            forwards.clone(),
            stalled.clone(),
        ));
        HoldingProxy {
            address,
            holding,
            forwards,
            stalled,
            accept,
        }
    }

    /// Drops every forwarded connection and keeps every new one open without forwarding.
    fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
        for forward in self.forwards.lock().unwrap().drain(..) {
            forward.abort();
        }
    }

    /// Returns how many connections were accepted and stalled.
    fn stalled_connections(&self) -> usize {
        self.stalled.lock().unwrap().len()
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.hold();
        self.stalled.lock().unwrap().clear();
    }
}

async fn accept_or_hold(
    listener: TcpListener,
    holding: Arc<AtomicBool>,
    forwards: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stalled: Arc<Mutex<Vec<TcpStream>>>,
) {
    while let Ok((mut client, _)) = listener.accept().await {
        if holding.load(Ordering::SeqCst) {
            stalled.lock().unwrap().push(client);
            continue;
        }
        let forward = tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect("127.0.0.1:5672").await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        forwards.lock().unwrap().push(forward);
    }
}

/// Starts Herald through a `HoldingProxy`, switches the proxy to holding, and waits until
/// Herald's first reconnection attempt is stuck in the AMQP handshake.
async fn start_then_hold(fixture: &Fixture, proxy: &HoldingProxy) -> RunningHerald {
    let proxied = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let herald = fixture
        .start(&[
            ("HERALD__BROKER__URL", &proxied),
            ("HERALD__BROKER__CONNECT_TIMEOUT_SECS", "2"),
        ])
        .await;
    proxy.hold();
    herald
        .wait_for_log(Duration::from_secs(15), |line| {
            message(line) == SESSION_ENDED
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.stalled_connections() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Herald did not try to reconnect:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    herald
}

/// A broker that accepts TCP and never replies makes the connection attempt fail within
/// about `broker.connect_timeout_secs`, so Herald goes on retrying.
#[tokio::test]
async fn silent_handshake_times_out() {
    let fixture = Fixture::new("silent-handshake").await;
    let proxy = HoldingProxy::start().await;
    let herald = start_then_hold(&fixture, &proxy).await;

    let failed_again = logged_again(&herald, SESSION_ENDED, 1, Duration::from_secs(15)).await;
    assert!(
        failed_again,
        "a connection attempt to a silent broker did not fail within 15 s \
         (broker.connect_timeout_secs = 2); stalled connections: {}; log:\n{}",
        proxy.stalled_connections(),
        herald.log_text()
    );
    assert_eq!(herald.stop().await, 0);
    drop(proxy);
    fixture.topology.delete().await;
}

/// SIGTERM while a connection attempt waits for a silent broker's handshake stops Herald.
#[tokio::test]
async fn sigterm_during_silent_handshake_exits() {
    let fixture = Fixture::new("term-handshake").await;
    let proxy = HoldingProxy::start().await;
    let mut herald = start_then_hold(&fixture, &proxy).await;

    herald.terminate();
    // wait_exit fails the test with Herald's log when it does not exit in time.
    let code = herald.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(code, 0, "Herald exited with {code}");
    drop(proxy);
    fixture.topology.delete().await;
}

/// Closing the publishing and the consuming connection in turn, four times under load, loses
/// no job, sends no channel twice uncounted and settles no delivery on a channel it did not
/// arrive on.
#[tokio::test]
async fn alternating_closes_under_load_lose_nothing() {
    const JOBS: u64 = 300;
    const CLOSES: [&str; 4] = [
        "herald-publish",
        "herald-consume",
        "herald-publish",
        "herald-consume",
    ];
    let unknown_tags_before = unknown_tag_errors();
    let fixture = Fixture::new("alternating-close").await;
    crate::crash::slow_providers(&fixture).await;
    let settings = crate::crash::settings();
    let herald = fixture.start(&crate::crash::borrowed(&settings)).await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("alternate-{i}"), i, &["email", "sms", "push"]))
        .collect();
    fixture.topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            20.0,
            Duration::from_secs(60),
        )
        .await;
    for (ended_before, name) in CLOSES.iter().enumerate() {
        let consuming_before = count_logs(&herald, "consuming");
        force_close(herald.pid(), name);
        assert!(
            logged_again(&herald, SESSION_ENDED, ended_before, Duration::from_secs(5)).await,
            "closing {name} did not end the session:\n{}",
            herald.log_text()
        );
        assert!(
            logged_again(
                &herald,
                "consuming",
                consuming_before,
                Duration::from_secs(30)
            )
            .await,
            "Herald did not consume again after closing {name}:\n{}",
            herald.log_text()
        );
    }

    crate::recovery::assert_recovered_once(fixture, herald, JOBS, unknown_tags_before).await;
}
