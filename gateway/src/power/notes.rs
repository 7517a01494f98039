//! "Say so once": each fact about the power hardware (no driver, no permission, a counter that
//! reset) is logged the first time it is seen, not on every sample.

use std::collections::HashSet;

/// Remembers which notices were already logged.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    said: HashSet<String>,
}

impl Notes {
    /// Logs `message` as a warning unless `key` was already said. Returns whether it logged.
    pub(crate) fn warn_once(&mut self, key: &str, message: &str) -> bool {
        let first = self.said.insert(key.to_owned());
        if first {
            tracing::warn!("{message}");
        }
        first
    }

    /// Like `warn_once`, for facts that are normal on some hardware.
    pub(crate) fn info_once(&mut self, key: &str, message: &str) -> bool {
        let first = self.said.insert(key.to_owned());
        if first {
            tracing::info!("{message}");
        }
        first
    }

    /// How many distinct notices were logged (tests check "once").
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.said.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_said_once() {
        let mut n = Notes::default();
        assert!(n.warn_once("a", "first"));
        assert!(!n.warn_once("a", "again"));
        assert!(!n.info_once("a", "and again"));
        assert!(n.info_once("b", "other"));
        assert_eq!(n.count(), 2);
    }
}
