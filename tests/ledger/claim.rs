//! The claim rule: who may send a (job, channel), and when.

use std::sync::Arc;

use herald::job::ChannelKind;
use herald::ledger::{AttemptRecord, Claim, DeliveryState, LastError, LedgerError, Outcome};
use herald::providers::SendError;
use sqlx::types::Uuid;
use tokio::sync::Barrier;

use crate::helpers::{TestDatabase, age_claim, claim_email, email, job_id};

/// Claims the email channel and returns its token, failing the test if it did not acquire.
async fn acquire(ledger: &herald::ledger::Ledger, job: &herald::job::JobId) -> Uuid {
    match claim_email(ledger, job).await {
        Claim::Acquired { token, .. } => token,
        other => panic!("expected the claim to acquire, got {other:?}"),
    }
}

#[tokio::test]
async fn first_claim_acquires() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-first");

    let claim = claim_email(&ledger, &job).await;

    let Claim::Acquired {
        attempts,
        ambiguous,
        ..
    } = claim
    else {
        panic!("expected Acquired, got {claim:?}");
    };
    assert_eq!(attempts, 0);
    assert!(!ambiguous);
    let rows = ledger.status(&job).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, DeliveryState::Sending);
    assert_eq!(rows[0].claimed_by.as_deref(), Some(ledger.instance_id()));
    assert!(rows[0].sending_since.is_some());
}

#[tokio::test]
async fn fresh_sending_claim_is_busy() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-busy");
    acquire(&ledger, &job).await;

    let second = claim_email(&ledger, &job).await;

    assert_eq!(second, Claim::Busy);
}

#[tokio::test]
async fn claim_after_delivery_returns_message_id() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-delivered");
    let token = acquire(&ledger, &job).await;
    let delivered = Outcome::Delivered {
        provider_message_id: Some("msg-123".to_owned()),
    };
    let applied = ledger
        .finish(&job, ChannelKind::Email, token, &delivered)
        .await
        .unwrap();
    assert!(applied);

    let again = claim_email(&ledger, &job).await;

    assert_eq!(
        again,
        Claim::AlreadyDelivered {
            provider: "sendgrid".to_owned(),
            provider_message_id: Some("msg-123".to_owned()),
        }
    );
    let row = &ledger.status(&job).await.unwrap()[0];
    assert!(row.delivered_at.is_some());
    assert!(row.sending_since.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_acquire_once() {
    const CLAIMS: usize = 50;
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.max_connections = 20;
    let ledger = database.ledger_with(&config).await;
    let job = job_id("job-concurrent");
    let barrier = Arc::new(Barrier::new(CLAIMS));

    let tasks: Vec<_> = (0..CLAIMS)
        .map(|_| {
            let ledger = ledger.clone();
            let job = job.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                claim_email(&ledger, &job).await
            })
        })
        .collect();
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.expect("claim task"));
    }

    let acquired = claims
        .iter()
        .filter(|claim| matches!(claim, Claim::Acquired { .. }))
        .count();
    let busy = claims.iter().filter(|claim| **claim == Claim::Busy).count();
    assert_eq!(acquired, 1, "{claims:?}");
    assert_eq!(busy, CLAIMS - 1, "{claims:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reclaims_acquire_once() {
    const CLAIMS: usize = 50;
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.max_connections = 20;
    let ledger = database.ledger_with(&config).await;
    let job = job_id("job-concurrent-reclaim");
    acquire(&ledger, &job).await;
    age_claim(&ledger, &job, "email", 3600).await;
    let barrier = Arc::new(Barrier::new(CLAIMS));

    let tasks: Vec<_> = (0..CLAIMS)
        .map(|_| {
            let ledger = ledger.clone();
            let job = job.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                claim_email(&ledger, &job).await
            })
        })
        .collect();
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.expect("claim task"));
    }

    let ambiguous = claims
        .iter()
        .filter(|claim| {
            matches!(
                claim,
                Claim::Acquired {
                    ambiguous: true,
                    ..
                }
            )
        })
        .count();
    let busy = claims.iter().filter(|claim| **claim == Claim::Busy).count();
    assert_eq!(ambiguous, 1, "{claims:?}");
    assert_eq!(busy, CLAIMS - 1, "{claims:?}");
}

