//! `--set key=value` overrides on a TOML table, and the checks that make a bad key or value an
//! error naming the key: unknown keys are refused, integers are taken for float fields, and each
//! value is tried alone over the defaults so a type or variant error names its own key.

use super::Config;
use crate::error::{Error, Result};

/// The config of TOML `text` with `sets` (`key=value`, dotted keys) applied over it, not yet
/// validated.
///
/// # Errors
/// [`Error::Config`] naming the key for a parse error, an unknown key, or a value of the wrong
/// type (an empty key for an error of the text as a whole).
pub(super) fn parse(text: &str, sets: &[String]) -> Result<Config> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| Error::config("", format!("toml: {e}")))?;
    for set in sets {
        apply_set(&mut table, set)?;
    }
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| Error::config("", format!("serialize defaults: {e}")))?;
    check_keys(&mut table, &defaults, "")?;
    // Each leaf alone over the defaults: a type or variant error then names its key.
    let mut leaves = Vec::new();
    collect_leaves(&table, "", &mut leaves);
    for (key, value) in leaves {
        let mut probe = defaults.clone();
        set_path(&mut probe, &key, value)?;
        probe.try_into::<Config>().map_err(|e| Error::config(&key, e.message().to_string()))?;
    }
    table.try_into().map_err(|e| Error::config("", e.message().to_string()))
}

fn type_name(v: &toml::Value) -> &'static str {
    v.type_str()
}

fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut t = table;
    let mut prefix = String::new();
    for p in parts {
        prefix = if prefix.is_empty() { p.to_string() } else { format!("{prefix}.{p}") };
        let entry =
            t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| Error::config(&prefix, "is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

fn apply_set(table: &mut toml::Table, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| Error::config(set, "an override must look like key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(Error::config(set, "empty key"));
    }
    set_path(table, key, parse_value(raw.trim()))
}

/// Rejects keys that the defaults lack, and coerces integers into float fields.
fn check_keys(table: &mut toml::Table, defaults: &toml::Table, prefix: &str) -> Result<()> {
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        let Some(d) = defaults.get(k) else {
            return Err(Error::config(&key, "unknown key"));
        };
        match (d, &mut *v) {
            (toml::Value::Table(dt), toml::Value::Table(vt)) => check_keys(vt, dt, &key)?,
            (toml::Value::Table(_), other) => {
                return Err(Error::config(
                    &key,
                    format!("expected a table, found {}", type_name(other)),
                ));
            }
            (toml::Value::Float(_), toml::Value::Integer(i)) => *v = toml::Value::Float(*i as f64),
            (d, v) if type_name(d) != type_name(v) => {
                return Err(Error::config(
                    &key,
                    format!("expected {}, found {}", type_name(d), type_name(v)),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn collect_leaves(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => collect_leaves(t, &key, out),
            other => out.push((key, other.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Method};

    fn err(text: &str, sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_toml(text, &sets).unwrap_err().to_string()
    }

    #[test]
    fn overrides_and_errors_name_the_key() {
        let c = Config::from_toml(
            "[optim]\nbatch_size = 256\n",
            &["optim.base_lr=0.03".into(), "optim.ref_batch=256".into(), "method=mocov2".into()],
        )
        .unwrap();
        assert_eq!((c.optim.batch_size, c.method), (256, Method::MocoV2));
        assert!((c.optim.peak_lr() - 0.03).abs() < 1e-12);
        let c = Config::from_toml("", &["moco.tau=1".into()]).unwrap();
        assert_eq!(c.moco.tau, 1.0, "integer into a float field");
        assert!(err("[model]\ndepth = 3\n", &[]).contains("`model.depth`: unknown key"));
        assert!(err("", &["optim.lr=0.1"]).contains("`optim.lr`: unknown key"));
        assert!(
            err("", &["optim.batch_size=big"]).contains("`optim.batch_size`: expected integer")
        );
        assert!(err("", &["model.arch=resnet34"]).contains("`model.arch`"));
        assert!(err("", &["nokey"]).contains("key=value"));
        assert!(err("model = 3", &[]).contains("`model`: expected a table"));
        assert!(err("[optim\n", &[]).contains("toml"));
        assert!(err("", &["method=barlow"]).contains("`method`"));
        assert!(err("", &["run.dist_backend=mpi"]).contains("run.dist_backend"));
    }
}
