//! `regioncl train` on real photos and on shards made by `regioncl convert`: metrics, exact resume
//! across processes, config errors naming the key, and the exported backbone loading into
//! torchvision's ResNet-50. (`regioncl bench train` gets its CLI test once `regioncl bench` is
//! registered in tools/src/main.rs.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::cli::{TempDir, run, run_ok, workspace};

fn tiny() -> PathBuf {
    workspace().join("configs/tiny_cpu.toml")
}

/// Steps' (step, loss, loss_inst, loss_region) from a run's metrics.jsonl.
fn losses(run_dir: &Path) -> Vec<(u64, f64, f64, f64)> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            for key in [
                "step",
                "epoch",
                "loss",
                "loss_inst",
                "loss_region",
                "lr",
                "img_per_s",
                "data_wait",
            ] {
                assert!(v.get(key).is_some(), "metrics line without `{key}`: {l}");
            }
            let f = |k: &str| v[k].as_f64().expect("a number");
            (v["step"].as_u64().expect("step"), f("loss"), f("loss_inst"), f("loss_region"))
        })
        .collect()
}

/// `regioncl train` of the tiny config at width 8 into `out`, with `--set`s and `flags`.
fn train_cmd(out: &Path, sets: &[&str], flags: &[&str]) -> Command {
    let mut cmd = Command::new(crate::cli::regioncl());
    cmd.arg("train").arg("--config").arg(tiny()).arg("--out").arg(out);
    for s in ["model.width=8", "run.log_every=1"].iter().chain(sets) {
        cmd.args(["--set", s]);
    }
    cmd.args(flags);
    cmd
}

fn train(out: &Path, sets: &[&str], resume: bool) -> String {
    let flags: &[&str] = if resume { &["--resume"] } else { &[] };
    let out = train_cmd(out, sets, flags).output().expect("run regioncl train");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "regioncl train failed:\n{stderr}");
    stderr
}

/// N steps, then a new process resuming for N more: the same losses as 2N in one process.
fn check_resume(sets: &[&str]) {
    let (a, b) = (TempDir::new("train-a"), TempDir::new("train-b"));
    let with = |n: &str| -> Vec<String> {
        sets.iter()
            .map(|s| s.to_string())
            .chain([format!("run.max_steps={n}"), "run.checkpoint_every=3".into()])
            .collect()
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let stderr = train(a.path(), &refs(&with("6")), false);
    assert!(stderr.contains("epoch 0 step 6/6 loss"), "{stderr}");
    train(b.path(), &refs(&with("3")), false);
    let stderr = train(b.path(), &refs(&with("6")), true);
    assert!(stderr.contains("resumed from"), "{stderr}");
    let (la, lb) = (losses(a.path()), losses(b.path()));
    assert_eq!(la.len(), 6);
    assert_eq!(la, lb, "resumed run differs from the uninterrupted one");
    assert!(b.path().join("checkpoints/step-00000006/model.safetensors").is_file());
    assert!(b.path().join("backbone.safetensors").is_file());
}

#[test]
fn train_photos_resume_is_exact_across_processes() {
    check_resume(&[]);
}

/// The same in bf16 with channels_last on the CPU, for every method (one process per run, the
/// tiny recipe's one libtorch thread: the same thread count, the same bits).
#[test]
fn bf16_channels_last_resume_is_exact_across_processes_for_every_method() {
    for method in ["regionclm", "mocov2", "regioncld", "densecl", "regioncls", "simsiam"] {
        let method = format!("method={method}");
        check_resume(&[&method, "run.precision=bf16", "run.channels_last=true"]);
    }
}

/// A run killed with SIGKILL once it has written a checkpoint, started again with `--resume`:
/// it continues from that checkpoint and ends with the losses of an uninterrupted run.
#[test]
fn sigkill_then_resume_continues_from_the_last_checkpoint() {
    let dir = TempDir::new("train-kill");
    let (full, killed) = (dir.path().join("full"), dir.path().join("killed"));
    let sets = ["run.max_steps=40", "run.checkpoint_every=2"];
    train(&full, &sets, false);

    let mut child = train_cmd(&killed, &sets, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn regioncl train");
    let checkpoints = killed.join("checkpoints");
    let has_checkpoint = || {
        std::fs::read_dir(&checkpoints)
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().join("state.json").is_file())))
    };
    let start = std::time::Instant::now();
    while !has_checkpoint() {
        assert!(child.try_wait().expect("wait").is_none(), "the run ended before it was killed");
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "no checkpoint in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(!killed.join("backbone.safetensors").exists(), "killed after the end of the run");

    let stderr = train(&killed, &sets, true);
    assert!(stderr.contains("resumed from"), "{stderr}");
    assert_eq!(
        losses(&killed),
        losses(&full),
        "the resumed run differs from the uninterrupted one"
    );
}

