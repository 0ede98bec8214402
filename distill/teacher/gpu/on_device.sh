#!/usr/bin/env bash
# The one command of every device call of the teacher GPU recipe (docs/TEACHER.md, "The GPU recipe").
# Each call carries $CARRY_DIR/manifest.json and one part; the parts are kept under $RELEVANCE_GPU_DIR
# (the machine's /tmp lives while it stays warm between consecutive calls) and, once the last one is
# in, the payload is checked and extracted, its wheels installed and the run writes into $OUT.
# DRY_RUN=1 (make teacher-gpu-dry-run, on the CPU machine): the same receive, the wheels installed for
# the GPU's python 3.12 (so the set is checked), then the run with --dry-run on this interpreter's own
# packages (cp312 wheels do not import under another python).
set -uo pipefail
carried=${CARRY_DIR:-.teacher-gpu-carry}
into=${RELEVANCE_GPU_DIR:-/tmp/relevance-teacher-gpu}
python=${PYTHON:-python3}
"$python" -m core.carry receive --carried "$carried" --into "$into"
status=$?
if [ "$status" -eq 3 ]; then exit 0; fi   # more parts to come: the next call carries the next one
if [ "$status" -ne 0 ]; then exit "$status"; fi
if [ ! -f "$into/site/.installed" ]; then
  "$python" -m core.carry install --into "$into" ${DRY_RUN:+--cross} || exit 1
  touch "$into/site/.installed"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
run=(-m distill.teacher.gpu.run --payload "$into/payload" --out "${OUT:-$into/results}" --work "$into/work")
if [ -n "${DRY_RUN:-}" ]; then exec "$python" "${run[@]}" --dry-run; fi
export PYTHONPATH="$into/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "${run[@]}"
