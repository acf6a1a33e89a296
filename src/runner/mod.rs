//! How a run executes. Local mode: the first container of `podSpec` as a process.

pub mod process;

pub use process::ProcessRunner;
