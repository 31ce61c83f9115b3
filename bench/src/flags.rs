//! The benchmark programs' command line: an optional subcommand, then `--flag value` pairs, each
//! value parsed with an error that names the flag and what it expects.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{anyhow, Context, Result};

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
