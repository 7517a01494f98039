//! Stop strings on streamed text: text that might be the start of a stop string is held back
//! until it is known not to be, so a client never sees any part of a stop string.

/// What the caller may emit after pushing more text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit; generation goes on.
    Continue(String),
    /// A stop string matched: emit this last text (everything before the match) and stop.
    Stopped(String),
}

#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match everywhere).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.pending.push_str(text);
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = earliest {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        let keep_from = self.held_back_from();
        let out = self.pending[..keep_from].to_string();
        self.pending.drain(..keep_from);
        StopOutcome::Continue(out)
    }

    /// Whatever is still held back, at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Start of the longest suffix of `pending` that is a proper prefix of some stop string.
    fn held_back_from(&self) -> usize {
        self.pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_string_split_across_pieces_is_never_emitted() {
        assert_eq!(
            run(&["\n\n"], &["Hello", "\n", "\nWorld"]),
            ("Hello".into(), true)
        );
        assert_eq!(
            run(&["END"], &["abc E", "N", "D more"]),
            ("abc ".into(), true)
        );
    }

    #[test]
    fn false_starts_are_released() {
        assert_eq!(
            run(&["END"], &["EN", "d of it"]),
            ("ENd of it".into(), false)
        );
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("xEN"), StopOutcome::Continue("x".into()));
        assert_eq!(m.push("!"), StopOutcome::Continue("EN!".into()));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_unicode_is_safe() {
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), true));
        assert_eq!(run(&["é!"], &["café", "?"]), ("café?".into(), false));
        assert_eq!(run(&[""], &["abc"]), ("abc".into(), false));
    }
}
