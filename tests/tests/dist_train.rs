//! `regioncl train` as a multi-process run on the CPU (Gloo, 2 processes on this machine): launched
//! with the launcher variables the way `torchrun` sets them, and by the venv's real `torchrun`.
//! Only rank 0 writes; the losses equal one process's on the whole batch; a resumed 2-process run
//! continues exactly; a rank that dies fails the others instead of hanging them. The ranks' data
//! shares are checked on the sources themselves.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use regioncl_trainer::{BatchSource, DataSource};
use regioncl_trainer::{Config, LoaderSource, RankShare, SyntheticSource};

use crate::cli::{TempDir, regioncl, run_ok, workspace};
use crate::dist::{clean_command, describe, rank_env, wait_all};

/// How long a whole world may take.
const DEADLINE: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// `regioncl train` arguments: the tiny CPU recipe at width 8, one thread, a log line per step,
/// then `sets`.
pub(crate) fn train_args(out: &Path, sets: &[&str], resume: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "train".into(),
        "--config".into(),
        workspace().join("configs/tiny_cpu.toml").into(),
        "--out".into(),
        out.into(),
    ];
    let base = ["model.width=8", "run.log_every=1", "run.threads=1", "run.dist_timeout_s=60"];
    for s in base.iter().chain(sets) {
        args.push("--set".into());
        args.push((*s).into());
    }
    if resume {
        args.push("--resume".into());
    }
    args
}

/// Starts rank `rank` of a world of 2 meeting at `port`, writing into `out`.
fn start_rank(rank: usize, port: u16, out: &Path, sets: &[&str], resume: bool) -> Child {
    clean_command(regioncl())
        .args(train_args(out, sets, resume))
        .envs(rank_env(rank, 2, port))
        .spawn()
        .expect("spawn a rank")
}

/// A 2-process run: rank 0 writes into `out`, rank 1 is given `out1` (which must stay absent).
pub(crate) fn train_world(out: &Path, out1: &Path, sets: &[&str], resume: bool) -> Vec<Output> {
    let port = free_port();
    let children =
        vec![start_rank(0, port, out, sets, resume), start_rank(1, port, out1, sets, resume)];
    let outs = wait_all(children, DEADLINE);
    assert!(
        outs.iter().all(|o| o.status.success()),
        "2-process train failed:\n{}",
        describe(&outs)
    );
    outs
}

/// (step, loss, loss_inst, loss_region) of every line of a run's metrics.jsonl.
pub(crate) fn losses(run_dir: &Path) -> Vec<(u64, f64, f64, f64)> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let f = |k: &str| v[k].as_f64().expect("a number");
            (v["step"].as_u64().expect("step"), f("loss"), f("loss_inst"), f("loss_region"))
        })
        .collect()
}

