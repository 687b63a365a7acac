//! The real host loading real plugin libraries: the P2P cdylib, a library of another ABI, a file
//! that is not a plugin, a plugin that panics, plugin config errors, a relative path from a config
//! named by its bare file name, and a library overwritten in place while loaded.

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::harness::{build_artifacts, config_xml, free_port, library, p2p_xml, run_to_exit, target_dir, write_config, HostProcess};
use tests::peer::PeerAgent;
use tests::signal::{request_offer, Received, Signal, CHROME_WINDOWS};

const T: Duration = Duration::from_secs(10);

#[test]
fn p2p_plugin_is_loaded_and_named() {
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(2, 4000))).unwrap();
    let log = host.log();
    let line = log.lines().find(|l| l.contains("plugin loaded")).unwrap_or_else(|| panic!("no load line: {log}"));
    assert!(line.contains("plugin=p2p") && line.contains(&format!("abi={}", plugin_api::ABI_VERSION)), "{line}");
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
    assert!(out.contains(&format!("is incompatible with this host (plugin-api {})", plugin_api::ABI_VERSION)), "{out}");
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

/// Builds the plugin of `tests/plugins/abi-0.1.0` (its own workspace: a frozen copy of plugin-api
/// 0.1.0 and a plugin built against it) into the main target folder; returns the library.
fn old_abi_fixture() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = tests::harness::workspace_dir();
            let mut cmd = tests::harness::cargo_build();
            cmd.args(["--offline", "--locked", "--manifest-path"])
                .arg(workspace.join("tests/plugins/abi-0.1.0/Cargo.toml"))
                .arg("--target-dir")
                .arg(target_dir().parent().expect("target/<profile>"));
            assert!(cmd.status().expect("running cargo build").success(), "building the 0.1.0 fixture failed");
            library("test_plugin_old_table")
        })
        .clone()
}

/// A plugin built against plugin-api 0.1.0's tables (before `report_delivery` was added after
/// their `last_prefix_field`) loads into this host and runs: each 0.1.0 hook is called and each
/// 0.1.0 host call works. It serves its viewer from the edge through a timer; the viewer plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_the_0_1_0_tables_loads_and_runs_on_this_host() {
    let lib = old_abi_fixture();
    let host = HostProcess::start(|port| config_xml(port, &format!("<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>", lib.display()))).unwrap();
    let log = host.log();
    let line = log.lines().find(|l| l.contains("plugin loaded")).unwrap_or_else(|| panic!("no load line: {log}"));
    assert!(line.contains("plugin=old-table") && line.contains("abi=0.1.0"), "{line}");
    assert_ne!(plugin_api::ABI_VERSION, "0.1.0", "the host is newer than the fixture");

    let viewer = PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(T, "video from the edge", |s| s.video() >= 30).await.unwrap();
    viewer.leave().await;
    let started = Instant::now();
    let metric = |name: &str| host.stats().unwrap()["metrics"][format!("old-table.{name}")].as_i64().unwrap_or(0);
    while metric("closed") < 1 {
        assert!(started.elapsed() < T, "session_closed never reached the plugin: {}", host.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for name in ["opened", "served_late", "playing", "closed"] {
        assert_eq!(metric(name), 1, "{name}: {}", host.stats().unwrap());
    }
    assert!(!host.log().contains("panicked"), "{}", host.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_is_refused_with_403() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let mut s = Signal::connect(&host.ws_url("app/stream?direction=send"), CHROME_WINDOWS).await.unwrap();
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], 403);
    assert_eq!(s.recv(T).await.unwrap(), Received::Closed);
}

