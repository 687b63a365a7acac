//! How far a pair (a host peer and one client) got ([`Stage`]), and how it ends: every reason in
//! one place, and a table of what follows each, by how far the pair had got. The core carries the table out in one function
//! (`P2pCore::end_pair`); nothing else ends a pair.

use crate::counts;

/// How a client's connection to its host stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// An edge viewer told `stop {peer_id: 0}` to move into this host; it has not asked again yet.
    Moving,
    /// The host was asked to offer; nothing sent to the client yet.
    AwaitingOffer,
    /// The client has the host's offer and must answer.
    AwaitingAnswer,
    /// The client answered; the pair connects on its own. It counts as playing from its host
    /// unless its player reports links (then only once [`Stage::Confirmed`]).
    Answered,
    /// The client's player reported the link connected.
    Confirmed,
}

/// Why a pair ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairEnd {
    /// The client left, or asked for the stream again (it starts over).
    ClientLeft,
    /// The host left, or started over: each of its clients falls back.
    HostLeft,
    /// The host did not offer in time: it is retired (never asked again on its socket).
    OfferMissed,
    /// The host was retired while the client was moving to it: the client, asking again, is
    /// matched anew.
    HostGivenUp,
    /// The client did not answer the host's offer in time.
    AnswerMissed,
    /// Told to move, the client did not ask again.
    MoveIgnored,
    /// The link cannot form or failed (counted under this fallback reason: reported failed,
    /// unreachable, not confirmed in time).
    LinkFailed(&'static str),
    /// The host is a client relaying further whose own source went: it is told first, then the
    /// client (its list was taken with its place in the pool).
    RelayLost,
}

/// What the client gets when its pair ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientGets {
    /// Nothing: it is gone, asking again already, or still on the edge.
    Nothing,
    /// The edge's offer now: it is waiting for an answer to its `request_offer` (or, for
    /// OvenPlayer, which takes any offer while it has not answered, for the host's).
    EdgeOffer,
    /// `stop {peer_id: host}`: it holds the host's offer; it closes that connection, asks again,
    /// and the edge serves it.
    Stop,
}

/// When the host is told `stop {peer_id: client}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostTold {
    /// Never (it is gone, or never heard of the client).
    No,
    /// Before the client's slot is freed (a vacancy it may fill comes after).
    Before,
    /// Last.
    After,
}

/// What follows the end of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aftermath {
    /// A fallback or move metric to count.
    pub count: Option<&'static str>,
    /// The client's part.
    pub client_gets: ClientGets,
    /// The host's part.
    pub host_told: HostTold,
    /// The client was a client (OME's once-a-client rule): its requests go to the edge from now.
    pub ends_client_life: bool,
    /// The client is never moved again in its session.
    pub unmovable: bool,
    /// The host's slot is freed (false when the host itself is gone).
    pub frees_slot: bool,
}

/// Whether the client had the host's offer.
fn introduced(stage: Stage) -> bool {
    matches!(stage, Stage::AwaitingAnswer | Stage::Answered | Stage::Confirmed)
}

/// What the client gets, by what it is waiting for.
fn by_stage(stage: Stage) -> ClientGets {
    match stage {
        Stage::Moving => ClientGets::Nothing,
        Stage::AwaitingOffer => ClientGets::EdgeOffer,
        Stage::AwaitingAnswer | Stage::Answered | Stage::Confirmed => ClientGets::Stop,
    }
}

