#!/usr/bin/env bash
# A/B comparison of two builds of the benchmarks (e.g. before and after a
# refactor), alternating A and B so that the machine's drift hits both
# alike; prints each figure's median of the rounds side by side.
#
#   bench/ab.sh A_RELEASE_DIR B_RELEASE_DIR [ROUNDS]
#
# Each *_RELEASE_DIR is a target/release folder holding echo_rtt,
# idle_memory, hibernate and micro (cargo build --release -p tether-bench
# --bins in each checkout). Raw output goes to $AB_OUT (default: a temp dir).
set -euo pipefail
a=$1 b=$2 rounds=${3:-3}
out=${AB_OUT:-$(mktemp -d)}
echo "raw output in $out"

run() { # label dir round
  local label=$1 dir=$2 r=$3
  "$dir/echo_rtt" --clients 50 --seconds 5 >"$out/$label-echo-$r.txt" 2>&1
  "$dir/idle_memory" --connections 15000 >"$out/$label-idle-$r.txt" 2>&1
  "$dir/hibernate" --connections 15000 --rooms 1500 --idle-seconds 5 --wakes 100 \
    >"$out/$label-hibernate-$r.txt" 2>&1
  "$dir/micro" >"$out/$label-micro-$r.txt" 2>&1
}

for r in $(seq 1 "$rounds"); do
  echo "round $r: A"; run A "$a" "$r"
  echo "round $r: B"; run B "$b" "$r"
done

python3 - "$out" "$rounds" <<'PY'
import glob, re, statistics, sys
out, rounds = sys.argv[1], sys.argv[2]
def first(label, kind, pattern):
    vals = []
    for f in sorted(glob.glob(f"{out}/{label}-{kind}-*.txt")):
        m = re.search(pattern, open(f).read())
        if m:
            vals.append(float(m.group(1).replace(",", "")))
    return statistics.median(vals) if vals else None
figures = [
    ("echo round trips/s", "echo", r"round trips/s: ([\d.,]+)"),
    ("echo gateway CPU µs per round trip", "echo", r"= ([\d.]+) µs per round trip"),
    ("idle: RSS bytes per connection", "idle", r"per idle connection: ([\d.]+) bytes"),
    ("hibernated: RSS bytes per socket", "hibernate", r"per hibernated socket: ([\d.]+) bytes"),
    ("hibernated: live heap bytes per socket", "hibernate", r"live heap growth per hibernated socket: ([\d.]+)"),
]
rows = set()
for f in glob.glob(f"{out}/A-micro-*.txt"):
    rows |= {l.split(":")[0].strip() for l in open(f) if "ns/msg" in l}
for r in sorted(rows):
    figures.append((f"micro: {r} (ns/msg)", "micro", re.escape(r) + r"\s*:\s*([\d.]+) ns/msg"))
print(f"\n| figure (median of {rounds}) | A | B | B/A |\n|---|---|---|---|")
for name, kind, pattern in figures:
    a, b = first("A", kind, pattern), first("B", kind, pattern)
    ratio = f"{b / a:.2f}" if a and b else "-"
    print(f"| {name} | {a} | {b} | {ratio} |")
PY
