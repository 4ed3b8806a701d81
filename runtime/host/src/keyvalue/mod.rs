//! Where apps' key-value storage lives: the [`KeyValue`] backend trait, one
//! store per app inside it, and the embedded SQLite backend ([`sqlite`]).
//!
//! A backend keeps each app's keys apart (an app reaches only its own, by
//! any key), answers every operation only once it is durable, never
//! returns an expired key, and enforces the app's quota atomically with the
//! write that would break it. The limits on one key, value or TTL are the
//! storage capability's to check, before a backend sees the operation.

pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A backend's answer, awaited on the session's fiber.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send>>;

/// What an app's store may hold, checked by every write that adds keys or
/// bytes (keys and values both count as bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub keys: u64,
    pub bytes: u64,
}

/// One page of an app's keys, in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// The last key of the page when more may follow: pass it as `after`.
    pub next: Option<String>,
}

/// What an app's store holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
}

/// An app's keys and values. Each call names the app whose store it
/// reaches.
pub trait KeyValue: Send + Sync + 'static {
    /// The value of `key`; none if absent or expired.
    fn get(&self, app: &str, key: &str) -> Pending<Option<Vec<u8>>>;

    /// Sets `key`, expiring after `ttl` (never without).
    fn set(
        &self,
        app: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Pending<()>;

    /// Deletes `key`; whether it was there (and not expired).
    fn delete(&self, app: &str, key: &str) -> Pending<bool>;

    /// Adds `delta` to the decimal integer at `key` (absent: 0), keeping its
    /// TTL; the sum.
    fn increment(&self, app: &str, key: &str, delta: i64, quota: Quota) -> Pending<i64>;

    /// Sets `key` if its value is `expected` (none: absent); whether it did.
    fn compare_and_set(
        &self,
        app: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Pending<bool>;

    /// Up to `limit` keys starting with `prefix`, after `after`.
    fn list(&self, app: &str, prefix: &str, after: Option<&str>, limit: u32) -> Pending<KeyPage>;

    /// How many keys and bytes the app's store holds.
    fn usage(&self, app: &str) -> Pending<Usage>;
}

/// Whether an app's store, using `used`, has room for `key` set to `value`
/// in place of `old` (its value now, live or expired: a row counts until
/// it is deleted).
pub fn room(
    used: Usage,
    key: &str,
    old: Option<&[u8]>,
    value: &[u8],
    quota: Quota,
) -> Result<(), StorageError> {
    let size = |value: &[u8]| (key.len() + value.len()) as u64;
    let keys = used.keys + u64::from(old.is_none());
    let bytes = used.bytes.saturating_sub(old.map_or(0, size)) + size(value);
    if keys > quota.keys {
        Err(StorageError::Quota(format!(
            "the app's storage holds its most keys ({})",
            quota.keys
        )))
    } else if bytes > quota.bytes {
        Err(StorageError::Quota(format!(
            "the app's storage would hold {bytes} bytes; its quota is {}",
            quota.bytes
        )))
    } else {
        Ok(())
    }
}

/// What an increment of `key` by `delta` leaves, its live value being
/// `current` (absent: 0).
pub fn incremented(key: &str, current: Option<&[u8]>, delta: i64) -> Result<i64, StorageError> {
    std::str::from_utf8(current.unwrap_or(b"0"))
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| {
            StorageError::NotApplicable(format!(
                "the value of `{key}` is not an integer, so it cannot be incremented"
            ))
        })?
        .checked_add(delta)
        .ok_or_else(|| {
            StorageError::NotApplicable(format!(
                "incrementing `{key}` by {delta} overflows a 64-bit integer"
            ))
        })
}

/// Now, as storage expiry times are kept: unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When a key set at `now` with `ttl` expires (never without one).
pub fn expires_at(now: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| now + ttl.as_millis() as i64)
}

/// Why a backend did not do an operation. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The app's quota would be exceeded.
    Quota(String),
    /// The operation does not apply to the value there (an increment of a
    /// value that is not an integer, or one that overflows).
    NotApplicable(String),
    /// The disk is full.
    Full,
    /// The backend failed or cannot be reached.
    Unavailable(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Quota(reason) | StorageError::NotApplicable(reason) => {
                f.write_str(reason)
            }
            StorageError::Full => f.write_str("the storage is full: its disk has no room left"),
            StorageError::Unavailable(reason) => write!(f, "the storage failed: {reason}"),
        }
    }
}

impl std::error::Error for StorageError {}
