//! Who this process is in a multi-process run, read from the launcher's environment.
//!
//! | launcher | rank | world | local rank | rendezvous |
//! |---|---|---|---|---|
//! | `torchrun` (or any `env://` launch) | `RANK` | `WORLD_SIZE` | `LOCAL_RANK` | `MASTER_ADDR:MASTER_PORT`; with `TORCHELASTIC_USE_AGENT_STORE=True` the agent hosts the store and every rank is a client |
//! | SLURM `srun` | `SLURM_PROCID` | `SLURM_STEP_NUM_TASKS`, else `SLURM_NTASKS` | `SLURM_LOCALID` | `MASTER_ADDR`, else the first host of `SLURM_STEP_NODELIST` / `SLURM_JOB_NODELIST`; `MASTER_PORT`, else `15000 + SLURM_JOB_ID % 20000` |
//! | none | 0 | 1 | 0 | none |
//!
//! `RANK` + `WORLD_SIZE` win over SLURM's variables (torchrun inside an allocation). Without a
//! torchrun agent, rank 0 hosts the store at `MASTER_PORT` on its own host, which must be
//! `MASTER_ADDR`.

use std::fmt;

use crate::error::{Error, Result};

/// Default `MASTER_PORT` of PyTorch.
const DEFAULT_PORT: u16 = 29500;

/// How the process was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Launcher {
    /// One process, no launcher.
    Single,
    /// `torchrun` or a hand-made `env://` launch (`RANK`, `WORLD_SIZE`, ...).
    Torchrun,
    /// SLURM `srun`, one task per device.
    Slurm,
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::Single => "single process",
            Launcher::Torchrun => "torchrun/env",
            Launcher::Slurm => "slurm",
        })
    }
}

/// This process's place in the run and where the ranks meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Who started it.
    pub launcher: Launcher,
    /// Global rank, `0..world`.
    pub rank: usize,
    /// Number of processes.
    pub world: usize,
    /// Rank on this node: the CUDA device it uses.
    pub local_rank: usize,
    /// Host of the rendezvous store.
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
    /// torchrun's agent hosts the store (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank is a
    /// client.
    pub agent_store: bool,
    /// torchrun's restart count (`TORCHELASTIC_RESTART_COUNT`): keys of a restarted attempt live
    /// under their own prefix.
    pub restart: u64,
}

impl Launch {
    /// One process.
    pub fn single() -> Self {
        Self {
            launcher: Launcher::Single,
            rank: 0,
            world: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_PORT,
            agent_store: false,
            restart: 0,
        }
    }

    /// Reads the process environment (see the module docs).
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that is missing or malformed.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// As [`Launch::from_env`], reading variables through `var`.
    ///
    /// # Errors
    /// As [`Launch::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |k: &str| -> Result<Option<u64>> {
            var(k)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        Error::config(k, format!("`{v}` is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let need = |k: &str| -> Result<u64> {
            num(k)?.ok_or_else(|| Error::config(k, "not set (needed for a multi-process run)"))
        };
        let port = |default: u16| -> Result<u16> {
            match num("MASTER_PORT")? {
                Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
                Some(p) => Err(Error::config("MASTER_PORT", format!("{p} is not in 1..=65535"))),
                None => Ok(default),
            }
        };
        let mut l = Self::single();
        if var("RANK").is_some() || var("WORLD_SIZE").is_some() {
            l.launcher = Launcher::Torchrun;
            l.rank = need("RANK")? as usize;
            l.world = need("WORLD_SIZE")? as usize;
            if l.world > 1 {
                l.local_rank = need("LOCAL_RANK")? as usize;
                l.master_addr = var("MASTER_ADDR").ok_or_else(|| {
                    Error::config("MASTER_ADDR", "not set (needed for a multi-process run)")
                })?;
                l.master_port = port(0).and_then(|p| match p {
                    0 => Err(Error::config(
                        "MASTER_PORT",
                        "not set (needed for a multi-process run)",
                    )),
                    p => Ok(p),
                })?;
            } else {
                l.local_rank = num("LOCAL_RANK")?.unwrap_or(0) as usize;
                // A launched group of one (a named `run.dist_backend`) meets torchrun's agent
                // store where MASTER_ADDR:MASTER_PORT say, as a larger world does.
                if let Some(addr) = var("MASTER_ADDR") {
                    l.master_addr = addr;
                }
                l.master_port = port(l.master_port)?;
            }
            l.agent_store = var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
            l.restart = num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0);
        } else if let Some(rank) = num("SLURM_PROCID")? {
            let world = match num("SLURM_STEP_NUM_TASKS")? {
                Some(n) => n,
                None => need("SLURM_NTASKS")?,
            };
            l.launcher = Launcher::Slurm;
            l.rank = rank as usize;
            l.world = world as usize;
            l.local_rank = num("SLURM_LOCALID")?.unwrap_or(0) as usize;
            if l.world > 1 {
                l.master_addr = match var("MASTER_ADDR") {
                    Some(a) => a,
                    None => {
                        let (key, list) = ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"]
                            .into_iter()
                            .find_map(|k| var(k).map(|v| (k, v)))
                            .ok_or_else(|| {
                                Error::config(
                                    "MASTER_ADDR",
                                    "not set, and no SLURM_JOB_NODELIST to take the first host from",
                                )
                            })?;
                        first_host(&list).ok_or_else(|| {
                            Error::config(key, format!("cannot read a host name from `{list}`"))
                        })?
                    }
                };
                let job_port =
                    num("SLURM_JOB_ID")?.map_or(DEFAULT_PORT, |id| 15000 + (id % 20000) as u16);
                l.master_port = port(job_port)?;
            }
        }
        if l.world == 0 || l.rank >= l.world {
            return Err(Error::config(
                match l.launcher {
                    Launcher::Slurm => "SLURM_PROCID",
                    _ => "RANK",
                },
                format!("rank {} is not in a world of {}", l.rank, l.world),
            ));
        }
        Ok(l)
    }

    /// Whether more than one process takes part.
    pub fn is_distributed(&self) -> bool {
        self.world > 1
    }
}

