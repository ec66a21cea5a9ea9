//! Transient or permanent: the one classification of failures every service acts on.
//!
//! A transient failure lies outside the work (a registry, a broker or a database out of reach):
//! the same work may succeed later, so it is retried and never turns a record into poison. A
//! permanent failure is the work's own (bytes that do not decode, a schema the registry refuses):
//! retrying cannot help, so the record goes to the DLQ, or the service stops before it. Each
//! error type says which it is by implementing [`Classify`]; callers branch on that, and nobody
//! re-wraps an error into an enum of their own to say it again.

/// Whether retrying the same work may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    /// The cause lies outside the work: the same call may succeed later.
    Transient,
    /// The work itself is at fault: retrying cannot help.
    Permanent,
}

impl Transience {
    /// [`Transience::Transient`] when `transient`, else [`Transience::Permanent`].
    pub fn transient_if(transient: bool) -> Self {
        if transient {
            Transience::Transient
        } else {
            Transience::Permanent
        }
    }
}

/// An error that knows whether it is [`Transience::Transient`].
pub trait Classify: std::error::Error {
    fn transience(&self) -> Transience;

    /// Whether the same call may succeed later.
    fn is_transient(&self) -> bool {
        self.transience() == Transience::Transient
    }
}
