//! The real host loading real plugin libraries: the P2P cdylib, a library of another ABI, a file
//! that is not a plugin, a plugin that panics, and plugin config errors.

use serde_json::json;
use std::time::Duration;
use tests::harness::{config_xml, library, p2p_xml, run_to_exit, write_config, HostProcess};
use tests::signal::{Received, Signal, CHROME_WINDOWS};

const T: Duration = Duration::from_secs(10);

#[test]
fn p2p_plugin_is_loaded_and_named() {
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(2, 4000))).unwrap();
    let log = host.log();
    let line = log.lines().find(|l| l.contains("plugin loaded")).unwrap_or_else(|| panic!("no load line: {log}"));
    assert!(line.contains("plugin=p2p") && line.contains("abi=0.1.0"), "{line}");
    assert!(log.contains("P2P delivery on: 2 clients per host peer"), "{log}");
    assert_eq!(host.stats().unwrap()["plugins"], json!(["p2p"]));
}

#[test]
fn a_library_of_another_abi_is_refused_with_a_clear_message() {
    let lib = library("test_plugin_abi_mismatch");
    let config = write_config(&config_xml(0, &format!("<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>", lib.display())));
    let (ok, out) = run_to_exit(&config, T);
    assert!(!ok, "{out}");
    assert!(out.contains(&lib.display().to_string()), "names the library: {out}");
    assert!(out.contains("is incompatible with this host (plugin-api 0.1.0)"), "{out}");
    assert!(out.lines().count() < 15, "readable, not a layout dump: {out}");
}

#[test]
fn a_file_that_is_not_a_plugin_is_refused() {
    let not_elf = write_config("not a library");
    let config = write_config(&config_xml(0, &format!("<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>", not_elf.display())));
    let (ok, out) = run_to_exit(&config, T);
    assert!(!ok && out.contains("cannot open plugin library"), "{out}");

    let libm = "/lib/x86_64-linux-gnu/libm.so.6";
    if std::path::Path::new(libm).exists() {
        let config = write_config(&config_xml(0, &format!("<Plugins><Plugin><Path>{libm}</Path></Plugin></Plugins>")));
        let (ok, out) = run_to_exit(&config, T);
        assert!(!ok && out.contains("is not a plugin library"), "{out}");
    }
}

#[test]
fn an_optional_plugin_that_fails_is_skipped() {
    let host = HostProcess::start(|port| {
        config_xml(port, "<Plugins><Plugin><Path>/nonexistent/libnothing.so</Path><Required>false</Required></Plugin></Plugins>")
    })
    .unwrap();
    assert!(host.log().contains("plugin not loaded, running without it"), "{}", host.log());
    assert_eq!(host.stats().unwrap()["plugins"], json!([]));
}

#[test]
fn plugin_config_errors_name_file_line_and_column() {
    let extra = format!(
        "<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>\n<Modules>\n  <P2P>\n    <Enable>true</Enable>\n    <MaxClients>3</MaxClients>\n  </P2P>\n</Modules>",
        library("plugin_p2p").display()
    );
    let xml = config_xml(0, &extra);
    let line = xml.lines().position(|l| l.contains("<MaxClients>")).unwrap() + 1;
    let config = write_config(&xml);
    let (ok, out) = run_to_exit(&config, T);
    assert!(!ok, "{out}");
    let expected = format!("{}:{line}:", config.display());
    assert!(out.contains(&expected), "expected {expected} in: {out}");
    assert!(out.contains("unknown element <MaxClients>"), "{out}");
}

#[test]
fn both_p2p_forms_are_refused() {
    let extra = format!(
        "<Plugins><Plugin><Path>{}</Path></Plugin></Plugins><P2P/>\n<Modules><P2P/></Modules>",
        library("plugin_p2p").display()
    );
    let (ok, out) = run_to_exit(&write_config(&config_xml(0, &extra)), T);
    assert!(!ok && out.contains("configured twice"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_is_contained_and_viewers_are_served_by_the_edge() {
    let lib = library("test_plugin_panicky");
    let host = HostProcess::start(|port| config_xml(port, &format!("<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>", lib.display()))).unwrap();
    for round in 0..2 {
        let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
        s.send(json!({"command": "request_offer"})).await.unwrap();
        let offer = s.recv_json(T).await.unwrap();
        assert_eq!(offer["command"], "offer", "round {round}: {offer}");
        assert_eq!(offer["peer_id"], 0);
        s.close().await;
    }
    let log = host.log();
    assert!(log.contains("plugin panicky panicked in offer_requested: deliberate panic"), "{log}");
    assert_eq!(log.matches("panicked in").count(), 1, "disabled after the first panic: {log}");
    let stats = host.stats().unwrap();
    assert_eq!(stats["metrics"]["plugin_failures"], 1);
    assert_eq!(stats["metrics"]["edge_offers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_is_refused_with_403() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let mut s = Signal::connect(&host.ws_url("app/stream?direction=send"), CHROME_WINDOWS).await.unwrap();
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], 403);
    assert_eq!(s.recv(T).await.unwrap(), Received::Closed);
}
