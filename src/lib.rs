//! cloudwarden: catches attacks on cloud control planes in cloud audit logs, as they happen.
//!
//! A record flows one way through these modules:
//!
//! - [`event`]: decode a raw provider record (CloudTrail, GCP, Azure, Entra ID, Workspace, O365,
//!   or `CloudEvent` v1) into the normalized [`event::CloudEvent`].
pub mod alert;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod event;
pub mod kafka;
pub mod replay;
pub mod state;
pub mod telemetry;
pub mod topology;
pub mod window;
