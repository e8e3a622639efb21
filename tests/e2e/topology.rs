//! Topology declaration: on by default and idempotent, off for platforms that own it.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn undeclared_topology_keeps_herald_unready() {
    let fixture = Fixture::new("undeclared").await;
    let mut env = fixture.topology.env();
    env.extend(fixture.providers.env());
    env.push(env_pair("HERALD__BROKER__DECLARE_TOPOLOGY", "false"));
    env.push(env_pair("HERALD__ADMIN__LISTEN", "127.0.0.1:0"));
    env.push(env_pair("HERALD__LOG__FORMAT", "json"));
    create_ledger_database(&env).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("run")
        .env_clear()
        .envs(env)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut admin = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("no log line in time")
    {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if message(&value) == "admin server listening" {
            admin = value["admin"].as_str().map(str::to_owned);
        }
        if message(&value) == "broker session ended; reconnecting" {
            let error = value["error.message"].as_str().unwrap_or_default();
            assert!(error.contains("NOT_FOUND"), "{error}");
            break;
        }
    }
    let admin = admin.expect("admin address logged");
    let ready = reqwest::get(format!("http://{admin}/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "ready without a queue to consume");
    let live = reqwest::get(format!("http://{admin}/health/live"))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    child.kill().await.unwrap();
    fixture.topology.delete().await;
}

#[tokio::test]
async fn existing_topology_is_used_without_declaring() {
    let fixture = Fixture::new("predeclared").await;
    let first = fixture.start(&[]).await;
    assert_eq!(first.stop().await, 0);

    let second = fixture
        .start(&[("HERALD__BROKER__DECLARE_TOPOLOGY", "false")])
        .await;
    fixture
        .topology
        .publish_jobs(&[job("predeclared-1", 1, &["email"])])
        .await;
    second
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(second.stop().await, 0);

    let third = fixture.start(&[]).await;
    assert_eq!(
        third.stop().await,
        0,
        "declaring again over the existing topology succeeds"
    );
    fixture.topology.delete().await;
}

/// The broker's backstop: a job returned to the work queue more often than
/// `broker.delivery_limit` is dead-lettered by RabbitMQ itself, not dropped, even with no
/// Herald running to count its deliveries.
#[tokio::test]
async fn returned_job_is_dead_lettered_at_delivery_limit() {
    const LIMIT: usize = 2;
    let fixture = Fixture::new("delivery-limit").await;
    let limit = LIMIT.to_string();
    let herald = fixture
        .start(&[("HERALD__BROKER__DELIVERY_LIMIT", &limit)])
        .await;
    assert_eq!(herald.stop().await, 0);
    fixture
        .topology
        .publish_jobs(&[job("returned-1", 0, &["email"])])
        .await;

    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    let mut deliveries = 0;
    while let Some(message) = channel
        .basic_get(
            fixture.topology.queue.as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
    {
        deliveries += 1;
        assert!(deliveries <= LIMIT + 1, "the job was never dead-lettered");
        message
            .delivery
            .reject(lapin::options::BasicRejectOptions { requeue: true })
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();
    assert_eq!(deliveries, LIMIT + 1, "delivered once plus the limit");

    // With the at-least-once strategy a worker of the queue moves dead letters after the
    // return, so the dead-letter queue fills shortly afterwards.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fixture
        .topology
        .depth(&fixture.topology.dead_letter_queue)
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never reached the dead-letter queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(dead.len(), 1, "the job reached the dead-letter queue");
    assert_eq!(dead[0].headers["x-first-death-reason"], "delivery_limit");
    let body: serde_json::Value = serde_json::from_slice(&dead[0].body).unwrap();
    assert_eq!(body["id"], "returned-1");
    fixture.topology.delete().await;
}