/// Every file under `dir` but the lock file (relative path, bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        if name == regioncl_loader::LOCK_FILE {
            continue;
        }
        if path.is_dir() {
            files.extend(tree(&path).into_iter().map(|(n, b)| (format!("{name}/{n}"), b)));
        } else {
            files.push((name, std::fs::read(&path).expect("read file")));
        }
    }
    files.sort();
    files
}

/// Issue 12 #2: `train --out EXISTING_RUN` without `--resume` is refused (exit 2, naming what
/// to do) and leaves the run as it was; `--overwrite` replaces it.
#[test]
fn train_into_an_existing_run_is_refused_without_resume_or_overwrite() {
    let dir = TempDir::new("train-existing");
    let out = dir.path().join("run");
    train(&out, &["run.max_steps=4", "run.checkpoint_every=2"], false);
    let before = tree(&out);
    let refused = train_cmd(&out, &["run.max_steps=2"], &[]).output().expect("run");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not empty") && stderr.contains("--resume"), "{stderr}");
    assert!(tree(&out) == before, "a refused run changed the run directory");
    let replaced =
        train_cmd(&out, &["run.max_steps=2", "run.checkpoint_every=2"], &["--overwrite"])
            .output()
            .expect("run");
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    assert_eq!(losses(&out).len(), 2, "the old run's metrics are gone");
    let checkpoints = std::fs::read_dir(out.join("checkpoints")).expect("checkpoints").count();
    assert_eq!(checkpoints, 1, "only the new run's step-2 checkpoint");
}

/// Issue 12 #3: a second training into a run directory in use fails at once, naming the first
/// (pid and host); the first runs on.
#[test]
fn second_training_into_a_run_dir_in_use_fails_naming_the_holder() {
    let dir = TempDir::new("train-locked");
    let out = dir.path().join("run");
    let mut first = train_cmd(&out, &["run.max_steps=100000", "run.checkpoint_every=0"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn regioncl train");
    // The lock file names its holder: `regioncl train, pid N on HOST`.
    let holder = format!("regioncl train, pid {} on ", first.id());
    let lock = out.join(regioncl_loader::LOCK_FILE);
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with(&holder)) {
        assert!(first.try_wait().expect("wait").is_none(), "the first run ended");
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "no lock in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for flags in [&[][..], &["--resume"]] {
        let second = train_cmd(&out, &["run.max_steps=2"], flags).output().expect("run");
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(&holder) && stderr.contains("in use"), "{flags:?}: {stderr}");
    }
    assert!(first.try_wait().expect("wait").is_none(), "the first run was disturbed");
    first.kill().expect("kill");
    first.wait().expect("reap");
}

/// Issue 12 #7: a training whose stderr reader has gone (`regioncl train ... 2>&1 | head -1`)
/// trains on to the end instead of panicking on its progress lines.
#[test]
fn train_with_a_closed_stderr_completes() {
    let dir = TempDir::new("train-stderr");
    let out = dir.path().join("run");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let status = train_cmd(&out, &["run.max_steps=3"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .expect("run");
    assert!(status.success(), "{status}");
    assert_eq!(losses(&out).len(), 3);
    assert!(out.join("backbone.safetensors").is_file());
}

/// A shard dataset of the ImageNet-like photos, converted once.
pub(crate) fn shards() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = crate::cli::data_dir().join("imagenet-like");
        let exe = std::env::current_exe().expect("test executable");
        let out =
            exe.parent().and_then(Path::parent).expect("target/<profile>").join("e2e-train-shards");
        let _ = std::fs::remove_dir_all(&out);
        run_ok(&[&"convert", &src, &out, &"--threads", &"2", &"--quiet"]);
        out
    })
}

#[test]
fn train_shards_through_the_loader_resumes_exactly() {
    let root = format!("data.root={}", shards().display());
    check_resume(&["data.source=shards", &root, "data.loader_threads=2"]);
}

