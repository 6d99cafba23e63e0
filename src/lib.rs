//! sandbox-admission: admission webhook and Rego policy enforcer for Kubernetes Agent Sandbox.
//!
//! Data flows one way: `server` receives a body → `admission` decodes it → `mutate` / `policy`
//! judge it → `pipeline` decides → `admission` encodes the answer → `audit` and `metrics` record it.

pub mod admin;
pub mod admission;
pub mod audit;
pub mod background;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod decision;
pub mod disagreement;
pub mod documents;
pub mod explain;
pub mod metrics;
pub mod mutate;
pub mod network_policies;
pub mod pipeline;
pub mod policy;
pub mod policyreport;
pub mod readiness;
pub mod replay;
pub mod request;
pub mod review;
pub mod scan;
pub mod server;
pub mod shadow;
