//! Deliveries read ahead of the workers: with `pool.workers` smaller than `broker.prefetch`,
//! the consume loop keeps deliveries that no worker has taken yet. These tests stop, pause
//! or cut Herald while such deliveries wait, and check that none is lost, sent twice, or
//! used up against the quorum queue's delivery limit.

use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;

use crate::crash::wait_all_delivered;
use crate::helpers::*;
use crate::ledger_outage::{LEDGER_TIMEOUTS, email_job_ids};
use crate::proxy::CuttableProxy;
use crate::session_loss::{force_close, slow_email};

const JOBS: u64 = 10;

/// One worker and room for `JOBS` deliveries, so all but one wait for the worker.
const ONE_WORKER_READING_AHEAD: [(&str, &str); 3] = [
    ("HERALD__POOL__WORKERS", "1"),
    ("HERALD__BROKER__PREFETCH", "10"),
    ("HERALD__HTTP__REQUEST_TIMEOUT_MS", "30000"),
];

async fn publish_email_jobs(fixture: &Fixture, test: &str) {
    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("{test}-{i}"), i, &["email"]))
        .collect();
    fixture.topology.publish_jobs(&jobs).await;
}

/// Waits until the email provider has received more than `before` requests.
async fn wait_for_email_requests(fixture: &Fixture, before: usize, herald: &RunningHerald) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fixture.providers.email_requests().await.len() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new email request:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the `x-delivery-count` of every message in the work queue without settling any;
/// closing the connection returns them. A message never returned has no such header.
async fn delivery_counts(topology: &Topology) -> Vec<i64> {
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    let mut counts = Vec::new();
    while let Some(message) = channel
        .basic_get(topology.queue.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let headers = message.delivery.properties.headers().clone();
        let count = headers
            .as_ref()
            .and_then(|table| table.inner().get("x-delivery-count").cloned())
            .map(|value| match value {
                AMQPValue::LongLongInt(count) => count,
                AMQPValue::LongInt(count) => i64::from(count),
                AMQPValue::LongUInt(count) => i64::from(count),
                AMQPValue::ShortInt(count) => i64::from(count),
                other => panic!("unexpected x-delivery-count {other:?}"),
            })
            .unwrap_or(0);
        counts.push(count);
    }
    connection.close(200, "done".into()).await.unwrap();
    counts
}

/// Waits until the ledger shows every job's email delivered, failing with Herald's log.
async fn wait_delivered_or_log(
    fixture: &Fixture,
    herald: &RunningHerald,
    expected: i64,
    timeout: Duration,
) {
    let pool = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", fixture.topology.database))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (delivered,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if delivered >= expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {timeout:?} the ledger shows {delivered} of {expected} delivered; log:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pool.close().await;
}

/// Checks that every job was emailed exactly once and nothing was dead-lettered.
async fn assert_each_sent_once(fixture: &Fixture) {
    let per_job = email_job_ids(&fixture.providers).await;
    assert_eq!(per_job.len(), JOBS as usize, "jobs emailed: {per_job:?}");
    let repeated: Vec<_> = per_job.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "emailed more than once: {repeated:?}");
    let dead = fixture
        .topology
        .depth(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(dead, 0, "jobs went to the dead-letter queue");
}

/// One SIGTERM returns each waiting delivery to the queue once, so it uses up one
/// delivery of the quorum queue's limit, not two.
#[tokio::test]
async fn sigterm_returns_waiting_once() {
    let fixture = Fixture::new("ahead-sigterm").await;
    slow_email(&fixture, Duration::from_millis(1500)).await;
    let mut herald = fixture.start(&ONE_WORKER_READING_AHEAD).await;
    publish_email_jobs(&fixture, "ahead-sigterm").await;
    wait_for_email_requests(&fixture, 0, &herald).await;

    let started = tokio::time::Instant::now();
    herald.terminate();
    let code = herald.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );

    let counts = delivery_counts(&fixture.topology).await;
    assert!(
        !counts.is_empty(),
        "no job was left waiting; the test proves nothing"
    );
    let max = counts.iter().copied().max().unwrap();
    assert!(
        max <= 1,
        "one shutdown counted {max} deliveries against the limit: {counts:?}"
    );

    let herald = fixture.start(&ONE_WORKER_READING_AHEAD).await;
    wait_all_delivered(&fixture.topology, JOBS as i64, Duration::from_secs(60)).await;
    assert_each_sent_once(&fixture).await;
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

