//! [`Verified`]: a value that can only be obtained by checking a signature first.

/// A value whose signature has been checked against trusted keys. There is no public
/// constructor: the only way to get one is through a verification function of this crate, so
/// code that needs an authenticated Statement cannot be handed an unchecked one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T> {
    value: T,
    signed_by: Vec<String>,
}

impl<T> Verified<T> {
    pub(crate) fn new(value: T, signed_by: Vec<String>) -> Self {
        Verified { value, signed_by }
    }

    /// keyids of the trusted keys that signed.
    pub fn signed_by(&self) -> &[String] {
        &self.signed_by
    }

    /// Gives up the proof and returns the value.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Maps the verified value, keeping the signers (crate-internal: derived values stay
    /// verified only when the derivation is ours).
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Verified<U> {
        Verified {
            value: f(self.value),
            signed_by: self.signed_by,
        }
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
