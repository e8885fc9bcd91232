//! The settings that take one of a few words: log format, members-only mode, and what
//! happens when the write-policy plugin cannot judge an event.

use serde::{Deserialize, Serialize};

/// Which actions need an authenticated member.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MembersOnly {
    /// Anyone may write and read.
    Off,
    /// Publishing needs a member.
    Write,
    /// Reading needs a member.
    Read,
    /// Both.
    Both,
}

/// What happens to an event the write-policy plugin could not judge.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Accept it.
    Accept,
    /// Refuse it with `error:`.
    Reject,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}
