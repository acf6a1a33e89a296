//! probity: a synthetic check runner that speaks Kuberhealthy's API.
//!
//! The engine decides when checks run and what their results mean; the backends (`kube`,
//! `local`) carry those decisions out. docs/architecture.md is the map.

pub mod alert;
pub mod api;
pub mod checks;
pub mod cli;
pub mod client;
pub mod engine;
mod error;
pub mod kube;
pub mod local;
pub mod metrics;
pub mod migrate;
pub mod probe;
pub mod serve;
pub mod server;
pub mod tls;

pub use error::{Error, Result};

/// Makes large buffers (a 10,000-check `/metrics` or `/json` body) come from and go back to the
/// OS directly. glibc otherwise raises its mmap threshold after the first such buffer is freed
/// and keeps the later ones in its heap, so each scrape ratchets the RSS up.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
