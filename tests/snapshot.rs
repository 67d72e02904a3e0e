//! `trainprov snapshot`: digests, manifest file, hash cache, single files and input errors.

mod util;

use util::{Workspace, INPUT, OK};

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn data(ws: &Workspace) {
    ws.write("data/train.jsonl", b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n");
    ws.write("data/shards/00.bin", util::pseudo_random(100_000, 1));
    ws.write("data/shards/01.bin", util::pseudo_random(3_000, 2));
    ws.write("data/empty", b"");
}

/// Runs `snapshot` with a registry inside the workspace and returns the JSON.
fn snap(ws: &Workspace, extra: &[&str], case: &str) -> serde_json::Value {
    let mut args = vec!["snapshot", "--registry", "reg", "--json"];
    args.extend_from_slice(extra);
    ws.run(&args).expect_code(OK, case).json()
}

#[test]
fn json_output_and_manifest_file_agree() {
    let ws = Workspace::new();
    data(&ws);
    let json = snap(
        &ws,
        &["data", "--manifest", "out/data.manifest"],
        "snapshot",
    );
    assert_eq!(json["status"], "ok");
    assert_eq!(json["root"], "data");
    assert_eq!(json["kind"], "directory");
    assert_eq!(json["files"], 4);
    assert_eq!(json["bytes"], 103_026);
    assert_eq!(json["hashed"], 4);
    assert_eq!(json["from_cache"], 0);
    assert!(json["seconds"].as_f64().is_some());
    assert_eq!(json["manifest"], "out/data.manifest");
    let manifest = ws.read("out/data.manifest");
    let text = String::from_utf8(manifest.clone()).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "trainprov-snapshot v1",
        "no symlinks: written as v1"
    );
    let paths: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.rsplit('\t').next().expect("path"))
        .collect();
    assert_eq!(
        paths,
        ["empty", "shards/00.bin", "shards/01.bin", "train.jsonl"]
    );
    assert_eq!(
        json["digest"]["blake3"],
        blake3_hex(&manifest),
        "digest is BLAKE3 of the manifest bytes"
    );
    assert_eq!(json["digest"]["sha256"], hex_sha256(&manifest));
    assert!(ws.hash_cache().is_file(), "cache created");
    assert_eq!(json["cache"], ws.hash_cache().display().to_string());
    assert!(
        !ws.path("reg/hash-cache.sqlite").exists(),
        "never in the registry"
    );
}

/// The hash cache is per user (DESIGN: "never inside a shared registry"): without
/// `TRAINPROV_HASH_CACHE` it is `$XDG_CACHE_HOME/trainprov/hash-cache.sqlite`, else
/// `~/.cache/trainprov/`, created private.
#[cfg(unix)]
#[test]
fn issue11_hash_cache_is_per_user_and_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let ws = Workspace::new();
    data(&ws);
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    for (var, base, expected) in [
        ("XDG_CACHE_HOME", "xdg", "xdg/trainprov/hash-cache.sqlite"),
        ("HOME", "home", "home/.cache/trainprov/hash-cache.sqlite"),
    ] {
        // Empty counts as unset.
        let base = ws.path(base).display().to_string();
        let run = ws
            .run_env(
                &["snapshot", "data", "--registry", "reg", "--json"],
                &[
                    ("TRAINPROV_HASH_CACHE", ""),
                    ("XDG_CACHE_HOME", ""),
                    (var, base.as_str()),
                ],
            )
            .expect_code(OK, var);
        let cache = ws.path(expected);
        assert_eq!(run.json()["cache"], cache.display().to_string(), "{var}");
        assert!(cache.is_file(), "{var}: {}", cache.display());
        assert_eq!(mode(cache.parent().expect("dir")), 0o700, "{var}");
        assert_eq!(mode(&cache), 0o600, "{var}");
        assert!(!ws.path("reg/hash-cache.sqlite").exists(), "{var}");
    }
}

/// BLAKE3 of `bytes` as trainprov hashes files: via a one-file snapshot's manifest line. (The
/// crate has no BLAKE3 of its own; `sha256` above is checked independently, and the recorder's
/// `known_answer` test pins BLAKE3 values reproduced with `b3sum`.)
fn blake3_hex(bytes: &[u8]) -> String {
    let ws = Workspace::new();
    ws.write("m", bytes);
    snap(&ws, &["m", "--manifest", "m.manifest"], "blake3 of bytes");
    let text = String::from_utf8(ws.read("m.manifest")).expect("utf8");
    let fields: Vec<&str> = text.lines().nth(1).expect("entry").split('\t').collect();
    fields[2].to_string()
}

