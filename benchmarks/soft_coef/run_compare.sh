#!/usr/bin/env bash
# soft-coef optimisers side by side through the common harness (`edgeprune compare`).
#
#   benchmarks/soft_coef/run_compare.sh autoencoder   # Fashion-MNIST autoencoder, parameters removed
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
  autoencoder)
    out=benchmarks/soft_coef/compare-autoencoder
    common=(--dataset fashion-mnist --model autoencoder --levels 0.5,0.9 --epochs 4 --lr 0.2
            --train-limit "${TRAIN_LIMIT:-0}"
            --method-options '{"soft-coef": {"constraint": "params", "val_samples": 500}}')
    methods='soft-coef[optimizer=gradient],soft-coef[optimizer=grid,grid_step=0.05,max_evals=5000],soft-coef[optimizer=grid,grid_step=0.1],soft-coef[optimizer=uniform],soft-coef[optimizer=random],soft-coef[optimizer=l1prop],soft-coef[optimizer=gradient,floor=0],soft-coef[optimizer=grid,grid_step=0.05,max_evals=5000,floor=0]'
    ;;
  resnet)
    out=benchmarks/soft_coef/compare-resnet
    common=(--dataset fashion-mnist --model resnet --levels 0.5 --epochs 2 --lr 0.05
            --train-limit "${TRAIN_LIMIT:-3000}"
            --method-options '{"soft-coef": {"constraint": "macs", "val_samples": 200, "bn_calibration": 512}}')
    methods='soft-coef[optimizer=gradient,iters=4],soft-coef[optimizer=uniform],soft-coef[optimizer=random],soft-coef[optimizer=l1prop]'
    ;;
  *) echo "unknown benchmark $which (autoencoder or resnet)" >&2; exit 2 ;;
esac
common+=(--finetune-epochs 0 --method-epochs 0 --epoch-budget equal-finetune --no-latency --methods "$methods")
mkdir -p "$out/cache/parts"
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