/// Shards damaged after conversion (one byte flipped in every 10th record): training runs on,
/// replaces each damaged record it meets (its checksum fails), names it on stderr and counts it in
/// metrics.jsonl.
#[test]
fn corrupt_records_are_replaced_and_counted() {
    let dir = TempDir::new("train-corrupt");
    let data = dir.path().join("ds");
    crate::inspect::copy_dir(shards(), &data);
    let mut flips: Vec<(PathBuf, u64)> = Vec::new();
    {
        let ds = regioncl_loader::Dataset::open(&data).expect("open");
        for global in (0..ds.len()).step_by(10) {
            let (shard, local) = ds.locate(global).expect("locate");
            let s = &ds.shards()[shard];
            let len = s.record(local).expect("record").bytes.len() as u64;
            flips.push((s.path().to_path_buf(), s.record_offset(local).expect("offset") + len / 2));
        }
    }
    for (path, offset) in &flips {
        let mut bytes = std::fs::read(path).expect("read shard");
        bytes[*offset as usize] ^= 0x10;
        std::fs::write(path, bytes).expect("write shard");
    }
    let out = dir.path().join("run");
    let root = format!("data.root={}", data.display());
    let stderr = train(
        &out,
        &["data.source=shards", &root, "data.loader_threads=2", "run.max_steps=4"],
        false,
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("replaced by record")).collect();
    assert!(!warnings.is_empty(), "128 samples from 10% damaged records, none replaced:\n{stderr}");
    assert!(warnings.iter().all(|w| w.contains("crc32c")), "{stderr}");
    let last = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value =
        serde_json::from_str(last.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["replaced"].as_u64(), Some(warnings.len() as u64), "{last}");
    assert_eq!(losses(&out).len(), 4);
}

/// Issue 12 #18b (the demo fell 4x beside one busy process): every logged step records libtorch's
/// intra-op threads; a fixed `run.threads` is kept, and `run.threads = 0` (adapting to the cores
/// other processes leave) stays between one thread and one per core. (How many it picks depends on
/// the machine's load, so only the bounds are checked; `threads::tests` checks the rule.)
#[test]
fn threads_are_recorded_fixed_ones_kept_and_adaptive_ones_bounded() {
    // libtorch's default is one thread per CPU it may use: at most every CPU the kernel counts.
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cores = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    let cores = (cores as u64).max(1);
    for (threads, allowed) in [("1", 1..=1), ("0", 1..=cores)] {
        let dir = TempDir::new("train-threads");
        let out = dir.path().join("run");
        train(&out, &[&format!("run.threads={threads}"), "run.max_steps=3"], false);
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
        let counts: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["threads"].as_u64().expect("threads recorded")
            })
            .collect();
        assert_eq!(counts.len(), 3);
        assert!(counts.iter().all(|c| allowed.contains(c)), "run.threads={threads}: {counts:?}");
    }
}

#[test]
fn config_errors_name_the_key() {
    let dir = TempDir::new("train-err");
    for (set, want) in [
        ("optim.lr=0.1", "`optim.lr`: unknown key"),
        ("optim.batch_size=big", "`optim.batch_size`: expected integer"),
        ("model.arch=resnet34", "`model.arch`"),
        ("region.c_upper=4", "`region.c_upper`"),
    ] {
        let out = run(&[&"train", &"--config", &tiny(), &"--out", &dir.path(), &"--set", &set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {stderr}");
        assert!(stderr.contains(want), "{set}: {stderr}");
    }
}

fn python() -> PathBuf {
    std::env::var_os("REGIONCL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"))
}

/// docs/method.md 11.3 #15: the exported ResNet-50 backbone loads into torchvision's `resnet50()`
/// with only `fc.weight` and `fc.bias` missing, every shape matching.
#[test]
fn exported_backbone_loads_into_torchvision_resnet50() {
    let dir = TempDir::new("backbone");
    let config = regioncl_trainer::Config::from_toml(
        "[moco]\nqueue_size = 1024\nbn_splits = 1\n[optim]\nbatch_size = 8\n",
        &[],
    )
    .expect("config");
    let model = regioncl_trainer::MomentumContrast::new(&config, regioncl_trainer::Runtime::cpu())
        .expect("model");
    let file = dir.path().join("backbone.safetensors");
    regioncl_trainer::export_backbone(&model, &file).expect("export");
    let script = r#"
import json, struct, sys, torch, torchvision
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
kinds = {"F32": torch.float32, "I64": torch.int64}
sd = {}
for name, info in header.items():
    if name == "__metadata__":
        continue
    a, b = info["data_offsets"]
    t = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=kinds[info["dtype"]])
    sd[name] = t.reshape(info["shape"])
res = torchvision.models.resnet50().load_state_dict(sd, strict=False)
print(json.dumps({"missing": sorted(res.missing_keys), "unexpected": sorted(res.unexpected_keys)}))
"#;
    let out = Command::new(python()).arg("-c").arg(script).arg(&file).output().expect("run python");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(v["missing"], serde_json::json!(["fc.bias", "fc.weight"]), "{stdout}");
    assert_eq!(v["unexpected"], serde_json::json!([]), "{stdout}");
}
