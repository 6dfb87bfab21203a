//! The repository stands alone: its docs and comments cite the protocol
//! reference inside the crate (`fcm_xmpp::protocol`, src/protocol.rs), never a
//! protocol document outside the repository, and every link to a section of
//! that reference names a section that exists. `cargo doc` checks that
//! `crate::protocol` resolves but not the `#section` after it; this does.

use std::fs;
use std::path::{Path, PathBuf};

/// Texts that point outside the repository. Built with `concat!` so that this
/// file does not match itself.
const OUTSIDE: [&str; 3] = [
    concat!("PROTOCOL", ".md"),
    concat!("../", "shared/"),
    concat!("/work", "/shared"),
];

/// What precedes a section anchor in a link to the reference, as in
/// `[keepalive](crate::protocol#keepalive)`.
const SECTION_LINK: &str = concat!("::protocol", "#");

/// What the crate's docs and comments consist of: sources, examples, tests,
/// the fuzz crate, CI and the top-level documents.
const SCANNED: [&str; 8] = [
    "src",
    "examples",
    "tests",
    "fuzz",
    ".ci",
    "README.md",
    "CHANGELOG.md",
    "Cargo.toml",
];

/// Build output and fuzzer output, not ours to read.
const SKIPPED_DIRS: [&str; 5] = ["target", ".git", "corpus", "artifacts", "coverage"];

/// Every file under `path` (or `path` itself), in a stable order.
fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for entry in entries {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if entry.is_dir() && SKIPPED_DIRS.contains(&name.as_str()) {
            continue;
        }
        files(&entry, out);
    }
}

/// `path:line: text` for every line under `root`'s scanned paths that
/// contains one of `needles`.
fn find_lines(root: &Path, needles: &[&str]) -> Vec<String> {
    let mut all = Vec::new();
    for p in SCANNED {
        files(&root.join(p), &mut all);
    }
    let mut hits = Vec::new();
    for file in all {
        let bytes = fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                let shown = file.strip_prefix(root).unwrap_or(&file).display();
                hits.push(format!("{shown}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    hits
}

/// The anchor rustdoc gives a heading: lower case, spaces as dashes.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
        .map(|c| {
            if c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The anchors of the top-level sections of a module's `//!` docs.
fn section_anchors(module_source: &str) -> Vec<String> {
    module_source
        .lines()
        .filter_map(|l| l.strip_prefix("//! # "))
        .map(slug)
        .collect()
}

/// Every section anchor linked from the files under `root`, with
/// where it was found.
fn linked_anchors(root: &Path) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for p in SCANNED {
        files(&root.join(p), &mut all);
    }
    let mut found = Vec::new();
    for file in all
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find(SECTION_LINK) {
                rest = &rest[at + SECTION_LINK.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .unwrap_or(rest.len());
                let shown = file.strip_prefix(root).unwrap_or(file).display();
                found.push((rest[..end].to_string(), format!("{shown}:{}", n + 1)));
            }
        }
    }
    found
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn nothing_cites_a_document_outside_the_repository() {
    let hits = find_lines(&repo(), &OUTSIDE);
    assert!(
        hits.is_empty(),
        "cite `fcm_xmpp::protocol` (src/protocol.rs) instead:\n{}",
        hits.join("\n")
    );
}

#[test]
fn every_protocol_section_link_names_a_section() {
    let root = repo();
    let sections = section_anchors(&fs::read_to_string(root.join("src/protocol.rs")).unwrap());
    let mut unique = sections.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        sections.len(),
        "two sections share an anchor: {sections:?}"
    );

    let links = linked_anchors(&root);
    // The crate links its reference from every layer; far fewer links means
    // the scan itself broke.
    assert!(
        links.len() >= 20,
        "only {} section links found",
        links.len()
    );
    let broken: Vec<String> = links
        .iter()
        .filter(|(anchor, _)| !sections.contains(anchor))
        .map(|(anchor, at)| format!("{at}: #{anchor}"))
        .collect();
    assert!(
        broken.is_empty(),
        "no such section in src/protocol.rs:\n{}",
        broken.join("\n")
    );
}

/// The checks above can fail: planted in a scratch copy of the layout, an
/// outside citation and a link to a missing section are both found.
#[test]
fn the_checks_find_what_they_look_for() {
    let dir = std::env::temp_dir().join(format!("fcm-xmpp-docs-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("src/nested")).unwrap();
    fs::create_dir_all(dir.join("target")).unwrap();
    let cite = format!("// see {} section 3\n", OUTSIDE[0]);
    fs::write(dir.join("src/nested/a.rs"), format!("fn f() {{}}\n{cite}")).unwrap();
    fs::write(
        dir.join("README.md"),
        format!("see {}PROTOCOL\n", OUTSIDE[1]),
    )
    .unwrap();
    fs::write(dir.join("target/skipped.rs"), &cite).unwrap();
    let links =
        format!("/// [x](crate{SECTION_LINK}keepalive), [y](crate{SECTION_LINK}no-such-part).\n");
    fs::write(dir.join("src/b.rs"), links).unwrap();

    let hits = find_lines(&dir, &OUTSIDE);
    let anchors = linked_anchors(&dir);
    fs::remove_dir_all(&dir).unwrap();

    assert_eq!(
        hits,
        [
            format!("src/nested/a.rs:2: {}", cite.trim()),
            format!("README.md:1: see {}PROTOCOL", OUTSIDE[1]),
        ]
    );
    let names: Vec<&str> = anchors.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["keepalive", "no-such-part"]);
    assert_eq!(anchors[1].1, "src/b.rs:1");
    assert_eq!(slug("Stanza and stream errors"), "stanza-and-stream-errors");
    assert_eq!(
        section_anchors("//! # Flow control\n//! ## Sub\n/// # Not\n"),
        ["flow-control"]
    );
}
