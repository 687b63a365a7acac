//! The `<P2P>` config section (under `<Modules>`, or OME's older `<Server><P2P>` form).
//!
//! ```xml
//! <P2P>
//!   <Enable>true</Enable>                                   <!-- default false, as in OME -->
//!   <MaxClientPeersPerHostPeer>2</MaxClientPeersPerHostPeer> <!-- default 2; 0 = no clients -->
//!   <Matching>balanced</Matching>           <!-- or greedy (OME's rule); see `Matching` -->
//!   <!-- proven: a viewer asking for the stream gets only a host that has already relayed (a
//!        confirmed link, or an answer where a link can form), else the edge at once, and is moved
//!        into a host later (moves may go into unproven hosts where a link can form: how a host
//!        proves itself); any: OME's rule, any host with a free slot at once. -->
//!   <PairNewViewers>proven</PairNewViewers>
//!   <!-- Hops from the edge a viewer may be: 1 is OME's rule (a client never relays); 2 to 8: a
//!        client that may host relays to clients of its own once its own link plays (each hop
//!        re-encodes in a browser: latency and quality cost). -->
//!   <MaxDepth>1</MaxDepth>
//!   <!-- A host must send offer_p2p within OfferTimeoutP99Multiple x the p99 of the offer latency
//!        measured from hosts that do offer (last 128 offers), never under OfferTimeoutMinMs nor
//!        over OfferTimeoutMs; OfferTimeoutMs until 8 offers are measured. Multiple 0: always
//!        OfferTimeoutMs. A host that misses it is never asked again on that socket (OvenPlayer
//!        >= 0.10.39 never offers); its client is served by the edge at once. -->
//!   <OfferTimeoutMs>4000</OfferTimeoutMs>
//!   <OfferTimeoutMinMs>1000</OfferTimeoutMinMs>
//!   <OfferTimeoutP99Multiple>3</OfferTimeoutP99Multiple>
//!   <!-- A client must answer its host's offer within this; one that does not is served by the
//!        edge from then on (its host is not blamed). -->
//!   <AnswerTimeoutMs>4000</AnswerTimeoutMs>
//!   <!-- Re-parenting: a viewer who plays from the edge but can only be a client (it asked for an
//!        offer, may not host or cannot relay, relays to nobody, has played from the edge for
//!        MoveAfterMs) is moved into a vacancy of a host peer that has relayed in this session,
//!        with `stop {peer_id: 0}` (OvenPlayer closes its edge connection and asks again; the
//!        host's offer answers it). A viewer is moved at most twice per session; one that does
//!        not ask again within OfferTimeoutMs, or that once failed to answer a host, is never
//!        moved again. OvenPlayer's `stop` handler pauses the player (WebRTCLoader.js); it plays
//!        on by itself only when created with `autoStart: true`: turn moves off for pages that
//!        use `autoStart: false`. -->
//!   <MoveEdgeViewers>true</MoveEdgeViewers>
//!   <MoveAfterMs>5000</MoveAfterMs>
//!   <!-- A former client (its host left or it failed to answer) is served by the edge when it
//!        asks again, as OME does; true: it may later be moved into a host like any edge viewer
//!        (within the two moves); false: OME's rule, the edge serves it for the rest of its
//!        session. -->
//!   <MoveFormerClients>true</MoveFormerClients>
//!   <!-- Locality: a client is given a host of its own network first (a configured <Site>, else
//!        the same IPv4 /24 or IPv6 /56), then any host of its browser kind. -->
//!   <PreferSameNetwork>true</PreferSameNetwork>
//!   <Site>                                  <!-- repeatable; the first site that matches wins -->
//!     <Name>campus</Name>
//!     <Network>10.1.0.0/16</Network>        <!-- repeatable; IPv4 or IPv6 CIDR blocks -->
//!   </Site>
//!   <ReachWaitMs>1500</ReachWaitMs>         <!-- a pair across networks is given up this long
//!                                                after the host's offer unless the host showed a
//!                                                public candidate (0: never) -->
//!   <ConfirmTimeoutMs>10000</ConfirmTimeoutMs> <!-- a reporting client not connected by then
//!                                                plays from the edge -->
//!   <IceServers>                            <!-- for the players' P2P connections, named to them
//!     <IceServer>                                in p2p_ice_servers; none: the host's own STUN -->
//!       <Url>stun:stun.example.com:3478</Url>
//!       <UserName>user</UserName><Credential>secret</Credential>  <!-- TURN only -->
//!     </IceServer>
//!   </IceServers>
//!   <Exclude>app</Exclude>                  <!-- no P2P for an application ... -->
//!   <Exclude>app/stream</Exclude>           <!-- ... or for one stream; repeatable -->
//! </P2P>
//! ```

