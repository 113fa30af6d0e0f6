#!/bin/sh
# Tether against a direct connection, nginx and HAProxy, side by side:
#
#     bench/compare.sh                    # 3 rounds, 8 s per run
#     bench/compare.sh --runs 5 --seconds 10 --markdown /tmp/table.md
#
# Installs nginx and HAProxy from the system's packages if they are missing
# (bench/proxies/install.sh), builds the gateway and the benchmarks, then
# runs bench/src/bin/compare.rs with the arguments given here.
set -eu
cd "$(dirname "$0")/.."
sh bench/proxies/install.sh
cargo build --release -p tether -p tether-bench
exec target/release/compare "$@"
