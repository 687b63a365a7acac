//! STUN as the tests speak it to the edge's ports: Binding requests (a plain one, or a player's
//! nominating check) and what a Binding success answer says.

use rtc::stun::attributes::{RawAttribute, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE};
use rtc::stun::message::{Getter, Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::xoraddr::XorMappedAddress;
use rtc::stun::{fingerprint::FINGERPRINT, integrity::MessageIntegrity, textattrs::TextAttribute};
use std::net::SocketAddr;

/// A plain Binding request, as a browser sends one to gather its public address: no attributes,
/// no credentials.
pub fn plain_binding_request() -> Message {
    let mut m = Message::new();
    m.build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new())]).unwrap();
    m
}

/// A nominating check as a player sends it: USERNAME `user`, signed with `pwd`.
pub fn nominating_check(user: &str, pwd: &str) -> Message {
    let crypto = rtc::crypto::default_provider().unwrap();
    let mut m = Message::new();
    m.build(&[
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(TextAttribute::new(ATTR_USERNAME, user.to_owned())),
        Box::new(RawAttribute { typ: ATTR_PRIORITY, length: 4, value: vec![0x6e, 0, 0, 1] }),
        Box::new(RawAttribute { typ: ATTR_USE_CANDIDATE, length: 0, value: vec![] }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), crypto.crypto())),
        Box::new(FINGERPRINT),
    ])
    .unwrap();
    m
}

/// `raw` decoded; panics unless it is the Binding success answering `request`.
pub fn binding_success(raw: &[u8], request: &Message) -> Message {
    let mut answer = Message::new();
    answer.raw = raw.to_vec();
    answer.decode().unwrap();
    assert_eq!((answer.typ, answer.transaction_id), (BINDING_SUCCESS, request.transaction_id));
    answer
}

/// The address `answer`'s XOR-MAPPED-ADDRESS names (where the edge saw the request come from).
pub fn mapped_address(answer: &Message) -> SocketAddr {
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(answer).unwrap();
    SocketAddr::new(mapped.ip, mapped.port)
}
