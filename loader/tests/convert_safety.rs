//! The converter against hostile input and concurrent use (issue 12): it touches nothing that is
//! not its own, never blocks on or reads what is not a regular file, bounds what it allocates,
//! and refuses input that gives no dataset.

use std::ops::ControlFlow;

use regioncl_loader::{
    ConvertConfig, Error, MAX_CLASSES, MAX_THREADS, Progress, SKIPPED_FILE, Source, convert,
};

use crate::common::{TempDir, dir_bytes};
use crate::convert::{cancel_at, config, run, tree};

/// Issue 12 #13: an empty input tree converted to a 0-record dataset with exit 0.
#[test]
fn empty_input_tree_is_an_error() {
    let dir = TempDir::new("convert-empty");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("only")).unwrap();
    std::fs::write(src.join("only/notes.txt"), b"no image").unwrap();
    let out = dir.path().join("out");
    let err = run(&src, &out, &config(1)).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert_eq!(
        message,
        format!(
            "{}: no image file to convert (1 class(es); 1 hidden, non-image or top-level file(s) \
             ignored)",
            src.display()
        )
    );
    assert!(!out.exists(), "a failed conversion leaves no empty output directory");

    // Files that are all bad: an error too, with the reasons kept.
    std::fs::write(src.join("only/bad.jpg"), b"not a jpeg").unwrap();
    let message = run(&src, &out, &config(1)).unwrap_err().to_string();
    assert!(
        message.contains("no image could be converted: all 1 file(s) were skipped"),
        "{message}"
    );
    let report = std::fs::read_to_string(out.join(SKIPPED_FILE)).unwrap();
    assert!(report.contains("only/bad.jpg\tnot an image"), "{report}");
    assert!(!out.join("manifest.json").exists());
}

/// Issue 12 #4: `convert` deleted every `*.tmp` file of the output directory, even when the
/// output directory was the input tree.
#[test]
fn convert_deletes_only_its_own_temporary_files() {
    let dir = TempDir::new("convert-tmp");
    let src = dir.path().join("src");
    tree(&src);
    std::fs::write(src.join("draft.tmp"), b"a user's file").unwrap();
    let err = run(&src, &src, &config(1)).unwrap_err();
    assert!(err.to_string().contains("is or holds the input directory"), "{err}");
    assert_eq!(std::fs::read(src.join("draft.tmp")).unwrap(), b"a user's file");

    // An output directory holding only someone's *.tmp files is not ours: refused, kept.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("download.jpg.tmp"), b"half a download").unwrap();
    let err = run(&src, &out, &config(1)).unwrap_err();
    assert!(err.to_string().contains("download.jpg.tmp among others"), "{err}");
    assert_eq!(std::fs::read(out.join("download.jpg.tmp")).unwrap(), b"half a download");
    std::fs::remove_file(out.join("download.jpg.tmp")).unwrap();

    // Resuming removes the run's own temporary files, and only those.
    let _ = cancel_at(&src, &out, 9, 2);
    std::fs::write(out.join(".regioncl-tmp-shard-00004.rcl"), b"partial").unwrap();
    std::fs::write(out.join("notes.tmp"), b"keep").unwrap();
    std::fs::write(out.join(".regioncl-tmp-holiday.jpg"), b"not a name convert writes").unwrap();
    run(&src, &out, &config(2)).unwrap();
    assert!(!out.join(".regioncl-tmp-shard-00004.rcl").exists());
    assert_eq!(std::fs::read(out.join("notes.tmp")).unwrap(), b"keep");
    assert!(out.join(".regioncl-tmp-holiday.jpg").exists());
}

/// Issue 12 #12: two conversions into one output directory both ran, and one or both failed
/// with "rename shard: No such file or directory".
#[test]
fn a_second_conversion_into_a_locked_output_fails_at_once_naming_the_first() {
    let dir = TempDir::new("convert-lock");
    let src = dir.path().join("src");
    tree(&src);
    let reference = dir.path().join("reference");
    run(&src, &reference, &config(1)).unwrap();
    let out = dir.path().join("out");
    let mut second = None;
    let source = Source::ImageFolder(src.clone());
    convert(&source, &out, &config(2), &mut |p: &Progress| {
        if p.done == 5 {
            second = Some(run(&src, &out, &config(1)));
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    let err = second.expect("ran").unwrap_err();
    let holder = format!("regioncl convert, pid {} on ", std::process::id());
    assert!(matches!(&err, Error::Locked { holder: h, .. } if h.starts_with(&holder)), "{err:?}");
    assert!(err.to_string().contains("the directory is in use by regioncl convert"), "{err}");
    // The first one finished undisturbed, and its lock is gone.
    assert_eq!(dir_bytes(&out), dir_bytes(&reference));
}

/// Issue 12 #8: a 2-line list with label 4294967295 aborted, allocating 32 GiB; `--threads
/// 100000` aborted.
#[test]
fn huge_labels_and_thread_counts_are_refused_before_allocating() {
    let dir = TempDir::new("convert-bounds");
    let root = dir.path().join("root");
    tree(&root);
    let list = dir.path().join("train.txt");
    std::fs::write(&list, "cat/a.jpg\t0\ncat/b.JPEG\t4294967295\n").unwrap();
    let source = Source::List { list: list.clone(), root: root.clone() };
    let out = dir.path().join("out");
    let err = convert(&source, &out, &config(1), &mut |_| ControlFlow::Continue(())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: label 4294967295 exceeds the limit of {} (class count): \"cat/b.JPEG\\t4294967295\"",
            list.display(),
            MAX_CLASSES - 1
        )
    );
    let err = run(&root, &out, &ConvertConfig { threads: 100_000, ..config(1) }).unwrap_err();
    assert_eq!(err.to_string(), format!("threads 100000 exceeds the limit of {MAX_THREADS}"));
    assert!(!out.exists());
}

/// Issue 12 #9: a FIFO named `*.jpg` hung `convert`; a `*.jpg` symlink to /dev/zero read 1 GiB
/// before it was skipped.
#[cfg(unix)]
#[test]
fn fifos_and_devices_are_skipped_unread() {
    let dir = TempDir::new("convert-fifo");
    let src = dir.path().join("src");
    tree(&src);
    crate::shard::mkfifo(&src.join("cat/pipe.jpg"));
    std::os::unix::fs::symlink("/dev/zero", src.join("cat/zero.jpg")).unwrap();
    let out = dir.path().join("out");
    let summary = run(&src, &out, &config(2)).unwrap();
    assert_eq!(summary.num_records, 8);
    let reasons: Vec<_> =
        summary.skipped.iter().map(|s| (s.path.as_str(), s.reason.as_str())).collect();
    assert!(reasons.contains(&("cat/pipe.jpg", "cannot read: a FIFO, not a file")), "{reasons:?}");
    let zero = ("cat/zero.jpg", "cannot read: a character device, not a file");
    assert!(reasons.contains(&zero), "{reasons:?}");
}
