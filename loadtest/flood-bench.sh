#!/usr/bin/env bash
# The `flood` scenario against a fresh gateway per run, alternating with a
# control run (the same well-behaved group and phases, no abusive clients:
# how far the two phases differ on a quiet machine); prints every run and
# the medians.
#
#   loadtest/flood-bench.sh [RELEASE_DIR] [ROUNDS] [-- extra loadtest options]
#
# RELEASE_DIR holds `tether` and `loadtest` (cargo build --release -p tether
# -p tether-loadtest; default target/release). The gateway runs on its
# default limits; only its ports (18080/18081/19090, clear of other runs)
# and an admin token (for /metrics) are set. Raw output goes to $FLOOD_OUT
# (default: a temp dir).
set -euo pipefail
dir=${1:-target/release}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
out=${FLOOD_OUT:-$(mktemp -d)}
echo "raw output in $out"
cat >"$out/gateway.toml" <<'EOF'
# Default limits; only the ports and an admin token (for /metrics) differ.
[client]
listen = "127.0.0.1:18080"
[runners]
listen = "127.0.0.1:18081"
[admin]
listen = "127.0.0.1:19090"
token = "flood-bench"
EOF

run() { # label round [options]
  local label=$1 r=$2
  shift 2
  "$dir/tether" --config "$out/gateway.toml" >"$out/$label-$r.gateway.log" 2>&1 &
  local gw=$!
  sleep 0.5
  local rc=0
  "$dir/loadtest" --scenario flood --url ws://127.0.0.1:18080 \
    --runner-url ws://127.0.0.1:18081 \
    --flood 'admin_url="http://127.0.0.1:19090"' --flood 'admin_token="flood-bench"' \
    --gateway-pid "$gw" --quiet --json "$out/$label-$r.json" "$@" \
    >"$out/$label-$r.txt" 2>&1 || rc=$?
  kill -TERM "$gw"
  wait "$gw" || true
  echo "round $r $label: exit $rc"
  sleep 2
}

quiet=(--flood storm_clients=0 --flood idle_clients=0 --flood silent_clients=0
  --flood spam_clients=0)
for r in $(seq 1 "$rounds"); do
  run control "$r" "${quiet[@]}" "$@"
  run flood "$r" "$@"
done

python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
def load(label):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{label}-*.json"))]
def rt(r, phase, q):
    p = r["flood"][phase]["round_trip_us"]
    return p[q] if p else None
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
for label in ["control", "flood"]:
    runs = load(label)
    print(f"\n{label}: {len(runs)} runs")
    print("| run | quiet p50 / p99 µs | under flood p50 / p99 µs | p50 × | p99 × | newcomer connect p99 quiet → flood µs | newcomers refused |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for i, r in enumerate(runs, 1):
        f = r["flood"]
        nc = lambda ph: (f[ph]["newcomer_connect_us"] or {}).get("p99")
        refused = sum(f["baseline"]["newcomer_refused"].values()) + sum(f["under_flood"]["newcomer_refused"].values())
        row = [rt(r, "baseline", "p50"), rt(r, "baseline", "p99"), rt(r, "under_flood", "p50"),
               rt(r, "under_flood", "p99"), f["p50_ratio"], f["p99_ratio"], nc("baseline"), nc("under_flood"), refused]
        rows.append(row)
        print(f"| {i} | {row[0]} / {row[1]} | {row[2]} / {row[3]} | {row[4]} | {row[5]} | {row[6]} → {row[7]} | {row[8]} |")
    m = [med([row[k] for row in rows]) for k in range(9)]
    print(f"| median | {m[0]} / {m[1]} | {m[2]} / {m[3]} | {m[4]} | {m[5]} | {m[6]} → {m[7]} | {m[8]} |")
    if label == "flood":
        print("\nabusive groups (median of runs): attempts, upgraded/connected, refused by status, peak open")
        for g in ["storm", "idle", "silent", "spam"]:
            gs = [next(x for x in r["flood"]["groups"] if x["name"] == g) for r in runs]
            statuses = sorted({s for x in gs for s in x["refused"]})
            ref = ", ".join(f"{s} ×{med([x['refused'].get(s, 0) for x in gs]):.0f}" for s in statuses) or "none"
            print(f"  {g}: {med([x['attempts'] for x in gs]):.0f} attempts, {med([x['opened'] for x in gs]):.0f} in, "
                  f"refused {ref}, failed {med([x['failed'] for x in gs]):.0f}, "
                  f"closed by server {med([x['closed_by_server'] for x in gs]):.0f}, peak open {med([x['peak_open'] for x in gs]):.0f}, "
                  f"messages {med([x['messages_sent'] for x in gs]):.0f} sent / {med([x['messages_received'] for x in gs]):.0f} echoed")
        keys = sorted({k for r in runs for k in r["flood"]["gateway_counters"] if k.startswith("tether_connections_refused_total")})
        print("gateway /metrics, refusals over the flood phase (median):")
        for k in keys:
            print(f"  {k}: {med([r['flood']['gateway_counters'].get(k) for r in runs]):.0f}")
        for k in ["tether_client_connections", "tether_handshakes_in_progress"]:
            print(f"  peak {k}: {med([r['flood']['gateway_gauge_peaks'].get(k) for r in runs])}")
        cpu = lambda ph, k: med([(r["flood"][ph]["cpu"] or {}).get(k) for r in runs])
        print("CPU cores quiet → flood (median): " + ", ".join(
            f"{k} {cpu('baseline', k)} → {cpu('under_flood', k)}" for k in ["gateway", "runners", "clients", "flood"]))
PY
