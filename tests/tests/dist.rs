//! Multi-process runs on the CPU: Gloo, 2 processes on this machine, launched the way `torchrun`
//! does (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, a free port each time).
//!
//! Each test spawns this test binary twice, running the ignored test [`worker`] with a scenario
//! name; a scenario checks its results inside each rank (against the one-process computation on
//! the whole batch, which every rank can do itself) and fails the rank on a mismatch. The parent
//! kills the ranks after a deadline, so a hang is a failure, not a stuck CI.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use regioncl_trainer::{Dist, DistBackend, DistOptions, ParamStore, Sgd, sync_batch_norm};
use tch::{Device, Kind, Tensor};

/// The scenario a child runs.
const SCENARIO: &str = "REGIONCL_DIST_SCENARIO";
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

fn run_world(scenario: &str) {
    let outs = spawn(scenario, &[0, 1], 2, &[]);
    assert!(outs.iter().all(|o| o.status.success()), "{scenario}:\n{}", describe(&outs));
}

/// The scenarios, run inside each rank.
#[test]
#[ignore = "one rank of a multi-process test; spawned by the other dist tests"]
fn worker() {
    let scenario = std::env::var(SCENARIO).expect("REGIONCL_DIST_SCENARIO");
    let timeout = std::env::var("REGIONCL_DIST_TIMEOUT_S").ok().and_then(|s| s.parse().ok());
    let opts = DistOptions {
        backend: DistBackend::Gloo,
        cuda: false,
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
    assert_eq!(dist.world(), 2);
    match scenario.as_str() {
        "collectives" => collectives(&dist),
        "grads" => grads_match_one_process(&dist),
        "shuffle" => shuffle_matches_one_process(&dist),
        "sync_bn" => sync_bn_matches_full_batch_bn(&dist),
        "die" => peer_dies(&dist),
        other => panic!("unknown scenario {other}"),
    }
    if scenario != "die" {
        dist.shutdown().expect("orderly shutdown");
    }
}

fn close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: shapes");
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(a.allclose(b, 1e-5, 1e-6, false), "{what}: max |diff| {diff}\n{a}\n{b}");
}

