//! The HTTP API of a cluster with a secret is HTTPS only and asks for API keys: a 3-node cluster
//! started with a cluster secret and a bootstrap admin key; plain HTTP and clients without the
//! cluster's CA are refused; keys with each role are created through the API and the CLI, used,
//! and revoked; the plaintext keys never reach a data directory or a log.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua_testkit::{torua_bin, wait, ClusterOptions, Failures, TestCluster};

const T: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(120);
const BOOTSTRAP: &str = "bootstrap-admin-key-of-the-security-test";
const SECRET: &str = "security-test-cluster-secret-0123456789";

/// (status, JSON body, `WWW-Authenticate`) of `method url` sent with `key`.
fn call(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let mut request = torua_testkit::http::agent().request(method, url).timeout(T);
    if let Some(key) = key {
        request = request.set("Authorization", &format!("Bearer {key}"));
    }
    let response =
        torua_testkit::http::send(request, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status();
    let challenge = response.header("www-authenticate").map(str::to_string);
    let value = torua_testkit::http::json_or_text(response.into_string().unwrap_or_default());
    (status, value, challenge)
}

fn create_key(url: &str, key: &str, role: &str) -> (String, String) {
    let (status, answer, _) = call(
        "POST",
        &format!("{url}/keys"),
        Some(key),
        Some(&json!({"role": role, "name": format!("{role} key")})),
    );
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["role"], role, "{answer}");
    (
        answer["id"].as_str().unwrap().to_string(),
        answer["key"].as_str().unwrap().to_string(),
    )
}