use crate::locality::{Cidr, Locator};
use plugin_api::ConfigError;
use serde::Deserialize;

/// The deepest `<MaxDepth>`: each hop re-encodes in a browser, so deeper trees cost every
/// viewer below latency and quality for little more offload.
pub const MAX_DEPTH: u8 = 8;

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
    /// The longest a host is given to send `offer_p2p`, in ms (and the deadline until offers
    /// are measured).
    #[serde(default = "P2pConfig::default_timeout")]
    pub offer_timeout_ms: u64,
    /// The shortest offer deadline, in ms.
    #[serde(default = "P2pConfig::default_offer_floor")]
    pub offer_timeout_min_ms: u64,
    /// The offer deadline is this many times the measured p99 offer latency; 0 = fixed.
    #[serde(default = "P2pConfig::default_p99_multiple")]
    pub offer_timeout_p99_multiple: u64,
    /// Deadline for a client's answer to its host's offer, in ms.
    #[serde(default = "P2pConfig::default_timeout")]
    pub answer_timeout_ms: u64,
    /// How viewers who could host are matched.
    #[serde(default)]
    pub matching: Matching,
    /// Which hosts a viewer asking for the stream may be given.
    #[serde(default)]
    pub pair_new_viewers: PairNewViewers,
    /// How many hops from the edge a viewer may be: 1 is OME's rule (a client never relays); with
    /// 2 or more a client that may host relays to clients of its own once its link plays.
    #[serde(default = "P2pConfig::default_max_depth")]
    pub max_depth: u8,
    /// Re-parenting: move edge viewers who could be clients into hosts' vacancies.
    #[serde(default = "P2pConfig::yes")]
    pub move_edge_viewers: bool,
    /// Former clients may be moved too (else the edge serves them for good, OME's rule).
    #[serde(default = "P2pConfig::yes")]
    pub move_former_clients: bool,
    /// How long a viewer plays from the edge before it may be moved, in ms.
    #[serde(default = "P2pConfig::default_move_after")]
    pub move_after_ms: u64,
    /// Give a client a host of its own network first.
    #[serde(default = "P2pConfig::yes")]
    pub prefer_same_network: bool,
    /// Named networks (first match wins), for `prefer_same_network`.
    #[serde(default)]
    pub site: Vec<SiteConfig>,
    /// Applications (`app`) or streams (`app/stream`) without P2P.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A pair across networks is given up this long after its host's offer, in ms, unless the
    /// host has shown a server-reflexive, relayed or public candidate and neither end only LAN or
    /// mDNS ones (its client then plays from the edge); 0: no such deadline (an offer that
    /// shows only LAN candidates is still withheld).
    #[serde(default = "P2pConfig::default_reach_wait")]
    pub reach_wait_ms: u64,
    /// STUN and TURN servers for the players' P2P connections, named to them in `p2p_ice_servers`
    /// (relayed offers, `request_offer_p2p`); none: players use the host's own STUN, which its
    /// edge offers name.
    #[serde(default)]
    pub ice_servers: IceServers,
    /// A client whose player reports its P2P link (`p2p_link_state`) and has not reported it
    /// connected this long after its answer plays from the edge, in ms.
    #[serde(default = "P2pConfig::default_confirm_timeout")]
    pub confirm_timeout_ms: u64,
}

/// `<IceServers>`: OME's form, `<IceServer><Url>stun:...</Url><UserName/><Credential/></IceServer>`
/// (repeatable; `<Urls><Url>` accepted too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct IceServers {
    /// The servers.
    #[serde(default)]
    pub ice_server: Vec<IceServer>,
}

