#!/usr/bin/env bash
# The full paper recipe (tiny_0230s, 224x224, bf16, 300 epochs, the paper's augmentations, AdamW, cosine,
# encoder frozen 10 epochs) on the default phantom, from scratch (no ImageNet weights: none can be
# downloaded), then the evaluation. Writes everything under OUTDIR.
#   bash benchmarks/phantom_recipe.sh OUTDIR [extra train flags...]
set -eu
OUTDIR=${1:?usage: phantom_recipe.sh OUTDIR [train flags...]}
shift
mkdir -p "$OUTDIR"
python -m msvmunet phantom --out "$OUTDIR/phantom"
python -m msvmunet train --preset synapse --data "$OUTDIR/phantom" --pretrained-encoder none \
    --output "$OUTDIR/run" "$@"
python -m msvmunet evaluate --checkpoint "$OUTDIR/run/final.pt" --data "$OUTDIR/phantom" \
    --output "$OUTDIR/evaluation"