#[test]
fn human_output_names_digest_and_counts() {
    let ws = Workspace::new();
    data(&ws);
    let run = ws
        .run(&["snapshot", "data", "--registry", "reg"])
        .expect_code(OK, "human");
    let json = snap(&ws, &["data"], "json");
    let digest = json["digest"]["blake3"].as_str().expect("digest");
    assert!(
        run.stdout.starts_with("snapshot of data: 4 files, "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("blake3 {digest}\n")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("sha256 "), "{}", run.stdout);
    assert!(run.stdout.contains("GB/s"), "{}", run.stdout);
    assert!(
        run.stderr.is_empty(),
        "no progress bar without a terminal: {}",
        run.stderr
    );
}

#[test]
fn unchanged_tree_comes_from_the_cache_and_changes_are_seen() {
    let ws = Workspace::new();
    data(&ws);
    let first = snap(&ws, &["data"], "first");
    // Files younger than the cache's 2 s racy window are never cached: let them age.
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let second = snap(&ws, &["data"], "second");
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(
        second["hashed"], 4,
        "young files were not cached the first time"
    );
    let third = snap(&ws, &["data"], "third");
    assert_eq!(third["digest"], first["digest"]);
    assert_eq!(third["from_cache"], 4);
    assert_eq!(third["hashed"], 0);

    let rehash = snap(&ws, &["data", "--rehash"], "rehash");
    assert_eq!(rehash["digest"], first["digest"]);
    assert_eq!(
        (rehash["hashed"].as_u64(), rehash["from_cache"].as_u64()),
        (Some(4), Some(0))
    );

    ws.write("data/shards/01.bin", util::pseudo_random(3_001, 2));
    let changed = snap(&ws, &["data"], "changed");
    assert_ne!(changed["digest"], first["digest"]);
    assert_eq!(changed["hashed"], 1);
    assert_eq!(changed["from_cache"], 3);
}

#[test]
fn corrupt_cache_warns_and_still_snapshots() {
    let ws = Workspace::new();
    data(&ws);
    let clean = snap(&ws, &["data"], "clean");
    ws.write("reg2/hash-cache.sqlite", vec![0x42u8; 10_000]);
    let run = ws
        .run_env(
            &["snapshot", "data", "--json"],
            &[("TRAINPROV_HASH_CACHE", "reg2/hash-cache.sqlite")],
        )
        .expect_code(OK, "corrupt cache");
    assert_eq!(run.json()["digest"], clean["digest"]);
    assert_eq!(
        run.stderr.matches("warning: hash cache unusable").count(),
        1,
        "one warning: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("reg2/hash-cache.sqlite"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_single_file_is_a_one_entry_snapshot() {
    let ws = Workspace::new();
    data(&ws);
    let json = snap(
        &ws,
        &["data/train.jsonl", "--manifest", "one.manifest"],
        "file",
    );
    assert_eq!(json["kind"], "file");
    assert_eq!(json["files"], 1);
    let text = String::from_utf8(ws.read("one.manifest")).expect("utf8");
    assert!(text.ends_with("\ttrain.jsonl\n"), "{text}");
    // The same as a directory holding just that file.
    ws.write("alone/train.jsonl", ws.read("data/train.jsonl"));
    assert_eq!(snap(&ws, &["alone"], "dir")["digest"], json["digest"]);
}

#[test]
fn digest_does_not_depend_on_location_or_cache() {
    let ws = Workspace::new();
    data(&ws);
    let here = snap(&ws, &["data"], "here");
    let other = Workspace::new();
    data(&other);
    let there = snap(&other, &["data/", "--rehash"], "there");
    assert_eq!(here["digest"], there["digest"]);
}

#[test]
fn input_errors_exit_2_and_name_the_path() {
    let ws = Workspace::new();
    data(&ws);
    let run = ws
        .run(&["snapshot", "missing", "--registry", "reg"])
        .expect_code(INPUT, "missing");
    assert!(
        run.stderr.contains("missing: no such file or directory"),
        "{}",
        run.stderr
    );
    let run = ws
        .run(&["snapshot", "missing", "--registry", "reg", "--json"])
        .expect_code(INPUT, "missing json");
    assert_eq!(run.json()["status"], "error");

    let run = ws
        .run(&[
            "snapshot",
            "data",
            "--registry",
            "reg",
            "--manifest",
            "data/train.jsonl/m",
        ])
        .expect_code(INPUT, "unwritable manifest");
    assert!(
        run.stderr
            .contains("data/train.jsonl/m: cannot write the manifest"),
        "{}",
        run.stderr
    );

    #[cfg(unix)]
    {
        let fifo = ws.path("data/pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let run = ws
            .run(&["snapshot", "data", "--registry", "reg"])
            .expect_code(INPUT, "fifo");
        assert!(
            run.stderr.contains("data/pipe: special file"),
            "{}",
            run.stderr
        );
    }
}

/// A symlink is recorded with the size and digest of the content it resolves to (here outside
/// the root, as on a shared mount), its link text beside them; a dangling one is an error
/// naming it.
#[cfg(unix)]
#[test]
fn issue11_symlinks_are_recorded_by_content() {
    let ws = Workspace::new();
    data(&ws);
    ws.write("elsewhere/secret", b"part of the data");
    std::os::unix::fs::symlink("../elsewhere/secret", ws.path("data/link")).expect("symlink");
    let json = snap(&ws, &["data", "--manifest", "m"], "with link");
    assert_eq!(json["bytes"], 103_026 + 16, "the target's bytes count");
    let text = String::from_utf8(ws.read("m")).expect("utf8");
    let line = text
        .lines()
        .find(|l| l.starts_with("l\t"))
        .expect("a link line");
    assert_eq!(
        line,
        format!(
            "l\t16\t{}\tlink\t../elsewhere/secret",
            blake3_hex(b"part of the data")
        )
    );
    assert_eq!(text.lines().count(), 6, "header, 4 files, 1 link: {text}");
    ws.write("elsewhere/secret", b"poisoned the data");
    let after = snap(&ws, &["data"], "target changed");
    assert_ne!(after["digest"], json["digest"], "a changed target is seen");

    std::os::unix::fs::symlink("../nowhere", ws.path("data/dangling")).expect("symlink");
    let run = ws.run(&["snapshot", "data"]).expect_code(INPUT, "dangling");
    assert!(
        run.stderr.contains("data/dangling: dangling symlink"),
        "{}",
        run.stderr
    );
}