fn collectives(dist: &Dist) {
    let (r, w) = (dist.rank() as f64, dist.world() as f64);
    let t = Tensor::from_slice(&[r as f32 + 1.0, 10.0]);
    dist.all_reduce_sum_(&t).unwrap();
    close(&t, &Tensor::from_slice(&[3.0f32, 20.0]), "all_reduce_sum");

    // Not contiguous: reduced through a staged copy, written back.
    let base = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
    let nc = (&base * (r + 1.0)).transpose(0, 1);
    assert!(!nc.is_contiguous());
    dist.all_reduce_sum_(&nc).unwrap();
    close(&nc, &(&base * 3.0).transpose(0, 1), "all_reduce_sum of a transposed tensor");

    // Mean over several tensors of two kinds (two buckets).
    let a = Tensor::full([5], r, (Kind::Float, Device::Cpu));
    let b = Tensor::full([2, 2], 2.0 * r, (Kind::Double, Device::Cpu));
    let c = Tensor::full([3], -r, (Kind::Float, Device::Cpu));
    dist.all_reduce_mean_(&[&a, &b, &c]).unwrap();
    let m = (w - 1.0) / 2.0;
    close(&a, &Tensor::full([5], m, (Kind::Float, Device::Cpu)), "mean a");
    close(&b, &Tensor::full([2, 2], 2.0 * m, (Kind::Double, Device::Cpu)), "mean b");
    close(&c, &Tensor::full([3], -m, (Kind::Float, Device::Cpu)), "mean c");
    assert_eq!(dist.mean_f64(&[r, 1.0]).unwrap(), vec![m, 1.0]);

    // All-gather: rank order.
    let x = Tensor::full([2, 3], r, (Kind::Float, Device::Cpu));
    let g = dist.all_gather(&x).unwrap();
    assert_eq!(g.size(), [4, 3]);
    for q in 0..2 {
        close(
            &g.narrow(0, 2 * q, 2),
            &Tensor::full([2, 3], q as f64, (Kind::Float, Device::Cpu)),
            "gather",
        );
    }

    // Broadcast from the last rank, two kinds.
    let p = Tensor::full([4], r, (Kind::Float, Device::Cpu));
    let q = Tensor::full([2], r as i64, (Kind::Int64, Device::Cpu));
    dist.broadcast_(&[&p, &q], 1).unwrap();
    close(&p, &Tensor::full([4], 1.0, (Kind::Float, Device::Cpu)), "broadcast f32");
    assert_eq!(Vec::<i64>::try_from(&q).unwrap(), vec![1, 1]);

    dist.barrier().unwrap();

    // Differentiable all-gather: rank r's loss is sum((r + 1) * y), so d(sum of losses)/dx = 1 + 2.
    tch::manual_seed(dist.rank() as i64);
    let x = Tensor::randn([2, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let y = dist.all_gather_autograd(&x).unwrap();
    assert_eq!(y.size(), [4, 3]);
    close(&y.narrow(0, 2 * dist.rank() as i64, 2), &x, "own rows");
    (&y * (r + 1.0)).sum(Kind::Float).backward();
    close(&x.grad(), &Tensor::full([2, 3], 3.0, (Kind::Float, Device::Cpu)), "gather backward");
}

/// A two-layer MLP (no batch norm): the same draws on every rank.
fn mlp() -> ParamStore {
    tch::manual_seed(7);
    let mut s = ParamStore::new();
    let f = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.3;
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

/// Gradients of each rank's share, averaged over ranks, equal the one-process gradients of the
/// whole batch; so do the parameters after SGD steps.
fn grads_match_one_process(dist: &Dist) {
    tch::manual_seed(100);
    let x = Tensor::randn([8, 8], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
    let n = 8 / dist.world() as i64;
    let (xr, yr) = (x.narrow(0, dist.rank() as i64 * n, n), y.narrow(0, dist.rank() as i64 * n, n));

    let (shared, single) = (mlp(), mlp());
    let mut sgd = Sgd::new(0.9, false);
    sgd.add_group(&shared, "", 1e-4, 1.0, None);
    sgd.set_dist(dist.clone());
    let mut sgd_one = Sgd::new(0.9, false);
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
    let (w, r) = (dist.world() as i64, dist.rank() as i64);
    let n = 3;
    tch::manual_seed(5);
    let x = Tensor::randn([w * n, 4], (Kind::Float, Device::Cpu));
    let xr = x.narrow(0, r * n, n);
    let perm = Dist::shared_permutation((w * n) as usize, 11, 3, 0x5348_5546);
    let centre = |t: &Tensor| vec![t - t.mean_dim(0, true, Kind::Float), t * 2.0];
    let out = dist.shuffled_forward(&xr, &perm, centre).unwrap();
    // One process, `w` contiguous groups of the permuted batch, then the inverse permutation.
    let idx = Tensor::from_slice(&perm);
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
/// parameter gradients, running statistics; 4-d and 2-d inputs.
fn sync_bn_matches_full_batch_bn(dist: &Dist) {
    for shape in [vec![8i64, 3, 2, 2], vec![8, 5]] {
        let (w, r) = (dist.world() as i64, dist.rank() as i64);
        let n = shape[0] / w;
        let c = shape[1];
        tch::manual_seed(21);
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * 2.0 + 5.0;
        let g = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        let weight = Tensor::rand([c], (Kind::Float, Device::Cpu)) + 0.5;
        let bias = Tensor::randn([c], (Kind::Float, Device::Cpu));
        let leaf = |t: &Tensor| t.detach().copy().set_requires_grad(true);

        let (xr, wr, br) = (leaf(&x.narrow(0, r * n, n)), leaf(&weight), leaf(&bias));
        let (rm, rv) = (
            Tensor::zeros([c], (Kind::Float, Device::Cpu)),
            Tensor::ones([c], (Kind::Float, Device::Cpu)),
        );
        let y = sync_batch_norm(&xr, Some(&wr), Some(&br), &rm, &rv, 0.1, 1e-5, dist).unwrap();
        (&y * g.narrow(0, r * n, n)).sum(Kind::Float).backward();

        let (xf, wf, bf) = (leaf(&x), leaf(&weight), leaf(&bias));
        let (rm1, rv1) = (
            Tensor::zeros([c], (Kind::Float, Device::Cpu)),
            Tensor::ones([c], (Kind::Float, Device::Cpu)),
        );
        let y1 = Tensor::batch_norm(
            &xf,
            Some(&wf),
            Some(&bf),
            Some(&rm1),
            Some(&rv1),
            true,
            0.1,
            1e-5,
            false,
        );
        (&y1 * &g).sum(Kind::Float).backward();

        let what = format!("{shape:?}");
        close(&y, &y1.narrow(0, r * n, n), &format!("{what} output"));
        close(&xr.grad(), &xf.grad().narrow(0, r * n, n), &format!("{what} input grad"));
        let (gw, gb) = (wr.grad(), br.grad());
        dist.all_reduce_sum_(&gw).unwrap();
        dist.all_reduce_sum_(&gb).unwrap();
        close(&gw, &wf.grad(), &format!("{what} weight grad"));
        close(&gb, &bf.grad(), &format!("{what} bias grad"));
        close(&rm, &rm1, &format!("{what} running mean"));
        close(&rv, &rv1, &format!("{what} running var"));
    }
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