/// A rolling restart during a backlog must not send waiting jobs to the dead-letter queue
/// unsent: each restart returns the read-ahead deliveries, and the quorum queue counts the
/// returns against `broker.delivery_limit`.
#[tokio::test]
async fn repeated_sigterm_keeps_waiting_jobs() {
    let fixture = Fixture::new("ahead-restarts").await;
    slow_email(&fixture, Duration::from_millis(1500)).await;
    let mut settings = ONE_WORKER_READING_AHEAD.to_vec();
    settings.push(("HERALD__BROKER__DELIVERY_LIMIT", "4"));
    let mut first = Some(fixture.start(&settings).await);
    publish_email_jobs(&fixture, "ahead-restarts").await;

    for _ in 0..3 {
        let before = fixture.providers.email_requests().await.len();
        let mut herald = match first.take() {
            Some(herald) => herald,
            None => fixture.start(&settings).await,
        };
        wait_for_email_requests(&fixture, before, &herald).await;
        herald.terminate();
        assert_eq!(herald.wait_exit(Duration::from_secs(30)).await, 0);
    }

    let herald = fixture.start(&settings).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sent = email_job_ids(&fixture.providers).await.len();
        let dead = fixture
            .topology
            .depth(&fixture.topology.dead_letter_queue)
            .await;
        if sent as u64 + u64::from(dead) >= JOBS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sent} jobs sent, {dead} dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_each_sent_once(&fixture).await;
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

/// The ledger goes away while deliveries wait for the only worker: consumption pauses,
/// and after the ledger returns every job is sent once.
#[tokio::test]
async fn ledger_outage_with_waiting_deliveries() {
    let fixture = Fixture::new("ahead-ledger").await;
    slow_email(&fixture, Duration::from_millis(1000)).await;
    create_ledger_database(&fixture.topology.env()).await;
    let proxy = CuttableProxy::start("127.0.0.1:5432").await;
    let ledger_url = format!(
        "postgres://postgres@{}/{}",
        proxy.address, fixture.topology.database
    );
    let mut settings = ONE_WORKER_READING_AHEAD.to_vec();
    settings.extend(LEDGER_TIMEOUTS);
    settings.push(("HERALD__LEDGER__URL", &ledger_url));
    let herald = fixture.start(&settings).await;
    publish_email_jobs(&fixture, "ahead-ledger").await;
    wait_for_email_requests(&fixture, 0, &herald).await;

    proxy.cut();
    herald
        .wait_for_log(Duration::from_secs(20), |line| {
            message(line)
                == "ledger unavailable: consumption paused, prefetched jobs returned to the queue"
        })
        .await;
    let ready = reqwest::get(format!("http://{}/health/ready", herald.admin))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(ready, 503, "ready while paused for the ledger");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Paused, Herald has no unacknowledged delivery, so the queue can be read. The waiting
    // deliveries should count one return each.
    // NOTE: the job under way is requeued by its worker while the consumer is still
    // active, so RabbitMQ sends it back before the pause returns it again. That one
    // message counts two returns, before and after the read-ahead change alike.
    let counts = delivery_counts(&fixture.topology).await;
    let counted_twice = counts.iter().filter(|count| **count > 1).count();
    assert!(
        counted_twice <= 1,
        "one ledger pause counted two deliveries of {counted_twice} messages against the limit: {counts:?}"
    );
    proxy.restore();

    // The job under way when the ledger went away was sent but not recorded, so its row
    // stays `sending` for ledger.sending_reclaim_secs (300 s), as documented.
    wait_delivered_or_log(&fixture, &herald, JOBS as i64 - 1, Duration::from_secs(60)).await;
    let per_job = email_job_ids(&fixture.providers).await;
    let repeated: usize = per_job.values().map(|count| count - 1).sum();
    let possible = metric_value(
        &herald.metrics().await,
        "herald_possible_duplicates_total",
        &[],
    ) as usize;
    assert!(
        repeated <= possible,
        "{repeated} repeated sends, {possible} counted as possible duplicates: {per_job:?}"
    );
    assert_eq!(herald.stop().await, 0);
    drop(proxy);
    fixture.topology.delete().await;
}

