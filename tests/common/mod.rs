//! Test harness: runs the REAL `caskade` binary on a free loopback port with its own
//! data folder, and talks to it over HTTP. The server is killed when dropped.
//!
//! ```ignore
//! let server = Server::start(&[]);            // temp data dir, waits for /readyz 200
//! let resp = server.get("/healthz");
//! assert_eq!(resp.status, 200);
//! ```

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to say where it listens and to become ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two `/readyz` polls.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Pause between two samples of a server's resident memory.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(5);

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text, lossy.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error_code`s of an error envelope, after checking its shape and status.
    pub fn error_codes(&self) -> Vec<u64> {
        let doc = self.json();
        assert_eq!(doc["ok"], false, "not an error envelope: {}", self.text());
        let ctype = self.header("content-type").unwrap_or_default();
        assert!(
            ctype.starts_with("application/json"),
            "error content-type {ctype:?}"
        );
        let errors = doc["errors"].as_array().cloned().unwrap_or_default();
        assert!(!errors.is_empty(), "no errors in {}", self.text());
        errors
            .iter()
            .map(|e| {
                assert_eq!(e["status"].as_u64(), Some(u64::from(self.status)), "{e}");
                e["error_code"].as_u64().unwrap_or(0)
            })
            .collect()
    }
}

/// A running `caskade serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, from the server's "caskade listening on" line.
    pub base: String,
    /// The data folder the server was started on.
    pub data_dir: PathBuf,
    /// Everything the server wrote to stderr so far (its logs).
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    agent: ureq::Agent,
    _temp: Option<tempfile::TempDir>,
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_caskade")
}

/// An agent that returns 4xx/5xx as responses and gives up after 30 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends one request to `url` (any server, not only a caskade one) and reads the answer.
pub fn send(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Resp, ureq::Error> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = if body.is_empty() {
        agent.run(builder.body(())?)?
    } else {
        agent.run(builder.body(body)?)?
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        response.into_body().read_to_vec()?
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Longest a raw-socket test waits for the server to answer or to cut a connection.
pub const RAW_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A raw TCP connection to `server` whose reads give up after [`RAW_ANSWER_WITHIN`].
pub fn connect(server: &Server) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(server.addr()).expect("connects");
    stream
        .set_read_timeout(Some(RAW_ANSWER_WITHIN))
        .expect("read timeout set");
    stream
}

/// Reads until the server closes the connection; `None` if it did not within
/// [`RAW_ANSWER_WITHIN`] (the read timed out).
pub fn read_until_closed(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(all),
            Err(_) => return None,
        }
    }
}

impl Server {
    /// Starts a server on a fresh temporary data folder and waits until it is ready.
    pub fn start(args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("a temporary folder for the store");
        let mut server = Server::start_in(&temp.path().join("store"), args);
        server._temp = Some(temp);
        server
    }

