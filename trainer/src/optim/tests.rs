use super::*;

fn store(name: &str, shape: &[i64]) -> ParamStore {
    let mut s = ParamStore::new();
    let _ = s.add_param(name.into(), Tensor::randn(shape, (Kind::Float, Device::Cpu)));
    s
}

/// Two steps against PyTorch's SGD formula written out by hand, with a fixed-LR group.
#[test]
fn matches_pytorch_sgd() {
    tch::manual_seed(0);
    let (s, head) = (store("w", &[3, 4]), store("h", &[2]));
    let mut sgd = Optimizer::sgd(0.9, true);
    sgd.add_group(&s, "", 1e-4, 1.0, None);
    sgd.add_group(&head, "pred.", 1e-4, 1.0, Some(0.05));
    let x = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
    let (w, h) = (s.get("w").unwrap(), head.get("h").unwrap());
    let (mut w_ref, mut h_ref) = (w.detach().copy(), h.detach().copy());
    let (mut v_ref, mut hv_ref) = (w_ref.zeros_like(), h_ref.zeros_like());
    for (step, lr) in [0.1, 0.07].into_iter().enumerate() {
        sgd.zero_grad();
        let loss = x.matmul(w).pow_tensor_scalar(2).sum(Kind::Float) + (h * h).sum(Kind::Float);
        loss.backward();
        let (g, hg) = (w.grad().copy(), h.grad().copy());
        sgd.step(lr).unwrap();
        v_ref = &v_ref * 0.9 + (g + &w_ref * 1e-4);
        w_ref = &w_ref - &v_ref * lr;
        hv_ref = &hv_ref * 0.9 + (hg + &h_ref * 1e-4);
        h_ref = &h_ref - &hv_ref * 0.05;
        assert!(w.allclose(&w_ref, 1e-6, 1e-7, false), "step {step}");
        assert!(h.allclose(&h_ref, 1e-6, 1e-7, false), "fixed-lr group, step {step}");
    }
    let state = sgd.export();
    assert_eq!(state.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["w", "pred.h"]);
    assert!(state[0].1.allclose(&v_ref, 1e-6, 1e-7, false));
}

/// Three AdamW steps against PyTorch's `torch.optim.AdamW` formula in f64, with gradient
/// clipping; the state exports, and a fresh optimiser loaded from it continues identically.
#[test]
fn matches_pytorch_adamw_and_resumes() {
    tch::manual_seed(1);
    let s = store("w", &[4, 3]);
    let w = s.get("w").unwrap();
    let rule = Rule::AdamW { betas: [0.9, 0.999], eps: 1e-8 };
    let mut opt = Optimizer::new(rule);
    opt.add_group(&s, "enc.", 0.05, 1.0, None);
    opt.set_clip(0.5);
    let x = Tensor::randn([6, 4], (Kind::Double, Device::Cpu));
    let f64s = |t: &Tensor| t.detach().to_kind(Kind::Double);
    let mut w_ref = f64s(w);
    let (mut m, mut v) = (w_ref.zeros_like(), w_ref.zeros_like());
    let loss_of = |w: &Tensor| x.to_kind(w.kind()).matmul(w).tanh().sum(Kind::Float);
    for (t, lr) in [1e-2, 2e-2, 5e-3].into_iter().enumerate() {
        opt.zero_grad();
        loss_of(w).backward();
        let g = f64s(&w.grad());
        opt.step(lr).unwrap();
        let norm = g.norm().double_value(&[]);
        let g = g * (0.5 / (norm + 1e-6)).min(1.0);
        let t = (t + 1) as f64;
        w_ref = &w_ref * (1.0 - lr * 0.05);
        m = &m * 0.9 + &g * 0.1;
        v = &v * 0.999 + &g * &g * 0.001;
        let denom = v.sqrt() / (1.0 - 0.999f64.powf(t)).sqrt() + 1e-8;
        w_ref = &w_ref - &m / denom * (lr / (1.0 - 0.9f64.powf(t)));
        assert!(f64s(w).allclose(&w_ref, 1e-5, 1e-7, false), "step {t}");
    }
    let state: HashMap<String, Tensor> = opt.export().into_iter().collect();
    let mut names: Vec<&str> = state.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["enc.w.exp_avg", "enc.w.exp_avg_sq", "updates"]);
    assert_eq!(state["updates"].double_value(&[]), 3.0);
    // A second model, restored from the first's state, makes the same next update.
    let s2 = store("w", &[4, 3]);
    let w2 = s2.get("w").unwrap();
    tch::no_grad(|| w2.shallow_clone().copy_(w));
    let mut opt2 = Optimizer::new(rule);
    opt2.add_group(&s2, "enc.", 0.05, 1.0, None);
    opt2.set_clip(0.5);
    opt2.load(&state).unwrap();
    for (o, w) in [(&mut opt, w), (&mut opt2, w2)] {
        o.zero_grad();
        loss_of(w).backward();
        o.step(1e-2).unwrap();
    }
    assert!(w.equal(w2));
    assert!(opt2.load(&HashMap::new()).is_err());
}

/// Without `decay_all`, norms, biases and position tables go to a group without decay.
#[test]
fn timm_rule_splits_decay() {
    let mut s = ParamStore::new();
    for (name, shape) in [
        ("0.cls_token", &[1, 1, 4][..]),
        ("0.pos_embed", &[1, 5, 4]),
        ("0.blocks.0.attn.qkv.weight", &[12, 4]),
        ("0.blocks.0.attn.qkv.bias", &[12]),
        ("0.blocks.0.norm1.weight", &[4]),
        ("0.layers.0.blocks.0.attn.relative_position_bias_table", &[9, 1]),
        ("1.linear_out.weight", &[2, 4]),
    ] {
        let _ = s.add_param(name.into(), Tensor::zeros(shape, (Kind::Float, Device::Cpu)));
    }
    let mut opt = Optimizer::new(Rule::AdamW { betas: [0.9, 0.999], eps: 1e-8 });
    opt.add_store(&s, "encoder_q.", 0.05, false);
    let g = opt.groups();
    assert_eq!((g[0].weight_decay, g[1].weight_decay), (0.05, 0.0));
    assert_eq!(
        g[0].names,
        ["encoder_q.0.blocks.0.attn.qkv.weight", "encoder_q.1.linear_out.weight"]
    );
    assert_eq!(g[1].names.len(), 5);
    let mut sgd = Optimizer::sgd(0.9, false);
    sgd.add_store(&s, "", 1e-4, true);
    assert_eq!((sgd.groups().len(), sgd.groups()[0].names.len()), (1, 7));
}
