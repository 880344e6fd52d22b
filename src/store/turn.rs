//! The turn of judging attempts, held across every instance that shares the regulation state.

use std::fmt;

/// Held while one attempt is judged on any instance; dropping it ends the turn.
pub struct TurnHold(#[allow(dead_code)] Box<dyn Send + Sync>);

impl TurnHold {
    /// A turn that lasts as long as `held` lives: whatever ends the turn does so in its `Drop`.
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self(Box::new(held))
    }
}

impl fmt::Debug for TurnHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnHold").finish_non_exhaustive()
    }
}
