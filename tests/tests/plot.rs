//! `regioncl plot` on a real run's metrics: every loss term of a DenseCL run, a last line cut off
//! by a kill, an empty file.

use std::io::Write;

use crate::cli::{TempDir, run, run_ok, workspace};

/// Issue 12 #14: a torn last line (the normal state after a kill) made `plot` refuse the whole
/// file, and an empty metrics.jsonl gave blank PNGs with exit 0. The torn line is skipped with a
/// warning; no records is an error; a bad line elsewhere names its line.
#[test]
fn plot_skips_a_torn_last_line_and_refuses_an_empty_file() {
    let dir = TempDir::new("plot-torn");
    let out = dir.path().join("run");
    let config = workspace().join("configs/tiny_cpu.toml");
    let sets = ["method=densecl", "run.max_steps=3", "run.log_every=1"];
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"train", &"--config", &config, &"--out", &out];
    for s in &sets {
        args.extend([&"--set" as &dyn AsRef<std::ffi::OsStr>, s]);
    }
    run_ok(&args);
    let metrics = out.join("metrics.jsonl");
    let whole = std::fs::read_to_string(&metrics).unwrap();
    assert!(whole.contains("\"loss_dense\""), "{whole}");

    let mut f = std::fs::OpenOptions::new().append(true).open(&metrics).unwrap();
    f.write_all(br#"{"step":3,"epoch":0,"total_st"#).unwrap();
    drop(f);
    let res = run(&[&"plot", &out]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains("line 4 is cut off"), "{stderr}");
    assert!(out.join("plots/loss.png").is_file());

    std::fs::write(&metrics, format!("{{oops\n{whole}")).unwrap();
    let res = run(&[&"plot", &out]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("metrics.jsonl: line 1"), "{stderr}");

    std::fs::write(&metrics, "").unwrap();
    let res = run(&[&"plot", &out]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no step records"), "{stderr}");
}
