#!/usr/bin/env bash
# The benchmark suite in one command, on a GPU machine (see benchmarks/run_suite.py):
#   bash benchmarks/run_suite.sh                                   # every stage
#   STAGES="layer_norm softmax" bash benchmarks/run_suite.sh       # some stages
#   bash benchmarks/run_suite.sh --smoke                           # CPU smoke run of every code path
# Output: $OUT if set, else benchmarks/results/: meta.json, <stage>.csv, suite.log.
# Peers: each wheel in .whl/ (git-ignored; carry it to the GPU machine) is installed without network
# into its own folder under $SUITE_PEERS_DIR (default /tmp/site), since two triformer versions cannot
# share one folder; a wheel that fails to install only makes that peer "unavailable". Fetch them once
# where PyPI is reachable (pure-Python wheels, < 1 MB together):
#   mkdir -p .whl && for req in liger-kernel==0.8.5 triformer==3.0.7 triformer==2.1.4; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform any -d .whl "$req"; done
# (triformer 3.x has LayerNorm and softmax but no Linear layer; 2.1.4 has TritonLinear: see peers.py.)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore
export SUITE_PEERS_DIR=${SUITE_PEERS_DIR:-/tmp/site}
for whl in .whl/*.whl; do
  [ -e "$whl" ] || { echo "no peer wheels in .whl/: peers will be reported unavailable"; break; }
  dest=$SUITE_PEERS_DIR/$(basename "$whl" .whl)
  [ -d "$dest" ] && continue
  # pure-Python wheels: if pip is missing, unpacking the zip is an install
  python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --target "$dest" "$whl" \
    || python3 -m zipfile -e "$whl" "$dest" || echo "could not install $whl"
done
python3 benchmarks/run_suite.py --out "$out" "$@" 2>&1 | tee "$out/suite.log"
exit "${PIPESTATUS[0]}"
