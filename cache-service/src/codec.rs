//! The entry format.
//!
//! ```text
//! byte 0      format (currently 1); any other value reads as a miss
//! bytes 1..9  version of the source row, big-endian u64 (0 for unversioned values)
//! byte 9      1 = a value follows, 0 = the source row does not exist (negative entry)
//! bytes 10..  the value, as JSON
//! ```
//!
//! The format byte lets a later release change the encoding without misreading entries
//! written by this one: they become misses and are replaced. The version sits at a fixed
//! offset so the Redis scripts can compare it without decoding the value. JSON keeps
//! entries readable with `redis-cli` and lets a server send a cached body as it is.

use serde::Serialize;

/// The format byte written by this release.
pub const FORMAT: u8 = 1;
const HEADER: usize = 10;

/// A decoded entry, borrowing the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// The source row exists; `payload` is its JSON.
    Present {
        /// Version of the source row.
        version: u64,
        /// The value as JSON.
        payload: &'a [u8],
    },
    /// The source row did not exist when it was loaded.
    Absent,
}

/// Encodes a present value.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::codec::{self, Entry};
///
/// let bytes = codec::encode(3, &serde_json::json!({"name": "keyboard"}))?;
/// assert_eq!(codec::version_of(&bytes), Some(3));
/// assert_eq!(
///     codec::decode(&bytes),
///     Some(Entry::Present { version: 3, payload: br#"{"name":"keyboard"}"# })
/// );
/// assert_eq!(codec::decode(&codec::encode_absent()), Some(Entry::Absent));
/// # Ok(())
/// # }
/// ```
pub fn encode<T: Serialize + ?Sized>(version: u64, value: &T) -> serde_json::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(128);
    bytes.push(FORMAT);
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.push(1);
    serde_json::to_writer(&mut bytes, value)?;
    Ok(bytes)
}

/// Encodes a negative entry.
pub fn encode_absent() -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER);
    bytes.push(FORMAT);
    bytes.extend_from_slice(&0u64.to_be_bytes());
    bytes.push(0);
    bytes
}

/// Decodes the header; `None` for bytes this release did not write.
pub fn decode(bytes: &[u8]) -> Option<Entry<'_>> {
    if bytes.len() < HEADER || bytes[0] != FORMAT {
        return None;
    }
    let version = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    match bytes[9] {
        1 => Some(Entry::Present {
            version,
            payload: &bytes[HEADER..],
        }),
        0 if bytes.len() == HEADER => Some(Entry::Absent),
        _ => None,
    }
}

/// The version stored in an entry's header (0 for negative entries), without decoding
/// the value. Mirrors `entry_version` in the Redis scripts.
pub fn version_of(bytes: &[u8]) -> Option<u64> {
    match decode(bytes)? {
        Entry::Present { version, .. } => Some(version),
        Entry::Absent => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_entries_round_trip() {
        let bytes = encode(7, &serde_json::json!({"a": 1})).expect("encodes");
        assert_eq!(
            decode(&bytes),
            Some(Entry::Present {
                version: 7,
                payload: br#"{"a":1}"#
            })
        );
        assert_eq!(version_of(&bytes), Some(7));
    }

    #[test]
    fn absent_entries_round_trip() {
        assert_eq!(decode(&encode_absent()), Some(Entry::Absent));
    }

    #[test]
    fn foreign_or_truncated_bytes_read_as_nothing() {
        let mut bytes = encode(1, &1).expect("encodes");
        bytes[0] = 2;
        assert_eq!(decode(&bytes), None, "a future format is not misread");
        assert_eq!(decode(b"{\"a\":1}"), None, "plain JSON is not an entry");
        assert_eq!(decode(&[FORMAT, 0, 0]), None, "a short header is rejected");
    }
}
