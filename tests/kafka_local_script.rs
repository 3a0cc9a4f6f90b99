//! `scripts/kafka-local stop` sees a stop through: interrupted (Ctrl-C, then the terminal
//! closed) while the broker takes its time to die, it still leaves no broker behind.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-local")
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

fn signal(pid: &str, sig: &str) {
    let _ = Command::new("kill").args([sig, pid]).status();
}

#[test]
fn an_interrupted_stop_still_stops_the_broker() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kafka-local-stop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Command::new(script())
        .args(["start", "--dir"])
        .arg(&dir)
        .stderr(Stdio::null())
        .output()
        .expect("kafka-local start");
    assert!(started.status.success(), "the broker starts");
    let pid = common::local_broker_pid(&dir);
    assert!(alive(&pid));
    // A broker that ignores SIGTERM for now (as one stuck in its shutdown would): the stop
    // must wait for it and then kill it.
    signal(&pid, "-STOP");
    let mut stop = Command::new(script())
        .args(["stop", "--dir"])
        .arg(&dir)
        .stderr(Stdio::null())
        .spawn()
        .expect("kafka-local stop");
    std::thread::sleep(Duration::from_secs(2));
    let stopper = stop.id().to_string();
    signal(&stopper, "-INT");
    signal(&stopper, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stop.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let gone = {
        let until = Instant::now() + Duration::from_secs(10);
        while alive(&pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
        !alive(&pid)
    };
    if !gone {
        signal(&pid, "-KILL");
    }
    let _ = stop.kill();
    let _ = std::fs::remove_dir_all(dir.join("data"));
    assert!(gone, "the interrupted stop left broker {pid} running");
}
