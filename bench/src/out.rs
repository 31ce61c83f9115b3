//! A benchmark's output: human tables go to stdout as they are printed; JSON lines (common fields
//! plus one record each) are appended to `--json`, or printed after the tables without it. A
//! program that keeps one JSON document for the run instead rewrites it with [`write_doc`].

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::sys::load_1m;

pub struct Out {
    file: Option<std::fs::File>,
    pending: Vec<String>,
    base: Value,
    with_load: bool,
}

impl Out {
    /// Lines carry the fields of `base`, `unix_time` and, when `with_load`, the machine's `load_1m`.
    pub fn new(json_path: Option<&Path>, base: Value, with_load: bool) -> Result<Self> {
        let file = match json_path {
            Some(path) => {
                create_parent(path)?;
                Some(
                    std::fs::File::options()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )
            }
            None => None,
        };
        Ok(Out {
            file,
            pending: Vec::new(),
            base,
            with_load,
        })
    }

    /// One JSON line: the common fields plus `record`.
    pub fn emit(&mut self, record: Value) -> Result<()> {
        let mut line = self.base.clone();
        line["unix_time"] = json!(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
        if self.with_load {
            line["load_1m"] = json!(load_1m());
        }
        if let (Some(obj), Value::Object(rec)) = (line.as_object_mut(), record) {
            obj.extend(rec);
        }
        let text = serde_json::to_string(&line)?;
        match &mut self.file {
            Some(f) => {
                writeln!(f, "{text}")?;
                f.flush()?;
            }
            None => self.pending.push(text),
        }
        Ok(())
    }

    /// Prints the run's header line and writes its start record (command, torua binary, cores,
    /// command line).
    pub fn start(
        &mut self,
        what: &str,
        command: &str,
        label: &str,
        torua_bin: Option<String>,
    ) -> Result<()> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        println!(
            "# {what} benchmarks: {command} ({label}), torua {}, {cores} cores",
            torua_bin.as_deref().unwrap_or("-")
        );
        self.emit(json!({
            "bench": "meta", "kind": "start", "command": command, "torua_bin": torua_bin,
            "cores": cores, "argv": std::env::args().collect::<Vec<_>>(),
        }))
    }

    /// Prints the JSON lines that had no file.
    pub fn finish(self) {
        if !self.pending.is_empty() {
            println!("\n# JSON lines");
            for line in self.pending {
                println!("{line}");
            }
        }
    }
}

/// The torua binary a run starts ([`torua_testkit::torua_bin`]), as [`Out::start`] names it; an
/// error when it does not exist.
pub fn existing_torua_bin() -> Result<String> {
    let bin = torua_testkit::torua_bin();
    if !bin.is_file() {
        bail!("torua binary {} does not exist", bin.display());
    }
    Ok(bin.display().to_string())
}

/// One benchmark of a program with subcommands: it measures with the arguments and writes its
/// records to the output.
pub type Bench<A> = fn(&A, &mut Out) -> Result<Vec<Value>>;

/// Runs the benchmark `command` names, or every one of `benches` for `all` (with the arguments
/// `common` makes: only the flags every benchmark shares carry over), then [`Out::finish`]es.
pub fn dispatch<A>(
    command: &str,
    args: &A,
    common: impl FnOnce() -> A,
    benches: &[(&str, Bench<A>)],
    mut out: Out,
    usage: &str,
) -> Result<()> {
    if command == "all" {
        let common = common();
        for (_, bench) in benches {
            bench(&common, &mut out)?;
        }
    } else {
        match benches.iter().find(|(name, _)| *name == command) {
            Some((_, bench)) => bench(args, &mut out)?,
            None => bail!("unknown benchmark {command:?}\n{usage}"),
        };
    }
    out.finish();
    Ok(())
}

/// Creates the folder `path` is in (when it names one).
fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(())
}

/// Writes `doc` to `path`, pretty-printed, in place of what the file held; nothing without a path.
pub fn write_doc(path: Option<&Path>, doc: &Value) -> Result<()> {
    if let Some(path) = path {
        create_parent(path)?;
        std::fs::write(path, serde_json::to_string_pretty(doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