#[tokio::test]
async fn stale_sending_is_reclaimed_as_ambiguous() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-stale");
    let first = acquire(&ledger, &job).await;
    let reclaim_secs = i64::try_from(database.config.sending_reclaim_secs).unwrap();
    age_claim(&ledger, &job, "email", reclaim_secs + 1).await;

    let claim = claim_email(&ledger, &job).await;

    let Claim::Acquired {
        token, ambiguous, ..
    } = claim
    else {
        panic!("expected Acquired, got {claim:?}");
    };
    assert!(ambiguous);
    assert_ne!(token, first);
    let row = &ledger.status(&job).await.unwrap()[0];
    assert!(row.reclaimed);
    assert_eq!(row.state, DeliveryState::Sending);
}

#[tokio::test]
async fn claim_just_inside_reclaim_window_is_busy() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-not-stale");
    acquire(&ledger, &job).await;
    let reclaim_secs = i64::try_from(database.config.sending_reclaim_secs).unwrap();
    age_claim(&ledger, &job, "email", reclaim_secs - 5).await;

    assert_eq!(claim_email(&ledger, &job).await, Claim::Busy);
}

#[tokio::test]
async fn finish_with_stale_token_does_not_apply() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-lost-claim");
    let first = acquire(&ledger, &job).await;
    let reclaim_secs = i64::try_from(database.config.sending_reclaim_secs).unwrap();
    age_claim(&ledger, &job, "email", reclaim_secs + 1).await;
    let second = acquire(&ledger, &job).await;

    let failed = Outcome::Failed(LastError::new("permanent", "rejected"));
    let stale = ledger
        .finish(&job, ChannelKind::Email, first, &failed)
        .await
        .unwrap();
    let delivered = Outcome::Delivered {
        provider_message_id: Some("msg-2".to_owned()),
    };
    let current = ledger
        .finish(&job, ChannelKind::Email, second, &delivered)
        .await
        .unwrap();

    assert!(!stale);
    assert!(current);
    let row = &ledger.status(&job).await.unwrap()[0];
    assert_eq!(row.state, DeliveryState::Delivered);
    assert_eq!(row.provider_message_id.as_deref(), Some("msg-2"));
    assert_eq!(row.last_error, None);
}

#[tokio::test]
async fn second_finish_does_not_apply() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-finish-twice");
    let token = acquire(&ledger, &job).await;
    let delivered = Outcome::Delivered {
        provider_message_id: None,
    };
    let retrying = Outcome::Retrying(LastError::new("transient", "late duplicate"));

    let first = ledger.finish(&job, ChannelKind::Email, token, &delivered);
    assert!(first.await.unwrap());
    let second = ledger.finish(&job, ChannelKind::Email, token, &retrying);
    assert!(!second.await.unwrap());

    let row = &ledger.status(&job).await.unwrap()[0];
    assert_eq!(row.state, DeliveryState::Delivered);
}

#[tokio::test]
async fn unknown_token_does_not_apply() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-unknown-token");
    acquire(&ledger, &job).await;

    let applied = ledger
        .finish(&job, ChannelKind::Email, Uuid::nil(), &Outcome::Expired)
        .await
        .unwrap();

    assert!(!applied);
    assert_eq!(
        ledger.status(&job).await.unwrap()[0].state,
        DeliveryState::Sending
    );
}

#[tokio::test]
async fn permanent_failure_is_final() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-permanent");
    let token = acquire(&ledger, &job).await;
    let error = SendError::permanent("invalid address").with_status(400);
    let failed = Outcome::Failed(LastError::from(&error));
    assert!(
        ledger
            .finish(&job, ChannelKind::Email, token, &failed)
            .await
            .unwrap()
    );

    let claim = claim_email(&ledger, &job).await;

    assert_eq!(
        claim,
        Claim::Final {
            state: DeliveryState::Failed
        }
    );
}

