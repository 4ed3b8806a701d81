//! Key-value storage shared by every session of the app, kept across
//! sessions.
//!
//! Works while running and terminating (saving the final state is what
//! `terminating` is for); refused once terminated. Values are bytes; the
//! functions here are the host's own ([`get`], [`set`], [`delete`],
//! [`increment`], [`compare_and_set`], [`list_keys`]) plus helpers for text
//! ([`get_text`], [`set_text`]), JSON ([`get_json`], [`set_json`]) and every
//! key under a prefix ([`keys`]). A TTL (`ttl_seconds`) makes a key expire;
//! `None` keeps it until deleted.
//!
//! ```no_run
//! use sessionbox_guest::storage;
//!
//! let visits = storage::increment("visits", 1)?;
//! let greeting = storage::get_text("greeting")?.unwrap_or_else(|| "hello".into());
//! storage::set_text("last-greeting", &greeting, Some(3600))?;
//! for key in storage::keys("menu/") {
//!     sessionbox_guest::log(&format!("menu entry {}", key?));
//! }
//! # Ok::<(), sessionbox_guest::Refusal>(())
//! ```

use core::fmt;
use std::{mem, vec};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Refusal;
pub use crate::bindings::sessionbox::scenario0_2_0::storage::{
    KeyPage, compare_and_set, delete, get, increment, list_keys, set,
};

/// The value of `key` as text (invalid UTF-8 replaced); `None` if absent.
pub fn get_text(key: &str) -> Result<Option<String>, Refusal> {
    Ok(get(key)?.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// Sets `key` to `text`.
pub fn set_text(key: &str, text: &str, ttl_seconds: Option<u32>) -> Result<(), Refusal> {
    set(key, text.as_bytes(), ttl_seconds)
}

/// The value of `key` parsed as JSON into `T`; `None` if absent.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, JsonError> {
    match get(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

/// Sets `key` to `value` serialized as JSON.
pub fn set_json<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    ttl_seconds: Option<u32>,
) -> Result<(), JsonError> {
    Ok(set(key, &serde_json::to_vec(value)?, ttl_seconds)?)
}

/// Every key that starts with `prefix`, in byte order, fetched a page at a
/// time as the iteration goes. A refusal ends it, after yielding the
/// refusal.
pub fn keys(prefix: &str) -> Keys {
    Keys {
        prefix: prefix.to_owned(),
        page: Vec::new().into_iter(),
        cursor: Cursor::First,
    }
}

/// The iterator that [`keys`] returns.
#[derive(Debug)]
pub struct Keys {
    prefix: String,
    /// What is left of the page fetched last.
    page: vec::IntoIter<String>,
    cursor: Cursor,
}

/// Where the next page of [`Keys`] starts.
#[derive(Debug)]
enum Cursor {
    First,
    After(String),
    /// The last page was fetched, or a refusal ended the iteration.
    Done,
}

/// Full pages (the most `list_keys` returns): each page counts as one of the
/// handler's storage operations.
const PAGE: u32 = 1000;

impl Iterator for Keys {
    type Item = Result<String, Refusal>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            let after = match mem::replace(&mut self.cursor, Cursor::Done) {
                Cursor::First => None,
                Cursor::After(key) => Some(key),
                Cursor::Done => return None,
            };
            match list_keys(&self.prefix, after.as_deref(), PAGE) {
                Ok(page) => {
                    self.page = page.keys.into_iter();
                    if let Some(next) = page.next {
                        self.cursor = Cursor::After(next);
                    }
                }
                Err(refusal) => return Some(Err(refusal)),
            }
        }
    }
}

/// Why [`get_json`] or [`set_json`] failed.
#[derive(Debug)]
pub enum JsonError {
    /// The host refused the read or write.
    Refused(Refusal),
    /// The stored value is not JSON of the expected shape, or the value
    /// could not be serialized.
    Json(serde_json::Error),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Refused(refusal) => fmt::Display::fmt(refusal, f),
            JsonError::Json(error) => write!(f, "invalid JSON: {error}"),
        }
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JsonError::Refused(refusal) => Some(refusal),
            JsonError::Json(error) => Some(error),
        }
    }
}

impl From<Refusal> for JsonError {
    fn from(refusal: Refusal) -> Self {
        JsonError::Refused(refusal)
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(error: serde_json::Error) -> Self {
        JsonError::Json(error)
    }
}