impl PairEnd {
    /// The table: what follows this end of a pair whose client was at `stage`.
    pub fn aftermath(self, stage: Stage) -> Aftermath {
        let quiet = Aftermath { count: None, client_gets: ClientGets::Nothing, host_told: HostTold::No, ends_client_life: false, unmovable: false, frees_slot: true };
        match self {
            PairEnd::ClientLeft => Aftermath {
                host_told: if stage == Stage::Moving { HostTold::No } else { HostTold::Before },
                ends_client_life: stage != Stage::Moving,
                ..quiet
            },
            PairEnd::HostLeft => Aftermath {
                count: Some(counts::FALLBACK_HOST_LEFT),
                client_gets: by_stage(stage),
                ends_client_life: introduced(stage),
                frees_slot: false,
                ..quiet
            },
            PairEnd::OfferMissed => Aftermath {
                count: Some(counts::FALLBACK_OFFER_DEADLINE),
                client_gets: ClientGets::EdgeOffer,
                host_told: HostTold::After,
                ..quiet
            },
            PairEnd::HostGivenUp => quiet,
            PairEnd::AnswerMissed => Aftermath {
                count: Some(counts::FALLBACK_ANSWER_DEADLINE),
                client_gets: ClientGets::EdgeOffer,
                host_told: HostTold::After,
                ends_client_life: true,
                unmovable: true,
                ..quiet
            },
            PairEnd::MoveIgnored => Aftermath { count: Some(counts::MOVES_IGNORED), unmovable: true, ..quiet },
            PairEnd::RelayLost => Aftermath {
                count: Some(counts::FALLBACK_RELAY_LOST),
                client_gets: by_stage(stage),
                host_told: HostTold::Before,
                ends_client_life: introduced(stage),
                frees_slot: false,
                ..quiet
            },
            PairEnd::LinkFailed(reason) => Aftermath {
                count: Some(reason),
                client_gets: by_stage(stage),
                host_told: HostTold::After,
                ends_client_life: introduced(stage),
                ..quiet
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_gets_what_answers_what_it_waits_for() {
        assert_eq!(PairEnd::HostLeft.aftermath(Stage::AwaitingOffer).client_gets, ClientGets::EdgeOffer);
        assert_eq!(PairEnd::HostLeft.aftermath(Stage::Answered).client_gets, ClientGets::Stop);
        assert_eq!(PairEnd::HostLeft.aftermath(Stage::Moving).client_gets, ClientGets::Nothing);
        assert_eq!(PairEnd::LinkFailed(counts::FALLBACK_UNREACHABLE).aftermath(Stage::AwaitingOffer).client_gets, ClientGets::EdgeOffer, "a withheld offer");
        assert_eq!(PairEnd::AnswerMissed.aftermath(Stage::AwaitingAnswer).client_gets, ClientGets::EdgeOffer);
        assert_eq!(PairEnd::ClientLeft.aftermath(Stage::Confirmed).client_gets, ClientGets::Nothing);
    }

    #[test]
    fn only_a_gone_host_keeps_its_slot_and_only_the_client_that_failed_is_blamed() {
        for stage in [Stage::Moving, Stage::AwaitingOffer, Stage::AwaitingAnswer, Stage::Answered, Stage::Confirmed] {
            assert!(!PairEnd::HostLeft.aftermath(stage).frees_slot);
            assert!(!PairEnd::RelayLost.aftermath(stage).frees_slot, "the relay's list was taken");
            assert_eq!(PairEnd::RelayLost.aftermath(stage).host_told, HostTold::Before, "the relay hears of its clients before of its source");
            assert_eq!(PairEnd::HostLeft.aftermath(stage).host_told, HostTold::No);
            for end in [PairEnd::ClientLeft, PairEnd::OfferMissed, PairEnd::HostGivenUp, PairEnd::AnswerMissed, PairEnd::MoveIgnored, PairEnd::LinkFailed("x")] {
                assert!(end.aftermath(stage).frees_slot, "{end:?} at {stage:?}");
                assert_eq!(end.aftermath(stage).unmovable, matches!(end, PairEnd::AnswerMissed | PairEnd::MoveIgnored), "{end:?}");
            }
        }
        assert_eq!(PairEnd::ClientLeft.aftermath(Stage::AwaitingOffer).host_told, HostTold::Before, "its slot may go to a waiting viewer after");
        assert_eq!(PairEnd::ClientLeft.aftermath(Stage::Moving).host_told, HostTold::No, "the host never heard of it");
    }
}
