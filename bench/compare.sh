#!/bin/sh
# Tether against a direct connection, nginx and HAProxy, side by side:
#
#     bench/compare.sh                    # 3 rounds, 8 s per run
#     bench/compare.sh --runs 5 --seconds 10 --markdown /tmp/table.md
#     bench/compare.sh --workloads echo-tls,echo-plain   # only the TLS row and its plain twin
#
# Workloads: echo-throughput and chat-fanout (loadtest, ws://), and echo-tls:
# the same echo over wss:// (Tether terminating TLS itself, nginx and
# HAProxy terminating it in front of ws_server; a CA generated per run).
#
# Installs nginx and HAProxy from the system's packages if they are missing
# (bench/proxies/install.sh), builds the gateway and the benchmarks, then
# runs bench/src/bin/compare.rs with the arguments given here.
set -eu
cd "$(dirname "$0")/.."
sh bench/proxies/install.sh
cargo build --release -p tether -p tether-bench
exec target/release/compare "$@"
