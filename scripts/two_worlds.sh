#!/usr/bin/env bash
# The masked-recipe comparison on both worlds (docs/ablation.md, "Being rebuilt"): every recipe at equal
# steps, on the embedded world and on the tabletop world read as a user's files, with the binding test on
# seen and held-out pairs, and VQA / NLVR2 fine-tuned from every run. Finished runs are reused, so this can
# be stopped and started again, or run in pieces:
#
#   scripts/two_worlds.sh STEPS SEEDS [RECIPES]      e.g. scripts/two_worlds.sh 400 0,1 albef,mamo
#
# Both cores for hours: run nothing else beside it. The tabletop world is written once (~6 min).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:?steps per run}
SEEDS=${2:?seeds, e.g. 0,1}
RECIPES=${3:-clip,albef,mlim,mamo,simla,scl,semmim,composite}
M=.venv/bin/maskvlp
WORLD=runs/worlds/tabletop
OUT=runs/two_worlds
TASKS=(--tasks vqa,nlvr2 --task-override train.time_budget=0 --task-override train.max_steps=418)

[ -f "$WORLD/world.json" ] || $M data make-world "$WORLD"

# the embedded world (settings may be chosen here)
$M ablate --recipes "$RECIPES" --inits minilm --seeds "$SEEDS" --budget 0 --steps "$STEPS" \
    "${TASKS[@]}" --output-dir "$OUT/embedded-$STEPS"

# the tabletop world, as a user's files (never used to choose a setting); no crop: the embedded world's
# data path does not crop, and a crop can make whole-scene and count captions false (docs/tabletop_world.md)
$M ablate --recipes "$RECIPES" --inits minilm --seeds "$SEEDS" --budget 0 --steps "$STEPS" \
    "${TASKS[@]}" --output-dir "$OUT/tabletop-$STEPS" \
    data.source=json "data.train_json=[$WORLD/train.json]" data.image_root=$WORLD data.crop_scale_min=1.0 \
    eval.test_json=$WORLD/test.json eval.image_root=$WORLD eval.probes_json=$WORLD/probes.json
