//! `scripts/demo.sh` (what `make demo` runs) end to end at a toy size on real Fashion-MNIST: every
//! stage runs, the table has its three rows, the plots are PNGs, the exports exist; and
//! `regioncl plot` on a run's real metrics.

use std::process::Command;

use crate::cli::{TempDir, regioncl, run_ok, workspace};
use crate::eval::{python, tiny_run};

fn is_png(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 1000 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn demo_script_runs_end_to_end_at_toy_size() {
    let dir = TempDir::new("demo");
    let out = Command::new(workspace().join("scripts/demo.sh"))
        .env("REGIONCL_BIN", regioncl())
        .env("REGIONCL_PYTHON", python())
        .env("DEMO_OUT", dir.path())
        .env("DEMO_PER_CLASS", "30")
        .env("DEMO_SUBSET", "200")
        .env(
            "DEMO_SETS",
            "model.width=8 model.proj_hidden=64 optim.batch_size=32 moco.queue_size=256 \
             moco.bn_splits=2 optim.epochs=2 run.log_every=2 data.loader_threads=2",
        )
        .output()
        .expect("run demo.sh");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "demo.sh failed:\n{stdout}\n{stderr}");
    for row in ["| learned (RegionCL-M) |", "| random init |", "| raw pixels |"] {
        assert!(stdout.contains(row), "no `{row}` row:\n{stdout}");
    }
    assert!(stdout.contains("300 train images"), "{stdout}");
    let p = dir.path();
    assert!(p.join("results.md").is_file());
    for f in ["loss", "lr", "throughput", "overview"] {
        assert!(is_png(&p.join(format!("run/plots/{f}.png"))), "{f}.png");
    }
    assert!(p.join("export/backbone_torchvision.pth").is_file());
    assert!(p.join("export/backbone_detectron2.pkl").is_file());
}

#[test]
fn plot_writes_pngs_of_a_real_run() {
    let dir = TempDir::new("plot");
    let run = tiny_run(dir.path());
    let out = dir.path().join("charts");
    let stdout = run_ok(&[&"plot", &run, &"--out", &out]);
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    for f in ["loss", "lr", "throughput", "data_wait", "overview"] {
        assert!(is_png(&out.join(format!("{f}.png"))), "{f}.png");
    }
    let err = crate::cli::run(&[&"plot", &dir.path().join("nothing")]);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("metrics.jsonl"));
}