/// The first host of a SLURM node list: `gpu[003-004,010],cpu1` -> `gpu003`, `a1,a2` -> `a1`,
/// `rack[2-3]-n[1-4]` -> `rack2-n1`.
pub fn first_host(list: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                // The first element of the bracket: digits up to '-', ',' or ']'.
                let mut first = String::new();
                let mut in_first = true;
                for c in chars.by_ref() {
                    match c {
                        ']' => break,
                        '-' | ',' => in_first = false,
                        c if in_first => first.push(c),
                        _ => {}
                    }
                }
                if first.is_empty() {
                    return None;
                }
                out.push_str(&first);
            }
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch> {
        let m: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn no_launcher_is_one_process() {
        let l = launch(&[]).unwrap();
        assert_eq!(l, Launch::single());
        assert!(!l.is_distributed());
    }

    #[test]
    fn torchrun_with_agent_store() {
        let l = launch(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "16"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
        ])
        .unwrap();
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert_eq!((l.rank, l.world, l.local_rank), (5, 16, 1));
        assert_eq!((l.master_addr.as_str(), l.master_port), ("node7", 29400));
        assert!(l.agent_store);
        assert_eq!(l.restart, 2);
    }

    /// `torchrun --nproc-per-node 1` with a named backend: the group of one connects to the
    /// agent's store at MASTER_ADDR:MASTER_PORT (it waited for the default port until the
    /// collective timeout).
    #[test]
    fn torchrun_group_of_one_meets_the_agent_store() {
        let l = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "10.1.2.3"),
            ("MASTER_PORT", "29733"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap();
        assert_eq!((l.launcher, l.world), (Launcher::Torchrun, 1));
        assert_eq!((l.master_addr.as_str(), l.master_port), ("10.1.2.3", 29733));
        assert!(l.agent_store);
        let l = launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap();
        assert_eq!((l.master_addr.as_str(), l.master_port), ("127.0.0.1", DEFAULT_PORT));
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        let err = |v: &[(&str, &str)]| launch(v).unwrap_err().to_string();
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]);
        assert!(e.contains("MASTER_ADDR"), "{e}");
        let e = err(&[("RANK", "x"), ("WORLD_SIZE", "2")]);
        assert!(e.contains("`RANK`") && e.contains("`x`"), "{e}");
        let e = err(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]);
        assert!(e.contains("rank 2 is not in a world of 2"), "{e}");
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ]);
        assert!(e.contains("MASTER_PORT"), "{e}");
    }

    #[test]
    fn slurm_takes_the_first_node_and_a_job_port() {
        let l = launch(&[
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_STEP_NUM_TASKS", "12"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[003-004,010],cpu1"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap();
        assert_eq!(l.launcher, Launcher::Slurm);
        assert_eq!((l.rank, l.world, l.local_rank), (9, 12, 1));
        assert_eq!(l.master_addr, "gpu003");
        assert_eq!(l.master_port, 15000 + (123456 % 20000) as u16);
        assert!(!l.agent_store);
        let l = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "n1,n2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "4000"),
        ])
        .unwrap();
        assert_eq!((l.master_addr.as_str(), l.master_port), ("10.0.0.1", 4000));
        // One task: no rendezvous needed.
        let l = launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap();
        assert!(!l.is_distributed());
    }

    #[test]
    fn node_lists() {
        assert_eq!(first_host("gpu[003-004,010]").as_deref(), Some("gpu003"));
        assert_eq!(first_host("a1,a2").as_deref(), Some("a1"));
        assert_eq!(first_host("rack[2-3]-n[1-4],x").as_deref(), Some("rack2-n1"));
        assert_eq!(first_host("node[7]").as_deref(), Some("node7"));
        assert_eq!(first_host("").as_deref(), None);
        assert_eq!(first_host("n[]").as_deref(), None);
    }
}
