//! What docs/install.md deploys: the systemd unit (`systemd-analyze verify` and `security`),
//! the pid file and upgrade socket the unit and the sample configs agree on, and the
//! Kubernetes manifests (`kubernetes-validate`, offline; the ConfigMap's config passes
//! `anygate check`; the grace period covers the config's shutdown).

use anygate::config::yaml::{self, get, items};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs a tool `.ci/run` installs; a missing one fails the test with what to install.
fn tool(name: &str, package: &str, args: &[&str]) -> std::process::Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{name}` ({e}): `bash .ci/run` installs it ({package})")
    })
}

/// `Key=value` lines of the unit's `[Service]` section.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// The unit with the binary's install path pointing at the binary under test
/// (`systemd-analyze verify` checks that every command exists).
fn unit_for_verify(dir: &Path) -> PathBuf {
    let unit = read("conf/anygate.service")
        .replace("/usr/local/bin/anygate", env!("CARGO_BIN_EXE_anygate"));
    let path = dir.join("anygate.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_clean_and_is_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let path = unit_for_verify(dir.path());
    let p = path.to_str().unwrap();
    let out = tool("systemd-analyze", "systemd", &["verify", p]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // verify exits 0 on unknown keys and bad values, only saying so: any word about the
    // file is a defect.
    let about_unit: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("anygate.service"))
        .collect();
    assert!(about_unit.is_empty(), "{}", about_unit.join("\n"));

    // The sandboxing: systemd's own exposure score (0 = locked down, 10 = none) stays low.
    let out = tool(
        "systemd-analyze",
        "systemd",
        &["security", "--offline=true", "--no-pager", p],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            let rest = l
                .split("Overall exposure level for anygate.service: ")
                .nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score}:\n{text}");

    let unit = read("conf/anygate.service");
    for (key, want) in [
        ("User", "anygate"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
        ("NoNewPrivileges", "true"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("RuntimeDirectory", "anygate"),
    ] {
        assert!(
            unit_values(&unit, key).iter().any(|v| v == want),
            "{key}={want} missing from conf/anygate.service"
        );
    }
    // The user it runs as is created by the sysusers snippet shipped beside it.
    assert!(read("conf/anygate.sysusers")
        .lines()
        .any(|l| l.starts_with("u anygate ")));
}

#[test]
fn the_unit_and_every_sample_config_agree_on_the_pid_file_and_upgrade_socket() {
    let unit = read("conf/anygate.service");
    let pid = unit_values(&unit, "PIDFile");
    assert_eq!(pid, ["/run/anygate/anygate.pid"]);
    let runtime = format!("/run/{}/", unit_values(&unit, "RuntimeDirectory")[0]);
    for name in ["conf/anygate.yaml", "conf/edge.yaml", "conf/on-server.yaml"] {
        let file = anygate::config::load_str(Path::new(name), &read(name)).unwrap();
        let server = &file.server.value;
        assert_eq!(server.pid_file.as_deref(), Some(pid[0].as_str()), "{name}");
        let sock = server.upgrade_sock.as_deref().unwrap_or_default();
        assert!(sock.starts_with(&runtime), "{name}: upgrade_sock {sock}");
    }
    // The unit checks with --strict (the secrets are set there) before it starts or upgrades.
    let checks = unit_values(&unit, "ExecStartPre")
        .into_iter()
        .chain(unit_values(&unit, "ExecReload"))
        .filter(|c| c.contains(" check "))
        .count();
    assert_eq!(checks, 2);
    assert!(!unit
        .lines()
        .any(|l| l.contains(" check ") && !l.contains("--strict")));
}

const MANIFESTS: &[&str] = &[
    "configmap.yaml",
    "secret.yaml",
    "deployment.yaml",
    "service.yaml",
    "pdb.yaml",
];

#[test]
fn the_kubernetes_manifests_validate_offline() {
    let dir = repo().join("deploy/kubernetes");
    let files: Vec<String> = MANIFESTS
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    // The oldest version the manifests need (the kubelet's preStop `sleep`, on by default
    // since 1.30) and the newest the validator knows.
    for version in ["1.30.0", "1.35.0"] {
        let mut args = vec!["--strict", "-k", version];
        args.extend(files.iter().map(String::as_str));
        let out = tool("kubernetes-validate", "PyPI kubernetes-validate", &args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{version}:\n{text}");
        assert_eq!(text.matches(" passed ").count(), MANIFESTS.len(), "{text}");
    }
    // kustomization.yaml lists every manifest.
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    for f in MANIFESTS {
        assert!(kustomization.contains(&format!("- {f}")), "{f}");
    }
}

fn configmap_config() -> String {
    let root = yaml::parse(&read("deploy/kubernetes/configmap.yaml")).unwrap();
    let data = get(&root, "data").and_then(|d| get(d, "anygate.yaml"));
    let text = data
        .and_then(|n| n.as_scalar())
        .map(|s| s.as_str().to_string());
    text.expect("configmap.yaml has data.anygate.yaml")
}

fn int_at(node: &marked_yaml::Node, path: &[&str]) -> u64 {
    let mut n = node;
    for key in path {
        n = match key.parse::<usize>() {
            Ok(i) => &items(n).unwrap_or_else(|| panic!("{key}: not a list"))[i],
            Err(_) => get(n, key).unwrap_or_else(|| panic!("no `{key}` in {path:?}")),
        };
    }
    let text = n.as_scalar().map(|s| s.as_str()).unwrap_or_default();
    text.parse()
        .unwrap_or_else(|_| panic!("{path:?}: `{text}`"))
}

#[test]
fn the_configmap_config_passes_check_and_the_grace_period_covers_its_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anygate.yaml");
    std::fs::write(&path, configmap_config()).unwrap();
    let file = anygate::config::load_file(&path).unwrap();

    // As CI would check it: without the Secret and off the cluster. `unshare -n` gives the
    // check a network of its own, so the cluster names fail to resolve without any query
    // leaving this machine.
    let unset: Vec<&str> = file.env_vars.iter().map(|(v, _)| v.as_str()).collect();
    let args = [
        "-n".as_ref(),
        env!("CARGO_BIN_EXE_anygate").as_ref(),
        "check".as_ref(),
        "-c".as_ref(),
        path.as_os_str(),
    ];
    let (code, out, err) = run_in("unshare", &args, &unset);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok, 6 warnings"), "{out}{err}");
    assert_eq!(
        err.matches(": warning: cannot resolve `").count(),
        2,
        "{err}"
    );
    for var in [
        "WX_SECRET_OWNER",
        "ANYGATE_TOKEN_KEYS",
        "LHINS_API01_SECRET",
        // The admin listener is off loopback in the pod (SPEC §12).
        "ANYGATE_ADMIN_TOKEN",
    ] {
        assert!(
            err.contains(&format!("warning: environment variable `{var}`")),
            "{err}"
        );
        let secret = read("deploy/kubernetes/secret.yaml");
        assert!(
            secret.contains(&format!("  {var}: ")),
            "secret.yaml lacks {var}"
        );
    }

    // Kubernetes waits terminationGracePeriodSeconds from the start of preStop; anygate needs
    // preStop + grace_period + graceful_shutdown_timeout of it.
    let deployment = yaml::parse(&read("deploy/kubernetes/deployment.yaml")).unwrap();
    let pod = ["spec", "template", "spec"];
    let grace = int_at(
        &deployment,
        &[&pod[..], &["terminationGracePeriodSeconds"]].concat(),
    );
    let pre_stop = int_at(
        &deployment,
        &[
            &pod[..],
            &[
                "containers",
                "0",
                "lifecycle",
                "preStop",
                "sleep",
                "seconds",
            ],
        ]
        .concat(),
    );
    let server = &file.server.value;
    let secs =
        |d: Option<anygate::config::units::Dur>, default: u64| d.map_or(default, |d| d.0.as_secs());
    let shutdown = secs(server.grace_period, 10) + secs(server.graceful_shutdown_timeout, 5);
    assert!(
        grace >= pre_stop + shutdown,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + {shutdown}"
    );
    // The probes are on the admin listener's port, where /healthz and /readyz are.
    let admin = file.listen.value.admin.as_deref().unwrap_or_default();
    let deployment_text = read("deploy/kubernetes/deployment.yaml");
    let port = admin.rsplit(':').next().unwrap();
    assert!(deployment_text.contains(&format!("containerPort: {port}")));
    for probe in ["path: /healthz", "path: /readyz"] {
        assert!(deployment_text.contains(probe), "{probe}");
    }
}

/// Runs `program args` with the variables in `unset` removed; (exit code, stdout, stderr).
fn run_in(program: &str, args: &[&std::ffi::OsStr], unset: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(program);
    for v in unset {
        cmd.env_remove(v);
    }
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): util-linux's unshare is needed"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
