//! `regioncl convert` against hostile input and concurrent use (issue 12): a locked output, empty
//! input, absurd flags, names that carry terminal escape sequences.

use regioncl_loader::{DirLock, MAX_THREADS};

use crate::cli::{TempDir, fixtures, run, run_ok};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 12 #12: two conversions into one output both ran; now the second fails at once,
/// naming the first.
#[test]
fn a_conversion_into_a_locked_output_fails_at_once_naming_the_holder() {
    let dir = TempDir::new("locked");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    std::fs::copy(fixtures().join("one_by_one.jpg"), src.join("a/x.jpg")).expect("copy");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let lock = DirLock::acquire(&out, "convert").expect("lock");
    let result = run(&[&"convert", &src, &out, &"--quiet"]);
    assert_eq!(result.status.code(), Some(2));
    let holder = format!("in use by regioncl convert, pid {} on ", std::process::id());
    assert!(stderr(&result).contains(&holder), "{}", stderr(&result));
    drop(lock);
    let stdout = run_ok(&[&"convert", &src, &out, &"--quiet"]);
    assert!(stdout.contains("records   1 in 1 shard(s)"), "{stdout}");
}

/// Issue 12 #13: an empty input tree converted to a 0-record dataset with exit 0.
#[test]
fn an_empty_input_tree_is_an_error() {
    let dir = TempDir::new("empty");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    let out = dir.path().join("out");
    let result = run(&[&"convert", &src, &out]);
    assert_eq!(result.status.code(), Some(2));
    let message = format!("{}: no image file to convert (1 class(es);", src.display());
    assert!(stderr(&result).contains(&message), "{}", stderr(&result));
    assert!(!out.exists());
}

/// Issue 12 #8: `--threads 100000` aborted.
#[test]
fn a_thread_count_over_the_limit_is_refused() {
    let dir = TempDir::new("threads");
    let result = run(&[&"convert", &fixtures(), &dir.path().join("out"), &"--threads", &"100000"]);
    assert_eq!(result.status.code(), Some(2));
    let message = format!("threads 100000 exceeds the limit of {MAX_THREADS}");
    assert!(stderr(&result).contains(&message), "{}", stderr(&result));
}

/// Issue 12 #16: class and file names with terminal escape sequences were printed raw.
#[test]
fn names_with_escape_sequences_are_printed_escaped() {
    let dir = TempDir::new("escapes");
    let src = dir.path().join("src");
    let red = src.join("\u{1b}[31mred");
    std::fs::create_dir_all(&red).expect("mkdir");
    std::fs::create_dir_all(src.join("\u{1b}[2Jempty")).expect("mkdir");
    std::fs::copy(fixtures().join("one_by_one.jpg"), red.join("x.jpg")).expect("copy");
    std::fs::write(red.join("\u{1b}]0;pwned\u{7}.jpg"), b"not a jpeg").expect("write");
    let out = dir.path().join("out");
    let stdout = run_ok(&[&"convert", &src, &out, &"--quiet"]);
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    assert!(stdout.contains("\\u{1b}[31mred/\\u{1b}]0;pwned\\u{7}.jpg: not an image"), "{stdout}");
    assert!(stdout.contains("empty class directories: \\u{1b}[2Jempty"), "{stdout}");
    let stdout = run_ok(&[&"inspect", &out]);
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    assert!(stdout.contains("\\u{1b}[31mred"), "{stdout}");
    // Errors too: a path in the chain is escaped.
    let missing = dir.path().join("\u{1b}[5mgone");
    let result = run(&[&"inspect", &missing]);
    assert_eq!(result.status.code(), Some(2));
    assert!(!stderr(&result).contains('\u{1b}'), "{:?}", stderr(&result));
    assert!(stderr(&result).contains("\\u{1b}[5mgone"), "{}", stderr(&result));
}
