//! The whole `/mutate` pipeline (`Admitter::handle`, from a server started on loopback so it is
//! exactly what `serve` runs): never panics, never allows what does not decode, and every patch is
//! base64 of an RFC 6902 array that applies to the object it was computed for.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sandbox_admission::admission;
use sandbox_admission::config::Config;
use sandbox_admission::pipeline::{Admitter, Answer, Endpoint};
use sandbox_admission::server::{self, ServeSettings, TlsSource};

struct Harness {
    rt: tokio::runtime::Runtime,
    admitter: Arc<Admitter>,
    _dir: tempfile::TempDir,
}

static RUNNING: Mutex<Option<server::Running>> = Mutex::new(None);

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded().unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.health_listen = "127.0.0.1:0".parse().unwrap();
        let running = rt
            .block_on(server::start(ServeSettings {
                config,
                config_origin: "fuzz".into(),
                tls: TlsSource::SelfSigned {
                    dir: dir.path().join("certs"),
                },
                policies_dir: None,
                decision_log: false,
                cluster: None,
            }))
            .unwrap();
        let admitter = running.admitter.clone();
        // Kept for the life of the process (and reachable, so LeakSanitizer does not report the
        // server's own allocations as leaks at exit).
        if let Ok(mut keep) = RUNNING.lock() {
            *keep = Some(running);
        }
        Harness {
            rt,
            admitter,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let decoded = admission::decode(data);
    let answer = h.rt.block_on(
        h.admitter
            .handle(Endpoint::Mutate, data, Duration::from_secs(5)),
    );
    let Answer::Review(bytes) = answer else {
        assert!(
            decoded.is_err(),
            "a decodable review was refused with HTTP 400"
        );
        return;
    };
    let wire: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let response = &wire["response"];
    let Ok(req) = decoded else {
        assert_eq!(response["allowed"], false, "allowed an undecodable body");
        return;
    };
    if let Some(patch) = response["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut object = req.object().cloned().unwrap_or(serde_json::Value::Null);
        json_patch::patch(&mut object, &ops).unwrap();
    }
});
