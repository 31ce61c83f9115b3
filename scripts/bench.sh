#!/usr/bin/env bash
# Runs torua's benchmarks against real `torua serve` processes and writes the results under one directory.
#
# Usage (from anywhere, after `cargo build --release --workspace --bins`, which `make bench` does):
#   scripts/bench.sh                 # every benchmark, full length (membership: about 20 minutes)
#   scripts/bench.sh membership      # only the named groups
#
# Environment:
#   CARGO_TARGET_DIR    where the binaries are (default: target); the benchmark binaries are taken from
#                       $CARGO_TARGET_DIR/release, and the torua binary next to them unless TORUA_BIN is set
#   TORUA_BIN           torua binary to benchmark (optional)
#   BENCH_OUT           results directory (default: bench/results/<UTC date-time>)
#   MINUTES             length of each false-deaths phase in minutes (default 5)
#   MEMBERSHIP_ENV      extra node settings for every membership run, e.g. "TORUA_GOSSIP_INTERVAL=100ms"
#   MEMBERSHIP_ALT_ENV  a second set of settings whose failover and false deaths are measured too
#                       (empty: skip), e.g. "TORUA_GOSSIP_INTERVAL=100ms TORUA_PHI_THRESHOLD=6"
#
# Each group writes <group>.txt (the tables, also printed) and <group>.jsonl (one JSON object per trial and
# per summary; see bench/RESULTS.md for the fields) in the results directory.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
bin_dir="$target/release"
out="${BENCH_OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
minutes="${MINUTES:-5}"
mkdir -p "$out"

need_bin() {
  if [[ ! -x "$bin_dir/$1" ]]; then
    echo "bench: $bin_dir/$1 is missing; run \`cargo build --release --workspace --bins\` (or \`make bench\`)" >&2
    exit 1
  fi
}

# `--env K=V` flags from a space-separated list of K=V.
env_flags() {
  local kv
  for kv in $1; do printf -- '--env\n%s\n' "$kv"; done
}

# ---------------------------------------------------------------------------------------------------------
# Cluster membership (issue 2): convergence, failover, false deaths. See bench/src/bin/membership_bench.rs.
bench_membership() {
  need_bin membership_bench
  if [[ -z "${TORUA_BIN:-}" ]]; then need_bin torua; fi
  local bench="$bin_dir/membership_bench" json="$out/membership.jsonl" txt="$out/membership.txt"
  local -a common alt
  mapfile -t common < <(env_flags "${MEMBERSHIP_ENV:-}")
  mapfile -t alt < <(env_flags "${MEMBERSHIP_ENV:-} ${MEMBERSHIP_ALT_ENV:-}")
  {
    "$bench" convergence --sizes 3,10,32 --trials 3 --json "$json" "${common[@]}"
    "$bench" failover --sizes 5,10 --trials 10 --json "$json" "${common[@]}"
    "$bench" false-deaths --nodes 10 --minutes "$minutes" --phases idle,busy --json "$json" "${common[@]}"
    if [[ -n "${MEMBERSHIP_ALT_ENV:-}" ]]; then
      "$bench" failover --sizes 5,10 --trials 10 --json "$json" "${alt[@]}"
      "$bench" false-deaths --nodes 10 --minutes "$minutes" --phases idle,busy --json "$json" "${alt[@]}"
    fi
  } 2>&1 | tee "$txt"
}

# ---------------------------------------------------------------------------------------------------------
# Peer transport (issue 3): QUIC round trips vs plain TCP, broadcast to 10 nodes, /cluster/health under load
# (about 3 minutes). See bench/src/bin/transport_bench.rs.
bench_transport() {
  need_bin transport_bench
  if [[ -z "${TORUA_BIN:-}" ]]; then need_bin torua; fi
  local bench="$bin_dir/transport_bench" json="$out/transport.jsonl" txt="$out/transport.txt"
  {
    "$bench" rtt --count 20000 --warmup 2000 --sizes 64,4096 --threads 0 --json "$json"
    "$bench" rtt --count 20000 --warmup 2000 --sizes 64,4096 --threads 2 --json "$json"
    "$bench" broadcast --nodes 10 --count 500 --warmup 50 --json "$json"
    "$bench" health-load --nodes 5 --concurrency 1,32 --seconds 10 --warmup-secs 2 --json "$json"
  } 2>&1 | tee "$txt"
}

# ---------------------------------------------------------------------------------------------------------
# Graph store (issue 4): ingest vs one embedded Kuzu database loaded by COPY, point reads vs an embedded lookup
# (about 40 minutes: torua's ingest slows down as shards grow, see bench/RESULTS.md). GRAPH_MAX_MINUTES caps
# each torua ingest (default 15). See bench/src/bin/graph_bench.rs.
bench_graph() {
  need_bin graph_bench
  if [[ -z "${TORUA_BIN:-}" ]]; then need_bin torua; fi
  local bench="$bin_dir/graph_bench" json="$out/graph.jsonl" txt="$out/graph.txt" cap="${GRAPH_MAX_MINUTES:-15}"
  {
    "$bench" all --entities 10000 --relations 100000 --targets copy,unwind,single,cluster --json "$json"
    "$bench" all --entities 40000 --relations 400000 --targets copy,cluster --max-minutes "$cap" --json "$json"
    "$bench" ingest --entities 100000 --relations 1000000 --targets copy,cluster --max-minutes "$cap" --json "$json"
    "$bench" statements --entities 100000 --relations 1000000 --json "$json"
  } 2>&1 | tee "$txt"
}

# Reads under write pressure: point reads (bounded and strict) while 4 writers post without pause, vs one
# embedded Kuzu reading between its writer's commits (about 3 minutes). See bench/src/bin/read_pressure_bench.rs.
bench_read_pressure() {
  need_bin read_pressure_bench
  if [[ -z "${TORUA_BIN:-}" ]]; then need_bin torua; fi
  "$bin_dir/read_pressure_bench" --entities 20000 --seconds 40 --json "$out/read_pressure.jsonl" 2>&1 \
    | tee "$out/read_pressure.txt"
}

all_groups=(membership transport graph read_pressure)
groups=("$@")
if ((${#groups[@]} == 0)); then groups=("${all_groups[@]}"); fi

echo "bench: results go to $out" >&2
for group in "${groups[@]}"; do
  if ! declare -F "bench_$group" >/dev/null; then
    echo "bench: unknown group $group (known: ${all_groups[*]})" >&2
    exit 2
  fi
  echo "bench: == $group ==" >&2
  "bench_$group"
done
echo "bench: done; results in $out (*.txt tables, *.jsonl records; summarise them in bench/RESULTS.md)" >&2
