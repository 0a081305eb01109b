//! Compiling configs: plugin reuse across reloads, check-mode warnings, every error at once.

use super::check::compile_resolving;
use super::*;
use crate::config::load_str;

fn build(text: &str, generation: u64, previous: Option<&Snapshot>) -> Snapshot {
    let file = load_str(Path::new("t.yaml"), text).unwrap();
    compile(
        &file,
        generation,
        &|_| None,
        &crate::server::new_telemetry().unwrap(),
        previous,
    )
    .unwrap()
}

const BASE: &str = "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: \"127.0.0.1:2\" }]\nroutes: [{ domain: \"*\", path: ROUTE, instance: a }]\nplugins:\n  - name: request_id\n  - name: routing\n  - name: forwarded_for\n    trusted_proxies: [TRUSTED]\n  - name: upstream_info\n";

fn text(route: &str, trusted: &str) -> String {
    BASE.replace("ROUTE", route).replace("TRUSTED", trusted)
}

#[test]
fn unchanged_plugins_are_reused_and_changed_ones_rebuilt() {
    let first = build(&text("/a", "10.0.0.0/8"), 1, None);
    // New routes, same plugin settings: every plugin is the same object.
    let second = build(&text("/b", "10.0.0.0/8"), 2, Some(&first));
    for (a, b) in first.chain.plugins().iter().zip(second.chain.plugins()) {
        assert!(Arc::ptr_eq(a, b), "{} was rebuilt", a.name());
    }
    assert_eq!(second.routes.routes()[0].path, "/b");
    // forwarded_for's settings changed: it alone is rebuilt.
    let third = build(&text("/b", "192.168.0.0/16"), 3, Some(&second));
    for (a, b) in second.chain.plugins().iter().zip(third.chain.plugins()) {
        assert_eq!(
            Arc::ptr_eq(a, b),
            a.name() != "forwarded_for",
            "{}",
            a.name()
        );
    }
    // A different env rebuilds everything.
    let other_env = text("/b", "192.168.0.0/16").replace("env: e", "env: f");
    let fourth = build(&other_env, 4, Some(&third));
    for (a, b) in third.chain.plugins().iter().zip(fourth.chain.plugins()) {
        assert!(!Arc::ptr_eq(a, b), "{}", a.name());
    }
}

fn compile_text(text: &str, purpose: Purpose) -> Compiled {
    let file = load_str(Path::new("t.yaml"), text).unwrap();
    let unresolvable = |host: &str, _port: u16| -> Result<SocketAddr, String> {
        Err(format!(
            "cannot resolve `{host}`: no such name (test resolver)"
        ))
    };
    compile_resolving(
        &file,
        1,
        &|_| None,
        &crate::server::new_telemetry().unwrap(),
        None,
        purpose,
        &unresolvable,
    )
}

fn at(list: &[ConfigError]) -> Vec<(usize, usize, &str)> {
    list.iter()
        .map(|x| (x.mark.line, x.mark.col, x.message.as_str()))
        .collect()
}

const MACHINE: &str = "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances:\n  - { id: a, address: \"backend.internal:8080\", origin_secret_env: A_SECRET }\nroutes: [{ domain: \"*\", path: /, instance: a }]\n";

#[test]
fn check_warns_about_what_this_machine_lacks_and_serve_refuses_it() {
    let checked = compile_text(MACHINE, Purpose::Check);
    let snap = checked.snapshot.expect("check passes");
    assert_eq!(snap.routes.routes().len(), 1, "the instance is still built");
    let w = at(&checked.warnings);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!((w[0].0, w[0].1), (4, 23));
    assert!(
        w[0].2.contains("cannot resolve `backend.internal`"),
        "{w:?}"
    );
    assert_eq!((w[1].0, w[1].1), (4, 67));
    assert!(w[1].2.contains("`A_SECRET` is not set"), "{w:?}");

    let served = compile_text(MACHINE, Purpose::Serve);
    assert!(served.warnings.is_empty());
    let errors = served.snapshot.err().expect("serve refuses");
    let e = at(&errors.0);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].0, e[0].1), (4, 23));
    assert_eq!((e[1].0, e[1].1), (4, 67));
}

#[test]
fn independent_errors_are_all_reported() {
    let text = "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances:\n  - { id: \"a b\", address: \"10.0.0.1:99999\", upstream_type: \"\" }\n  - { id: ok, address: 10.0.0.2, origin_secret_env: UNSET_ONE }\nroutes:\n  - { domain: nowhere.example, path: api, instance: ghost }\n  - { domain: default, path: /x, instance: ok }\nplugins:\n  - name: identity\n    mode: trusted_front\n  - name: routing\n";
    let errors = compile_text(text, Purpose::Serve)
        .snapshot
        .err()
        .expect("fails");
    let e = at(&errors.0);
    let want: &[(usize, usize, &str)] = &[
        (4, 11, "may only use letters"),
        (4, 27, "invalid port"),
        (4, 60, "cannot be sent as a header"),
        (5, 53, "`UNSET_ONE` is not set"),
        (7, 15, "domain `nowhere.example`"),
        (7, 38, "must start with `/`"),
        (7, 53, "instance `ghost`"),
        (11, 11, "needs `trusted_fronts"),
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for ((l, c, msg), (wl, wc, needle)) in e.iter().zip(want) {
        assert_eq!((l, c), (wl, wc), "{msg}");
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
}
