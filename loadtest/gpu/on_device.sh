#!/usr/bin/env bash
# The one command of every device call of the GPU check (docs/BENCHMARKS.md, "GPU (prepared, not yet
# run)"). Each call carries .gpu-carry/manifest.json and one part; this keeps the part under
# $RELEVANCE_GPU_DIR (the machine's /tmp lives while it stays warm between consecutive calls) and, once
# the last part is in, checks and extracts the payload, installs its wheels and runs the check into $OUT.
set -uo pipefail
into=${RELEVANCE_GPU_DIR:-/tmp/relevance-gpu}
python=${PYTHON:-python3}
"$python" -m core.carry receive --carried .gpu-carry --into "$into"
status=$?
if [ "$status" -eq 3 ]; then exit 0; fi   # more parts to come: the next call carries the next one
if [ "$status" -ne 0 ]; then exit "$status"; fi
if [ ! -f "$into/site/.installed" ]; then
  "$python" -m core.carry install --into "$into" ${CARRY_INSTALL_ARGS:-} || exit 1
  touch "$into/site/.installed"
fi
export PYTHONPATH="$into/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" -m loadtest.gpu.run --payload "$into/payload" --out "${OUT:-$into/results}" "$@"