#[tokio::test]
async fn dead_lettered_and_expired_are_final() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let outcomes = [
        (
            "job-dead",
            Outcome::DeadLettered(LastError::new("handler_panic", "the job handler panicked")),
        ),
        ("job-expired", Outcome::Expired),
    ];

    for (id, outcome) in outcomes {
        let job = job_id(id);
        let token = acquire(&ledger, &job).await;
        let finish = ledger.finish(&job, ChannelKind::Email, token, &outcome);
        assert!(finish.await.unwrap(), "{id}");

        let claim = claim_email(&ledger, &job).await;

        assert_eq!(
            claim,
            Claim::Final {
                state: outcome.state()
            },
            "{id}"
        );
    }
}

#[tokio::test]
async fn retryable_outcomes_are_claimed_again() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let transient = SendError::transient("upstream timed out").with_code("timeout");
    let outcomes = [
        (
            "job-retrying",
            Outcome::Retrying(LastError::from(&transient)),
        ),
        (
            "job-failed-transient",
            Outcome::Failed(LastError::from(&transient)),
        ),
    ];

    for (id, outcome) in outcomes {
        let job = job_id(id);
        let token = acquire(&ledger, &job).await;
        let finish = ledger.finish(&job, ChannelKind::Email, token, &outcome);
        assert!(finish.await.unwrap(), "{id}");

        let claim = claim_email(&ledger, &job).await;

        assert!(
            matches!(
                claim,
                Claim::Acquired {
                    ambiguous: false,
                    ..
                }
            ),
            "{id}: {claim:?}"
        );
    }
}

/// attempt, status_code, outcome, error_code, latency_ms
type AttemptColumns = (i32, Option<i32>, String, Option<String>, i64);

#[tokio::test]
async fn attempts_are_numbered_across_claims() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-attempts");
    let token = acquire(&ledger, &job).await;
    let error = SendError::transient("service unavailable")
        .with_status(503)
        .with_code("unavailable");
    let failed = AttemptRecord::failed("sendgrid", &error, std::time::Duration::from_millis(40));

    let first = ledger.record_attempt(&job, ChannelKind::Email, &failed);
    assert_eq!(first.await.unwrap(), 1);
    let second = ledger.record_attempt(&job, ChannelKind::Email, &failed);
    assert_eq!(second.await.unwrap(), 2);
    let retrying = Outcome::Retrying(LastError::from(&error));
    assert!(
        ledger
            .finish(&job, ChannelKind::Email, token, &retrying)
            .await
            .unwrap()
    );
    let claim = claim_email(&ledger, &job).await;

    assert!(
        matches!(claim, Claim::Acquired { attempts: 2, .. }),
        "{claim:?}"
    );
    let rows: Vec<AttemptColumns> = sqlx::query_as(
        "SELECT attempt, status_code, outcome, error_code, latency_ms
         FROM delivery_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(job.as_str())
    .fetch_all(ledger.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                1,
                Some(503),
                "transient".into(),
                Some("unavailable".into()),
                40
            ),
            (
                2,
                Some(503),
                "transient".into(),
                Some("unavailable".into()),
                40
            ),
        ]
    );
}

#[tokio::test]
async fn attempt_without_claim_is_rejected() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let record = AttemptRecord::delivered("sendgrid", Some(202), std::time::Duration::ZERO);

    let result = ledger
        .record_attempt(&job_id("job-unclaimed"), ChannelKind::Email, &record)
        .await;

    assert!(
        matches!(result, Err(LedgerError::NotClaimed { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn claim_without_hash_key_fails() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.recipient_hash_key = None;
    let ledger = database.ledger_with(&config).await;
    let address = email("alice@example.com");

    let result = ledger
        .claim(
            &job_id("job-no-key"),
            "sendgrid",
            herald::ledger::Recipient::Email(&address),
        )
        .await;

    let error = result.expect_err("a claim without a hash key");
    assert!(matches!(error, LedgerError::Config(_)), "{error}");
    assert!(!error.is_unavailable());
}
