//! `regioncl inspect` on the converted tree: summary, JSON, verify (passing, and failing on a
//! bit-flipped copy), extract, a corrupt header; a closed pipe, a FIFO and a bad manifest.

use std::path::Path;
use std::process::Command;

use regioncl_loader::Dataset;

use crate::cli::{TempDir, dir_bytes, regioncl, run, run_ok};
use crate::convert::{NUM_GOOD, reference};

/// Copies a dataset directory (flat: manifest and shards).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
    }
}

#[test]
fn text_summary() {
    let stdout = run_ok(&[&"inspect", &reference()]);
    for needle in [
        &format!("records   {NUM_GOOD}\n"),
        "classes   6\n",
        "flower",
        "shard-00000.rcl",
        "width  min 1 /",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
}

#[test]
fn json_summary() {
    let stdout = run_ok(&[&"inspect", &reference(), &"--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["num_records"], NUM_GOOD);
    assert_eq!(v["num_classes"], 6);
    let counts: Vec<u64> = v["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts, [0, 11, 21, 31, 5, 4]);
    assert_eq!(v["width"]["min"], 1);
    assert!(v["record_bytes"]["max"].as_u64().expect("max") > 500_000);
    let shard_records: u64 = v["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["num_records"].as_u64().expect("n"))
        .sum();
    assert_eq!(shard_records, NUM_GOOD);
    assert!(v.get("verify").is_none());
}

#[test]
fn verify_passes_on_good_output() {
    let out = run(&[&"inspect", &reference(), &"--verify", &"--threads", &"2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("verify    ok: {NUM_GOOD} records")), "{stdout}");
}

#[test]
fn verify_fails_on_a_bit_flip_naming_the_record() {
    let dir = TempDir::new("flip");
    let copy = dir.path().join("ds");
    copy_dir(reference(), &copy);
    let (shard_path, local, offset) = {
        let ds = Dataset::open(&copy).expect("open");
        let global = ds.len() / 2;
        let (shard, local) = ds.locate(global).expect("locate");
        let s = &ds.shards()[shard];
        let offset = s.record_offset(local).expect("offset")
            + s.record(local).expect("r").bytes.len() as u64 / 2;
        (s.path().to_path_buf(), local, offset)
    };
    let mut bytes = std::fs::read(&shard_path).expect("read");
    bytes[offset as usize] ^= 0x04;
    std::fs::write(&shard_path, bytes).expect("write");

    let out = run(&[&"inspect", &copy, &"--verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    let name = shard_path.display().to_string();
    assert!(stdout.contains(&format!("{name}: record {local}: crc32c of the")), "{stdout}");
    assert!(stdout.contains(&format!("{name}: file crc32c is")), "{stdout}");
    assert!(stdout.contains("verify    2 problem(s)"), "{stdout}");
    assert!(stderr.contains("verify: 2 problem(s)"), "{stderr}");

    let json = run(&[&"inspect", &copy, &"--verify", &"--json"]);
    assert_eq!(json.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["verify"]["problems"].as_array().expect("problems").len(), 2);
}

#[test]
fn corrupt_header_is_an_error_naming_the_file() {
    let dir = TempDir::new("header");
    let copy = dir.path().join("ds");
    copy_dir(reference(), &copy);
    let shard = copy.join("shard-00001.rcl");
    let mut bytes = std::fs::read(&shard).expect("read");
    bytes[20] ^= 1;
    std::fs::write(&shard, bytes).expect("write");
    let out = run(&[&"inspect", &copy]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: header checksum mismatch at offset 60", shard.display())),
        "{stderr}"
    );

    std::fs::write(&shard, b"").expect("truncate");
    let out = run(&[&"inspect", &copy]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated: 0 bytes"));
}

#[test]
fn extract_writes_the_record_bytes() {
    let dir = TempDir::new("extract");
    let file = dir.path().join("r.jpg");
    run_ok(&[&"inspect", &reference(), &"--extract", &"3", &"--out", &file]);
    let ds = Dataset::open(reference()).expect("open");
    assert_eq!(std::fs::read(&file).expect("read"), ds.record(3).expect("record").bytes);
    let out = run(&[&"inspect", &reference(), &"--extract", &"100000", &"--out", &file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("record 100000 out of range"));
}

/// Issue 12 #7: `inspect ... | head -1` panicked on the closed pipe (exit 101), also with
/// `--json` and `--verify`. The pipe here is closed before the first line is written.
#[test]
fn a_closed_stdout_ends_inspect_quietly() {
    for flags in [&[][..], &["--json"], &["--verify", "--threads", "2"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(regioncl())
            .arg("inspect")
            .arg(reference())
            .args(flags)
            .stdout(writer)
            .output()
            .expect("run regioncl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {stderr}");
        assert_eq!(stderr, "", "{flags:?}");
    }
}

/// Issue 12 #5: `--extract I --out FILE` pointed at the dataset's own shard truncated it, and
/// pointed at manifest.json replaced it; through a symlink it wrote into whatever it named.
#[test]
fn extract_refuses_the_dataset_and_never_writes_through_out() {
    let dir = TempDir::new("extract-guard");
    let copy = dir.path().join("ds");
    copy_dir(reference(), &copy);
    let before = dir_bytes(&copy);
    for target in ["shard-00000.rcl", "manifest.json", "new.jpg"] {
        let out = run(&[&"inspect", &copy, &"--extract", &"3", &"--out", &copy.join(target)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {stderr}");
        assert!(stderr.contains("inside the dataset"), "{stderr}");
    }
    assert_eq!(dir_bytes(&copy), before);

    let link = dir.path().join("r.jpg");
    std::os::unix::fs::symlink(copy.join("shard-00001.rcl"), &link).expect("symlink");
    run_ok(&[&"inspect", &copy, &"--extract", &"3", &"--out", &link]);
    assert_eq!(dir_bytes(&copy), before, "the shard the link named is untouched");
    assert!(std::fs::symlink_metadata(&link).expect("stat").is_file(), "the link was replaced");
    let ds = Dataset::open(&copy).expect("open");
    assert_eq!(std::fs::read(&link).expect("read"), ds.record(3).expect("record").bytes);
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("e").file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
}

/// Issue 12 #9: a manifest naming a FIFO hung `inspect` (and training and evaluation, which open
/// datasets the same way).
#[test]
fn a_manifest_naming_a_fifo_is_an_error_not_a_hang() {
    let dir = TempDir::new("fifo");
    let copy = dir.path().join("ds");
    copy_dir(reference(), &copy);
    let shard = copy.join("shard-00001.rcl");
    std::fs::remove_file(&shard).expect("rm");
    let status = Command::new("mkfifo").arg(&shard).status().expect("mkfifo");
    assert!(status.success());
    let out = run(&[&"inspect", &copy]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = format!("{}: open shard: a FIFO, not a file", shard.display());
    assert!(stderr.contains(&message), "{stderr}");
}

/// Issue 12 #16: a bad manifest printed only "invalid manifest".
#[test]
fn a_bad_manifest_is_named_by_line_and_field() {
    let dir = TempDir::new("bad-manifest");
    let copy = dir.path().join("ds");
    copy_dir(reference(), &copy);
    let path = copy.join("manifest.json");
    let text = std::fs::read_to_string(&path).expect("read");
    let text = text.replacen("\"num_bytes\": ", "\"num_bytes\": -", 1);
    let line = 1 + text.lines().position(|l| l.contains("\"num_bytes\": -")).expect("edited");
    std::fs::write(&path, text).expect("write");
    let out = run(&[&"inspect", &copy]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let field =
        format!("{}: invalid manifest: in `num_bytes`: invalid value: integer `-", path.display());
    assert!(stderr.contains(&field), "{stderr}");
    assert!(stderr.contains(&format!(" at line {line} column ")), "{stderr}");
}
