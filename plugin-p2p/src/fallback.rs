//! Edge fallback: the deadlines a host peer and its client must meet, what each timer stands for,
//! and how long a host is given to offer. The timers themselves are the host's; this module only
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
    /// `client`, told `stop {peer_id: 0}` to move into `host`, must ask for an offer again.
    MoveRequest {
        /// The host peer keeping a slot for it.
        host: SessionId,
        /// The viewer being moved.
        client: SessionId,
    },
    /// A pair across networks whose host relay has shown only LAN or mDNS candidates: given up
    /// unless a public one came meanwhile.
    Reach {
        /// The host peer.
        host: SessionId,
        /// The client.
        client: SessionId,
    },
    /// `client`, whose player reports its P2P link, must report it connected.
    Confirm {
        /// The host peer.
        host: SessionId,
        /// The client.
        client: SessionId,
    },
    /// `viewer` may have played from the edge long enough to be moved into a host peer.
    Settled {
        /// The edge viewer.
        viewer: SessionId,
    },
    /// Whether `viewer` may be moved, now or once settled (armed at once, when a retired host
    /// loses its last client: the hook that did it has the time, the removal does not).
    MoveCheck {
        /// The retired host peer.
        viewer: SessionId,
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

    /// What the armed timer `token` stands for (for `check_invariants`).
    pub(crate) fn get(&self, token: u64) -> Option<&Deadline> {
        self.armed.get(&token)
    }

    /// The deadline of a fired timer (once).
    pub fn take(&mut self, token: u64) -> Option<Deadline> {
        self.armed.remove(&token)
    }
}

/// How many of the latest offer latencies the deadline is computed from.
const LATENCY_WINDOW: usize = 128;
/// Offers measured before the deadline follows them; until then it is the configured ceiling.
pub const MIN_LATENCY_SAMPLES: usize = 8;

/// The offer deadline, following what hosts that do offer take: `multiple` x the p99 of the last
/// [`LATENCY_WINDOW`] offer latencies (`request_offer_p2p` sent -> `offer_p2p` received), never
/// below `floor_ms` nor above `ceiling_ms`. A host that never offers (OvenPlayer >= 0.10.39) is
/// then given up on as soon as an honest one would surely have offered.
#[derive(Debug, Clone)]
pub struct OfferDeadline {
    floor_ms: u64,
    ceiling_ms: u64,
    multiple: u64,
    window: Vec<u32>,
    next: usize,
    current_ms: u64,
}

impl OfferDeadline {
    /// A deadline of `ceiling_ms` until offers are measured; `multiple` 0 keeps it there.
    pub fn new(floor_ms: u64, ceiling_ms: u64, multiple: u64) -> Self {
        Self { floor_ms: floor_ms.min(ceiling_ms), ceiling_ms, multiple, window: Vec::new(), next: 0, current_ms: ceiling_ms }
    }

    /// The deadline for the next offer, in ms.
    pub fn current_ms(&self) -> u64 {
        self.current_ms
    }

    /// A host offered `latency_ms` after it was asked.
    pub fn observe(&mut self, latency_ms: u64) {
        if self.multiple == 0 {
            return;
        }
        let sample = latency_ms.min(u64::from(u32::MAX)) as u32;
        if self.window.len() < LATENCY_WINDOW {
            self.window.push(sample);
        } else {
            self.window[self.next] = sample;
            self.next = (self.next + 1) % LATENCY_WINDOW;
        }
        if self.window.len() >= MIN_LATENCY_SAMPLES {
            // A copy on the stack to partition (no allocation per offer).
            let mut scratch = [0u32; LATENCY_WINDOW];
            let sorted = &mut scratch[..self.window.len()];
            sorted.copy_from_slice(&self.window);
            let rank = (sorted.len() * 99).div_ceil(100) - 1;
            let (_, &mut p99, _) = sorted.select_nth_unstable(rank);
            self.current_ms = (u64::from(p99) * self.multiple).clamp(self.floor_ms, self.ceiling_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_deadline_follows_the_p99_between_floor_and_ceiling() {
        let observe = |d: &mut OfferDeadline, n: usize, ms: u64| (0..n).for_each(|_| d.observe(ms));
        let mut d = OfferDeadline::new(1000, 4000, 3);
        observe(&mut d, MIN_LATENCY_SAMPLES - 1, 100);
        assert_eq!(d.current_ms(), 4000, "too few offers measured: the ceiling");
        d.observe(100);
        assert_eq!(d.current_ms(), 1000, "3 x 100 ms is under the floor");
        observe(&mut d, LATENCY_WINDOW, 500);
        assert_eq!(d.current_ms(), 1500);
        d.observe(5000);
        assert_eq!(d.current_ms(), 1500, "one slow offer in 128 is above the p99");
        d.observe(5000);
        assert_eq!(d.current_ms(), 4000, "two are the p99: capped at the ceiling");
        observe(&mut d, LATENCY_WINDOW, 400);
        assert_eq!(d.current_ms(), 1200, "old samples leave the window");
        let mut fixed = OfferDeadline::new(1000, 4000, 0);
        fixed.observe(10);
        assert_eq!(fixed.current_ms(), 4000, "multiple 0: fixed");
    }
}