fn checkpoints(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Two ranks of `regioncl train` (Gloo): rank 0 alone prints progress and writes metrics,
/// checkpoints and the backbone; rank 1 writes nothing. With one BN group per rank
/// (`moco.bn_splits = 2` over the global batch of 32), the cross-rank shuffle-BN, the gathered
/// queue keys and the averaged gradients give the losses of one process on the whole batch.
#[test]
fn two_ranks_train_like_one_process_and_only_rank_0_writes() {
    let (dir, one) = (TempDir::new("dist-train"), TempDir::new("dist-train-one"));
    let (out, out1) = (dir.path().join("run"), dir.path().join("rank1"));
    let sets = ["run.max_steps=4", "run.checkpoint_every=2"];
    let outs = train_world(&out, &out1, &sets, false);

    let (e0, e1) = (
        String::from_utf8_lossy(&outs[0].stderr).into_owned(),
        String::from_utf8_lossy(&outs[1].stderr).into_owned(),
    );
    assert!(e0.contains("rank 0/2") && e0.contains("step 4/4"), "{e0}");
    assert!(e1.contains("rank 1/2") && !e1.contains("step 1/4"), "rank 1 printed progress:\n{e1}");
    assert!(!out1.exists(), "rank 1 wrote into its --out");
    assert_eq!(checkpoints(&out), ["step-00000002", "step-00000004"]);
    for f in ["metrics.jsonl", "config.toml", "backbone.safetensors"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let two = losses(&out);
    assert_eq!(two.iter().map(|l| l.0).collect::<Vec<_>>(), [0, 1, 2, 3]);

    let args = train_args(&one.path().join("run"), &sets, false);
    run_ok(&args.iter().map(|a| a as &dyn AsRef<OsStr>).collect::<Vec<_>>());
    let single = losses(&one.path().join("run"));
    for (a, b) in single.iter().zip(&two) {
        for (x, y) in [(a.1, b.1), (a.2, b.2), (a.3, b.3)] {
            assert!((x - y).abs() < 1e-3 * x.abs().max(1.0), "step {}: {a:?} vs {b:?}", a.0);
        }
    }
}

/// The other methods on two ranks: DenseCL's dense queue gets every rank's pooled keys, SimSiam
/// normalises with SyncBN over both ranks' samples, so their first losses are one process's on
/// the whole batch. RegionCL-S pairs inside each rank's batch (one process pairs across the whole
/// batch), so only its run is checked.
#[test]
fn other_methods_train_on_two_ranks() {
    let dir = TempDir::new("dist-methods");
    for method in ["mocov2", "regioncld", "simsiam", "regioncls"] {
        let m = format!("method={method}");
        let sets = [m.as_str(), "run.max_steps=2", "run.checkpoint_every=0"];
        let (out, one) = (dir.path().join(method), dir.path().join(format!("{method}-one")));
        train_world(&out, &dir.path().join("rank1"), &sets, false);
        let two = losses(&out);
        assert_eq!(two.len(), 2, "{method}");
        assert!(two.iter().all(|l| l.1.is_finite()), "{method}: {two:?}");
        if method == "regioncls" {
            continue;
        }
        let args = train_args(&one, &sets, false);
        run_ok(&args.iter().map(|a| a as &dyn AsRef<OsStr>).collect::<Vec<_>>());
        let (a, b) = (losses(&one)[0], two[0]);
        for (x, y) in [(a.1, b.1), (a.2, b.2), (a.3, b.3)] {
            assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "{method}: {a:?} vs {b:?}");
        }
    }
    assert!(!dir.path().join("rank1").exists(), "rank 1 wrote into its --out");
}

/// MoBY and RegionCL+MoBY (the nano ViT, AdamW, stochastic depth) on two ranks: the heads' BN is
/// synchronised, both queues get every rank's keys, the gradients are averaged before clipping,
/// and the drop-path masks are keyed by each sample's place in the global batch, so MoBY's first
/// losses are one process's. RegionCL+MoBY pairs inside each rank's batch: only its run is checked.
#[test]
fn moby_trains_on_two_ranks() {
    let dir = TempDir::new("dist-moby");
    for method in ["moby", "regionclmoby"] {
        let m = format!("method={method}");
        let sets = [
            m.as_str(),
            "model.arch=vit_nano",
            "model.drop_path=0.1",
            "moco.shuffle_keys=false",
            "optim.optimizer=adamw",
            "optim.base_lr=0.002",
            "optim.clip_grad=5",
            "augment.asymmetric=true",
            "run.max_steps=2",
            "run.checkpoint_every=0",
        ];
        let (out, one) = (dir.path().join(method), dir.path().join(format!("{method}-one")));
        train_world(&out, &dir.path().join("rank1"), &sets, false);
        let two = losses(&out);
        assert_eq!(two.len(), 2, "{method}");
        assert!(two.iter().all(|l| l.1.is_finite()), "{method}: {two:?}");
        if method == "regionclmoby" {
            continue;
        }
        let args = train_args(&one, &sets, false);
        run_ok(&args.iter().map(|a| a as &dyn AsRef<OsStr>).collect::<Vec<_>>());
        let (a, b) = (losses(&one)[0], two[0]);
        assert!((a.1 - b.1).abs() < 1e-4 * a.1.abs().max(1.0), "{method}: {a:?} vs {b:?}");
    }
    assert!(!dir.path().join("rank1").exists(), "rank 1 wrote into its --out");
}

/// N steps, then a resumed 2-process run for N more: the same losses as 2N steps at once (rank 0
/// reads the checkpoint and broadcasts model, queue and optimiser state).
#[test]
fn two_rank_resume_is_exact() {
    let dir = TempDir::new("dist-resume");
    let (full, split, none) =
        (dir.path().join("full"), dir.path().join("split"), dir.path().join("none"));
    let (six, three) = (
        ["run.max_steps=6", "run.checkpoint_every=3"],
        ["run.max_steps=3", "run.checkpoint_every=3"],
    );
    train_world(&full, &none, &six, false);
    train_world(&split, &none, &three, false);
    let outs = train_world(&split, &none, &six, true);
    let e0 = String::from_utf8_lossy(&outs[0].stderr);
    assert!(e0.contains("resumed from") && e0.contains("step-00000003"), "{e0}");
    assert!(!none.exists(), "rank 1 wrote into its --out");
    let (a, b) = (losses(&full), losses(&split));
    assert_eq!(a.len(), 6);
    assert_eq!(b.iter().map(|l| l.0).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "step {}: uninterrupted {x:?}, resumed {y:?}", x.0);
    }
}

