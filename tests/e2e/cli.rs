//! The command line: invalid configuration exits with code 78 and names the key.

use std::io::Write;
use std::process::Output;

use crate::helpers::*;

fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("failed to run the herald binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const CREDENTIALS: [(&str, &str); 6] = [
    ("HERALD__LEDGER__RECIPIENT_HASH_KEY", RECIPIENT_HASH_KEY),
    ("HERALD__PROVIDERS__SENDGRID__API_KEY", "SG.cli-test"),
    ("HERALD__PROVIDERS__TWILIO__ACCOUNT_SID", TWILIO_SID),
    ("HERALD__PROVIDERS__TWILIO__AUTH_TOKEN", "cli-test-token"),
    ("HERALD__PROVIDERS__TWILIO__FROM", "+15555550100"),
    (
        "HERALD__PROVIDERS__FCM__SERVICE_ACCOUNT_FILE",
        SERVICE_ACCOUNT,
    ),
];

#[test]
fn invalid_value_exits_78_naming_key() {
    let output = herald(&["run"], &[("HERALD__BROKER__PREFETCH", "0")]);
    assert_eq!(output.status.code(), Some(78));
    let message = stderr(&output);
    assert!(message.contains("broker.prefetch"), "{message}");
    assert!(message.contains("greater than 0"), "{message}");
}

#[test]
fn unknown_key_exits_78() {
    let output = herald(&["check-config"], &[("HERALD__POOL__WORKER", "3")]);
    assert_eq!(output.status.code(), Some(78));
    assert!(stderr(&output).contains("worker"), "{}", stderr(&output));
}

#[test]
fn missing_config_file_exits_78() {
    let output = herald(
        &["--config", "/nonexistent/herald.toml", "check-config"],
        &[],
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("/nonexistent/herald.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_secret_exits_78_naming_variable() {
    let output = herald(
        &["check-config"],
        &[("HERALD__LEDGER__RECIPIENT_HASH_KEY", RECIPIENT_HASH_KEY)],
    );
    assert_eq!(output.status.code(), Some(78));
    let message = stderr(&output);
    assert!(message.contains("providers.sendgrid.api_key"), "{message}");
    assert!(
        message.contains("HERALD__PROVIDERS__SENDGRID__API_KEY"),
        "{message}"
    );
}

#[test]
fn check_config_prints_redacted_config() {
    let output = herald(&["check-config"], &CREDENTIALS);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("[broker]"), "{printed}");
    assert!(printed.contains("amqp://guest:***@127.0.0.1"), "{printed}");
    assert!(!printed.contains("SG.cli-test"), "{printed}");
    assert!(!printed.contains("cli-test-token"), "{printed}");
    let parsed: toml::Value = toml::from_str(&printed).expect("check-config prints TOML");
    assert_eq!(parsed["pool"]["workers"].as_integer(), Some(256));
}

#[test]
fn unknown_subcommand_exits_2() {
    let output = herald(&["launch"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn publish_reads_examples_files_and_stdin() {
    let topology = Topology::new("publish-cli");
    let env = topology.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let examples = herald(&["publish", "--example", "--count", "3"], &env);
    assert_eq!(examples.status.code(), Some(0), "{}", stderr(&examples));
    assert!(String::from_utf8_lossy(&examples.stdout).contains("published 3 jobs"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.ndjson");
    let lines: Vec<String> = (0..2)
        .map(|i| job(&format!("file-{i}"), i, &["sms"]).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let from_file = herald(&["publish", file.to_str().unwrap()], &env);
    assert_eq!(from_file.status.code(), Some(0), "{}", stderr(&from_file));

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["publish", "-"])
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job("stdin-1", 1, &["email"]).to_string().as_bytes())
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    assert_eq!(
        topology.depth(&topology.queue).await,
        6,
        "3 examples, 2 from the file, 1 from stdin"
    );
    topology.delete().await;
}

#[tokio::test]
async fn publish_rejects_invalid_job_unless_told() {
    let topology = Topology::new("publish-invalid");
    let env = topology.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"id": "bad phone", "channels": {"sms": {"to": "555", "body": "x"}}}"#,
    )
    .unwrap();

    let refused = herald(&["publish", file.to_str().unwrap()], &env);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("job 1 is invalid"),
        "{}",
        stderr(&refused)
    );

    let forced = herald(&["publish", "--no-validate", file.to_str().unwrap()], &env);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    assert_eq!(topology.depth(&topology.queue).await, 1);
    topology.delete().await;
}

#[test]
fn missing_hash_key_exits_78_naming_variable() {
    let output = herald(&["check-config"], &CREDENTIALS[1..]);
    assert_eq!(output.status.code(), Some(78));
    let message = stderr(&output);
    assert!(message.contains("ledger.recipient_hash_key"), "{message}");
    assert!(
        message.contains("HERALD__LEDGER__RECIPIENT_HASH_KEY"),
        "{message}"
    );
}

#[test]
fn check_config_rejects_unusable_key_file() {
    let not_a_key = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut env = CREDENTIALS.to_vec();
    env.retain(|(key, _)| *key != "HERALD__PROVIDERS__FCM__SERVICE_ACCOUNT_FILE");
    env.push(("HERALD__PROVIDERS__FCM__SERVICE_ACCOUNT_FILE", not_a_key));
    let output = herald(&["check-config"], &env);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("providers.fcm"),
        "{}",
        stderr(&output)
    );
}