/// A host started as `host --config Server.xml` from the config's own folder, with `LD_LIBRARY_PATH`
/// set; killed on drop. (The harness's `HostProcess` always passes an absolute config path.)
struct HostInFolder {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl HostInFolder {
    fn start(folder: &Path, ld_library_path: &Path) -> Self {
        build_artifacts();
        let mut child = Command::new(target_dir().join("host"))
            .args(["--config", "Server.xml"])
            .current_dir(folder)
            .env("LD_LIBRARY_PATH", ld_library_path)
            .env("RUST_LOG", "info,webrtc=warn,rtc=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting host");
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut host = Self { child, log };
        let started = Instant::now();
        while !host.log().contains("waiting for viewers") {
            let exited = host.child.try_wait().unwrap();
            assert!(exited.is_none() && started.elapsed() < Duration::from_secs(20), "host did not start ({exited:?}):\n{}", host.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for HostInFolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh folder holding a copy of the P2P library under its own name.
fn folder_with_p2p_library() -> (PathBuf, PathBuf) {
    build_artifacts();
    let folder = write_config("").parent().unwrap().to_path_buf();
    let lib = folder.join("libplugin_p2p.so");
    std::fs::copy(library("plugin_p2p"), &lib).unwrap();
    (folder, lib)
}

/// What became of process `pid` (our unreaped child): running, or how it ended.
fn fate(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    match (fields.first(), fields.last().and_then(|s| s.parse::<i32>().ok())) {
        (Some(&"Z"), Some(status)) if status & 0x7f != 0 => format!("killed by signal {}", status & 0x7f),
        (Some(&"Z"), Some(status)) => format!("exited with {}", status >> 8),
        (state, _) => format!("state {state:?}"),
    }
}

/// The `key=value` field of the `plugin loaded` log line.
fn load_line_field(log: &str, key: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("plugin loaded"))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    Some(line[at..].split_whitespace().next()?.to_string())
}

#[test]
fn a_relative_path_is_taken_from_the_config_folder_when_the_config_is_a_bare_file_name() {
    let (folder, lib) = folder_with_p2p_library();
    let xml = config_xml(free_port(), "<Plugins><Plugin><Path>libplugin_p2p.so</Path></Plugin></Plugins>\n<Modules><P2P><Enable>true</Enable></P2P></Modules>");
    std::fs::write(folder.join("Server.xml"), xml).unwrap();
    // A different plugin under the same file name where dlopen would search for a bare name.
    let decoy = write_config("").parent().unwrap().to_path_buf();
    std::fs::copy(library("test_plugin_panicky"), decoy.join("libplugin_p2p.so")).unwrap();

    let host = HostInFolder::start(&folder, &decoy);
    let log = host.log();
    assert_eq!(load_line_field(&log, "plugin").as_deref(), Some("p2p"), "the library next to the config, not the decoy: {log}");
    assert_eq!(load_line_field(&log, "path").map(PathBuf::from), Some(lib), "the original, absolute: {log}");
    assert!(log.contains("P2P delivery on"), "{log}");
    drop(host);
    let _ = std::fs::remove_dir_all(folder);
    let _ = std::fs::remove_dir_all(decoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_overwritten_in_place_while_loaded_does_not_crash_the_host() {
    let (folder, lib) = folder_with_p2p_library();
    let host = HostProcess::start(|port| {
        config_xml(port, &p2p_xml(2, 4000)).replace(&library("plugin_p2p").display().to_string(), &lib.display().to_string())
    })
    .unwrap();
    let log = host.log();
    assert_eq!(load_line_field(&log, "path").map(PathBuf::from), Some(lib.clone()), "{log}");

    let mut viewer = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    assert_eq!(request_offer(&mut viewer).await.unwrap()["command"], "offer");

    // What `cp other.so libplugin_p2p.so` does: truncate and write the same inode.
    let inode = std::fs::metadata(&lib).unwrap().ino();
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(&lib).unwrap();
    file.write_all(&std::fs::read(library("test_plugin_abi_mismatch")).unwrap()).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(&lib).unwrap().ino(), inode, "overwritten in place");

    // Drive hooks: a new session (session_opened, offer_requested) and the old one's end.
    let died = |e: anyhow::Error| -> ! { panic!("the host failed after the overwrite ({e}; {}):\n{}", fate(host.pid()), host.log()) };
    let mut next = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap_or_else(|e| died(e));
    let offer = request_offer(&mut next).await.unwrap_or_else(|e| died(e));
    assert_eq!(offer["command"], "offer", "{offer}");
    viewer.close().await;
    next.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = host.stats().expect("the host still answers");
    assert_eq!(stats["plugins"], json!(["p2p"]));
    assert!(stats["metrics"]["plugin_failures"].is_null() || stats["metrics"]["plugin_failures"] == 0, "{stats}");
    assert!(!host.log().contains("panicked"), "{}", host.log());
    // The private copy and its folder are gone: the mapping alone keeps the code.
    let copy = PathBuf::from(load_line_field(&log, "copy").expect("the copy's path is logged"));
    assert!(copy.parent().is_some_and(|dir| !dir.exists()), "removed once loaded: {}", copy.display());
    drop(host);
    let _ = std::fs::remove_dir_all(folder);
}
