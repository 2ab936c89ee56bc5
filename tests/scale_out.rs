//! The scale-out guide, run for real: three caskade nodes behind nginx with the config that
//! `docs/operations.md` documents (`deploy/nginx/caskade-shards.conf`, only the addresses
//! changed to this test's ports). Every key must land on exactly one node, read back through
//! nginx, and the per-node routes must be refused by the router rather than answered by
//! one node as if it were all.
//!
//! Skipped (with a message) when no `nginx` binary is installed; `.ci/run` installs it.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Resp, STARTUP_TIMEOUT, Server, send};
use serde_json::json;

const NODES: usize = 3;
const KEYS: usize = 300;
/// The addresses the documented config names; the test replaces them with its own.
const DOC_NODES: [&str; NODES] = ["127.0.0.1:7878", "127.0.0.1:7879", "127.0.0.1:7880"];
const DOC_LISTEN: &str = "listen 127.0.0.1:8080;";

fn find_nginx() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"));
    on_path
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
}

/// nginx in the foreground on `config`, with its pid and temporary files under `prefix`;
/// killed when dropped.
struct Nginx {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Nginx {
    fn start(binary: &Path, prefix: &Path, config: &Path, port: u16) -> Nginx {
        // One process (no master/worker split): the test runs it as whatever user it is,
        // so workers never need to switch to an unprivileged user that can't read `prefix`.
        let child = Command::new(binary)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(config)
            .arg("-g")
            .arg("daemon off; master_process off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let nginx = Nginx {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent: common::agent(),
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if nginx
                .try_call("GET", "/healthz")
                .is_ok_and(|r| r.status == 200)
            {
                return nginx;
            }
            assert!(Instant::now() < deadline, "nginx never answered /healthz");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_call(&self, method: &str, path: &str) -> Result<Resp, ureq::Error> {
        send(
            &self.agent,
            &format!("{}{path}", self.base),
            method,
            &[],
            Vec::new(),
        )
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        send(
            &self.agent,
            &format!("{}{path}", self.base),
            method,
            headers,
            body,
        )
        .unwrap_or_else(|e| panic!("{method} {path} through nginx: {e}"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The documented config with this test's node addresses and listening port.
fn config_for(nodes: &[Server], port: u16) -> String {
    let documented = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/caskade-shards.conf"),
    )
    .expect("the documented nginx config is in the repository");
    assert!(
        documented.contains(DOC_LISTEN),
        "the config's listen line moved"
    );
    let mut config = documented.replace(DOC_LISTEN, &format!("listen 127.0.0.1:{port};"));
    for (doc, node) in DOC_NODES.iter().zip(nodes) {
        assert!(config.contains(doc), "the config no longer names {doc}");
        config = config.replace(doc, &node.addr());
    }
    config
}

#[test]
fn every_key_lives_on_exactly_one_node_and_reads_back_through_nginx() {
    let Some(nginx_binary) = find_nginx() else {
        eprintln!("skipped: no nginx installed (apt-get install nginx-light)");
        return;
    };
    let nodes: Vec<Server> = (0..NODES).map(|_| Server::start(&[])).collect();
    let prefix = tempfile::tempdir().expect("a folder for nginx");
    let port = free_port();
    let config = prefix.path().join("caskade-shards.conf");
    std::fs::write(&config, config_for(&nodes, port)).expect("config written");
    let router = Nginx::start(&nginx_binary, prefix.path(), &config, port);

    let key_path = |i: usize| {
        let entity = if i.is_multiple_of(3) { "event" } else { "user" };
        format!("/v1/kv/{entity}/key-{i}")
    };
    for i in 0..KEYS {
        let body = json!({"value": format!("value {i}"), "metadata": {"i": i}});
        let resp = router.call(
            "PUT",
            &key_path(i),
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
    }

    let mut per_node = [0usize; NODES];
    for i in 0..KEYS {
        let path = key_path(i);
        let holders: Vec<usize> = (0..NODES)
            .filter(|&n| {
                let status = nodes[n].get(&path).status;
                assert!(
                    status == 200 || status == 404,
                    "{path} on node {n}: {status}"
                );
                status == 200
            })
            .collect();
        assert_eq!(holders.len(), 1, "{path} is on nodes {holders:?}");
        per_node[holders[0]] += 1;

        let envelope = router.call("GET", &path, &[], Vec::new());
        assert_eq!(envelope.status, 200, "{}", envelope.text());
        assert_eq!(envelope.json()["data"]["value"], format!("value {i}"));
        assert_eq!(envelope.json()["data"]["metadata"]["i"], i);
        let raw = router.call("GET", &format!("{path}/value"), &[], Vec::new());
        assert_eq!(
            raw.text(),
            format!("value {i}"),
            "the /value route hashed elsewhere"
        );
        // The same key spelled with percent-encoding is the same key for caskade, so it
        // must hash to the same node.
        let encoded = path.replace("/key-", "/%6Bey-");
        let same = router.call("GET", &encoded, &[], Vec::new());
        assert_eq!(
            same.status,
            200,
            "{encoded} hashed elsewhere: {}",
            same.text()
        );
    }
    assert!(
        per_node.iter().all(|&n| n > 0),
        "a node got no keys at all: {per_node:?}"
    );

    // A delete through the router removes the key from its node.
    let gone = key_path(1);
    let deleted = router.call("DELETE", &gone, &[], Vec::new());
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["data"]["deleted"], true);
    assert!(nodes.iter().all(|n| n.get(&gone).status == 404));
    assert_eq!(router.call("GET", &gone, &[], Vec::new()).status, 404);

    // Per-node routes are refused with a JSON error instead of one node's partial answer.
    let bulk = json!({"operations": [{"op": "put", "entity": "user", "key": "b", "value": 1}]});
    for (method, path, body) in [
        ("GET", "/v1/kv/user", Vec::new()),
        ("GET", "/v1/kv/user/?prefix=key", Vec::new()),
        ("POST", "/v1/bulk", bulk.to_string().into_bytes()),
        ("GET", "/v1/admin/stats", Vec::new()),
    ] {
        let resp = router.call(method, path, &[("content-type", "application/json")], body);
        assert_eq!(resp.status, 501, "{method} {path}: {}", resp.text());
        assert_eq!(resp.json()["ok"], false, "{}", resp.text());
        assert_eq!(resp.json()["errors"][0]["status"], 501);
        assert_eq!(resp.json()["errors"][0]["error_code"], 5005);
    }
    // Each node lists its own share directly.
    let listed: usize = nodes
        .iter()
        .map(|n| {
            let resp = n.get("/v1/kv/user?limit=1000");
            assert_eq!(resp.status, 200, "{}", resp.text());
            resp.json()["data"]["keys"]
                .as_array()
                .map_or(0, |keys| keys.len())
        })
        .sum();
    assert_eq!(
        listed,
        (0..KEYS).filter(|i| !i.is_multiple_of(3)).count() - 1
    );
}
