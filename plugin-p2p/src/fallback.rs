//! Edge fallback: the deadlines a host peer and its client must meet, and what happens to clients
//! when their host goes or misses one. The timers themselves are the host's; this module only
//! names them (tokens) and remembers what each one is for.

use plugin_api::SessionId;
use std::collections::HashMap;

/// What a timer stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `host` must send `offer_p2p` to `client`.
    HostOffer {
        /// The host peer.
        host: SessionId,
        /// Its new client.
        client: SessionId,
    },
    /// `client` must answer `host`'s offer.
    ClientAnswer {
        /// The host peer.
        host: SessionId,
        /// The client.
        client: SessionId,
    },
    /// `host`'s penalty after a missed deadline is over.
    PenaltyOver {
        /// The host peer.
        host: SessionId,
    },
}

/// Armed deadlines by timer token. A deadline is checked against the state when it fires, so a
/// stale one (its pair already gone) does nothing; nothing needs cancelling.
#[derive(Debug, Default)]
pub struct Deadlines {
    next_token: u64,
    armed: HashMap<u64, Deadline>,
}

impl Deadlines {
    /// Arms `deadline` and returns the token of its timer.
    pub fn arm(&mut self, deadline: Deadline) -> u64 {
        self.next_token += 1;
        self.armed.insert(self.next_token, deadline);
        self.next_token
    }

    /// Every armed deadline (for `check_invariants`).
    pub(crate) fn armed(&self) -> impl Iterator<Item = &Deadline> {
        self.armed.values()
    }

    /// The deadline of a fired timer (once).
    pub fn take(&mut self, token: u64) -> Option<Deadline> {
        self.armed.remove(&token)
    }
}