/// A rank killed in the middle of the run: the other one fails with a distributed error (exit
/// code non-zero) within seconds, not at the timeout and not never.
#[test]
fn a_dead_rank_fails_the_other() {
    let dir = TempDir::new("dist-die");
    let (out, out1) = (dir.path().join("run"), dir.path().join("rank1"));
    let sets = ["run.max_steps=400", "run.checkpoint_every=0"];
    let port = free_port();
    let rank0 = start_rank(0, port, &out, &sets, false);
    let mut rank1 = start_rank(1, port, &out1, &sets, false);
    let start = Instant::now();
    let metrics = out.join("metrics.jsonl");
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 2 {
        assert!(start.elapsed() < DEADLINE, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    rank1.kill().expect("kill rank 1");
    let killed = Instant::now();
    let outs = wait_all(vec![rank0, rank1], Duration::from_secs(90));
    let e0 = String::from_utf8_lossy(&outs[0].stderr);
    assert!(!outs[0].status.success(), "rank 0 went on without rank 1:\n{e0}");
    assert!(e0.contains("distributed: rank 0 of 2"), "{e0}");
    assert!(!e0.contains("step 400/400"), "{e0}");
    let waited = killed.elapsed();
    assert!(waited < Duration::from_secs(50), "rank 0 took {waited:?} to fail:\n{e0}");
}

/// The venv's `torchrun` (elastic agent, agent store) launches `regioncl train` unchanged: two
/// processes, and a group of one with a named backend (issue 14: the group of one looked for the
/// agent's store on the default port and hung until the collective timeout).
#[test]
fn torchrun_launches_regioncl_train() {
    let torchrun = workspace().join(".venv/bin/torchrun");
    if !torchrun.is_file() {
        eprintln!("skipped: {} is missing (run `make` to create the venv)", torchrun.display());
        return;
    }
    let dir = TempDir::new("dist-torchrun");
    for (nproc, backend) in [(2, "auto"), (1, "gloo")] {
        let out = dir.path().join(format!("run-{nproc}"));
        let backend = format!("run.dist_backend={backend}");
        let sets = ["run.max_steps=3", "run.checkpoint_every=0", &backend];
        let mut cmd = clean_command(&torchrun);
        cmd.args(["--no-python", "--nproc-per-node", &nproc.to_string(), "--master-port"])
            .arg(free_port().to_string())
            .arg(regioncl())
            .args(train_args(&out, &sets, false));
        let outs = wait_all(vec![cmd.spawn().expect("spawn torchrun")], DEADLINE);
        assert!(outs[0].status.success(), "torchrun failed:\n{}", describe(&outs));
        let err = String::from_utf8_lossy(&outs[0].stderr);
        for rank in 0..nproc {
            assert!(err.contains(&format!("rank {rank}/{nproc}")), "{err}");
        }
        assert_eq!(losses(&out).len(), 3);
        assert_eq!(checkpoints(&out), ["step-00000003"]);
    }
}

/// Two "nodes" of one process each, meeting through torchrun's c10d rendezvous (`--nnodes 2
/// --rdzv-backend c10d --rdzv-endpoint HOST:PORT`), as on a cluster without SLURM; rank 0 may land
/// on either node.
#[test]
fn torchrun_two_nodes_meet_through_c10d_rendezvous() {
    let torchrun = workspace().join(".venv/bin/torchrun");
    if !torchrun.is_file() {
        eprintln!("skipped: {} is missing (run `make` to create the venv)", torchrun.display());
        return;
    }
    let dir = TempDir::new("dist-nodes");
    let endpoint = format!("127.0.0.1:{}", free_port());
    let outs: Vec<_> = (0..2).map(|n| dir.path().join(format!("node{n}"))).collect();
    let children = outs
        .iter()
        .map(|out| {
            let mut cmd = clean_command(&torchrun);
            cmd.args(["--no-python", "--nnodes", "2", "--nproc-per-node", "1"])
                .args(["--rdzv-backend", "c10d", "--rdzv-id", "e2e", "--rdzv-endpoint", &endpoint])
                .arg(regioncl())
                .args(train_args(out, &["run.max_steps=2", "run.checkpoint_every=0"], false));
            cmd.spawn().expect("spawn torchrun")
        })
        .collect();
    let procs = wait_all(children, DEADLINE);
    assert!(procs.iter().all(|o| o.status.success()), "torchrun failed:\n{}", describe(&procs));
    let written: Vec<&std::path::PathBuf> = outs.iter().filter(|o| o.exists()).collect();
    assert_eq!(written.len(), 1, "exactly one node holds rank 0: {written:?}");
    assert_eq!(losses(written[0]).len(), 2);
}

/// `srun`'s variables alone (no `RANK`): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the
/// store on the first host of `SLURM_JOB_NODELIST` at `MASTER_PORT`.
#[test]
fn srun_environment_launches_regioncl_train() {
    let dir = TempDir::new("dist-srun");
    let out = dir.path().join("run");
    let port = free_port().to_string();
    let children = (0..2)
        .map(|rank: usize| {
            let out = if rank == 0 { out.clone() } else { dir.path().join("rank1") };
            clean_command(regioncl())
                .args(train_args(&out, &["run.max_steps=2", "run.checkpoint_every=0"], false))
                .env("SLURM_PROCID", rank.to_string())
                .env("SLURM_NTASKS", "2")
                .env("SLURM_LOCALID", rank.to_string())
                .env("SLURM_JOB_NODELIST", "localhost")
                .env("MASTER_PORT", &port)
                .spawn()
                .expect("spawn a task")
        })
        .collect();
    let outs = wait_all(children, DEADLINE);
    assert!(
        outs.iter().all(|o| o.status.success()),
        "srun-like launch failed:\n{}",
        describe(&outs)
    );
    let e1 = String::from_utf8_lossy(&outs[1].stderr);
    assert!(e1.contains("rank 1/2 (slurm)"), "{e1}");
    assert_eq!(losses(&out).len(), 2);
}

fn tiny(sets: &[&str]) -> Config {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::load(&workspace().join("configs/tiny_cpu.toml"), &sets).expect("tiny config")
}

/// Each rank's samples per step are its contiguous slice of the one-process batch, so the ranks
/// are disjoint and together read the epoch a single process reads (photos); on shards, every
/// rank reads its own block of the epoch's order (the loader's `Order`), disjoint, together the
/// whole epoch but for at most `world - 1` dropped records. The world must divide the batch.
#[test]
fn rank_shares_are_disjoint_and_cover_the_epoch() {
    let config = tiny(&[]);
    let b = config.optim.batch_size as usize;
    let mut whole = LoaderSource::new(&config).expect("photos");
    let mut ranks: Vec<LoaderSource> = (0..2)
        .map(|rank| LoaderSource::for_rank(&config, RankShare { rank, world: 2 }).expect("rank"))
        .collect();
    let spe = whole.steps_per_epoch();
    assert!(ranks.iter().all(|r| r.steps_per_epoch() == spe));
    let mut seen = HashSet::new();
    for step in 0..spe {
        let (r0, r1) = (ranks[0].records(step), ranks[1].records(step));
        assert_eq!((r0.len(), r1.len()), (b / 2, b / 2));
        assert_eq!([r0, r1].concat(), whole.records(step), "step {step}");
        for r in whole.records(step) {
            assert!(seen.insert(r), "record {r} twice in epoch 0");
        }
    }
    assert_eq!(seen.len() as u64, spe * b as u64);
    assert_eq!(ranks[1].records(spe), whole.records(spe)[b / 2..], "epoch 1");

    // Shards: a 2-rank split of every epoch.
    let data = TempDir::new("dist-shards");
    let shards = data.path().join("shards");
    let src = crate::cli::data_dir().join("imagenet-like");
    run_ok(&[&"convert", &src, &shards, &"--threads", &"2", &"--quiet"]);
    let root = format!("data.root={}", shards.display());
    let config = tiny(&["data.source=shards", &root]);
    assert_eq!(config.data.source, DataSource::Shards);
    let mut per_rank: Vec<LoaderSource> = (0..2)
        .map(|rank| LoaderSource::for_rank(&config, RankShare { rank, world: 2 }).expect("rank"))
        .collect();
    let n = 2000u64;
    let spe = per_rank[0].steps_per_epoch();
    assert_eq!(spe, (n / 2) / (b as u64 / 2));
    for epoch in 0..2 {
        let mut sets: Vec<HashSet<u64>> = vec![HashSet::new(), HashSet::new()];
        for (r, source) in per_rank.iter_mut().enumerate() {
            for step in epoch * spe..(epoch + 1) * spe {
                let records = source.records(step);
                assert_eq!(records.len(), b / 2);
                sets[r].extend(records);
            }
        }
        assert!(sets[0].is_disjoint(&sets[1]), "epoch {epoch}: ranks overlap");
        let covered = sets[0].len() + sets[1].len();
        assert_eq!(covered as u64, spe * b as u64, "epoch {epoch}");
        assert!(covered as u64 > n - b as u64, "epoch {epoch}: {covered} of {n} records");
    }

    // Synthetic pixels: rank r's views are rows [r b/2, (r+1) b/2) of one process's.
    let config = tiny(&["data.source=synthetic"]);
    let mut whole = SyntheticSource::new(&config);
    let mut r1 = SyntheticSource::for_rank(&config, RankShare { rank: 1, world: 2 }).expect("r1");
    let (a, c) = (whole.next_batch().expect("batch"), r1.next_batch().expect("batch"));
    let half = b as i64 / 2;
    assert!(a.views[0].narrow(0, half, half).equal(&c.views[0]));
    assert_eq!(a.params[1][b / 2..], c.params[1][..]);
    assert_eq!(a.swap, c.swap, "one swap box per step on every rank");

    // A world that does not divide the batch names the key.
    let err = LoaderSource::for_rank(&tiny(&[]), RankShare { rank: 0, world: 3 }).unwrap_err();
    assert!(err.to_string().contains("optim.batch_size"), "{err}");
}
