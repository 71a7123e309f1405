//! `settee serve`'s router on requests made of any bytes (a method byte,
//! a request target, a body; see `settee::fuzz_hooks::serve_request`):
//! never a panic, never a 5xx, every refusal CouchDB's error body and the
//! replica left as it was.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Served {
    _dir: tempfile::TempDir,
    replica: settee::Replica,
    router: settee::serve::InProcess,
    rt: tokio::runtime::Runtime,
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let replica =
            settee::Replica::open(dir.path(), settee::ReplicaConfig::default()).expect("a replica");
        let router = settee::fuzz_hooks::serve_fixture(&replica).expect("the router");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Served {
            _dir: dir,
            replica,
            router,
            rt,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = served();
    s.rt.block_on(settee::fuzz_hooks::serve_request(
        &s.router, &s.replica, data,
    ));
});
