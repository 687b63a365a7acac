//! The host's logs as an operator's tools read them: no colour codes when the output is not a
//! terminal, and `--log-format json` writes one JSON object per line.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::harness::{build_artifacts, config_xml, free_port, target_dir, write_config};

/// Starts the host with `args` and its stdout on a pipe (NO_COLOR unset), reads its lines until it
/// serves, then stops it.
fn first_lines(args: &[&str]) -> Vec<String> {
    build_artifacts();
    let config = write_config(&config_xml(free_port(), ""));
    let mut child = Command::new(target_dir().join("host"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the host");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (started, mut lines) = (Instant::now(), Vec::new());
    while !lines.iter().any(|l: &String| l.contains("waiting for viewers")) {
        assert!(started.elapsed() < Duration::from_secs(20), "the host did not serve in 20 s: {lines:#?}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    child.kill().ok();
    child.wait().ok();
    lines
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let lines = first_lines(&[]);
    assert!(lines.len() >= 2, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "ANSI escape codes in piped logs: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("INFO")), "{lines:#?}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let lines = first_lines(&["--log-format", "json"]);
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("waiting for viewers")));
}
