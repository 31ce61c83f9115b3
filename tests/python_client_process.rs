//! The Python client (`clients/python`) against a live cluster: its pytest suite runs against a
//! 3-node cluster with a secret (HTTPS, API keys) and 8-dimensional embeddings.
//!
//! The suite covers every client method (sync and async), failover past a dead URL and a node that
//! never answers, ingest and read back, errors with the server's reason, keys and roles, the
//! Python GraphRAG importer loading Dulce (and `torua import graphrag` changing nothing after it),
//! and the LangChain and LlamaIndex retrievers (an LCEL chain with a fake LLM; no LLM is called).
//!
//! Python comes from `python3` (or `$TORUA_PYTHON`); the packages install from PyPI into a virtual
//! environment under the target directory (`<target>/python-venv`), once: the client is installed
//! editable, so only a changed `pyproject.toml` installs again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use torua_testkit::{dulce_dir, log, target_dir, torua_bin, wait, ClusterOptions, TestCluster};

const SECRET: &str = "python-client-test-cluster-secret-0123";
const BOOTSTRAP: &str = "bootstrap-admin-key-of-the-python-client-test";
const SETTLE: Duration = Duration::from_secs(120);
/// Cap on the whole pytest run (it takes well under a minute here).
const PYTEST_LIMIT: Duration = Duration::from_secs(600);
/// Cap on installing the packages into a fresh virtual environment.
const INSTALL_LIMIT: Duration = Duration::from_secs(900);
const EMBEDDING_DIM: usize = 8;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` with its output in `out_file`, at most `limit`; returns (success, output).
fn run_logged(mut cmd: Command, out_file: &Path, limit: Duration) -> (bool, String) {
    let file = std::fs::File::create(out_file).expect("create output file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let exited = wait::poll(limit, wait::POLL, || {
        child.try_wait().expect("wait for child").ok_or(())
    });
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = std::fs::read_to_string(out_file).unwrap_or_default();
    match exited {
        Ok(s) => (s.success(), output),
        Err(()) => (false, format!("{output}\n<killed after {limit:?}>")),
    }
}

/// The virtual environment's python, with the client (editable, all extras) and pytest
/// installed. Installs only when the venv is missing or was made for another `pyproject.toml`
/// or checkout.
fn venv_python() -> PathBuf {
    let venv = target_dir().join("python-venv");
    let python = venv.join("bin").join("python");
    let package = repo().join("clients/python");
    let pyproject = std::fs::read_to_string(package.join("pyproject.toml")).expect("pyproject");
    let wanted = format!("{}\n{pyproject}", package.display());
    let stamp = venv.join("torua-client.stamp");
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return python;
    }
    let started = Instant::now();
    if !python.is_file() {
        let base = std::env::var("TORUA_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = Command::new(&base)
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {base} (set TORUA_PYTHON): {e}"));
        assert!(
            out.status.success(),
            "{base} -m venv {}: {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        "--editable",
    ])
    .arg(format!(
        "{}[graphrag,langchain,llama-index,test]",
        package.display()
    ));
    let (ok, output) = run_logged(pip, &venv.join("pip-install.log"), INSTALL_LIMIT);
    assert!(ok, "pip install of the Python client failed:\n{output}");
    std::fs::write(&stamp, wanted).expect("write stamp");
    log(format!(
        "python client installed in {} ({:.0?})",
        venv.display(),
        started.elapsed()
    ));
    python
}

#[test]
fn python_client_suite_passes_against_a_live_cluster() {
    let started = Instant::now();
    let python = venv_python();

    let mut o = ClusterOptions::graph(3).with_secret(SECRET, Some(BOOTSTRAP));
    o.env
        .insert("TORUA_EMBEDDING_DIM".into(), EMBEDDING_DIM.to_string());
    let cluster_started = Instant::now();
    let cluster = TestCluster::start_green(3, o, SETTLE).unwrap();
    log(format!(
        "cluster green after {:.0?}",
        cluster_started.elapsed()
    ));

    let urls: Vec<String> = (0..3).map(|i| cluster.node(i).url("")).collect();
    assert!(urls[0].starts_with("https://"), "{urls:?}");
    let ca = cluster.data_dir().join("ca.pem");
    let pem = transport::ClusterCa::derive(SECRET, "torua")
        .expect("derive the cluster CA")
        .cert_pem();
    std::fs::write(&ca, pem).unwrap();
    // An address of the cluster's loopback network where no node listens.
    let [_, a, b, _] = cluster.node(0).ip.octets();
    let dead = format!("https://127.{a}.{b}.200:{}", torua_testkit::HTTP_PORT);

    let mut pytest = Command::new(&python);
    pytest
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .arg(repo().join("clients/python/tests"))
        .current_dir(repo().join("clients/python"))
        .env("TORUA_URLS", urls.join(","))
        .env("TORUA_API_KEY", BOOTSTRAP)
        .env("TORUA_CA", &ca)
        .env("TORUA_DEAD_URL", &dead)
        .env("TORUA_EMBEDDING_DIM", EMBEDDING_DIM.to_string())
        .env("TORUA_BIN", torua_bin())
        .env("TORUA_DULCE", dulce_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("TORUA_CLUSTER_SECRET");
    let run_started = Instant::now();
    let (ok, output) = run_logged(pytest, &cluster.data_dir().join("pytest.log"), PYTEST_LIMIT);
    println!("{output}");
    log(format!(
        "pytest {} in {:.0?} (whole test {:.0?})",
        if ok { "passed" } else { "failed" },
        run_started.elapsed(),
        started.elapsed()
    ));
    if !ok {
        for node in &cluster.nodes {
            eprintln!("--- {} log tail:\n{}", node.id, node.log_tail(30));
        }
    }
    assert!(ok, "the Python client's tests failed:\n{output}");
}
