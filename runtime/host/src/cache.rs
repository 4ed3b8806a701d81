//! The compiled-component cache: a directory of serialized components keyed
//! by the component's content hash and the engine's compatibility hash, so a
//! restart (or a second `sessionbox run`) never compiles the same component
//! twice. JavaScript and Python components take seconds to compile; loading
//! their cached form takes milliseconds.
//!
//! The directory is bounded: past its size limit, the entries used longest
//! ago go (a hit marks an entry used).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ComponentCache {
    dir: PathBuf,
    max_bytes: u64,
    hits: AtomicU64,
    compiles: AtomicU64,
}

/// How much a cache directory holds unless told otherwise: a compiled
/// JavaScript or Python component is ~35 MB, a Rust or C one well under 1 MB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// How often the cache answered from disk and how often it compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub compiles: u64,
}

impl ComponentCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ComponentCache {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        }
    }

    /// Bounds the directory at `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// `$XDG_CACHE_HOME/sessionbox/components`, else `~/.cache/...`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("sessionbox").join("components"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
        }
    }

    /// The compiled form of `bytes` (already validated as a component):
    /// from the cache when it is there and loads, else compiled and stored.
    pub fn load(&self, engine: &Engine, bytes: &[u8], content_hash: &str) -> Result<Component> {
        let path = self.dir.join(format!(
            "{content_hash}-{:016x}.cwasm",
            engine_fingerprint(engine)
        ));
        if path.exists() {
            // SAFETY: files in this directory are written only by `store`
            // below, from `Component::serialize` of this engine's
            // configuration (the fingerprint is in the name); deserializing
            // also checks the engine's compatibility itself.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    mark_used(&path);
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "recompiling: cached component unusable: {e}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store(&path, &component) {
            // A cache that cannot be written costs time, not correctness.
            tracing::warn!(path = %path.display(), "could not cache a compiled component: {e:#}");
        }
        if let Err(e) = self.prune(&path) {
            tracing::warn!(dir = %self.dir.display(), "could not prune the component cache: {e:#}");
        }
        Ok(component)
    }

    /// Writes atomically: a crash mid-write never leaves a torn file in place.
    fn store(&self, path: &Path, component: &Component) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let serialized = component.serialize()?;
        let partial = path.with_extension(format!("{}.partial", std::process::id()));
        std::fs::write(&partial, serialized)?;
        std::fs::rename(&partial, path)?;
        Ok(())
    }
}

impl ComponentCache {
    /// Removes the entries used longest ago until the directory fits its
    /// limit, keeping `newest` (the entry just written).
    fn prune(&self, newest: &Path) -> Result<()> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_file() {
                entries.push((metadata.modified()?, metadata.len(), entry.path()));
            }
        }
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path != newest {
                std::fs::remove_file(&path)?;
                total -= len;
            }
        }
        Ok(())
    }
}

/// Marks a cache entry used now, for pruning (by its modification time:
/// access times are often not kept).
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %path.display(), "could not mark a cache entry used: {e}");
    }
}

/// The hex SHA-256 of a component's bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable-within-this-build digest of everything that makes compiled code
/// (in)compatible with `engine`.
fn engine_fingerprint(engine: &Engine) -> u64 {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}
