//! Refused configuration changes: the kernel's errno and a sentence.

use std::fmt;

/// The errno a kernel operation would have returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Invalid argument.
    Einval,
    /// Device or resource busy.
    Ebusy,
    /// Address already in use.
    Eaddrinuse,
    /// Cannot assign requested address.
    Eaddrnotavail,
    /// Operation not supported.
    Eopnotsupp,
    /// No such device.
    Enodev,
    /// File exists.
    Eexist,
}

impl Errno {
    /// The C name.
    pub fn as_str(self) -> &'static str {
        match self {
            Errno::Einval => "EINVAL",
            Errno::Ebusy => "EBUSY",
            Errno::Eaddrinuse => "EADDRINUSE",
            Errno::Eaddrnotavail => "EADDRNOTAVAIL",
            Errno::Eopnotsupp => "EOPNOTSUPP",
            Errno::Enodev => "ENODEV",
            Errno::Eexist => "EEXIST",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused configuration change: the kernel's errno and a sentence saying what was wrong.
/// The engine's state is unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({errno})")]
pub struct ConfigError {
    /// The errno the kernel returns for this case.
    pub errno: Errno,
    /// What was wrong, and what to do about it.
    pub message: String,
}

pub(super) fn err<T>(errno: Errno, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        errno,
        message: message.into(),
    })
}
