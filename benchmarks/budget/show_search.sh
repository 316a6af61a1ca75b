#!/usr/bin/env bash
# The issue's show-run: `edgeprune build --target rpi4 --search` on Fashion-MNIST with a latency budget the dense
# model fails (0.8 ms p50 instead of the profile's 10 ms, via --budget), least-pruning objective.
# Without --force: rerun on the same OUTPUT_DIR it resumes every stage that is current (dense model included).
# Writes transcript.txt (the build's console) and summary.md (command, date, machine load, git revision, rounds)
# next to this script. Usage: [FINETUNE_EPOCHS=N] bash benchmarks/budget/show_search.sh [OUTPUT_DIR]
set -u
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs-budget-show}"
cmd=(edgeprune build --target rpi4 --search --objective least-pruning --budget latency_p50_ms=0.8
     --dataset fashion-mnist --data-limit 10000 --model resnet --method l1 --epochs 3 --finetune-epochs "${FINETUNE_EPOCHS:-1}"
     --output "$out" --name rpi4-resnet-search)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git revision: $(git -C "$here" rev-parse --short HEAD)"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc --all) cores, shared with other jobs"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: ${cmd[*]}"
} > "$here/header.txt"
start=$(date +%s)
"${cmd[@]}" > "$here/transcript.txt" 2>&1
rc=$?
{
  cat "$here/header.txt"
  echo "exit code: $rc"
  echo "wall time: $(( $(date +%s) - start )) s"
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$here/run_info.txt"
rm -f "$here/header.txt"
cp "$out/rpi4-resnet-search/search.json" "$here/search.json" 2>/dev/null
exit $rc
