//! Trees deeper than one level (`MaxDepth` over 1): a client whose link plays relays to clients of
//! its own, and what its clients get when it stops (part of [`P2pCore`]).

use super::peer::Relay;
use super::{counts, P2pCore, Role, Stage};
use crate::pair_end::PairEnd;
use plugin_api::SessionId;

impl P2pCore {
    /// `id`, a client relaying further, relays no more: out of the pool, and each of its clients'
    /// pair ended for `end` (`HostLeft` when it is gone or starting over, `RelayLost` when its
    /// own source went). Nothing for a client that does not relay.
    pub(super) fn stop_relaying(&mut self, id: SessionId, end: PairEnd) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let Some(clients) = peer.pair_mut().and_then(|pair| pair.relay.stop()) else { return };
        let key = peer.key;
        self.pool.remove(id);
        self.touch(&[id]);
        self.count(counts::HOST_PEERS, -1);
        self.count(counts::CLIENTS, -(clients.len() as i64));
        for client in clients {
            self.end_pair(id, client, end);
        }
        self.fill_vacancies(key);
    }

    /// `client`'s link plays (confirmed, or answered where it can form): under `MaxDepth` over
    /// 1, a client that may host relays to clients of its own from now on, if it is not too deep.
    pub(super) fn maybe_relay(&mut self, client: SessionId) {
        let max_depth = self.config.max_depth;
        let Some(peer) = self.peers.get_mut(&client) else { return };
        let eligible = peer.can.may_host() && !peer.standing.retired() && peer.depth < max_depth;
        let plays = matches!(peer.role(), Role::Client { stage: Stage::Answered | Stage::Confirmed, .. });
        let Some(pair) = peer.pair_mut().filter(|pair| eligible && plays && pair.relay == Relay::Off) else { return };
        pair.relay.start();
        let (key, site, proven, depth) = (peer.key, peer.site, peer.standing.proven(), peer.depth);
        self.pool.insert_at(client, key, site, 0, proven, depth);
        self.touch(&[client]);
        self.count(counts::HOST_PEERS, 1);
        self.log(format!("{client}: relays further, at depth {depth}"));
        self.fill_vacancies(key);
    }
}
