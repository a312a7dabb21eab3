//! The comparison's numbers: one [`RunResult`] per (method, seed), their mean and standard
//! deviation per method, and per pair the difference of the means with Welch's t-test at the 5%
//! level (two-sided): a difference "exceeds the seed noise" when `|t|` is above the critical value
//! of Student's t for the Welch-Satterthwaite degrees of freedom (rounded down, so the test errs
//! on the side of "no").

use serde::{Deserialize, Serialize};

/// One measurement of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Its name in the table (`k-NN k=20`, `linear`, `linear 1% labels`).
    pub name: String,
    /// Top-1 accuracy in `[0, 1]`.
    pub top1: f64,
}

/// What one pretraining run gave (its `eval.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Config spelling of the method.
    pub method: String,
    /// Pretraining seed.
    pub seed: u64,
    /// Pretraining steps.
    pub steps: u64,
    /// The measurements, in table order.
    pub metrics: Vec<Metric>,
}

/// Mean and sample standard deviation (n - 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub std: f64,
    /// Number of values.
    pub n: usize,
}

impl Summary {
    /// Of `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self { mean, std: var.sqrt(), n }
    }
}

/// Two-sided 95% critical values of Student's t for 1..=30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The difference `a - b` of two methods on one metric, and whether it exceeds the seed noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// `mean(a) - mean(b)`.
    pub diff: f64,
    /// Its standard error `sqrt(s_a^2 / n_a + s_b^2 / n_b)`.
    pub se: f64,
    /// Welch's t (infinite when both methods are exactly reproducible and differ).
    pub t: f64,
    /// The 5% two-sided critical value it is compared with.
    pub critical: f64,
    /// `|t| > critical`.
    pub significant: bool,
}

impl Difference {
    /// Welch's test of `a` against `b` (each with n >= 2 for a finite critical value).
    pub fn welch(a: Summary, b: Summary) -> Self {
        let diff = a.mean - b.mean;
        let (va, vb) = (a.std.powi(2) / a.n as f64, b.std.powi(2) / b.n as f64);
        let se = (va + vb).sqrt();
        if se == 0.0 {
            let t = if diff == 0.0 { 0.0 } else { f64::INFINITY };
            return Self { diff, se, t, critical: 0.0, significant: diff != 0.0 };
        }
        let den =
            va.powi(2) / (a.n as f64 - 1.0).max(1.0) + vb.powi(2) / (b.n as f64 - 1.0).max(1.0);
        let df = ((va + vb).powi(2) / den).floor().max(1.0) as usize;
        let critical = T_975.get(df - 1).copied().unwrap_or(1.960);
        let t = diff / se;
        Self { diff, se, t, critical, significant: t.abs() > critical }
    }
}

/// Per metric, the summary of each method's runs, in the order the metrics appear.
pub fn summarize(results: &[RunResult], method: &str) -> Vec<(String, Summary)> {
    let runs: Vec<&RunResult> = results.iter().filter(|r| r.method == method).collect();
    let Some(first) = runs.first() else { return Vec::new() };
    first
        .metrics
        .iter()
        .map(|m| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.metrics.iter().find(|x| x.name == m.name).map(|x| x.top1))
                .collect();
            (m.name.clone(), Summary::of(&values))
        })
        .collect()
}

/// The markdown table of a pair `(a, b)`: mean ± std (in %) per metric for each, the difference
/// and whether it exceeds the seed noise.
pub fn pair_table(results: &[RunResult], a: (&str, &str), b: (&str, &str)) -> String {
    let (sa, sb) = (summarize(results, a.0), summarize(results, b.0));
    let pct = |s: &Summary| format!("{:.2} ± {:.2}", 100.0 * s.mean, 100.0 * s.std);
    let mut lines = vec![
        format!("| metric (top-1 %) | {} | {} | difference | exceeds seed noise |", a.1, b.1),
        "|---|---|---|---|---|".to_string(),
    ];
    for ((name, x), (_, y)) in sa.iter().zip(&sb) {
        let d = Difference::welch(*x, *y);
        let verdict = match (d.significant, d.t.is_finite()) {
            (true, true) => format!("yes (t = {:.2} > {:.2})", d.t.abs(), d.critical),
            (false, true) => format!("no (t = {:.2} <= {:.2})", d.t.abs(), d.critical),
            (true, false) => "yes (no seed variance)".to_string(),
            (false, false) => "no".to_string(),
        };
        lines.push(format!(
            "| {name} | {} | {} | {:+.2} ± {:.2} | {verdict} |",
            pct(x),
            pct(y),
            100.0 * d.diff,
            100.0 * d.se
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean, sample std and Welch's t on values worked by hand.
    #[test]
    fn welch_by_hand() {
        let a = Summary::of(&[0.80, 0.82, 0.84]); // mean 0.82, s = 0.02
        let b = Summary::of(&[0.70, 0.71, 0.72]); // mean 0.71, s = 0.01
        assert!((a.mean - 0.82).abs() < 1e-12 && (a.std - 0.02).abs() < 1e-12);
        let d = Difference::welch(a, b);
        let se = ((0.0004f64 + 0.0001) / 3.0).sqrt();
        assert!((d.se - se).abs() < 1e-12 && (d.t - 0.11 / se).abs() < 1e-9);
        // df = (va + vb)^2 / (va^2 / 2 + vb^2 / 2) = 2.94 -> 2: critical 4.303.
        assert_eq!(d.critical, 4.303);
        assert!(d.significant, "t = {}", d.t);
        let noisy = Difference::welch(Summary::of(&[0.80, 0.90, 0.70]), b);
        assert!(!noisy.significant, "{noisy:?}");
        let exact = Difference::welch(Summary::of(&[0.5, 0.5]), Summary::of(&[0.5, 0.5]));
        assert!(!exact.significant && exact.t == 0.0);
    }

    #[test]
    fn table_has_a_row_per_metric() {
        let run = |method: &str, seed, v: f64| RunResult {
            method: method.into(),
            seed,
            steps: 10,
            metrics: vec![
                Metric { name: "k-NN k=20".into(), top1: v },
                Metric { name: "linear".into(), top1: v / 2.0 },
            ],
        };
        let results: Vec<RunResult> =
            (0..3).flat_map(|s| [run("a", s, 0.8 + 0.01 * s as f64), run("b", s, 0.5)]).collect();
        let t = pair_table(&results, ("a", "A"), ("b", "B"));
        assert!(
            t.contains("| k-NN k=20 | 81.00 ± 1.00 | 50.00 ± 0.00 | +31.00 ± 0.58 | yes"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 4, "{t}");
    }
}
