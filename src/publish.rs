//! `herald publish`: confirmed publishing of jobs, from a file, standard input or samples.

use std::io::Read;
use std::path::Path;

use lapin::types::FieldTable;
use serde_json::json;

use crate::broker::{self, PublishError, Publisher};
use crate::config::BrokerConfig;
use crate::job::Job;

/// Publishes in batches of this many, waiting for the confirms of one batch before the next.
const CONFIRM_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum PublishCommandError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },

    /// `index` counts from 0; messages count jobs from 1, as people do.
    #[error("job {} is not valid JSON: {message}", .index + 1)]
    Json { index: usize, message: String },

    #[error("job {} is invalid: {source}", .index + 1)]
    Invalid {
        index: usize,
        source: crate::job::JobError,
    },

    #[error("failed to connect to RabbitMQ: {0}")]
    Connect(lapin::Error),

    #[error(
        "failed to declare the topology (set broker.declare_topology = false if the platform owns it): {0}"
    )]
    Declare(lapin::Error),

    #[error("job {} was not published: {source}", .index + 1)]
    Publish { index: usize, source: PublishError },
}

/// Reads `path` (`-` for standard input) as one message body, unchanged.
pub fn read_raw(path: &Path) -> Result<Vec<u8>, PublishCommandError> {
    let mut body = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body).map(drop)
    } else {
        std::fs::read(path).map(|bytes| body = bytes)
    };
    result.map_err(|source| PublishCommandError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(body)
}

/// Reads job bodies from `path` (`-` for standard input): one JSON object, a JSON array of
/// objects, or a stream of objects such as one per line.
pub fn read_bodies(path: &Path) -> Result<Vec<Vec<u8>>, PublishCommandError> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| PublishCommandError::Read {
        path: path.display().to_string(),
        source,
    })?;
    split_bodies(&text)
}

fn split_bodies(text: &str) -> Result<Vec<Vec<u8>>, PublishCommandError> {
    let json_error = |index, error: serde_json::Error| PublishCommandError::Json {
        index,
        message: error.to_string(),
    };
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|error| json_error(0, error))?;
        return Ok(values
            .iter()
            .map(|value| value.to_string().into_bytes())
            .collect());
    }
    serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .enumerate()
        .map(|(index, value)| {
            value
                .map(|value| value.to_string().into_bytes())
                .map_err(|error| json_error(index, error))
        })
        .collect()
}

/// Builds `count` sample jobs requesting `channels`, with ids unique to this run.
pub fn example_bodies(count: u64, channels: &[String]) -> Vec<Vec<u8>> {
    let run = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
    (0..count)
        .map(|index| {
            example_job(&format!("example-{run}-{index}"), index, channels)
                .to_string()
                .into_bytes()
        })
        .collect()
}

/// Builds one sample job with deterministic recipients derived from `index`.
pub fn example_job(id: &str, index: u64, channels: &[String]) -> serde_json::Value {
    let mut requested = serde_json::Map::new();
    for channel in channels {
        let body = match channel.as_str() {
            "email" => json!({
                "to": format!("user{index}@example.com"),
                "subject": "Welcome to Herald",
                "text": format!("Hello user {index}."),
                "html": format!("<p>Hello user {index}.</p>"),
            }),
            "sms" => json!({
                "to": format!("+1555555{:04}", index % 10_000),
                "body": format!("Your code is {:06}", index % 1_000_000),
            }),
            "push" => json!({
                "token": format!("example-device-token-{index}"),
                "title": "Welcome",
                "body": "Hello from Herald",
                "data": {"screen": "home"},
            }),
            "webhook" => json!({
                "endpoint": "example",
                "event_type": "user.welcomed",
                "payload": {"user": index},
            }),
            other => json!({"note": format!("{other} is not a channel Herald knows")}),
        };
        requested.insert(channel.clone(), body);
    }
    json!({"id": id, "channels": requested})
}

/// Validates each body as a job unless `validate` is false.
pub fn check_bodies(bodies: &[Vec<u8>], config: &BrokerConfig) -> Result<(), PublishCommandError> {
    for (index, body) in bodies.iter().enumerate() {
        Job::parse(body, config.max_job_bytes)
            .map_err(|source| PublishCommandError::Invalid { index, source })?;
    }
    Ok(())
}

/// Publishes `bodies` to the work exchange and waits until RabbitMQ has confirmed each one.
/// Returns the number published.
pub async fn publish_bodies(
    config: &BrokerConfig,
    delay_tiers: &[u64],
    bodies: &[Vec<u8>],
) -> Result<usize, PublishCommandError> {
    let connection = broker::connect(config, "publish-cli")
        .await
        .map_err(PublishCommandError::Connect)?;
    let publisher = Publisher::open(&connection)
        .await
        .map_err(PublishCommandError::Connect)?;
    if config.declare_topology {
        broker::declare(publisher.channel(), config, delay_tiers)
            .await
            .map_err(PublishCommandError::Declare)?;
    }

    for (batch_index, batch) in bodies.chunks(CONFIRM_BATCH).enumerate() {
        let publishes = batch.iter().map(|body| {
            publisher.publish(
                &config.exchange,
                &config.routing_key,
                body,
                FieldTable::default(),
                "application/json",
            )
        });
        let results = futures::future::join_all(publishes).await;
        for (offset, result) in results.into_iter().enumerate() {
            result.map_err(|source| PublishCommandError::Publish {
                index: batch_index * CONFIRM_BATCH + offset,
                source,
            })?;
        }
    }

    let _ = connection.close(200, "published".into()).await;
    Ok(bodies.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_one_object() {
        let bodies = split_bodies(r#"{"id":"a","channels":{}}"#).unwrap();
        assert_eq!(bodies.len(), 1);
    }

    #[test]
    fn split_reads_array() {
        let bodies = split_bodies(r#"[{"id":"a"},{"id":"b"}]"#).unwrap();
        assert_eq!(bodies.len(), 2);
    }

    #[test]
    fn split_reads_lines() {
        let bodies = split_bodies("{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n").unwrap();
        assert_eq!(bodies.len(), 3);
    }

    #[test]
    fn split_reports_bad_json() {
        let error = split_bodies("{\"id\":\"a\"}\n{oops").unwrap_err();
        assert!(
            matches!(error, PublishCommandError::Json { index: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn example_jobs_are_valid() {
        let channels = ["email", "sms", "push", "webhook"].map(String::from);
        for body in example_bodies(50, &channels) {
            let job = Job::parse(&body, 1 << 20).unwrap();
            assert_eq!(job.channels.len(), 4);
        }
    }
}
