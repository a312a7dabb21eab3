//! Multi-process runs, launched the way `torchrun` does (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`, a free port each time): each scenario runs on Gloo with 2
//! processes on the CPU, on Gloo in a group of one (the group-of-one path a single GPU checks NCCL
//! with), and, when CUDA is available, on NCCL in a group of one on `cuda:0`.
//!
//! Each test spawns this test binary once per rank, running the ignored test [`worker`] with a
//! scenario name; a scenario checks its results inside each rank (against the one-process
//! computation on the whole batch, which every rank can do itself) and fails the rank on a
//! mismatch. The parent kills the ranks after a deadline, so a hang is a failure, not a stuck CI.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use regioncl_trainer::{
    BnParams, Dist, DistBackend, DistOptions, Optimizer, ParamStore, is_channels_last,
    sync_batch_norm, to_channels_last,
};
use tch::{Device, Kind, Tensor};

/// The scenario a child runs.
const SCENARIO: &str = "REGIONCL_DIST_SCENARIO";
/// `nccl`: the child joins on NCCL and CUDA (default: Gloo on the CPU).
const BACKEND: &str = "REGIONCL_DIST_BACKEND";
/// How long a whole world may take.
const DEADLINE: Duration = Duration::from_secs(180);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The launcher variables of rank `rank` in a world of `world` meeting at `port`.
pub fn rank_env(rank: usize, world: usize, port: u16) -> Vec<(String, String)> {
    [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A command with no launcher variables inherited from the test's own environment.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for k in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_USE_AGENT_STORE",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_STEP_NUM_TASKS",
    ] {
        cmd.env_remove(k);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Waits for every child until `deadline` from now; kills the ones still running then.
pub fn wait_all(children: Vec<Child>, deadline: Duration) -> Vec<Output> {
    let start = Instant::now();
    let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    loop {
        let running = children
            .iter_mut()
            .flatten()
            .any(|c| c.try_wait().map(|s| s.is_none()).unwrap_or(false));
        if !running || start.elapsed() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    children
        .iter_mut()
        .map(|c| {
            let mut c = c.take().expect("each child once");
            if c.try_wait().map(|s| s.is_none()).unwrap_or(false) {
                let _ = c.kill();
            }
            c.wait_with_output().expect("collect a child's output")
        })
        .collect()
}

/// Runs `scenario` on the ranks `ranks` of a world of `world` (a missing rank never shows up).
fn spawn(scenario: &str, ranks: &[usize], world: usize, extra: &[(&str, &str)]) -> Vec<Output> {
    let exe = std::env::current_exe().expect("test executable");
    let port = free_port();
    let children = ranks
        .iter()
        .map(|&r| {
            let mut cmd = clean_command(&exe);
            cmd.args(["dist::worker", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .envs(rank_env(r, world, port))
                .env(SCENARIO, scenario)
                .envs(extra.iter().copied());
            cmd.spawn().expect("spawn a rank")
        })
        .collect();
    wait_all(children, DEADLINE)
}

pub fn describe(outs: &[Output]) -> String {
    outs.iter()
        .enumerate()
        .map(|(i, o)| {
            format!(
                "--- process {i}: {}\nstdout:\n{}\nstderr:\n{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `scenario` on 2 Gloo ranks, on a Gloo group of one, and on a NCCL group of one on
/// `cuda:0` when CUDA is available.
fn run_world(scenario: &str) {
    let mut worlds = vec![(2, "gloo"), (1, "gloo")];
    if regioncl_trainer::cuda_available() {
        worlds.push((1, "nccl"));
    }
    for (world, backend) in worlds {
        let ranks: Vec<usize> = (0..world).collect();
        let outs = spawn(scenario, &ranks, world, &[(BACKEND, backend)]);
        assert!(
            outs.iter().all(|o| o.status.success()),
            "{scenario} on {world} {backend} rank(s):\n{}",
            describe(&outs)
        );
    }
}

/// The scenarios, run inside each rank.
#[test]
#[ignore = "one rank of a multi-process test; spawned by the other dist tests"]
fn worker() {
    let scenario = std::env::var(SCENARIO).expect("REGIONCL_DIST_SCENARIO");
    let timeout = std::env::var("REGIONCL_DIST_TIMEOUT_S").ok().and_then(|s| s.parse().ok());
    let nccl = std::env::var(BACKEND).is_ok_and(|b| b == "nccl");
    let opts = DistOptions {
        backend: if nccl { DistBackend::Nccl } else { DistBackend::Gloo },
        cuda: nccl,
        timeout: Duration::from_secs(timeout.unwrap_or(60)),
    };
    let start = Instant::now();
    let dist = Dist::from_env(&opts);
    if scenario == "absent" {
        let err = dist.expect_err("a rendezvous without its peer must fail").to_string();
        eprintln!("rendezvous error after {:.1}s: {err}", start.elapsed().as_secs_f64());
        assert!(err.contains("rendezvous at 127.0.0.1:"), "{err}");
        assert!(err.contains(" of 2"), "{err}");
        assert!(start.elapsed() < opts.timeout + Duration::from_secs(30), "took too long");
        return;
    }
    let dist = dist.expect("join the world");
    assert!(dist.is_distributed(), "a launched run with a named backend has a group");
    match scenario.as_str() {
        "collectives" => collectives(&dist),
        "grads" => grads_match_one_process(&dist),
        "shuffle" => shuffle_matches_one_process(&dist),
        "sync_bn" => sync_bn_matches_full_batch_bn(&dist),
        "on_main" => others_wait_for_rank_0_past_the_timeout(&dist),
        "die" => peer_dies(&dist),
        other => panic!("unknown scenario {other}"),
    }
    if scenario != "die" {
        dist.shutdown().expect("orderly shutdown");
    }
}

fn close(a: &Tensor, b: &Tensor, what: &str) {
    close_within(a, b, 1e-5, 1e-6, what);
}

fn close_within(a: &Tensor, b: &Tensor, rtol: f64, atol: f64, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: shapes");
    let (a, b) = (a.to_device(Device::Cpu), b.to_device(Device::Cpu));
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(a.allclose(&b, rtol, atol, false), "{what}: max |diff| {diff}\n{a}\n{b}");
}

fn collectives(dist: &Dist) {
    let (r, w, d) = (dist.rank() as f64, dist.world() as f64, dist.device());
    let full = |shape: &[i64], v: f64, kind: Kind| Tensor::full(shape, v, (kind, d));
    let t = full(&[2], 10.0, Kind::Float);
    let _ = t.narrow(0, 0, 1).fill_(r + 1.0);
    let before = dist.num_collectives().unwrap();
    dist.all_reduce_sum_(&t).unwrap();
    assert_eq!(dist.num_collectives().unwrap(), before + 1, "one all-reduce");
    close(&t, &Tensor::from_slice(&[(w * (w + 1.0) / 2.0) as f32, 10.0 * w as f32]), "all_reduce");

    // Not contiguous: reduced through a staged copy, written back.
    let base = Tensor::arange(6, (Kind::Float, d)).reshape([2, 3]);
    let nc = (&base * (r + 1.0)).transpose(0, 1);
    assert!(!nc.is_contiguous());
    dist.all_reduce_sum_(&nc).unwrap();
    close(&nc, &(&base * (w * (w + 1.0) / 2.0)).transpose(0, 1), "all_reduce of a transpose");

    // Mean over several tensors of two kinds (two buckets).
    let a = full(&[5], r, Kind::Float);
    let b = full(&[2, 2], 2.0 * r, Kind::Double);
    let c = full(&[3], -r, Kind::Float);
    dist.all_reduce_mean_(&[&a, &b, &c]).unwrap();
    let m = (w - 1.0) / 2.0;
    close(&a, &full(&[5], m, Kind::Float), "mean a");
    close(&b, &full(&[2, 2], 2.0 * m, Kind::Double), "mean b");
    close(&c, &full(&[3], -m, Kind::Float), "mean c");
    assert_eq!(dist.mean_f64(&[r, 1.0]).unwrap(), vec![m, 1.0]);

    // All-gather: rank order.
    let x = full(&[2, 3], r, Kind::Float);
    let g = dist.all_gather(&x).unwrap();
    assert_eq!(g.size(), [2 * w as i64, 3]);
    for q in 0..w as i64 {
        close(&g.narrow(0, 2 * q, 2), &full(&[2, 3], q as f64, Kind::Float), "gather");
    }

    // Broadcast from the last rank, two kinds.
    let last = w - 1.0;
    let p = full(&[4], r, Kind::Float);
    let q = Tensor::full([2], r as i64, (Kind::Int64, d));
    dist.broadcast_(&[&p, &q], dist.world() - 1).unwrap();
    close(&p, &full(&[4], last, Kind::Float), "broadcast f32");
    assert_eq!(Vec::<i64>::try_from(&q.to_device(Device::Cpu)).unwrap(), vec![last as i64; 2]);

    dist.barrier().unwrap();

    // Differentiable all-gather: rank r's loss is sum((r + 1) * y), so d(sum of losses)/dx =
    // 1 + ... + w.
    tch::manual_seed(dist.rank() as i64);
    let x = Tensor::randn([2, 3], (Kind::Float, d)).set_requires_grad(true);
    let y = dist.all_gather_autograd(&x).unwrap();
    assert_eq!(y.size(), [2 * w as i64, 3]);
    close(&y.narrow(0, 2 * dist.rank() as i64, 2), &x, "own rows");
    (&y * (r + 1.0)).sum(Kind::Float).backward();
    close(&x.grad(), &full(&[2, 3], w * (w + 1.0) / 2.0, Kind::Float), "gather backward");
}

/// A two-layer MLP (no batch norm): the same draws on every rank.
fn mlp(d: Device) -> ParamStore {
    tch::manual_seed(7);
    let mut s = ParamStore::new();
    let f = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_device(d) * 0.3;
    let _ = s.add_param("w1".into(), f(&[16, 8]));
    let _ = s.add_param("b1".into(), f(&[16]));
    let _ = s.add_param("w2".into(), f(&[4, 16]));
    let _ = s.add_param("b2".into(), f(&[4]));
    s
}

fn mlp_loss(s: &ParamStore, x: &Tensor, y: &Tensor) -> Tensor {
    let p = |n: &str| s.get(n).unwrap();
    let h = x.linear(p("w1"), Some(p("b1"))).tanh();
    (h.linear(p("w2"), Some(p("b2"))) - y).square().mean(Kind::Float)
}

/// Random draws of the CPU generator (the same on every rank), moved to `d`.
fn randn(shape: &[i64], d: Device) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_device(d)
}

/// Gradients of each rank's share, averaged over ranks, equal the one-process gradients of the
/// whole batch; so do the parameters after SGD steps.
fn grads_match_one_process(dist: &Dist) {
    let d = dist.device();
    tch::manual_seed(100);
    let x = randn(&[8, 8], d);
    let y = randn(&[8, 4], d);
    let n = 8 / dist.world() as i64;
    let (xr, yr) = (x.narrow(0, dist.rank() as i64 * n, n), y.narrow(0, dist.rank() as i64 * n, n));

    let (shared, single) = (mlp(d), mlp(d));
    let mut sgd = Optimizer::sgd(0.9, false);
    sgd.add_group(&shared, "", 1e-4, 1.0, None);
    sgd.set_dist(dist.clone());
    let mut sgd_one = Optimizer::sgd(0.9, false);
    sgd_one.add_group(&single, "", 1e-4, 1.0, None);
    for step in 0..3 {
        sgd.zero_grad();
        mlp_loss(&shared, &xr, &yr).backward();
        sgd.step(0.1).unwrap();
        sgd_one.zero_grad();
        mlp_loss(&single, &x, &y).backward();
        sgd_one.step(0.1).unwrap();
        for (a, b) in shared.params().zip(single.params()) {
            close(&a.tensor.grad(), &b.tensor.grad(), &format!("step {step}: grad {}", a.name));
            close(&a.tensor, &b.tensor, &format!("step {step}: {}", a.name));
        }
    }
}

/// MoCo's shuffle across ranks equals the one-process shuffle with one BN group per rank: with a
/// group-dependent forward (centring, as BN in training) and a per-sample one (as BN in eval).
fn shuffle_matches_one_process(dist: &Dist) {
    let (w, r, d) = (dist.world() as i64, dist.rank() as i64, dist.device());
    let n = 3;
    tch::manual_seed(5);
    let x = randn(&[w * n, 4], d);
    let xr = x.narrow(0, r * n, n);
    let perm = Dist::shared_permutation((w * n) as usize, 11, 3, 0x5348_5546);
    let centre = |t: &Tensor| vec![t - t.mean_dim(0, true, Kind::Float), t * 2.0];
    let out = dist.shuffled_forward(&xr, &perm, centre).unwrap();
    // One process, `w` contiguous groups of the permuted batch, then the inverse permutation.
    let idx = Tensor::from_slice(&perm).to_device(d);
    let shuffled = x.index_select(0, &idx);
    let groups: Vec<Vec<Tensor>> = (0..w).map(|g| centre(&shuffled.narrow(0, g * n, n))).collect();
    let inv = idx.argsort(0, false);
    for (o, k) in out.iter().zip(0..2) {
        let one = Tensor::cat(&groups.iter().map(|g| g[k].shallow_clone()).collect::<Vec<_>>(), 0)
            .index_select(0, &inv);
        close(o, &one, &format!("output {k}"));
    }
    // Per-sample forward: shuffle then unshuffle is the identity (docs/method.md 11.3 #10).
    close(&out[1], &(&x * 2.0), "eval-mode round trip");
}

/// SyncBN on each rank's share equals batch norm on the concatenated batch: outputs, input and
/// parameter gradients, running statistics; 4-d and 2-d inputs, with and without affine
/// parameters; one all-gather in the forward and one all-reduce in the backward. A bf16
/// channels_last input gives a bf16 channels_last output and gradient, equal to the fp32 results
/// within bf16's rounding.
fn sync_bn_matches_full_batch_bn(dist: &Dist) {
    let cases = [
        (vec![8i64, 3, 2, 2], true, Kind::Float),
        (vec![8, 5], true, Kind::Float),
        (vec![8, 5], false, Kind::Float),
        (vec![8, 4, 3, 3], true, Kind::BFloat16),
    ];
    for (shape, affine, kind) in cases {
        let (w, r, d) = (dist.world() as i64, dist.rank() as i64, dist.device());
        let n = shape[0] / w;
        let c = shape[1];
        let what = format!("{shape:?} affine {affine} {kind:?}");
        tch::manual_seed(21);
        let x = randn(&shape, d) * 2.0 + 5.0;
        let g = randn(&shape, d);
        let weight = randn(&[c], d).abs() + 0.5;
        let bias = randn(&[c], d);
        let leaf = |t: &Tensor| t.detach().copy().set_requires_grad(true);
        let four_d = shape.len() == 4;
        // The rank's share, in the kind and memory format under test.
        let share = |t: &Tensor| {
            let t = t.narrow(0, r * n, n).to_kind(kind);
            if four_d && kind == Kind::BFloat16 { to_channels_last(&t).unwrap() } else { t }
        };
        let (xr, wr, br) = (leaf(&share(&x)), leaf(&weight), leaf(&bias));
        let (rm, rv) = (Tensor::zeros([c], (Kind::Float, d)), Tensor::ones([c], (Kind::Float, d)));
        let (wo, bo) = if affine { (Some(&wr), Some(&br)) } else { (None, None) };
        let before = dist.num_collectives().unwrap();
        let bn = BnParams {
            weight: wo,
            bias: bo,
            running_mean: &rm,
            running_var: &rv,
            momentum: 0.1,
            eps: 1e-5,
        };
        let y = sync_batch_norm(&xr, &bn, dist).unwrap();
        assert_eq!(dist.num_collectives().unwrap(), before + 1, "{what}: forward collectives");
        assert_eq!(y.kind(), kind, "{what}: output kind");
        assert_eq!(is_channels_last(&y), is_channels_last(&xr), "{what}: memory format");
        (&y * share(&g)).sum(Kind::Float).backward();
        assert_eq!(dist.num_collectives().unwrap(), before + 2, "{what}: backward collectives");
        assert_eq!(xr.grad().kind(), kind, "{what}: input grad kind");

        // The reference: fp32 batch norm on the whole batch (the same bf16-rounded input).
        let xf = leaf(&x.to_kind(kind).to_kind(Kind::Float));
        let (wf, bf) = (leaf(&weight), leaf(&bias));
        let (rm1, rv1) =
            (Tensor::zeros([c], (Kind::Float, d)), Tensor::ones([c], (Kind::Float, d)));
        let (wo1, bo1) = if affine { (Some(&wf), Some(&bf)) } else { (None, None) };
        let y1 = Tensor::batch_norm(&xf, wo1, bo1, Some(&rm1), Some(&rv1), true, 0.1, 1e-5, false);
        (&y1 * g.to_kind(kind).to_kind(Kind::Float)).sum(Kind::Float).backward();

        // bf16 outputs and gradients are rounded to 8 significant bits (relative 2^-9 = 0.2%);
        // the statistics themselves are fp32 on both sides.
        let (rtol, atol) = if kind == Kind::BFloat16 { (1e-2, 1e-2) } else { (1e-5, 1e-6) };
        let mine = |t: &Tensor| t.to_kind(Kind::Float);
        close_within(&mine(&y), &y1.narrow(0, r * n, n), rtol, atol, &format!("{what} output"));
        let gx = mine(&xr.grad());
        close_within(&gx, &xf.grad().narrow(0, r * n, n), rtol, atol, &format!("{what} dx"));
        if affine {
            let (gw, gb) = (wr.grad(), br.grad());
            dist.all_reduce_sum_(&gw).unwrap();
            dist.all_reduce_sum_(&gb).unwrap();
            close_within(&gw, &wf.grad(), rtol, atol, &format!("{what} weight grad"));
            close_within(&gb, &bf.grad(), rtol, atol, &format!("{what} bias grad"));
        }
        close(&rm, &rm1, &format!("{what} running mean"));
        close(&rv, &rv1, &format!("{what} running var"));
    }
}

/// Rank 0 works for longer than the collective timeout inside [`Dist::on_main`] while the others
/// wait for it; afterwards every rank meets in a collective as usual. A failure on rank 0 is an
/// error on the others, naming the operation.
fn others_wait_for_rank_0_past_the_timeout(dist: &Dist) {
    let busy = dist.timeout() + Duration::from_secs(2);
    let start = Instant::now();
    let out = dist
        .on_main("long job", || {
            std::thread::sleep(busy);
            Ok(7)
        })
        .unwrap();
    assert_eq!(out, dist.is_main().then_some(7));
    let waited = start.elapsed();
    assert!(waited > dist.timeout(), "rank {} returned after {waited:?}", dist.rank());
    let t = Tensor::ones([1], (Kind::Float, dist.device()));
    dist.all_reduce_sum_(&t).unwrap();
    close(&t, &Tensor::from_slice(&[dist.world() as f32]), "collective after the wait");

    let err = dist.on_main("failing job", || -> regioncl_trainer::Result<()> {
        Err(regioncl_trainer::Error::Data("broken on purpose".into()))
    });
    let msg = err.expect_err("every rank fails").to_string();
    if dist.is_main() {
        assert!(msg.contains("broken on purpose"), "{msg}");
    } else {
        assert!(msg.contains("failing job") && msg.contains("rank 0 failed"), "{msg}");
    }
    dist.barrier().unwrap();
}

/// Rank 1 leaves after one collective; rank 0's next collective must fail, naming the operation,
/// long before the timeout.
fn peer_dies(dist: &Dist) {
    dist.barrier().unwrap();
    if dist.rank() == 1 {
        std::process::exit(7);
    }
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
    let err = dist.all_reduce_sum_(&t).expect_err("a collective with a dead peer must fail");
    let msg = err.to_string();
    eprintln!("after {:.2}s: {msg}", start.elapsed().as_secs_f64());
    assert!(msg.starts_with("distributed: rank 0 of 2: all_reduce:"), "{msg}");
    assert!(start.elapsed() < dist.timeout(), "took the whole timeout");
}

#[test]
fn collectives_across_two_processes() {
    run_world("collectives");
}

#[test]
fn averaged_gradients_equal_one_process_on_the_whole_batch() {
    run_world("grads");
}

#[test]
fn shuffle_bn_across_ranks_equals_one_process_emulation() {
    run_world("shuffle");
}

#[test]
fn sync_bn_equals_full_batch_bn() {
    run_world("sync_bn");
}

/// The k-NN monitor's case: rank 0 busy past `run.dist_timeout_s` is not a timeout.
#[test]
fn others_wait_for_rank_0_without_a_collective_timeout() {
    // 5 s: long enough for both ranks to start and meet on a busy machine.
    let outs = spawn("on_main", &[0, 1], 2, &[("REGIONCL_DIST_TIMEOUT_S", "5")]);
    assert!(outs.iter().all(|o| o.status.success()), "{}", describe(&outs));
}

#[test]
fn a_dead_rank_is_an_error_not_a_hang() {
    let start = Instant::now();
    let outs = spawn("die", &[0, 1], 2, &[("REGIONCL_DIST_TIMEOUT_S", "60")]);
    assert_eq!(outs[1].status.code(), Some(7), "{}", describe(&outs));
    assert!(outs[0].status.success(), "{}", describe(&outs));
    assert!(start.elapsed() < Duration::from_secs(60), "{:?}", start.elapsed());
}

#[test]
fn a_rank_that_never_shows_up_is_a_rendezvous_error() {
    // Rank 1 alone: no store to connect to. Rank 0 alone: no client checks in.
    for rank in [1, 0] {
        let start = Instant::now();
        let outs = spawn("absent", &[rank], 2, &[("REGIONCL_DIST_TIMEOUT_S", "3")]);
        assert!(outs[0].status.success(), "rank {rank} alone:\n{}", describe(&outs));
        assert!(start.elapsed() < Duration::from_secs(60), "{:?}", start.elapsed());
    }
}
