#!/usr/bin/env bash
# Rebuild the shipped checkpoint (merclip/checkpoints/merclip-minilm-live.pt) from the train and
# val splits of FER2013, MELD and RAVDESS in their standard layouts (see docs/MODEL_CARD.md).
#   bash scripts/train_shipped.sh [DATA_DIR]     # default ../shared/data
# On a 2-core CPU: featurising all three sets ~4 min (cached afterwards in
# ~/.cache/merclip/features), training 6 epochs ~35-45 min. Writes the run to runs/shipped/.
# One torch thread: on a shared 2-core machine (load ~4) a training step took 4.2 s with one
# thread and 17.5 s with two (OpenMP workers spinning against other processes).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
out=${OUT:-runs/shipped}
for d in fer2013 meld ravdess; do
  [ -d "$data/$d" ] || { echo "train_shipped.sh: no $data/$d (FER2013, MELD, RAVDESS layouts)" >&2; exit 2; }
done
.venv/bin/merclip train \
  --data "fer2013:$data/fer2013" --data "meld:$data/meld" --data "ravdess:$data/ravdess" \
  --model merclip-minilm-live --task both --epochs 6 --batch-size 128 --lr 0.001 \
  --max-per-dataset 15000 \
  --min-share 1.0 --compose 0.25 --seed 0 --threads 1 --out "$out"
mkdir -p merclip/checkpoints
cp "$out/best.pt" merclip/checkpoints/merclip-minilm-live.pt
cp "$out/history.json" merclip/checkpoints/history.json
echo "train_shipped.sh: merclip/checkpoints/merclip-minilm-live.pt updated from $out/best.pt"
