//! Running as one of several replicas: who leads, through a `coordination.k8s.io/v1` Lease.

pub mod lease;

pub use lease::{Elector, LeaseConfig, LeaseGuard};
