//! Errors of the wire format itself.

/// Bytes that are not SMTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A line longer than the limit (4 KiB for replies and commands).
    #[error("line too long")]
    LineTooLong,
    /// A reply that is not `DDD[ -]text`.
    #[error("malformed reply: {0}")]
    BadReply(String),
}