/// Closes Herald's connection `name` while deliveries wait: the session ends, the waiting
/// deliveries come back through the next session, and each job is sent once.
async fn assert_close_with_waiting_deliveries(test: &str, name: &str) {
    let fixture = Fixture::new(test).await;
    slow_email(&fixture, Duration::from_millis(1500)).await;
    let herald = fixture.start(&ONE_WORKER_READING_AHEAD).await;
    publish_email_jobs(&fixture, test).await;
    wait_for_email_requests(&fixture, 0, &herald).await;

    force_close(herald.pid(), name);
    herald
        .wait_for_log(Duration::from_secs(5), |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;

    wait_delivered_or_log(&fixture, &herald, JOBS as i64, Duration::from_secs(90)).await;
    herald
        .wait_for_metric("herald_consuming", &[], 1.0, Duration::from_secs(30))
        .await;
    assert_eventually_waiting(&fixture.topology, 0).await;
    assert_each_sent_once(&fixture).await;
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

#[tokio::test]
async fn publish_close_with_waiting_deliveries() {
    assert_close_with_waiting_deliveries("ahead-publish-close", "herald-publish").await;
}

#[tokio::test]
async fn consume_close_with_waiting_deliveries() {
    assert_close_with_waiting_deliveries("ahead-consume-close", "herald-consume").await;
}

/// Poison jobs between valid ones in a backlog that waits for the only worker: each poison
/// job is dead-lettered once and each valid job is sent once.
#[tokio::test]
async fn poison_in_waiting_backlog() {
    let fixture = Fixture::new("ahead-poison").await;
    slow_email(&fixture, Duration::from_millis(300)).await;
    let herald = fixture.start(&ONE_WORKER_READING_AHEAD).await;
    let mut bodies = Vec::new();
    for i in 0..JOBS {
        bodies.push(
            job(&format!("ahead-poison-{i}"), i, &["email"])
                .to_string()
                .into_bytes(),
        );
        if i % 2 == 0 {
            bodies
                .push(format!("{{\"id\": \"poison-{i}\", \"channels\": \"email\"}}").into_bytes());
        }
    }
    fixture.topology.publish(&bodies).await;

    wait_delivered_or_log(&fixture, &herald, JOBS as i64, Duration::from_secs(60)).await;
    herald
        .wait_for_metric(
            "herald_poison_jobs_total",
            &[],
            5.0,
            Duration::from_secs(10),
        )
        .await;
    let per_job = email_job_ids(&fixture.providers).await;
    assert_eq!(per_job.len(), JOBS as usize, "jobs emailed: {per_job:?}");
    assert!(
        per_job.values().all(|count| *count == 1),
        "emailed twice: {per_job:?}"
    );
    assert_eq!(herald.stop().await, 0);
    let dead = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(dead.len(), 5, "dead letters");
    fixture.topology.delete().await;
}

/// The broker goes silent (packets dropped, connections open) while deliveries wait, and
/// SIGTERM follows. Herald must exit within the grace period plus the Helm chart's
/// default 10 s margin, or Kubernetes kills it.
#[tokio::test]
async fn silent_broker_sigterm_exits_in_time() {
    let fixture = Fixture::new("ahead-silent").await;
    slow_email(&fixture, Duration::from_millis(1500)).await;
    let proxy = CuttableProxy::start("127.0.0.1:5672").await;
    let broker_url = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let mut settings = ONE_WORKER_READING_AHEAD.to_vec();
    settings.push(("HERALD__BROKER__URL", &broker_url));
    settings.push(("HERALD__SHUTDOWN__GRACE_PERIOD_SECS", "5"));
    let mut herald = fixture.start(&settings).await;
    publish_email_jobs(&fixture, "ahead-silent").await;
    wait_for_email_requests(&fixture, 0, &herald).await;

    proxy.freeze();
    let started = tokio::time::Instant::now();
    herald.terminate();
    let code = herald.wait_exit(Duration::from_secs(90)).await;
    let took = started.elapsed();
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert!(
        took < Duration::from_secs(15),
        "shutdown with a silent broker took {took:?}:\n{}",
        herald.log_text()
    );
    drop(proxy);
    fixture.topology.delete().await;
}

/// PostgreSQL goes silent (packets dropped, connections open) while jobs are under way and
/// more wait. Herald must either pause with readiness false, as for a refused connection,
/// or keep sending; it must not stay ready while no job can finish.
#[tokio::test]
async fn silent_ledger_is_not_ready_forever() {
    let fixture = Fixture::new("ahead-silent-ledger").await;
    create_ledger_database(&fixture.topology.env()).await;
    let proxy = CuttableProxy::start("127.0.0.1:5432").await;
    let ledger_url = format!(
        "postgres://postgres@{}/{}",
        proxy.address, fixture.topology.database
    );
    let mut settings = vec![
        ("HERALD__POOL__WORKERS", "2"),
        ("HERALD__BROKER__PREFETCH", "10"),
    ];
    settings.extend(LEDGER_TIMEOUTS);
    settings.push(("HERALD__LEDGER__URL", &ledger_url));
    let herald = fixture.start(&settings).await;
    let warm_up: Vec<_> = (0..4)
        .map(|i| job(&format!("warm-{i}"), i, &["email"]))
        .collect();
    fixture.topology.publish_jobs(&warm_up).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            4.0,
            Duration::from_secs(20),
        )
        .await;

    proxy.freeze();
    publish_email_jobs(&fixture, "ahead-silent-ledger").await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let delivered = metric_value(
        &herald.metrics().await,
        "herald_jobs_completed_total",
        &[("outcome", "delivered")],
    );
    let ready = reqwest::get(format!("http://{}/health/ready", herald.admin))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert!(
        delivered > 4.0 || ready == 503,
        "after the ledger went silent: {delivered} jobs delivered in total, readiness {ready}:\n{}",
        herald.log_text()
    );
    drop(proxy);
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}