/// Every file below `dir` (data directories, logs) that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn metric(url: &str, key: &str, line_start: &str) -> f64 {
    let text = torua_testkit::http::agent()
        .get(&format!("{url}/metrics"))
        .set("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn api_keys_with_roles_guard_every_route_but_health() {
    let started = Instant::now();
    let mut f = Failures::default();
    let o = ClusterOptions::graph(3).with_secret(SECRET, Some(BOOTSTRAP));
    let cluster = TestCluster::start_green(3, o, SETTLE).unwrap();
    let urls: Vec<String> = (0..3).map(|i| cluster.node(i).url("")).collect();
    let u0 = &urls[0];
    f.check(u0.starts_with("https://"), || format!("{u0} is not https"));

    // HTTPS only: plain HTTP gets a 400 that says so; a client without the cluster's CA cannot
    // verify the node.
    let plain = format!("http://{}/health", cluster.node(0).http_addr());
    let (status, answer) = match ureq::get(&plain).timeout(T).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    };
    f.check(status == 400 && answer.contains("https://"), || {
        format!("plain HTTP: {status} {answer}")
    });
    let unverified = ureq::get(&format!("{u0}/health")).timeout(T).call();
    f.check(
        matches!(&unverified, Err(ureq::Error::Transport(_))),
        || format!("a client without the CA: {unverified:?}"),
    );

    // Open: /health. Everything else needs a key: 401 with a reason and a challenge.
    let (status, _, _) = call("GET", &format!("{u0}/health"), None, None);
    f.check(status == 200, || format!("/health without a key: {status}"));
    let (status, answer, challenge) = call("GET", &format!("{u0}/cluster/health"), None, None);
    f.check(
        status == 401
            && answer["error"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Authorization"))
            && challenge.is_some_and(|c| c.starts_with("Bearer")),
        || format!("no key: {status} {answer}"),
    );
    let (status, answer, _) = call(
        "GET",
        &format!("{u0}/cluster/health"),
        Some("torua_0000_not-a-key"),
        None,
    );
    f.check(status == 401, || format!("a wrong key: {status} {answer}"));

    // Keys of each role, made through the API of different nodes.
    let (read_id, read_key) = create_key(&urls[0], BOOTSTRAP, "read");
    let (_, write_key) = create_key(&urls[1], BOOTSTRAP, "write");
    let (_, admin_key) = create_key(&urls[2], BOOTSTRAP, "admin");
    let batch = json!({"entities": [{"id": "sec-1", "title": "Secured", "type": "TEST"}]});
    let retrieve = json!({"query": "Secured", "mode": "local"});
    let query = json!({"cypher": "MATCH (e:Entity) RETURN count(e) AS n"});
    // Every node knows every key (the map carries them).
    for url in &urls {
        let key_known = || -> Result<(), String> {
            let (status, answer, _) = call(
                "POST",
                &format!("{url}/graph/ingest"),
                Some(&write_key),
                Some(&batch),
            );
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{status} {answer}"))
            }
        };
        wait::until(&format!("{url} takes the write key"), T, key_known);
    }
    let expect = |f: &mut Failures, what: &str, got: (u16, Value, Option<String>), want: u16| {
        let (status, answer, _) = got;
        f.check(status == want, || {
            format!("{what}: expected {want}, got {status} {answer}")
        });
    };
    let u1 = &urls[1];
    expect(
        &mut f,
        "read key, ingest",
        call(
            "POST",
            &format!("{u1}/graph/ingest"),
            Some(&read_key),
            Some(&batch),
        ),
        403,
    );
    // A refused body the client is still sending gets the answer, not a connection closed under
    // it (the node reads and drops it).
    let big = json!({"entities": (0..8).map(|i| json!({
        "id": format!("big-{i}"), "title": "BIG", "description": "x".repeat(1 << 20),
    })).collect::<Vec<_>>()});
    expect(
        &mut f,
        "read key, 8 MiB ingest",
        call(
            "POST",
            &format!("{u1}/graph/ingest"),
            Some(&read_key),
            Some(&big),
        ),
        403,
    );
    expect(
        &mut f,
        "no key, 8 MiB ingest",
        call("POST", &format!("{u1}/graph/ingest"), None, Some(&big)),
        401,
    );
    expect(
        &mut f,
        "read key, retrieve",
        call(
            "POST",
            &format!("{u1}/retrieve"),
            Some(&read_key),
            Some(&retrieve),
        ),
        200,
    );
    expect(
        &mut f,
        "read key, entity",
        call(
            "GET",
            &format!("{u1}/graph/entities/sec-1"),
            Some(&read_key),
            None,
        ),
        200,
    );
    expect(
        &mut f,
        "read key, delete",
        call(
            "DELETE",
            &format!("{u1}/graph/entities/sec-1"),
            Some(&read_key),
            None,
        ),
        403,
    );
    expect(
        &mut f,
        "read key, keys",
        call("GET", &format!("{u1}/keys"), Some(&read_key), None),
        403,
    );
    expect(
        &mut f,
        "write key, ingest",
        call(
            "POST",
            &format!("{u1}/graph/ingest"),
            Some(&write_key),
            Some(&batch),
        ),
        200,
    );
    expect(
        &mut f,
        "write key, query",
        call(
            "POST",
            &format!("{u1}/query"),
            Some(&write_key),
            Some(&query),
        ),
        403,
    );
    expect(
        &mut f,
        "write key, drain",
        call(
            "POST",
            &format!("{u1}/nodes/node-3/drain"),
            Some(&write_key),
            Some(&json!({})),
        ),
        403,
    );
    expect(
        &mut f,
        "admin key, query",
        call(
            "POST",
            &format!("{u1}/query"),
            Some(&admin_key),
            Some(&query),
        ),
        200,
    );
    // ApiKey, as Elasticsearch spells it.
    let response = torua_testkit::http::agent()
        .get(&format!("{u1}/cluster/shards"))
        .set("Authorization", &format!("ApiKey {read_key}"))
        .call();
    f.check(response.is_ok(), || format!("ApiKey scheme: {response:?}"));

    // The listing has no secrets; the CLI lists and creates keys too.
    let (status, listed, _) = call("GET", &format!("{u0}/keys"), Some(&admin_key), None);
    let text = listed.to_string();
    f.check(
        status == 200 && listed["keys"].as_array().is_some_and(|k| k.len() == 3),
        || format!("GET /keys: {status} {listed}"),
    );
    for key in [&read_key, &write_key, &admin_key] {
        let secret = key.rsplit('_').next().unwrap();
        f.check(!text.contains(secret), || "GET /keys shows a secret".into());
    }
    let cli = |args: &[&str]| {
        std::process::Command::new(torua_bin())
            .arg("key")
            .args(args)
            .env("TORUA_URL", u0)
            .env("TORUA_API_KEY", &admin_key)
            .env("TORUA_CLUSTER_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = cli(&["create", "--role", "read", "--name", "from the cli"]);
    let cli_key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    f.check(
        out.status.success() && cli_key.starts_with("torua_"),
        || format!("torua key create: {out:?}"),
    );
    expect(
        &mut f,
        "CLI-made read key, entity",
        call(
            "GET",
            &format!("{u0}/graph/entities/sec-1"),
            Some(&cli_key),
            None,
        ),
        200,
    );
    let out = cli(&["list"]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    f.check(
        out.status.success() && listing.contains("from the cli") && listing.contains(&read_id),
        || format!("torua key list: {out:?}"),
    );
    // The CA as a PEM file (printed by `torua cert --secret-ca`) instead of the secret; no key:
    // 401 and a hint.
    let out = std::process::Command::new(torua_bin())
        .args(["cert", "--secret-ca"])
        .env("TORUA_CLUSTER_SECRET", SECRET)
        .env_remove("TORUA_CLUSTER_ID")
        .output()
        .unwrap();
    let pem = String::from_utf8_lossy(&out.stdout).to_string();
    f.check(
        out.status.success()
            && pem
                == transport::ClusterCa::derive(SECRET, "torua")
                    .unwrap()
                    .cert_pem(),
        || format!("torua cert --secret-ca: {out:?}"),
    );
    let ca_file = cluster.data_dir().join("ca.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let out = std::process::Command::new(torua_bin())
        .args(["key", "list", "--url", u0, "--ca"])
        .arg(&ca_file)
        .env_remove("TORUA_API_KEY")
        .env_remove("TORUA_CLUSTER_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    f.check(
        !out.status.success() && stderr.contains("401") && stderr.contains("TORUA_API_KEY"),
        || format!("torua key list without a key: {out:?}"),
    );

    // Revoked on one node: refused by every node within 5 s.
    let (status, answer, _) = call(
        "DELETE",
        &format!("{}/keys/{read_id}", urls[2]),
        Some(&admin_key),
        None,
    );
    f.check(status == 200, || format!("revoke: {status} {answer}"));
    let revoked_at = Instant::now();
    for url in &urls {
        wait::until(
            &format!("{url} refuses the revoked key"),
            Duration::from_secs(5),
            || {
                let (status, answer, _) = call(
                    "GET",
                    &format!("{url}/cluster/health"),
                    Some(&read_key),
                    None,
                );
                if status == 401 {
                    Ok(())
                } else {
                    Err(format!("{status} {answer}"))
                }
            },
        );
    }
    eprintln!(
        "revoked key refused by every node {} ms after the revocation answered",
        revoked_at.elapsed().as_millis()
    );
    let (status, _, _) = call(
        "DELETE",
        &format!("{u0}/keys/{read_id}"),
        Some(&admin_key),
        None,
    );
    f.check(status == 404, || format!("second revocation: {status}"));
    let (status, _, _) = call(
        "POST",
        &format!("{u0}/keys"),
        Some(&admin_key),
        Some(&json!({"role": "root"})),
    );
    f.check(status == 400, || format!("unknown role: {status}"));

    // Guessing is counted and slowed down: after a few wrong keys from one address, answers wait.
    let mut slowest = Duration::ZERO;
    for n in 0..8 {
        let t = Instant::now();
        let (status, _, _) = call(
            "GET",
            &format!("{u0}/cluster/health"),
            Some(&format!("torua_{n:04}_guess")),
            None,
        );
        f.check(status == 401, || format!("guess {n}: {status}"));
        slowest = slowest.max(t.elapsed());
    }
    f.check(slowest >= Duration::from_millis(100), || {
        format!("repeated wrong keys were not slowed down (slowest answer {slowest:?})")
    });
    let failures = metric(u0, &admin_key, "torua_http_auth_failures_total");
    f.check(failures >= 8.0, || {
        format!("torua_http_auth_failures_total is {failures}")
    });

    // No plaintext key in any data directory or log (the map holds salted hashes only).
    for key in [BOOTSTRAP, &read_key, &write_key, &admin_key, &cli_key] {
        let found = files_containing(cluster.data_dir(), key);
        f.check(found.is_empty(), || {
            format!("a plaintext key is in {found:?}")
        });
    }
    f.finish("API keys", started);
}

/// Slow and oversized clients are bounded: 500 connections that never finish a request (half
/// silent before TLS, half sending their headers a line at a time over TLS) while `/health`
/// still answers within 100 ms (median); a 100 KiB header is refused; the node cuts the slow
/// connections off after its header timeout (10 s) and answers normally afterwards.
#[test]
fn slow_clients_do_not_hold_up_the_node() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;

    let mut f = Failures::default();
    let mut o = ClusterOptions::graph(1);
    o.env.insert("TORUA_REPLICAS".into(), "1".into());
    // The test kit's key is process-wide: the same bootstrap key as the other test's cluster.
    let o = o.with_secret(SECRET, Some(BOOTSTRAP));
    let cluster = TestCluster::start_green(1, o, SETTLE).unwrap();
    let addr = cluster.node(0).http_addr();
    let host = addr.rsplit_once(':').unwrap().0.to_string();
    let health = cluster.node(0).url("/health");
    let tls = torua_testkit::http::cluster_tls_config(SECRET, "torua");

    let opened = Instant::now();
    let silent: Vec<TcpStream> = (0..250)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut dripping: Vec<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> = (0..250)
        .map(|_| {
            let tcp = TcpStream::connect(&addr).unwrap();
            tcp.set_write_timeout(Some(T)).unwrap();
            let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap();
            let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            // The handshake happens on this first write.
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: torua\r\n")
                .unwrap();
            stream
        })
        .collect();
    println!(
        "500 slow connections open in {:.1} s",
        opened.elapsed().as_secs_f64()
    );

    // While they dribble: /health on fresh connections.
    let mut latencies = Vec::new();
    let mut round = 0;
    let _ = wait::throughout(Duration::from_secs(4), Duration::from_millis(200), || {
        round += 1;
        for s in dripping.iter_mut() {
            let _ = s.write_all(format!("X-Slow-{round}: 1\r\n").as_bytes());
        }
        let asked = Instant::now();
        let status = ureq::AgentBuilder::new()
            .tls_config(tls.clone())
            .build()
            .get(&health)
            .timeout(T)
            .call()
            .map(|r| r.status())
            .unwrap_or_else(|e| {
                println!("/health: {e}");
                0
            });
        latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
        f.check(status == 200, || format!("/health answered {status}"));
        Ok::<(), ()>(())
    });
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    println!(
        "/health with 500 slow connections held: median {median:.1} ms, max {:.1} ms",
        latencies[latencies.len() - 1]
    );
    f.check(median < 100.0, || {
        format!("/health median {median:.1} ms with slow clients (all: {latencies:?})")
    });

    // An oversized request head is refused (431, or the connection closed), not buffered.
    let big = "x".repeat(100 << 10);
    let answer = torua_testkit::http::agent()
        .get(&health)
        .set("X-Big", &big)
        .timeout(T)
        .call();
    f.check(
        matches!(
            &answer,
            Err(ureq::Error::Status(431, _)) | Err(ureq::Error::Transport(_))
        ),
        || format!("a 100 KiB header: {answer:?}"),
    );

    // The node ends every slow connection after its timeouts (10 s for headers or a handshake).
    let closed = |tcp: &TcpStream| -> bool {
        let mut buf = [0u8; 1024];
        tcp.set_nonblocking(true).unwrap();
        let mut probe = tcp;
        let gone = loop {
            match probe.read(&mut buf) {
                Ok(0) => break true,
                // An answer (400 for a silent one, 408 for a slow head) ends the exchange too.
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        tcp.set_nonblocking(false).unwrap();
        gone
    };
    let all_closed = wait::poll(Duration::from_secs(40), Duration::from_millis(500), || {
        let done = silent.iter().all(closed) && dripping.iter().all(|s| closed(s.get_ref()));
        if done {
            Ok(())
        } else {
            Err(())
        }
    })
    .is_ok();
    println!(
        "slow connections closed by the node {:.1} s after they opened",
        opened.elapsed().as_secs_f64()
    );
    f.check(all_closed, || {
        let open_silent = silent.iter().filter(|t| !closed(t)).count();
        let open_dripping = dripping.iter().filter(|s| !closed(s.get_ref())).count();
        format!("still open after 40 s: {open_silent} silent, {open_dripping} slow-header")
    });
    let (status, _, _) = call("GET", &health, None, None);
    f.check(status == 200, || format!("/health afterwards: {status}"));
    f.finish("slow clients", opened);
}

/// A cluster that forms with keys required and no bootstrap key anywhere: the node that creates
/// the shard map prints an initial admin key once on its standard error; that key works on every
/// node, can create other keys and be revoked, and no node prints a second one.
#[test]
fn a_cluster_formed_without_a_bootstrap_key_prints_one_initial_admin_key() {
    let started = Instant::now();
    let mut f = Failures::default();
    let o = ClusterOptions::graph(3).with_secret(SECRET, None);
    let cluster = TestCluster::start(3, o).unwrap();
    let urls: Vec<String> = (0..3).map(|i| cluster.node(i).url("")).collect();

    // The key is the line after the announcement, on exactly one node.
    let printed = |i: usize| -> Vec<String> {
        let log = cluster.node(i).log_tail(5000);
        let lines: Vec<&str> = log.lines().collect();
        lines
            .windows(3)
            .filter(|w| w[0].contains("shown only this once"))
            .map(|w| w[2].trim().to_string())
            .collect()
    };
    let (holder, key) = wait::until("an initial admin key printed", SETTLE, || {
        (0..3)
            .find_map(|i| printed(i).first().map(|k| (i, k.clone())))
            .ok_or("not yet")
    });
    println!(
        "node {holder} printed an initial key after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    f.check(key.starts_with("torua_"), || format!("printed {key:?}"));
    for (i, url) in urls.iter().enumerate() {
        let (status, answer) = wait::until("the initial key on every node", SETTLE, || {
            let (status, answer, _) = call("GET", &format!("{url}/keys"), Some(&key), None);
            if status == 200 {
                Ok((status, answer))
            } else {
                Err(format!("node {i}: {status} {answer}"))
            }
        });
        f.check(
            status == 200 && answer.to_string().contains("initial admin"),
            || format!("GET /keys on node {i} with the initial key: {status} {answer}"),
        );
        let (status, _, _) = call("GET", &format!("{url}/keys"), None, None);
        f.check(status == 401, || format!("no key on node {i}: {status}"));
    }
    let initial_id = key
        .strip_prefix("torua_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id.to_string())
        .unwrap_or_default();

    // Rotation: a new admin key made with it, then the initial key revoked everywhere.
    let (_, admin) = create_key(&urls[1], &key, "admin");
    let (status, answer, _) = call(
        "DELETE",
        &format!("{}/keys/{initial_id}", urls[2]),
        Some(&admin),
        None,
    );
    f.check(status == 200 || status == 204, || {
        format!("revoking the initial key: {status} {answer}")
    });
    for (i, url) in urls.iter().enumerate() {
        let refused = wait::poll(Duration::from_secs(5), Duration::from_millis(100), || {
            let (status, _, _) = call("GET", &format!("{url}/keys"), Some(&key), None);
            if status == 401 {
                Ok(())
            } else {
                Err(status)
            }
        });
        f.check(refused.is_ok(), || {
            format!("the revoked initial key on node {i}: {refused:?}")
        });
        let (status, _, _) = call("GET", &format!("{url}/keys"), Some(&admin), None);
        f.check(status == 200, || {
            format!("the new admin key on node {i}: {status}")
        });
    }
    let prints: Vec<usize> = (0..3).map(|i| printed(i).len()).collect();
    f.check(
        prints.iter().sum::<usize>() == 1 && prints[holder] == 1,
        || format!("initial keys printed per node: {prints:?}"),
    );
    f.finish("the initial admin key", started);
}
