//! Command-line interface. Flags and exit codes are an interface scripts depend on: see
//! `docs/cli.md`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::job::{ChannelKind, JobId};

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a failure while running a command.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for invalid command-line usage, as clap itself exits.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Notification worker: RabbitMQ jobs to email, SMS, push and webhook providers"
)]
pub struct Cli {
    /// TOML file layered over the built-in defaults; HERALD__SECTION__KEY variables override both.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "HERALD_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume jobs from RabbitMQ and send them until SIGTERM or SIGINT.
    Run,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Publish jobs to the work exchange with publisher confirms.
    Publish(PublishArgs),
    /// Serve SendGrid-, Twilio-, FCM-, Mailgun-, SES- and Vonage-compatible endpoints locally,
    /// for demos and benchmarks.
    Sandbox(crate::sandbox::SandboxArgs),
    /// Apply the delivery ledger's pending PostgreSQL migrations.
    Migrate,
    /// Print the delivery ledger's rows for one job.
    Status(StatusArgs),
    /// Inspect or replay the dead-letter queue.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// List or lift suppressions of recipients that a provider reported as invalid.
    #[command(subcommand)]
    Suppression(SuppressionCommand),
}

#[derive(Debug, Subcommand)]
pub enum SuppressionCommand {
    /// Print suppressed recipients, masked, the most recently seen first.
    List(SuppressionListArgs),
    /// Lift the suppression of one recipient, so its channel is sent again.
    Remove(SuppressionRemoveArgs),
}

#[derive(Debug, Args)]
pub struct SuppressionListArgs {
    /// List only this channel: email, sms, push or webhook.
    #[arg(long, value_name = "CHANNEL", value_parser = parse_channel)]
    pub channel: Option<ChannelKind>,

    /// Print at most this many rows.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct SuppressionRemoveArgs {
    /// Channel of the suppression: email, sms, push or webhook.
    #[arg(long, value_name = "CHANNEL", value_parser = parse_channel)]
    pub channel: ChannelKind,

    /// The recipient exactly as jobs give it: an email address, an E.164 number or a
    /// device token.
    #[arg(long, value_name = "RECIPIENT")]
    pub recipient: String,
}

fn parse_channel(text: &str) -> Result<ChannelKind, String> {
    ChannelKind::from_name(text)
        .ok_or_else(|| format!("`{text}` is not a channel; use email, sms, push or webhook"))
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Count dead-lettered messages by reason, channel, provider and error code.
    List,
    /// Move dead-lettered messages back to the work exchange.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Replay only messages with this `x-herald-reason`; repeat for several. Messages that
    /// the broker dead-lettered without Herald's headers have reason `broker`.
    #[arg(long = "reason", value_name = "REASON")]
    pub reasons: Vec<String>,

    /// Replay only messages of this job id.
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,

    /// Replay at most this many messages.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Messages published per second at most.
    #[arg(long, default_value_t = 50, value_name = "PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Id of the job, as the producer gave it.
    #[arg(value_name = "JOB_ID", value_parser = parse_job_id)]
    pub job_id: JobId,
}

fn parse_job_id(text: &str) -> Result<JobId, String> {
    JobId::parse(text).map_err(|error| error.to_string())
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// File of jobs: one JSON object, a JSON array, or one object per line. `-` reads standard input.
    #[arg(
        value_name = "FILE",
        required_unless_present = "example",
        conflicts_with = "example"
    )]
    pub file: Option<PathBuf>,

    /// Publish generated sample jobs instead of reading a file.
    #[arg(long)]
    pub example: bool,

    /// Number of sample jobs to generate with --example.
    #[arg(long, default_value_t = 1, requires = "example")]
    pub count: u64,

    /// Channels each sample job requests, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "email,sms,push",
        requires = "example"
    )]
    pub channels: Vec<String>,

    /// Publish bodies as they are, without validating them as jobs (to test dead-lettering).
    #[arg(long)]
    pub no_validate: bool,

    /// Publish FILE's bytes unchanged as one message, without reading them as JSON (to test
    /// how Herald handles a body that is not JSON).
    #[arg(long, requires = "file")]
    pub raw: bool,
}