    /// Starts a server on `data_dir` and waits until it is ready.
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        let server = Server::spawn(data_dir, args).unwrap_or_else(|e| panic!("{e}"));
        server.wait_ready();
        server
    }

    /// Starts a server and returns once it has said where it listens (not yet ready).
    /// Listens on `127.0.0.1:0` unless `args` has its own `--listen`.
    /// Errors carry the server's stderr when it exits before announcing.
    pub fn spawn(data_dir: &Path, args: &[&str]) -> Result<Server, String> {
        Server::launch(Command::new(binary()), data_dir, args)
    }

    /// Starts a server whose files may grow to at most `blocks` blocks of the shell's
    /// `ulimit -f` unit (512 bytes with dash): writes beyond fail with EFBIG, as on a
    /// full disk. Only the soft limit is set, so the same user can raise it again on
    /// the running process (`prlimit --pid PID --fsize=unlimited:`). Waits until it is
    /// ready.
    pub fn start_with_file_size_limit(data_dir: &Path, blocks: u64, args: &[&str]) -> Server {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -S -f {blocks} && exec \"$0\" \"$@\""))
            .arg(binary());
        let server = Server::launch(shell, data_dir, args).unwrap_or_else(|e| panic!("{e}"));
        server.wait_ready();
        server
    }

    /// Starts a server whose stderr (its logs) goes to the regular file `log`, as when
    /// an operator redirects it, and waits until it is ready. [`Server::logs`] is then
    /// empty: read the file.
    pub fn start_logging_to_file(data_dir: &Path, log: &Path, args: &[&str]) -> Server {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg("log=$1; shift; exec \"$0\" \"$@\" 2>>\"$log\"")
            .arg(binary())
            .arg(log);
        let server = Server::launch(shell, data_dir, args).unwrap_or_else(|e| panic!("{e}"));
        server.wait_ready();
        server
    }

    /// Starts a server with extra environment variables (`RUST_LOG`, `RUST_BACKTRACE`,
    /// `CASKADE_*` …) and waits until it is ready.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut command = Command::new(binary());
        command.envs(env.iter().copied());
        let server = Server::launch(command, data_dir, args).unwrap_or_else(|e| panic!("{e}"));
        server.wait_ready();
        server
    }

    /// Starts a server under a shell's `ulimit` (e.g. `-n 64`: at most 64 open files,
    /// soft and hard), and returns once it has said where it listens (not yet ready).
    pub fn spawn_with_ulimit(ulimit: &str, data_dir: &Path, args: &[&str]) -> Server {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
            .arg(binary());
        Server::launch(shell, data_dir, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `command` (the binary, or something that execs it with the arguments it is
    /// given) with `serve` and the harness's arguments, and reads its announcement.
    fn launch(mut command: Command, data_dir: &Path, args: &[&str]) -> Result<Server, String> {
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env_remove("RUST_LOG");
        }
        command.arg("serve");
        if !args.contains(&"--listen") {
            command.arg("--listen").arg("127.0.0.1:0");
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|pipe| drain(pipe, stderr.clone()));
        let line = child.stdout.take().and_then(first_line);
        let base = line
            .as_deref()
            .and_then(|l| l.strip_prefix("caskade listening on "))
            .map(str::to_owned);
        let Some(base) = base else {
            let _ = child.wait();
            if let Some(reader) = stderr_reader {
                let _ = reader.join();
            }
            let logs =
                String::from_utf8_lossy(&stderr.lock().map(|s| s.clone()).unwrap_or_default())
                    .into_owned();
            return Err(format!(
                "the server did not announce itself; stdout {line:?}; stderr:\n{logs}"
            ));
        };
        Ok(Server {
            child,
            base,
            data_dir: data_dir.to_owned(),
            stderr,
            stderr_reader,
            agent: agent(),
            _temp: None,
        })
    }

    /// Polls `/readyz` until it answers 200; panics with the logs if it never does.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if self.try_get("/readyz").is_some_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(READY_POLL_INTERVAL);
        }
        panic!("the server never became ready; logs:\n{}", self.logs());
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port`, for raw sockets.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// What the server logged so far.
    pub fn logs(&self) -> String {
        let bytes = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the server's logs contain `needle` (stderr is read by another thread,
    /// so a line the server wrote before answering may arrive a moment after the answer);
    /// panics with the logs if it never comes.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the logs never said {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(READY_POLL_INTERVAL);
        }
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], Vec::new())
    }

    fn try_get(&self, path: &str) -> Option<Resp> {
        self.try_request("GET", path, &[], Vec::new()).ok()
    }

    /// Any request; panics if the server cannot be reached.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}; logs:\n{}", self.logs()))
    }

    /// Any request.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Resp, ureq::Error> {
        send(&self.agent, &self.url(path), method, headers, body)
    }

    /// PUT a JSON envelope to `path`.
    pub fn put_json(&self, path: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> Resp {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request("PUT", path, &all, body.to_string().into_bytes())
    }

    /// The server's process id, for `/proc/<pid>/…`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.pid())
    }

    /// Runs `work` while sampling the server's resident memory every few milliseconds;
    /// returns what `work` returned and the highest resident memory seen, in bytes.
    pub fn peak_rss_during<T>(&self, work: impl FnOnce() -> T) -> (T, u64) {
        let pid = self.pid();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = rss_of(pid);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_of(pid));
                std::thread::sleep(RSS_SAMPLE_INTERVAL);
            }
            peak.max(rss_of(pid))
        });
        let out = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().expect("the RSS sampler finished");
        (out, peak)
    }

    /// How many file descriptors the server process holds open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the server's /proc fd folder is readable")
            .count()
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("the server process exists");
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        self.signal(signal);
        self.wait()
    }

    /// Polls `/metrics` (never capped, so it takes no in-flight permit) until
    /// `caskade_http_requests_in_flight` is `n`; panics with the logs if it never is.
    pub fn wait_in_flight(&self, n: u64) {
        let want = format!("caskade_http_requests_in_flight {n}\n");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if self.get("/metrics").text().contains(&want) {
                return;
            }
            std::thread::sleep(READY_POLL_INTERVAL);
        }
        panic!("never {n} requests in flight; logs:\n{}", self.logs());
    }

    /// Waits for the process to exit (it must be exiting already).
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("waiting for the server");
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the server's /proc status is readable");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

fn first_line(stdout: impl Read) -> Option<String> {
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    Some(line.trim_end().to_owned())
}

fn drain(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut all) = into.lock() {
                all.extend_from_slice(&buf[..n]);
            }
        }
    })
}
