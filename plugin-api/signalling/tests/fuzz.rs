//! The seeded fuzz driver (as the host's protocol fuzz) over names and queries: random and mutated
//! inputs, and properties that must hold for every one. `SIGNALLING_FUZZ_CASES=1000000 cargo test
//! -p ome-signalling --release` for a long run.

use ome_signalling::names::{self, MAX_NAME_BYTES};
use ome_signalling::query::{self, Query, MAX_PARAMS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cases() -> usize {
    std::env::var("SIGNALLING_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000)
}

/// Names and queries seen in the wild and in attacks, to mutate.
const SEEDS: &[&str] = &[
    "stream",
    "stream%2F1",
    "stream?z?p2p=0&edge=e",
    "p2p=0&edge=edge-1",
    "direction=send&token=s3cr%2Bt",
    "P2P=%30&x=%zz",
    "..",
    "Ünïcødé-流",
    "a\nb\0c",
    "%E2%9C%93&&=&=x",
];

/// Bytes that matter to names and queries, and some that do not.
const ALPHABET: &[u8] = b"/?#%&=.+ 0123456789abcdefABCDEF\n\0\x7f\xc3\x9c";

fn mutate(rng: &mut StdRng, seed: &str) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..4) {
            0 if at < bytes.len() => bytes[at] = rng.random(),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]),
            _ => bytes.extend_from_within(..at),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A name that passes holds none of the forbidden, fits the bound, and escapes to one segment
/// that decodes back to itself.
#[test]
fn names_fuzz_a_passing_name_is_one_segment_and_comes_back_whole() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let (mut passed, mut refused) = (0, 0);
    for i in 0..cases() {
        let name = mutate(&mut rng, SEEDS[i % SEEDS.len()]);
        match names::check(&name) {
            Ok(()) => {
                passed += 1;
                assert!(name.len() <= MAX_NAME_BYTES && !name.is_empty(), "{name:?}");
                assert!(!name.contains(['/', '?', '#', '%']) && !name.chars().any(char::is_control), "{name:?}");
                assert!(name != "." && name != "..", "{name:?}");
                let segment = names::segment(&name);
                assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{segment}");
                assert_eq!(percent_encoding::percent_decode_str(&segment).decode_utf8().unwrap(), name);
            }
            Err(_) => refused += 1,
        }
    }
    assert!(passed > 0 && refused > 0, "both outcomes are exercised: {passed} passed, {refused} refused");
}

/// Any query parses, keeps at most the bound of pairs, and a query written from pairs reads
/// back as exactly those pairs.
#[test]
fn query_fuzz_any_query_parses_and_written_pairs_read_back() {
    let mut rng = StdRng::seed_from_u64(0xc0ffee);
    let mut said_no = 0;
    for i in 0..cases() {
        let raw = mutate(&mut rng, SEEDS[i % SEEDS.len()]);
        let q = Query::parse(&raw);
        said_no += usize::from(q.says_no(query::P2P));
        let (key, value) = (mutate(&mut rng, SEEDS[(i + 3) % SEEDS.len()]), mutate(&mut rng, SEEDS[(i + 7) % SEEDS.len()]));
        let written = query::encode(&[(query::P2P, "1"), ("k", &key), ("v", &value)]);
        let back = Query::parse(&written);
        assert_eq!((back.get(query::P2P), back.get("k"), back.get("v")), (Some("1"), Some(key.as_str()), Some(value.as_str())), "{written}");
        assert!(!back.says_no(query::P2P), "a value cannot add a parameter: {written}");
    }
    let many = "a=1&".repeat(MAX_PARAMS * 4);
    assert_eq!(Query::parse(&many).get("a"), Some("1"));
    assert!(said_no > 0, "refusals are exercised");
}
