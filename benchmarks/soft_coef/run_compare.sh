#!/usr/bin/env bash
# soft-coef optimisers side by side through the common harness (`edgeprune compare`).
#
#   benchmarks/soft_coef/run_compare.sh autoencoder         # Fashion-MNIST autoencoder, 50% of parameters removed
#   benchmarks/soft_coef/run_compare.sh autoencoder-sparse  # the same dense models at 90% (after the first)
#   benchmarks/soft_coef/run_compare.sh resnet        # ResNet-style CNN, MACs removed
#
# One `edgeprune compare` process per seed (the host has 2 cores; the seeds run side by side, niced),
# each into <out>/cache/parts/seedN; then one `edgeprune compare --resume --finished-only` over the
# merged rows writes <out>/results.{json,csv}, table.md and README.md (nothing is retrained by it).
# No fine-tuning (--finetune-epochs 0): the coefficients alone are compared, as in the paper; the
# harness's "before FT" and final metric are then the same number.
set -euo pipefail
which=${1:?usage: run_compare.sh autoencoder|resnet}
seeds=${SEEDS:-0 1 2}
case $which in
  autoencoder|autoencoder-sparse)
    out=benchmarks/soft_coef/compare-$which
    common=(--dataset fashion-mnist --model autoencoder --epochs 2 --lr 0.2 --train-limit "${TRAIN_LIMIT:-0}"
            --method-options '{"soft-coef": {"constraint": "params", "val_samples": 500}}')
    if [ "$which" = autoencoder ]; then
      # 50% of the parameters removed: every optimiser and baseline, with and without the floor
      # (cheap rows first: a run cut off early still has the baselines and the gradient method)
      common+=(--levels 0.5)
      methods='soft-coef[optimizer=uniform],soft-coef[optimizer=random],soft-coef[optimizer=l1prop],soft-coef[optimizer=gradient],soft-coef[optimizer=grid,grid_step=0.1],soft-coef[optimizer=grid,grid_step=0.05,max_evals=5000],soft-coef[optimizer=gradient,floor=0],soft-coef[optimizer=grid,grid_step=0.1,floor=0]'
    else
      # 90% removed, where a floor can bind; reuses the dense models of the 50% run (same dense fingerprint)
      common+=(--levels 0.9)
      methods='soft-coef[optimizer=uniform],soft-coef[optimizer=gradient],soft-coef[optimizer=gradient,floor=0],soft-coef[optimizer=grid,grid_step=0.1],soft-coef[optimizer=grid,grid_step=0.1,floor=0],soft-coef[optimizer=grid,grid_step=0.05,max_evals=5000]'
      for s in $seeds; do
        src=benchmarks/soft_coef/compare-autoencoder/cache/parts/seed$s/cache
        mkdir -p "$out/cache/parts/seed$s/cache"
        if [ -f "$src/dense-seed$s.pt" ] && [ ! -f "$out/cache/parts/seed$s/cache/rows.jsonl" ]; then
          grep '"method": "dense"' "$src/rows.jsonl" > "$out/cache/parts/seed$s/cache/rows.jsonl"
          cp "$src/dense-seed$s.pt" "$out/cache/parts/seed$s/cache/"
        fi
      done
    fi
    ;;
  resnet)
    out=benchmarks/soft_coef/compare-resnet
    common=(--dataset fashion-mnist --model resnet --levels 0.5 --epochs 2 --lr 0.05
            --train-limit "${TRAIN_LIMIT:-3000}"
            --method-options '{"soft-coef": {"constraint": "macs", "val_samples": 200, "bn_calibration": 512}}')
    methods='soft-coef[optimizer=uniform],soft-coef[optimizer=random],soft-coef[optimizer=l1prop],soft-coef[optimizer=gradient,iters=4]'
    ;;
  *) echo "unknown benchmark $which (autoencoder, autoencoder-sparse or resnet)" >&2; exit 2 ;;
esac
common+=(--finetune-epochs 0 --method-epochs 0 --epoch-budget equal-finetune --no-latency --methods "$methods")
mkdir -p "$out/cache/parts"
echo "*" > "$out/cache/.gitignore"  # per-seed runs, logs, checkpoints: not committed
pids=()
for s in $seeds; do
  nice -n 5 edgeprune compare "${common[@]}" --seeds "$s" --out "$out/cache/parts/seed$s" --resume \
    > "$out/cache/parts/seed$s.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
# merge: the rows and dense checkpoints of every seed into <out>/cache, then tabulate them
: > "$out/cache/rows.jsonl"
for s in $seeds; do
  cat "$out/cache/parts/seed$s/cache/rows.jsonl" >> "$out/cache/rows.jsonl"
  cp "$out/cache/parts/seed$s/cache/dense-seed$s.pt" "$out/cache/"
done
edgeprune compare "${common[@]}" --seeds "$(echo $seeds | tr ' ' ,)" --out "$out" --resume --finished-only
exit $status
