//! Peer classification from the User-Agent, with the `woothee` parser and OME's documented rules.
//!
//! A **host peer** (may relay to others) is: a desktop device (woothee category `pc`), whose OS is
//! not Linux, whose browser is not Edge (legacy or Chromium-based `Edg/`: woothee names both
//! `Edge`) and is known, and which is not a headless browser (woothee reports `HeadlessChrome` as
//! plain desktop Chrome; a headless browser is no viewer a stream can rely on). Anyone may be a
//! **client peer**, of a host of the same *browser kind* (woothee's browser name).
//!
//! | User-Agent                              | woothee (category, browser, OS) | host? | kind             |
//! |-----------------------------------------|---------------------------------|-------|------------------|
//! | Chrome / Firefox / Safari / Opera, Windows | pc, (name), Windows 10       | yes   | the browser      |
//! | Chrome / Firefox / Safari / Opera, macOS   | pc, (name), Mac OSX          | yes   | the browser      |
//! | Chrome on Linux                         | pc, Chrome, Linux               | no    | Chrome           |
//! | HeadlessChrome (any OS)                 | pc, Chrome, (OS)                | no    | Chrome           |
//! | Edge, Chromium-based (`Edg/`)           | pc, Edge, Windows 10            | no    | Edge             |
//! | Edge, legacy (`Edge/`)                  | pc, Edge, Windows 10            | no    | Edge             |
//! | Safari on iPhone                        | smartphone, Safari, iPhone      | no    | Safari           |
//! | Chrome on Android phone                 | smartphone, Chrome, Android     | no    | Chrome           |
//! | Chrome on Android tablet (no `Mobile`)  | smartphone, Chrome, Android     | no    | Chrome           |
//! | Samsung Internet                        | smartphone, SamsungBrowser, Android | no | SamsungBrowser  |
//! | iPadOS Safari in desktop mode           | pc, Safari, Mac OSX             | yes (indistinguishable from a Mac) | Safari |
//! | ChromeOS (`CrOS`)                       | pc, Chrome, ChromeOS            | yes (ChromeOS is not "Linux" to the rule, as in OME) | Chrome |
//! | crawlers (Googlebot, bingbot)           | crawler, (bot), UNKNOWN         | no    | the bot's name   |
//! | curl                                    | misc, HTTP Library, UNKNOWN     | no    | HTTP Library     |
//! | empty User-Agent                        | UNKNOWN, UNKNOWN, UNKNOWN       | no    | UNKNOWN          |
//!
//! woothee is unmaintained since 2021: a browser it does not know comes back `UNKNOWN` and is never
//! a host (it can still be a client of a host of the same unknown kind, which never exists).

/// What a User-Agent makes a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClass {
    /// May relay the stream to client peers.
    pub host_eligible: bool,
    /// The browser kind a client's host must share (woothee's browser name).
    pub browser: String,
}

/// Classifies a peer by its User-Agent header.
pub fn classify(user_agent: &str) -> PeerClass {
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let (category, name, os) = parsed.as_ref().map(|r| (r.category, r.name, r.os)).unwrap_or(("UNKNOWN", "UNKNOWN", "UNKNOWN"));
    let host_eligible = category == "pc"
        && os != "Linux"
        && name != "Edge"
        && name != "UNKNOWN"
        && !user_agent.contains("HeadlessChrome");
    PeerClass { host_eligible, browser: name.to_string() }
}

/// [`classify`] with a bounded memo: audiences repeat a few hundred User-Agent strings, and woothee
/// takes microseconds per parse. Forgets everything when full, so memory stays bounded.
#[derive(Debug, Default)]
pub struct Classifier {
    memo: std::collections::HashMap<Box<str>, PeerClass>,
}

impl Classifier {
    /// Distinct User-Agents remembered at most.
    pub const CAPACITY: usize = 4096;

    /// Classifies `user_agent`, from the memo when it was seen before.
    pub fn classify(&mut self, user_agent: &str) -> PeerClass {
        if let Some(class) = self.memo.get(user_agent) {
            return class.clone();
        }
        if self.memo.len() >= Self::CAPACITY {
            self.memo.clear();
        }
        let class = classify(user_agent);
        self.memo.insert(user_agent.into(), class.clone());
        class
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_answers_as_the_parser_and_stays_bounded() {
        let mut classifier = Classifier::default();
        for i in 0..Classifier::CAPACITY + 10 {
            let ua = format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{i}.0.0.0 Safari/537.36");
            assert_eq!(classifier.classify(&ua), classify(&ua));
            assert_eq!(classifier.classify(&ua), classify(&ua), "remembered");
            assert!(classifier.memo.len() <= Classifier::CAPACITY);
        }
    }

    /// The table in the module docs, row by row.
    #[test]
    fn documented_table_holds() {
        let rows: &[(&str, bool, &str)] = &[
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36", true, "Chrome"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36", true, "Chrome"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0", true, "Firefox"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:140.0) Gecko/20100101 Firefox/140.0", true, "Firefox"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Safari/605.1.15", true, "Safari"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36 OPR/122.0.0.0", true, "Opera"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36 OPR/122.0.0.0", true, "Opera"),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36", false, "Chrome"),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36", false, "Chrome"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36", false, "Chrome"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36 Edg/138.0.0.0", false, "Edge"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041", false, "Edge"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1", false, "Safari"),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36", false, "Chrome"),
            ("Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36", false, "Chrome"),
            ("Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36", false, "SamsungBrowser"),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36", true, "Chrome"),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", false, "Googlebot"),
            ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", false, "bingbot"),
            ("curl/8.5.0", false, "HTTP Library"),
            ("", false, "UNKNOWN"),
        ];
        for &(ua, host, kind) in rows {
            assert_eq!(classify(ua), PeerClass { host_eligible: host, browser: kind.into() }, "{ua:?}");
        }
    }
}
