//! The format version of a stored or wire record.
//!
//! A record written by this release carries no `format` key (it is format
//! 1, and older readers that refused unknown keys keep reading it). A
//! writer that changes a record's meaning in a way an old reader must not
//! miss writes a higher number; readers of every release read records of
//! any format, ignoring what they do not know, and can tell from the number
//! that they are looking at a newer writer's record.

use serde::{Deserialize, Serialize};

/// A record format version; absent means 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Format(pub u32);

impl Format {
    /// The first format, and the one this release writes.
    pub const V1: Format = Format(1);

    /// Whether this is format 1 (not written out, for older readers).
    pub fn is_v1(&self) -> bool {
        *self == Format::V1
    }
}

impl Default for Format {
    fn default() -> Self {
        Format::V1
    }
}
