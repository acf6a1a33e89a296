//! Where checks and their state live. Local mode: a directory of HealthCheck YAML files and a
//! state directory of one JSON file per check.

pub mod checkdir;
pub mod files;
pub mod kube;
pub mod memory;

pub use checkdir::CheckDir;
pub use files::FileStore;
pub use memory::MemoryStore;
