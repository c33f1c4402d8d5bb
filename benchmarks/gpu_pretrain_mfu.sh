#!/usr/bin/env bash
# One device call: MFU of the DINOv2 pretraining step on one GPU (the target: >= 40 % for ViT-B/16).
#   bash benchmarks/gpu_pretrain_mfu.sh <out dir> <tag>
# ViT-B/16 at batch 128 in four variants (trunks or trunks + loss terms compiled; fp32 or bf16 compute
# weights), a kernel profile of the fastest configuration, then ViT-S/16 and lightly's reference step.
# Each part has its own time limit and writes its result files as it goes, so a cut-short run keeps them.
set -u
out=${1:-benchmarks/results}
tag=${2:-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$out/gpu_${tag}_device.txt"
run() { local limit=$1; shift; timeout "$limit" python "$@" 2>>"$out/gpu_${tag}_stderr.log" || echo "exit $? (limit ${limit}s): $*"; }
run 330 benchmarks/pretrain_throughput.py --models vit_base_patch16_224 --batch-override 128 --impl ours \
  --param-dtype bfloat16,float32 --compile full,trunks --data-batches 0 --out "$out/pretrain_throughput_${tag}_vitb"
run 90 benchmarks/pretrain_profile.py --model vit_base_patch16_224 --batch 128 --compile full --param-dtype bfloat16 \
  --out-dir "$out" --tag "${tag}_vitb_full_bf16"
run 120 benchmarks/pretrain_throughput.py --models vit_small_patch16_224 --batch-override 256 --impl ours,reference \
  --param-dtype bfloat16 --compile full --data-batches 0 --out "$out/pretrain_throughput_${tag}_vits"
tail -c 3000 "$out/gpu_${tag}_stderr.log"
