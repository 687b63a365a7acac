//! The words of OvenMediaEngine's signalling (`shared/PROTOCOL.md`) that the host, its plugins and
//! the test peers must read alike: an application or stream name ([`names`]), the signalling
//! URL's query ([`query`]) and the messages ([`messages`]). Each is checked or parsed once, where
//! a request enters; everything after works on the result, never on the raw text.

pub mod messages;
pub mod names;
pub mod query;

pub use names::{NameError, StreamName};
pub use query::Query;
