//! The benchmark programs' command line: an optional subcommand, then `--flag value` pairs, each
//! value parsed with an error that names the flag and what it expects; the flags every program
//! takes ([`Common`]) and those of a program that generates a graph from a seed ([`Generated`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use torua_testkit::ClusterOptions;

/// The program's arguments after its name, read one flag at a time; `-h` or `--help` prints
/// the usage and exits.
pub struct Flags {
    args: std::iter::Skip<std::env::Args>,
    usage: &'static str,
}

impl Flags {
    pub fn from_env(usage: &'static str) -> Self {
        Flags {
            args: std::env::args().skip(1),
            usage,
        }
    }

    /// The subcommand (the first argument). Without one the usage is printed and the program
    /// exits with 2; with `-h` or `--help`, with 0.
    pub fn command(&mut self) -> String {
        let cmd = self.args.next().unwrap_or_default();
        if cmd.is_empty() || cmd == "-h" || cmd == "--help" {
            println!("{}", self.usage);
            std::process::exit(if cmd.is_empty() { 2 } else { 0 });
        }
        cmd
    }

    /// The next flag, `None` after the last.
    pub fn next_flag(&mut self) -> Option<String> {
        let flag = self.args.next()?;
        if flag == "-h" || flag == "--help" {
            println!("{}", self.usage);
            std::process::exit(0);
        }
        Some(flag)
    }

    /// The value that follows `flag`.
    pub fn value(&mut self, flag: &str) -> Result<Value> {
        let text = self
            .args
            .next()
            .with_context(|| format!("{flag} needs a value\n{}", self.usage))?;
        Ok(Value {
            flag: flag.to_string(),
            text,
        })
    }

    /// The error for a flag the program does not take.
    pub fn unknown(&self, flag: &str) -> anyhow::Error {
        anyhow!("unknown flag {flag}\n{}", self.usage)
    }

    /// Takes `flag` and its value `v` into `common`: the last arm of a program's flags, so any
    /// other flag is [`Flags::unknown`].
    pub fn common(&self, flag: &str, v: Value, common: &mut Common) -> Result<()> {
        match flag {
            "--env" => v.set_env(&mut common.env)?,
            "--log" => common.log = v.text,
            "--label" => common.label = Some(v.text),
            "--json" => common.json = Some(PathBuf::from(v.text)),
            _ => return Err(self.unknown(flag)),
        }
        Ok(())
    }
}

/// The flags every benchmark program takes: settings for every node (`--env KEY=VALUE`,
/// repeatable) and its log level (`--log`), the run's label (`--label`) and its results file
/// (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Common {
    pub env: BTreeMap<String, String>,
    pub log: String,
    pub label: Option<String>,
    pub json: Option<PathBuf>,
}

impl Common {
    /// No settings, the nodes logging at `log`, no label, no file.
    pub fn new(log: &str) -> Self {
        Common {
            env: BTreeMap::new(),
            log: log.into(),
            label: None,
            json: None,
        }
    }

    /// Options for a cluster with these settings and log level.
    pub fn options(&self) -> ClusterOptions {
        ClusterOptions::with_env(&self.env, &self.log)
    }
}

/// The size and shape of a generated graph (`--entities`, `--relations`, `--seed`, `--skew`):
/// entities, relations between them drawn by a power law of exponent `skew` (a few entities
/// get most of the relations), all from the random numbers of `seed`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Generated {
    pub entities: usize,
    pub relations: usize,
    pub seed: u64,
    pub skew: f64,
}

impl Default for Generated {
    /// 100 000 entities, 1 000 000 relations, seed 42, skew 0.6.
    fn default() -> Self {
        Generated {
            entities: 100_000,
            relations: 1_000_000,
            seed: 42,
            skew: 0.6,
        }
    }
}

impl Generated {
    /// Takes `flag` if it is one of the graph's flags (with its value `v`); false for any other.
    pub fn take(&mut self, flag: &str, v: &Value) -> Result<bool> {
        match flag {
            "--entities" => v.set(&mut self.entities, "a count"),
            "--relations" => v.set(&mut self.relations, "a count"),
            "--seed" => v.set(&mut self.seed, "an integer"),
            "--skew" => v.set(&mut self.skew, "an exponent in [0, 1)"),
            _ => Ok(false),
        }
    }

    /// How a label names the graph: "100000 entities, 1000000 relations".
    pub fn describe(&self) -> String {
        format!("{} entities, {} relations", self.entities, self.relations)
    }
}

/// A flag's value.
pub struct Value {
    flag: String,
    pub text: String,
}

impl Value {
    /// The message for a value that is not `what` the flag expects.
    pub fn bad(&self, what: &str) -> String {
        format!("{} {:?}: expected {what}", self.flag, self.text)
    }

    /// The value as a `T`.
    pub fn parse<T: FromStr>(&self, what: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.text.parse().with_context(|| self.bad(what))
    }

    /// Parses the value into `field` (see [`Value::parse`]); true: the flag is taken.
    pub fn set<T: FromStr>(&self, field: &mut T, what: &str) -> Result<bool>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        *field = self.parse(what)?;
        Ok(true)
    }

    /// A comma-separated list of `T`, e.g. `1,10,100`.
    pub fn list<T: FromStr>(&self, what: &str) -> Result<Vec<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.text
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()
            .with_context(|| self.bad(what))
    }

    /// A comma-separated list of names, trimmed, empty ones left out.
    pub fn names(&self) -> Vec<String> {
        self.text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// [`Value::names`], each one of `known` (else an error calling it `what`).
    pub fn known_names(&self, what: &str, known: &[&str]) -> Result<Vec<String>> {
        let names = self.names();
        if let Some(n) = names.iter().find(|n| !known.contains(&n.as_str())) {
            bail!(
                "{}: unknown {what} {n:?} (known: {})",
                self.flag,
                known.join(",")
            );
        }
        Ok(names)
    }

    /// A `KEY=VALUE` setting, added to `env`.
    pub fn set_env(&self, env: &mut BTreeMap<String, String>) -> Result<()> {
        let (k, v) = self
            .text
            .split_once('=')
            .with_context(|| self.bad("KEY=VALUE"))?;
        env.insert(k.to_string(), v.to_string());
        Ok(())
    }
}
