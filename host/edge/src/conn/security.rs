//! A viewer connection's security: the edge's one DTLS identity, the handshake (the player's
//! certificate checked against its answer's fingerprints), and the SRTP contexts its keying
//! material gives (RFC 5764).

use crate::error::{Error, Result};
use bytes::BytesMut;
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig, VerifyPeerCertificateFn};
use rtc::dtls::endpoint::Endpoint;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::net::SocketAddr;
use std::sync::Arc;

/// The key DTLS knows the viewer by: the endpoint holds one association, whatever path ICE picks.
pub(super) const DTLS_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 9);

/// DTLS datagrams kept from a player that starts its handshake before its answer reaches the
/// edge (the answer goes over the signalling, the handshake straight to the edge's port).
pub(super) const EARLY_DTLS: usize = 4;

/// SRTP protection profiles the edge takes, in its order of preference (AES-GCM: one pass).
pub(super) const SRTP_PROFILES: [SrtpProtectionProfile; 2] =
    [SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm, SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80];

/// What every edge connection of a worker shares: the DTLS certificate (one for all: a key pair
/// per viewer would cost set-up time), its fingerprint, and the crypto provider. Shared: every
/// connection holds an `Arc` of it.
pub struct EdgeIdentity {
    pub certificate: RTCCertificate,
    pub fingerprint: Arc<str>,
    pub crypto: Arc<dyn RTCCryptoProvider>,
}

impl EdgeIdentity {
    /// A fresh identity: an ECDSA P-256 certificate, as browsers prefer.
    pub fn generate() -> Result<Self> {
        let identity = |e: &dyn std::fmt::Display| Error::Identity(e.to_string());
        let crypto = rtc::crypto::default_provider().map_err(|e| identity(&e))?;
        let certificate = RTCCertificate::generate(
            crypto.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["p2p-host".to_owned()]).map_err(|e| identity(&e))?,
        )
        .map_err(|e| identity(&e))?;
        let fingerprint = certificate
            .get_fingerprints(crypto.crypto())
            .map_err(|e| identity(&e))?
            .into_iter()
            .find(|f| f.algorithm == "sha-256")
            .ok_or_else(|| Error::Identity("the certificate has no sha-256 fingerprint".into()))?
            .value
            .to_ascii_uppercase();
        Ok(Self { certificate, fingerprint: fingerprint.into(), crypto })
    }

    /// The DTLS configuration of one connection (as its `client`, or server): this certificate,
    /// the player's checked against the answer's `fingerprints`, SRTP.
    pub(super) fn dtls_config(&self, fingerprints: Vec<String>, client: bool) -> Result<Arc<HandshakeConfig>> {
        let crypto = self.crypto.clone();
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _| {
            let certificate = certs.first().ok_or(rtc::shared::error::Error::ErrNoCertificates)?;
            let hash = crypto.crypto().hash(HashAlgorithm::Sha256, certificate).map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
            let seen = hash.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            if fingerprints.contains(&seen) {
                Ok(())
            } else {
                Err(rtc::shared::error::Error::Other("the certificate is not the one the answer names".into()))
            }
        });
        Ok(Arc::new(
            ConfigBuilder::default()
                .with_crypto_provider(self.crypto.clone())
                .with_certificates(vec![self.certificate.dtls_certificate.clone()])
                .with_srtp_protection_profiles(SRTP_PROFILES.to_vec())
                .with_client_auth(ClientAuthType::RequireAnyClientCert)
                .with_insecure_skip_verify(true)
                .with_verify_peer_certificate(Some(verify))
                .with_extended_master_secret(ExtendedMasterSecretType::Require)
                .build(client, None)?,
        ))
    }
}

/// The connection's DTLS and, once its handshake is done, SRTP.
pub(super) enum Security {
    /// No answer yet: the player's first DTLS datagrams, if they came first.
    Waiting(Vec<BytesMut>),
    /// Handshaking. `connect` is the client configuration while the edge, as DTLS client, waits
    /// for ICE to give it a path.
    Handshake { endpoint: Box<Endpoint>, connect: Option<Arc<HandshakeConfig>> },
    /// Up: `local` protects what the edge sends, `remote` opens the player's RTCP.
    Up { endpoint: Box<Endpoint>, local: Box<Context>, remote: Box<Context> },
}

impl Security {
    /// The DTLS endpoint, once the answer made one.
    pub(super) fn endpoint(&mut self) -> Option<&mut Endpoint> {
        match self {
            Security::Handshake { endpoint, .. } | Security::Up { endpoint, .. } => Some(endpoint),
            Security::Waiting(_) => None,
        }
    }

    /// The handshake is done: SRTP from its keying material (RFC 5764 4.2).
    pub(super) fn start_srtp(&mut self, identity: &EdgeIdentity) -> Result<()> {
        let Security::Handshake { endpoint, .. } = std::mem::replace(self, Security::Waiting(Vec::new())) else {
            return Err(Error::Srtp("no handshake under way".into()));
        };
        let state = endpoint.get_connection_state(DTLS_PEER).ok_or_else(|| Error::Srtp("no DTLS state".into()))?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            other => return Err(Error::Srtp(format!("SRTP profile {other:?} was not offered"))),
        };
        let mut config = rtc::srtp::config::Config { profile, ..Default::default() };
        let material = state.export_keying_material(rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP, &[], config.keying_material_len())?;
        config.set_session_keys_from_keying_material(material.as_ref(), state.is_client())?;
        let crypto = identity.crypto.crypto();
        let keys = &config.keys;
        let local = Context::new(&keys.local_master_key, &keys.local_master_salt, profile, None, None, crypto)?;
        let replay = Some(rtc::srtp::option::srtcp_replay_protection(64));
        let remote = Context::new(&keys.remote_master_key, &keys.remote_master_salt, profile, None, replay, crypto)?;
        *self = Security::Up { endpoint, local: Box::new(local), remote: Box::new(remote) };
        Ok(())
    }
}