/// One STUN or TURN server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct IceServer {
    /// `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`, ...
    #[serde(default)]
    pub url: Vec<String>,
    /// OME's `<Urls><Url>` form.
    #[serde(default)]
    pub urls: Option<IceServerUrls>,
    /// TURN's user name.
    #[serde(default)]
    pub user_name: Option<String>,
    /// TURN's credential.
    #[serde(default)]
    pub credential: Option<String>,
}

/// `<Urls>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct IceServerUrls {
    /// The URLs.
    #[serde(default)]
    pub url: Vec<String>,
}

impl IceServers {
    /// The servers as players' `RTCIceServer`s: `[{"urls": [...], "username"?, "credential"?}]`.
    pub fn to_json(&self) -> serde_json::Value {
        let server = |s: &IceServer| {
            let urls: Vec<&String> = s.url.iter().chain(s.urls.iter().flat_map(|u| &u.url)).collect();
            let mut v = serde_json::json!({ "urls": urls });
            if let Some(user) = &s.user_name {
                v["username"] = user.as_str().into();
            }
            if let Some(credential) = &s.credential {
                v["credential"] = credential.as_str().into();
            }
            v
        };
        self.ice_server.iter().map(server).collect()
    }
}

/// A named network: viewers whose address is in any of its blocks are near each other.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct SiteConfig {
    /// For the logs.
    pub name: String,
    /// CIDR blocks, IPv4 or IPv6.
    #[serde(default)]
    pub network: Vec<String>,
}

