//! The `<P2P>` config section (under `<Modules>`, or OME's older `<Server><P2P>` form).
//!
//! ```xml
//! <P2P>
//!   <Enable>true</Enable>                                   <!-- default false, as in OME -->
//!   <MaxClientPeersPerHostPeer>2</MaxClientPeersPerHostPeer> <!-- default 2; 0 = no clients -->
//!   <OfferTimeoutMs>4000</OfferTimeoutMs>   <!-- a host must send offer_p2p within this -->
//!   <AnswerTimeoutMs>4000</AnswerTimeoutMs> <!-- a client must answer the host's offer within this -->
//!   <HostPenaltyMs>60000</HostPenaltyMs>    <!-- a host that missed a deadline is not chosen for this long -->
//!   <Matching>balanced</Matching>           <!-- or greedy (OME's rule); see `Matching` -->
//!   <Exclude>app</Exclude>                  <!-- no P2P for an application ... -->
//!   <Exclude>app/stream</Exclude>           <!-- ... or for one stream; repeatable -->
//! </P2P>
//! ```

use plugin_api::ConfigError;
use serde::Deserialize;

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct P2pConfig {
    /// P2P delivery on or off.
    #[serde(default)]
    pub enable: bool,
    /// Clients per host peer (k).
    #[serde(default = "P2pConfig::default_k")]
    pub max_client_peers_per_host_peer: u16,
    /// Deadline for a host's `offer_p2p`, in ms.
    #[serde(default = "P2pConfig::default_timeout")]
    pub offer_timeout_ms: u64,
    /// Deadline for a client's answer to its host's offer, in ms.
    #[serde(default = "P2pConfig::default_timeout")]
    pub answer_timeout_ms: u64,
    /// How long a host that missed a deadline is not chosen again, in ms.
    #[serde(default = "P2pConfig::default_penalty")]
    pub host_penalty_ms: u64,
    /// How viewers who could host are matched.
    #[serde(default)]
    pub matching: Matching,
    /// Applications (`app`) or streams (`app/stream`) without P2P.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Whether a viewer who could host takes a vacant client slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matching {
    /// A host-eligible viewer takes a vacancy only while its pool (stream and browser kind) has
    /// slots enough for the viewers who cannot host (phones, Linux, Edge: hosts x k >= their
    /// number); otherwise it is served by the edge and becomes a host, leaving the slots to them.
    /// Where every viewer could host, this is the same assignment as `greedy`.
    #[default]
    Balanced,
    /// OME's rule: every viewer takes a vacancy when there is one.
    Greedy,
}

impl P2pConfig {
    fn default_k() -> u16 {
        2
    }
    fn default_timeout() -> u64 {
        4000
    }
    fn default_penalty() -> u64 {
        60_000
    }

    /// Parses the section's XML text; an error carries the byte offset of the problem.
    pub fn parse(xml: &str) -> Result<Self, ConfigError> {
        let mut de = quick_xml::de::Deserializer::from_str(xml);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let offset = de.get_ref().get_ref().buffer_position();
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let what = match inner.strip_prefix("unknown field `") {
                Some(rest) => format!(
                    "unknown element <{}> in <P2P>; expected {}",
                    rest.split('`').next().unwrap_or(rest),
                    rest.split_once("expected ").map(|(_, e)| e).unwrap_or("")
                ),
                None => inner,
            };
            ConfigError::new(Some(offset), if path == "." { what } else { format!("P2P.{path}: {what}") })
        })
    }

    /// True if P2P applies to `app/stream`.
    pub fn applies_to(&self, app: &str, stream: &str) -> bool {
        self.enable
            && !self.exclude.iter().any(|e| match e.split_once('/') {
                Some((a, s)) => a == app && s == stream,
                None => e == app,
            })
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self::parse("<P2P/>").expect("defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_ome() {
        let c = P2pConfig::default();
        assert!(!c.enable);
        assert_eq!(c.max_client_peers_per_host_peer, 2);
    }

    #[test]
    fn parses_every_setting() {
        let c = P2pConfig::parse("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>0</MaxClientPeersPerHostPeer><OfferTimeoutMs>10</OfferTimeoutMs><AnswerTimeoutMs>20</AnswerTimeoutMs><HostPenaltyMs>30</HostPenaltyMs><Exclude>a</Exclude><Exclude>b/s</Exclude></P2P>").unwrap();
        assert_eq!((c.max_client_peers_per_host_peer, c.offer_timeout_ms, c.answer_timeout_ms, c.host_penalty_ms), (0, 10, 20, 30));
        assert!(!c.applies_to("a", "x"));
        assert!(!c.applies_to("b", "s"));
        assert!(c.applies_to("b", "t"));
    }

    #[test]
    fn errors_have_offsets() {
        let xml = "<P2P>\n  <MaxClientPeers>2</MaxClientPeers>\n</P2P>";
        let e = P2pConfig::parse(xml).unwrap_err();
        assert!(e.message.contains("unknown element <MaxClientPeers>"), "{e}");
        assert!(e.offset.into_option().is_some_and(|o| o > 0));
        let e = P2pConfig::parse("<P2P><Enable>perhaps</Enable></P2P>").unwrap_err();
        assert!(e.message.contains("Enable"), "{e}");
    }
}
