//! The time as Trailmark reads it: the sequencer's `recorded_at` and
//! checkpoint times, and the identity rules (session inactivity, token and
//! password expiry, certificate validity at signing, `signed_at`).
//!
//! Production runs on the system clock. Tests run on an adjustable clock
//! that reads the system clock plus an offset they move forward
//! ([`Clock::advance`]), so an expiry is reached at once and deterministically
//! instead of by sleeping. The composition root gives the sequencer and the
//! identity service the same clock, so a signature's `signed_at` and its
//! entry's `recorded_at` stay within the window `verify` checks. A clock only
//! moves forward, so `recorded_at` stays monotonic.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

use crate::ledger::Timestamp;

/// A clock: the system's, or the system's moved forward by a test.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Microseconds ahead of the system clock; `None` for the system clock.
    ahead: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that starts at the system time and can be moved forward.
    pub fn adjustable() -> Clock {
        Clock {
            ahead: Some(Arc::new(AtomicI64::new(0))),
        }
    }

    /// Now, to the microsecond.
    pub fn now(&self) -> DateTime<Utc> {
        let system = Timestamp::now().datetime();
        match &self.ahead {
            Some(ahead) => system + Duration::microseconds(ahead.load(Ordering::SeqCst)),
            None => system,
        }
    }

    /// Moves an adjustable clock (and every clone of it) forward by `by`.
    ///
    /// # Panics
    /// On the system clock, which nothing may move, or a negative `by`.
    pub fn advance(&self, by: Duration) {
        let ahead = self
            .ahead
            .as_ref()
            .expect("only an adjustable clock can be moved");
        let micros = by.num_microseconds().expect("a duration in range");
        assert!(micros >= 0, "a clock only moves forward");
        ahead.fetch_add(micros, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_for_every_clone() {
        let clock = Clock::adjustable();
        let other = clock.clone();
        let before = other.now();
        clock.advance(Duration::hours(2));
        let after = other.now();
        assert!(after - before >= Duration::hours(2), "{before} -> {after}");
        assert!(after - before < Duration::hours(2) + Duration::seconds(5));
    }

    #[test]
    #[should_panic(expected = "only an adjustable clock")]
    fn the_system_clock_cannot_be_moved() {
        Clock::system().advance(Duration::seconds(1));
    }
}
