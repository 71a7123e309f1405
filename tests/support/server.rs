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
        with_userinfo(&self.base, &userinfo(&self.user, &self.password))
    }

    /// Whether sequences are opaque and `_changes` rows come out of
    /// sequence order: on CouchDB 2+ and under the quirks layer.
    pub fn seqs_are_opaque(&self) -> bool {
        self.is_couchdb || super::quirks::enabled()
    }

    /// Whether `GET /db`'s `instance_start_time` is the database's creation
    /// time, as on CouchDB 3 and later (and under the quirks layer), where a
    /// recreated database is told by it first.
    pub fn reports_creation_times(&self) -> bool {
        if super::quirks::enabled() {
            return true;
        }
        if !self.is_couchdb {
            return false;
        }
        let (_, welcome) = blocking_get(&self.base, Some((&self.user, &self.password)));
        serde_json::from_str::<serde_json::Value>(&welcome)
            .ok()
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            .is_some_and(|major| major >= 3)
    }

    pub fn authority(&self) -> &str {
        self.base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    }
}

/// `user:password` for a URL, each part percent-encoded: a real server's
/// password may hold `@`, `:` or `/`.
pub fn userinfo(user: &str, password: &str) -> String {
    let e = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!("{}:{}", e(user), e(password))
}

pub fn with_userinfo(base: &str, userinfo: &str) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{userinfo}@{rest}"),
        None => base.to_owned(),
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();

pub fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let real = match std::env::var("COUCHDB_URL") {
            Ok(url) if !url.trim().is_empty() => external(url.trim()),
            _ => start_pouchdb_server(),
        };
        if super::quirks::enabled() {
            // Every test talks to the CouchDB 3 quirks layer instead.
            let base = super::quirks::start_for_process(addr_of(&real));
            Server { base, ..real }
        } else {
            real
        }
    })
}

/// The server a test's own quirks proxy stands in front of (the layer's
/// own tests, `tests/quirks.rs`): the test server when it is not CouchDB,
/// else a PouchDB Server started for them. The layer imitates CouchDB in
/// front of PouchDB Server; in front of a real CouchDB its tests would
/// test nothing.
pub fn layer_upstream() -> &'static Server {
    static OWN: OnceLock<Server> = OnceLock::new();
    if server().is_couchdb {
        OWN.get_or_init(start_pouchdb_server)
    } else {
        server()
    }
}

/// The address of [`layer_upstream`], behind the process's quirks proxy if
/// there is one (two layers in a row would each deal the other's pages).
pub fn layer_upstream_addr() -> std::net::SocketAddr {
    if server().is_couchdb {
        addr_of(layer_upstream())
    } else {
        super::quirks::real_server_addr()
    }
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
    let (user, password) = (
        decode(parsed.username()),
        decode(parsed.password().unwrap_or("")),
    );
    // With credentials: a server that requires a valid user answers an
    // anonymous `GET /` with a 401 and would pass for something else.
    let (status, welcome) = blocking_get(&base, Some((&user, &password)));
    assert_eq!(
        status, 200,
        "COUCHDB_URL {base} answers GET / with {status}: {welcome}"
    );
    let is_couchdb = serde_json::from_str::<serde_json::Value>(&welcome)
        .ok()
        .is_some_and(|v| v.get("couchdb").is_some());
    Server {
        is_couchdb,
        base,
        user,
        password,
        _keepalive: Mutex::new(None),
    }
}

/// Installs PouchDB Server from the lock file unless exactly that lock file
/// was installed already (an interrupted or outdated install is redone).
fn install_pouchdb_server(dir: &std::path::Path) {
    let lock = std::fs::read(dir.join("package-lock.json"))
        .unwrap_or_else(|e| panic!("{}/package-lock.json: {e}", dir.display()));
    let marker = dir.join("node_modules/.settee-installed-lock");
    if std::fs::read(&marker).is_ok_and(|installed| installed == lock)
        && dir
            .join("node_modules/pouchdb-server/package.json")
            .is_file()
    {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
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
    std::fs::write(&marker, &lock).unwrap_or_else(|e| panic!("{}: {e}", marker.display()));
}

/// Removes the data directories of earlier test processes that are gone
/// (they hold the admin password of a server that no longer runs).
fn remove_stale_data_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("settee-test-server-"))
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_pouchdb_server() -> Server {
    let dir = repo_root().join("scripts/pouchdb-server");
    install_pouchdb_server(&dir);
    remove_stale_data_dirs();
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
            // The port was free a moment ago; make sure the server on it is
            // ours (our admin logs in), not whatever took the port meanwhile.
            let (status, session) =
                blocking_get(&format!("{url}/_session"), Some((&user, &password)));
            assert!(
                status == 200 && session.contains(&format!("\"{user}\"")),
                "the server on {url} is not the PouchDB Server just started: {status} {session}"
            );
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

/// The socket address of the test server, for proxies to forward to: the
/// first resolved address that accepts a connection (`localhost` may
/// resolve to `::1` first while the server listens on 127.0.0.1 only).
pub fn server_addr() -> std::net::SocketAddr {
    addr_of(server())
}

/// The socket address of `s` (see [`server_addr`]).
fn addr_of(s: &Server) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    assert!(
        s.base.starts_with("http://") && !s.authority().contains('/'),
        "the fault proxy speaks plain HTTP to a server root; {} is not one",
        s.base
    );
    let addrs: Vec<_> = s
        .authority()
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{} does not resolve: {e}", s.authority()))
        .collect();
    addrs
        .iter()
        .copied()
        .find(|a| {
            std::net::TcpStream::connect_timeout(a, std::time::Duration::from_secs(2)).is_ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no address of {} accepts connections: {addrs:?}",
                s.authority()
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A GET (with basic auth if given) on a throwaway runtime, for set-up
/// code outside async contexts: the status and the body.
fn blocking_get(url: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let url = url.to_owned();
    let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .get(&url)
                .header("Accept", "application/json");
            if let Some((user, password)) = &auth {
                req = req.basic_auth(user, Some(password));
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url} does not answer: {e}"));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    })
    .join()
    .expect("probe thread")
}
