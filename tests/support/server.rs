//! The real CouchDB-compatible server the suite runs against.
//!
//! With `COUCHDB_URL` set (e.g. `http://admin:pw@127.0.0.1:5984`), that
//! server is used. Otherwise PouchDB Server is installed from
//! `scripts/pouchdb-server` (pinned package.json + lock file) if needed and
//! started once per test process on a free 127.0.0.1 port, with an admin
//! configured so 401s are real. The server is stopped when this process
//! exits, however it exits: `serve.js` watches its stdin, which closes with
//! us. Nothing here ever skips: a server that cannot start panics loudly.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

pub struct Server {
    /// Server root without credentials, no trailing slash.
    pub base: String,
    pub user: String,
    pub password: String,
    pub is_couchdb: bool,
    /// Keeps the pipe to serve.js open for the life of the process.
    _keepalive: Mutex<Option<(Child, ChildStdin)>>,
}

impl Server {
    /// The server root with credentials: `http://user:pw@host:port`.
    pub fn authed_base(&self) -> String {
        with_userinfo(&self.base, &format!("{}:{}", self.user, self.password))
    }

    pub fn authority(&self) -> &str {
        self.base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    }
}

pub fn with_userinfo(base: &str, userinfo: &str) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{userinfo}@{rest}"),
        None => base.to_owned(),
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();

pub fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("COUCHDB_URL") {
        Ok(url) if !url.trim().is_empty() => external(url.trim()),
        _ => start_pouchdb_server(),
    })
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn external(url: &str) -> Server {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("COUCHDB_URL is not a URL: {e}"));
    let mut base = parsed.clone();
    base.set_username("").ok();
    base.set_password(None).ok();
    let base = base.as_str().trim_end_matches('/').to_owned();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let welcome = blocking_get(&base);
    Server {
        is_couchdb: welcome.contains("\"couchdb\""),
        base,
        user: decode(parsed.username()),
        password: decode(parsed.password().unwrap_or("")),
        _keepalive: Mutex::new(None),
    }
}

fn start_pouchdb_server() -> Server {
    let dir = repo_root().join("scripts/pouchdb-server");
    if !dir
        .join("node_modules/pouchdb-server/package.json")
        .is_file()
    {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run npm to install PouchDB Server (is Node.js installed?): {e}")
            });
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = std::env::temp_dir().join(format!("settee-test-server-{}", std::process::id()));
    let (user, password) = (
        "settee_admin".to_owned(),
        format!("pw-{}", std::process::id()),
    );
    let mut last_err = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let mut child = Command::new("node")
            .arg(dir.join("serve.js"))
            .args(["--port", &port.to_string(), "--dir"])
            .arg(&data)
            .args(["--admin", &format!("{user}:{password}"), "--in-memory"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node for PouchDB Server: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        if let (Ok(_), Some(url)) = (read, line.trim().strip_prefix("READY ")) {
            return Server {
                base: url.to_owned(),
                user,
                password,
                is_couchdb: false,
                _keepalive: Mutex::new(Some((child, stdin))),
            };
        }
        let _ = child.kill();
        let _ = child.wait();
        last_err = format!(
            "serve.js said {line:?}; server output: {}",
            std::fs::read_to_string(data.join("server.out")).unwrap_or_default()
        );
    }
    panic!("PouchDB Server did not start: {last_err}");
}

/// The socket address of the test server, for proxies to forward to.
pub fn server_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    server()
        .authority()
        .to_socket_addrs()
        .expect("the test server's address resolves")
        .next()
        .expect("the test server has an address")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A GET with a throwaway runtime, for set-up code outside async contexts.
fn blocking_get(url: &str) -> String {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            reqwest::get(&url)
                .await
                .unwrap_or_else(|e| panic!("COUCHDB_URL {url} does not answer: {e}"))
                .text()
                .await
                .unwrap_or_default()
        })
    })
    .join()
    .expect("probe thread")
}
