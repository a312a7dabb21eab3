//! `regioncl compare` at toy size on real Fashion-MNIST: RegionCL-M against MoCo v2 over three
//! seeds (a few steps each, pretrained on the Fashion-MNIST train shards), the table with every
//! metric and its verdict; then, with one run's result and another's last checkpoint deleted (as
//! after a kill), a second invocation reuses the finished runs, redoes the rest and reports the
//! same numbers.

use std::path::Path;

use crate::cli::{TempDir, regioncl, workspace};
use crate::eval::fashion_mnist;

fn compare(out: &Path) -> (String, String) {
    let (_, train, test) = fashion_mnist();
    let root = format!("data.root={}", train.display());
    let output = std::process::Command::new(regioncl())
        .args(["compare", "--config"])
        .arg(workspace().join("configs/tiny_cpu.toml"))
        .args(["--set", "model.width=8", "--set", "data.source=shards", "--set", &root])
        .args(["--set", "data.loader_threads=2", "--set", "run.max_steps=4"])
        .args(["--pairs", "regionclm:mocov2", "--seeds", "0,1,2", "--fractions", "0.1"])
        .args(["--linear-epochs", "3", "--checkpoint-every", "2", "--threads", "2"])
        .args(["--crop", "32", "--resize", "32"])
        .arg("--train")
        .arg(train)
        .arg("--test")
        .arg(test)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run regioncl compare");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "compare failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn compare_reports_mean_std_and_resumes_at_toy_size() {
    let dir = TempDir::new("compare");
    let out = dir.path().join("cmp");
    let (table, progress) = compare(&out);
    assert!(progress.contains("[6/6] mocov2 seed 2"), "{progress}");
    assert!(table.contains("| metric (top-1 %) | RegionCL-M | MoCo v2 | difference |"), "{table}");
    for row in ["| k-NN k=20 |", "| k-NN k=200 |", "| linear |", "| linear 10% labels |"] {
        let line = table.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("{row}"));
        assert_eq!(line.matches(" ± ").count(), 3, "mean ± std twice, difference ± se: {line}");
        assert!(line.contains("| yes") || line.contains("| no"), "{line}");
    }
    let first = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let runs: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(runs.as_array().map(Vec::len), Some(6));
    assert!(runs.as_array().unwrap().iter().all(|r| r["steps"] == 4), "{first}");
    let png = std::fs::read(out.join("results.png")).expect("results.png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "{} bytes", png.len());

    // As after a kill: one run not evaluated, another killed after its step-2 checkpoint.
    std::fs::remove_file(out.join("mocov2-seed0/eval.json")).expect("remove eval.json");
    let killed = out.join("regionclm-seed2");
    std::fs::remove_file(killed.join("eval.json")).expect("remove eval.json");
    std::fs::remove_dir_all(killed.join("checkpoints/step-00000004")).expect("remove checkpoint");
    std::fs::remove_file(killed.join("backbone.safetensors")).expect("remove backbone");
    let (again, progress) = compare(&out);
    assert_eq!(progress.matches(": reused ").count(), 4, "{progress}");
    assert!(progress.contains("regionclm seed 2: resumed from"), "{progress}");
    assert_eq!(again, table, "the resumed comparison reports other numbers");
    assert_eq!(std::fs::read_to_string(out.join("results.json")).expect("results"), first);
}
