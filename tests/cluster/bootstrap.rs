//! The bootstrap file and the document checked without etcd: `anygate check` on a
//! bootstrap, `config push --dry-run`, and what belongs where.

use super::common::gateway::check_file;
use super::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn bootstrap_and_document_are_checked_offline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(
        dir.path(),
        "boot.yaml",
        &bootstrap(&["http://127.0.0.1:2379".into()])
            .replace("@HTTP@", "127.0.0.1:8080")
            .replace("@ADMIN@", "127.0.0.1:9091")
            .replace("@DIR@", "/tmp"),
    );
    let (code, out, err) = check_file(&good);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok (bootstrap: config document in etcd key /anygate/config"),
        "{out}"
    );

    // Everything but listen, server and config_source belongs in the document; bad
    // endpoints and keys are located.
    let bad = write(
        dir.path(),
        "bad.yaml",
        r#"listen: { http: 127.0.0.1:8080 }
env: test
config_source:
  etcd:
    endpoints: [https://10.0.0.1:2379, "10.0.0.2"]
    key: /anygate/config/
    username_env: ETCD_USER
"#,
    );
    let (code, _, err) = check_file(&bad);
    assert_eq!(code, 1);
    for want in [
        "bad.yaml:2:1: `env` belongs in the config document in etcd",
        "bad.yaml:5:16: `https://10.0.0.1:2379`: TLS to etcd is not supported yet",
        "bad.yaml:5:16: `10.0.0.2` needs a port",
        "bad.yaml:6:10: `key` `/anygate/config/` must be",
        "`username_env` and `password_env` go together",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // A document is checked like a file, against the bootstrap's listeners, without etcd.
    let op = Operator::new(&["http://127.0.0.1:1".into()]);
    let doc_ok = "env: t\ninstances: [{ id: a, address: \"127.0.0.1:9\" }]\nroutes: [{ domain: \"*\", path: /, instance: a }]\n";
    let (code, out, err) = op.push(doc_ok, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid; not pushed (--dry-run)"), "{out}");
    let (code, _, err) = op.push(
        "listen: { http: 127.0.0.1:1 }\nenv: t\nroutes: [{ domain: \"*\", path: /, instance: a }]\n",
        &["--dry-run"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains(":1:1: `listen` belongs in the bootstrap file") && err.contains(":3:"),
        "{err}"
    );
}
