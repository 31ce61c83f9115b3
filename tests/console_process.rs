//! The operator console (`/ui`) in a real browser against a live 3-node cluster loaded with the
//! Dulce data: headless Chromium driven by selenium (`tests/console/check_console.py`, run through
//! `scripts/console_check.sh`, which keeps selenium in a venv under the target directory).
//!
//! The browser script checks every page against the API's own answers (see its docstring): the
//! nodes and the coordinator, every shard copy, a Cypher count, a retrieval's `context_text`, the
//! explorer's drawing of a named entity, a drain and undrain through the buttons, and last a node
//! killed with `kill -9` turning dead on the page without a reload; no browser errors on any page.
//! It asks this test to do the kill (it prints `KILL <id>`; the test owns the processes). Then,
//! on a separate one-node cluster that asks for API keys, the console shows the 401 with a key
//! field and works once the key is typed in.
//!
//! Screenshots of every page are left in `<target dir>/console-screenshots/`; with
//! `TORUA_UPDATE_SCREENSHOTS=1` the cluster and explorer pages are also copied to
//! `bench/results/`, where the README shows them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use torua_testkit::{dulce_dir, import_graphrag, log, target_dir, ClusterOptions, TestCluster};

const SETTLE: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(10);
/// The node whose console the browser opens (it stays up throughout).
const CONSOLE: usize = 0;
/// Drained and undrained through the buttons.
const DRAINED: usize = 1;
/// Killed last, while the cluster page is open.
const KILLED: usize = 2;
/// The admin key of the one-node cluster with keys on.
const KEY: &str = "console-test-bootstrap-admin-key";

/// GET returning (status, content type, body).
fn get_raw(url: &str) -> (u16, String, String) {
    match ureq::get(url).timeout(T).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let ctype = r.header("content-type").unwrap_or("").to_string();
            (status, ctype, r.into_string().unwrap_or_default())
        }
        Err(e) => (0, String::new(), e.to_string()),
    }
}

#[test]
fn the_console_shows_and_drives_a_live_cluster_in_a_browser() {
    let started = Instant::now();
    let mut cluster = TestCluster::start(3, ClusterOptions::graph(3)).unwrap();
    // Keys on without a secret: plain HTTP on loopback, as a browser test can reach it.
    let mut keyed = ClusterOptions::graph(1);
    for (k, v) in [
        ("TORUA_REPLICAS", "1"),
        ("TORUA_AUTH", "on"),
        ("TORUA_BOOTSTRAP_API_KEY", KEY),
    ] {
        keyed.env.insert(k.into(), v.into());
    }
    let keyed = TestCluster::start(1, keyed).unwrap();
    cluster.wait_green(SETTLE).unwrap();
    let url = cluster.node(CONSOLE).url("");
    log(import_graphrag(&dulce_dir(), &url).trim());
    cluster.wait_green(SETTLE).unwrap();

    // The page and its files are served from the binary, with their content types.
    for (path, ctype) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/cytoscape.min.js", "text/javascript"),
    ] {
        let (status, got, _) = get_raw(&cluster.node(CONSOLE).url(path));
        assert!(
            status == 200 && got.starts_with(ctype),
            "GET {path}: {status} {got}"
        );
    }
    // Open without a key where keys are asked for; the API itself is not.
    let (status, got, _) = get_raw(&keyed.node(0).url("/ui/app.js"));
    assert!(status == 200, "GET /ui/app.js with keys on: {status} {got}");
    let (status, _, body) = get_raw(&keyed.node(0).url("/cluster/health"));
    assert!(
        status == 401,
        "GET /cluster/health without a key: {status} {body}"
    );
    let (status, _, body) = get_raw(&cluster.node(CONSOLE).url("/ui/no-such-file.js"));
    assert!(
        status == 404 && body.contains("\"error\""),
        "GET /ui/no-such-file.js: {status} {body}"
    );

    let shots = target_dir().join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    let mut browser = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/console_check.sh"
    ))
    .env(
        "TORUA_CONSOLE_VENV",
        std::env::var_os("TORUA_CONSOLE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("console-venv")),
    )
    .args(["--url", &url, "--ids", &ids.join(",")])
    .args(["--drain", &ids[DRAINED], "--kill", &ids[KILLED]])
    .arg("--shots")
    .arg(&shots)
    .args(["--login-url", &keyed.node(0).url(""), "--key", KEY])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("cannot run scripts/console_check.sh");
    let mut to_browser = browser.stdin.take().expect("stdin");
    let from_browser = BufReader::new(browser.stdout.take().expect("stdout"));
    let mut killed = false;
    for line in from_browser.lines() {
        let line = line.expect("read the browser test's output");
        println!("{line}");
        if let Some(id) = line.strip_prefix("KILL ") {
            let i = cluster.index_of(id).expect("a node of this cluster");
            assert_eq!(i, KILLED, "the browser test asked to kill {id}");
            cluster.node_mut(i).kill9();
            killed = true;
            writeln!(to_browser, "KILLED").expect("answer the browser test");
        }
    }
    let status = browser.wait().expect("wait for the browser test");
    assert!(
        status.success(),
        "the console's browser test failed ({status}); its checks are listed above, screenshots in {}",
        shots.display()
    );
    assert!(killed, "the browser test never asked for the kill -9");

    if std::env::var_os("TORUA_UPDATE_SCREENSHOTS").is_some() {
        let into = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
        for name in ["console-cluster.png", "console-explorer.png"] {
            std::fs::copy(shots.join(name), into.join(name)).expect("copy a screenshot");
        }
    }
    log(format!(
        "console test passed in {:.0} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    ));
}