/// Which hosts a viewer asking for the stream may be given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairNewViewers {
    /// Only a host that has already relayed (a client's link confirmed, or answered where a link
    /// can form): otherwise the viewer plays from the edge at once, and is moved into a host
    /// later (moves may go into hosts that have not relayed yet, where a link can form: that is
    /// how a host proves itself). Nobody waits on a relay that may never offer (OvenPlayer
    /// 0.10.39 and later) or never connect.
    #[default]
    Proven,
    /// OME's rule: any host with a free slot, at once; moves only into hosts that have relayed.
    Any,
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
    fn default_offer_floor() -> u64 {
        1000
    }
    fn default_p99_multiple() -> u64 {
        3
    }
    fn default_move_after() -> u64 {
        5_000
    }
    fn default_max_depth() -> u8 {
        1
    }

    fn default_reach_wait() -> u64 {
        1500
    }

    fn default_confirm_timeout() -> u64 {
        10_000
    }

    fn yes() -> bool {
        true
    }

    /// One line for the log: every setting in force.
    pub fn summary(&self) -> String {
        if !self.enable {
            return "P2P delivery is off (<P2P><Enable>true</Enable></P2P> turns it on)".to_string();
        }
        let moves = match (self.move_edge_viewers, self.move_former_clients) {
            (false, _) => "off".to_string(),
            (true, former) => format!("after {} ms on the edge{}", self.move_after_ms, if former { ", former clients too" } else { "" }),
        };
        let sites: Vec<&str> = self.site.iter().map(|s| s.name.as_str()).collect();
        format!(
            "P2P delivery on: {} clients per host peer, {:?} matching, new viewers paired with {:?} hosts, offer deadline {}-{} ms ({}x the p99 offer latency), answer deadline {} ms, moving edge viewers into hosts {moves}, same network first {} (sites {sites:?}), excluded {:?}",
            self.max_client_peers_per_host_peer,
            self.matching,
            self.pair_new_viewers,
            self.offer_timeout_min_ms,
            self.offer_timeout_ms,
            self.offer_timeout_p99_multiple,
            self.answer_timeout_ms,
            self.prefer_same_network,
            self.exclude
        )
    }

    /// The locator of `prefer_same_network` and the sites (blocks checked by [`Self::parse`]).
    pub fn locator(&self) -> Locator {
        let sites = self.site.iter().map(|s| s.network.iter().filter_map(|n| Cidr::parse(n).ok()).collect()).collect();
        Locator::new(self.prefer_same_network, sites)
    }

    /// Parses the section's XML text; an error carries the byte offset of the problem.
    pub fn parse(xml: &str) -> Result<Self, ConfigError> {
        let config = Self::deserialize(xml)?;
        if !(1..=MAX_DEPTH).contains(&config.max_depth) {
            return Err(ConfigError::new(None, format!("P2P.MaxDepth {} is not 1 to {MAX_DEPTH}", config.max_depth)));
        }
        for site in &config.site {
            if site.network.is_empty() {
                return Err(ConfigError::new(None, format!("P2P.Site {:?} has no <Network>", site.name)));
            }
            for block in &site.network {
                Cidr::parse(block).map_err(|e| ConfigError::new(None, format!("P2P.Site {:?}: {e}", site.name)))?;
            }
        }
        Ok(config)
    }

    fn deserialize(xml: &str) -> Result<Self, ConfigError> {
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
        assert_eq!((c.offer_timeout_ms, c.offer_timeout_min_ms, c.offer_timeout_p99_multiple, c.answer_timeout_ms), (4000, 1000, 3, 4000));
        assert!(c.move_edge_viewers && c.move_former_clients && c.prefer_same_network);
        assert_eq!(c.move_after_ms, 5000);
    }

    #[test]
    fn parses_every_setting() {
        let c = P2pConfig::parse("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>0</MaxClientPeersPerHostPeer><OfferTimeoutMs>10</OfferTimeoutMs><OfferTimeoutMinMs>5</OfferTimeoutMinMs><OfferTimeoutP99Multiple>4</OfferTimeoutP99Multiple><AnswerTimeoutMs>20</AnswerTimeoutMs><MoveEdgeViewers>false</MoveEdgeViewers><MoveFormerClients>false</MoveFormerClients><MoveAfterMs>30</MoveAfterMs><PreferSameNetwork>false</PreferSameNetwork><Site><Name>hq</Name><Network>10.0.0.0/8</Network><Network>2001:db8::/32</Network></Site><Exclude>a</Exclude><Exclude>b/s</Exclude></P2P>").unwrap();
        assert_eq!((c.max_client_peers_per_host_peer, c.offer_timeout_ms, c.offer_timeout_min_ms, c.offer_timeout_p99_multiple, c.answer_timeout_ms), (0, 10, 5, 4, 20));
        assert_eq!((c.move_edge_viewers, c.move_former_clients, c.move_after_ms, c.prefer_same_network), (false, false, 30, false));
        assert_eq!(c.site[0].network.len(), 2);
        assert!(!c.applies_to("a", "x"));
        assert!(!c.applies_to("b", "s"));
        assert!(c.applies_to("b", "t"));
        let c = P2pConfig::parse("<P2P><IceServers><IceServer><Url>stun:a:1</Url></IceServer><IceServer><Urls><Url>turn:b:2</Url></Urls><UserName>u</UserName><Credential>p</Credential></IceServer></IceServers></P2P>").unwrap();
        assert_eq!(
            c.ice_servers.to_json(),
            serde_json::json!([{"urls": ["stun:a:1"]}, {"urls": ["turn:b:2"], "username": "u", "credential": "p"}])
        );
        assert_eq!(P2pConfig::default().ice_servers.to_json(), serde_json::json!([]));
    }

    #[test]
    fn errors_have_offsets() {
        let xml = "<P2P>\n  <MaxClientPeers>2</MaxClientPeers>\n</P2P>";
        let e = P2pConfig::parse(xml).unwrap_err();
        assert!(e.message.contains("unknown element <MaxClientPeers>"), "{e}");
        assert!(e.offset.into_option().is_some_and(|o| o > 0));
        let e = P2pConfig::parse("<P2P><Enable>perhaps</Enable></P2P>").unwrap_err();
        assert!(e.message.contains("Enable"), "{e}");
        let e = P2pConfig::parse("<P2P><Site><Name>hq</Name><Network>10.0.0.0/40</Network></Site></P2P>").unwrap_err();
        assert!(e.message.contains("hq") && e.message.contains("/40"), "{e}");
        let e = P2pConfig::parse("<P2P><Site><Name>hq</Name></Site></P2P>").unwrap_err();
        assert!(e.message.contains("no <Network>"), "{e}");
    }
}
