//! CPU accounting from /proc (Linux): how much of the machine's cores each process used
//! during a phase.

use super::*;

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process in seconds.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the command.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU use of named processes between `start` and `stop`, in cores (1.0 = one core busy).
pub(crate) struct CpuMeter {
    pids: Vec<(String, String)>,
    before: Vec<Option<f64>>,
    machine: Option<(f64, f64)>,
    at: Instant,
}

impl CpuMeter {
    pub(crate) fn start(pids: Vec<(String, String)>) -> CpuMeter {
        let before = pids.iter().map(|(_, pid)| cpu_seconds(pid)).collect();
        CpuMeter {
            pids,
            before,
            machine: machine_jiffies(),
            at: Instant::now(),
        }
    }

    pub(crate) fn stop(self) -> Value {
        let wall = self.at.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        for ((name, pid), before) in self.pids.iter().zip(self.before) {
            let used = match (before, cpu_seconds(pid)) {
                (Some(b), Some(a)) => json!(r3((a - b) / wall)),
                _ => Value::Null,
            };
            out.insert(name.clone(), used);
        }
        if let (Some((b0, t0)), Some((b1, t1))) = (self.machine, machine_jiffies()) {
            if t1 > t0 {
                out.insert(
                    "machine_busy_fraction".into(),
                    json!(r3((b1 - b0) / (t1 - t0))),
                );
            }
        }
        Value::Object(out)
    }
}

pub(crate) fn fmt_cpu(cpu: &Value) -> String {
    cpu.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| match v.as_f64() {
                    Some(x) if k == "machine_busy_fraction" => format!("machine {:.0}%", x * 100.0),
                    Some(x) => format!("{k} {x:.2}"),
                    None => format!("{k} ?"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
