//! The repository stands on its own: every link in the manual resolves to a file (and heading)
//! in it, the manual and `conf/` name no file outside it, every error code has a
//! troubleshooting entry, and the declared Rust version is one the locked dependencies build
//! with.

use anygate_plugins::ErrorCode;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .unwrap()
}

/// README.md and every docs/*.md, as paths relative to the repository.
fn manual() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            pages.push(Path::new("docs").join(p.file_name().unwrap()));
        }
    }
    pages.sort();
    assert!(pages.len() > 10, "{pages:?}");
    pages
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()))
}

/// The text outside fenced code blocks and inline code spans (links there are examples).
fn prose(md: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans: a run of backticks up to the same run.
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            out.push_str(&rest[..start]);
            let ticks = rest[start..].bytes().take_while(|b| *b == b'`').count();
            let fence = &rest[start..start + ticks];
            let after = &rest[start + ticks..];
            rest = match after.find(fence) {
                Some(end) => &after[end + ticks..],
                None => after,
            };
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

/// Targets of inline links and images: `[text](target)`.
fn links(md: &str) -> Vec<String> {
    let text = prose(md);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.to_string());
        rest = &after[end..];
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (repeated ones get `-1`, `-2`...).
fn anchors(md: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

/// `dir/../x` without touching the file system; `None` when it climbs out of the repository.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            Component::Normal(s) => out.push(s),
            _ => return None,
        }
    }
    Some(out)
}

#[test]
fn every_link_in_the_manual_resolves_inside_the_repository() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in manual() {
        let text = read(&page);
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            assert!(
                !target.starts_with("mailto:"),
                "{}: {target}",
                page.display()
            );
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                Some(page.clone())
            } else {
                normalize(&page.parent().unwrap().join(file))
            };
            let Some(resolved) = resolved.filter(|r| repo().join(r).exists()) else {
                broken.push(format!(
                    "{}: {target}: no such file in the repository",
                    page.display()
                ));
                continue;
            };
            if let Some(anchor) = anchor {
                let heads = anchors(&read(&resolved));
                if !heads.contains(anchor) {
                    broken.push(format!(
                        "{}: {target}: no heading `#{anchor}` in {}",
                        page.display(),
                        resolved.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
}

#[test]
fn the_link_checker_finds_broken_links() {
    let md =
        "[a](x.md) `[b](in-code.md)`\n```\n[c](fenced.md)\n```\n[d](#two-words) [e](https://x/y)\n";
    assert_eq!(links(md), ["x.md", "#two-words", "https://x/y"]);
    assert!(anchors("## Two words\n# `anygate token`\n## Two words\n").contains("two-words-1"));
    assert!(anchors("# `anygate token`\n").contains("anygate-token"));
    assert!(anchors("## 6. Client address\n").contains("6-client-address"));
    assert_eq!(
        normalize(Path::new("docs/../conf/a")),
        Some("conf/a".into())
    );
    assert_eq!(normalize(Path::new("../x")), None);
}

/// Path-like words that name a file of this repository: `conf/edge.yaml`, `docs/spec.md`,
/// `tests/deploy.rs`, or any `NAME.md`.
fn named_files(text: &str) -> Vec<String> {
    const TOP: &[&str] = &[
        "docs/", "conf/", "tests/", "gateway/", "plugins/", "bench/", "deploy/", ".ci/", "clients/",
    ];
    let mut out = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "()[]<>\"'`,;|".contains(c)) {
        let word = word.trim_end_matches(['.', ':']);
        if word.contains("://") {
            continue;
        }
        let word = word.strip_prefix("../").unwrap_or(word);
        let word = word.split(['#', ':']).next().unwrap_or(word);
        if word.contains('*') || word.contains('@') || word.starts_with('/') {
            continue;
        }
        let in_repo = TOP.iter().any(|t| word.starts_with(t));
        if in_repo || (word.ends_with(".md") && !word.contains("://")) {
            out.push(word.to_string());
        }
    }
    out
}

#[test]
fn the_manual_and_conf_name_no_file_outside_the_repository() {
    let mut files: Vec<PathBuf> = manual();
    for entry in std::fs::read_dir(repo().join("conf")).unwrap() {
        files.push(Path::new("conf").join(entry.unwrap().file_name()));
    }
    let mut names: HashSet<String> = HashSet::new();
    let mut bad = Vec::new();
    for f in &files {
        let text = read(f);
        // The contract's copy is docs/spec.md; nothing refers to the lead's shared folder.
        for outside in [
            "/work/",
            "shared/",
            "SPEC.md",
            "STYLE.md",
            "REAL-SERVERS.md",
        ] {
            if text.contains(outside) {
                bad.push(format!("{}: mentions `{outside}`", f.display()));
            }
        }
        for name in named_files(&text) {
            names.insert(name.clone());
            let here = f.parent().unwrap().join(&name);
            let exists = repo().join(&name).exists()
                || normalize(&here).is_some_and(|p| repo().join(p).exists())
                || (name.ends_with(".md") && !name.contains('/') && repo_has_md(&name));
            if !exists {
                bad.push(format!(
                    "{}: names `{name}`, which is not in the repository",
                    f.display()
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for expected in ["docs/spec.md", "conf/anygate.service", "deploy/kubernetes/"] {
        assert!(
            names.contains(expected),
            "{expected} not found among {names:?}"
        );
    }
}

fn repo_has_md(name: &str) -> bool {
    ["", "docs/", "bench/"]
        .iter()
        .any(|d| repo().join(format!("{d}{name}")).exists())
}

#[test]
fn every_error_code_has_a_troubleshooting_entry() {
    // Every variant of the enum is in ErrorCode::ALL (counted in the source).
    let src = read(Path::new("plugins/src/error.rs"));
    let body = src
        .split("pub enum ErrorCode {")
        .nth(1)
        .and_then(|b| b.split('}').next())
        .unwrap();
    let variants = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count();
    assert_eq!(
        variants,
        ErrorCode::ALL.len(),
        "ErrorCode::ALL misses a variant"
    );

    let guide = read(Path::new("docs/troubleshooting.md"));
    let heads = anchors(&guide);
    for code in ErrorCode::ALL {
        let name = code.as_str();
        let heading = format!("### `{name}`\n");
        let at = guide
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/troubleshooting.md has no `{heading}`"));
        let entry = guide[at + heading.len()..]
            .split("\n#")
            .next()
            .unwrap_or("");
        assert!(
            entry.contains(&code.status().as_u16().to_string()),
            "{name}: the entry does not give its status"
        );
        assert!(entry.contains("Fix"), "{name}: the entry says no fix");
        assert!(heads.contains(&name.to_lowercase()), "{name}");
    }
}

/// `1.95` → (1, 95, 0).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn the_declared_rust_version_builds_every_locked_dependency() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(repo())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let declared = packages
        .iter()
        .find(|p| p["name"] == "anygate")
        .and_then(|p| p["rust_version"].as_str())
        .expect("Cargo.toml's rust-version");
    let (need, who) = packages
        .iter()
        .filter(|p| p["source"].is_string())
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((version(v), format!("{} {} ({v})", p["name"], p["version"])))
        })
        .max()
        .unwrap();
    assert!(
        version(declared) >= need,
        "rust-version {declared} is below what {who} needs: raise it in Cargo.toml (and README.md)"
    );
    // The README states the same minimum.
    let readme = read(Path::new("README.md"));
    let (major, minor, _) = version(declared);
    assert!(
        readme.contains(&format!("Rust {major}.{minor} or newer")),
        "README.md should say `Rust {major}.{minor} or newer`"
    );
}
