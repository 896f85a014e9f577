#!/usr/bin/env bash
# The GPU runs of the standing benchmarks (bench/README.md), in parts that each fit a 10-minute machine lease:
#   bash bench/gpu.sh sd15 RESULTS   smoke suite on CUDA; SD1.5 generate vs the bare loop; scoring throughput;
#                                    the standard suite's SD1.5 DDIM-25 tasks, generated and scored
#   bash bench/gpu.sh sdxl RESULTS [METHODS]   SDXL generate vs the bare loop: each method paired beside the
#                                    baseline (default all four; one lease fits two, e.g. deepcache,tome then
#                                    tgate,deepcache_tgate)
#   bash bench/gpu.sh sdxl-standard RESULTS   the standard suite's SDXL DDIM-25 tasks, generated and scored
#   bash bench/gpu.sh methods RESULTS FAMILY[,...]   each family's baseline and every method and combination
#                                    (METHODS to choose) through generate vs the bare loop, in one paired pass
#                                    per family (IMAGES, default 16): SD1.5 or SD2.1 (SDXL: the sdxl part)
#   bash bench/gpu.sh tasks RESULTS NAME PATTERNS   the standard suite's tasks matching PATTERNS (comma-separated,
#                                    as generate --tasks takes them), generated and scored as RESULTS/standard-NAME-*
#   bash bench/gpu.sh audit RESULTS [FAMILY]   honest, cheating and sabotaging submissions of DDIM-25 DeepCache
#                                    (sd15 by default, or sdxl) on full-size random weights: what the gate, the
#                                    audit and the device-quiet check make of each, and the audit's cost
#                                    (PROGRAMS=honest,queued,... for a subset: SDXL with all seven overruns a lease)
#   bash bench/gpu.sh quiet RESULTS   the device-quiet check's probe on an idle GPU and beside another process's work
#   bash bench/gpu.sh repeats RESULTS [FAMILY]   the timing suite's DDIM-25 DeepCache and T-GATE tasks with K = 3
#                                    repeats and a copy of the GT submitted under another name: per-repeat and
#                                    pooled speedups, the between-repeat share of the variance, compare gt gt-copy
#   bash bench/gpu.sh sd15-control RESULTS generate|control   one 100-image paired SD1.5 run of generate, or of
#                                    the no-harness control; alternate them across calls and pool with
#                                    bench/pool_runs.py RUNS --control CONTROLS
#   bash bench/gpu.sh targets RESULTS MODEL-SCHEDULER-STEPS[,...]   `accelbench targets search` of each setting
#                                    (METHODS, default deepcache; MAX candidates, default 8; LIMIT prompts, default
#                                    8), one results file per setting, RESULTS/SETTING.json
# Every step runs even if an earlier one failed; RESULTS/ receives the JSON, logs and reports.
set -u
part=${1:?part: sd15, sdxl, sdxl-standard, methods, tasks, audit, quiet, repeats, sd15-control or targets}
results=${2:?results folder}
work=${WORK:-/tmp/accelbench-gpu}
mkdir -p "$results" "$work"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 ACCELBENCH_CACHE=${ACCELBENCH_CACHE:-$work/cache}

step() { echo; echo "== $* ($(date -u +%T))"; "$@" || echo "!! step failed with exit code $?: $*"; }

# PartiPrompts is not reachable offline here: eight stand-in prompts (random weights make images meaningless).
printf '%s\n' "a red cube on a wooden table" "an astronaut riding a horse on the moon" \
  "a watercolor painting of a lighthouse at dawn" "two cats sleeping on a sofa" "a bowl of fruit on a kitchen table" \
  "a city street in the rain at night" "a mountain lake under a clear sky" "a robot reading a book in a library" \
  "a sailboat on a calm sea" "a plate of pancakes with berries" "an old map on a desk" "a fox in a snowy forest" \
  "a neon sign above a diner" "a violin on a velvet chair" "a hot air balloon over fields" "a bridge in fog" \
  > "$work/prompts.txt"

standard() {  # $1: family, $2: task patterns, $3: warm-up batches (default 2)
  accelbench generate --suite standard --out "$work/standard-$1" --weights random --device cuda \
    --tasks "$2" --limit 4 --prompts "$work/prompts.txt" --warmup "${3:-2}" --repeats "${REPEATS:-1}" --no-progress
  accelbench score "$work/standard-$1" --device cuda --clip-pretrained random --no-progress  # offline: no weights
  for file in summary.csv by_batch_size.csv report.md pareto.png; do
    cp "$work/standard-$1/report/$file" "$results/standard-$1-$file"
  done
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
case $part in
  sd15)
    step accelbench generate --suite smoke --out "$work/smoke" --device cuda --no-progress
    step accelbench score "$work/smoke" --device cuda --no-progress
    step python bench/bench_generate.py --families sd15 --images 64 --device cuda --work "$work/bench" \
      --out "$results/generate-sd15.json"
    step python bench/bench_score.py --images 4096 --size 512 --device cuda --repeats 5 --out "$results/score-gpu.json"
    step standard sd15 "sd15-ddim-25-*"
    ;;
  sdxl)
    # One method at a time beside the baseline: with every lane loaded a paired round needs ~157 GB of the 140
    # (docs/investigations/sdxl-paired.md). Each bare process holds ~8 GB of weights and caches ~32 GB more in a
    # batch; releasing that cache after each batch keeps two bare processes and two 41 GB workers within ~131 GB.
    methods=${3:-deepcache,tome,tgate,deepcache_tgate}
    for method in ${methods//,/ }; do
      step python bench/bench_generate.py --families sdxl --methods "$method" --images 20 --warmup 1 --device cuda \
        --bare-release-memory --work "$work/bench-$method" --out "$results/generate-sdxl-paired-$method.json"
    done
    ;;
  sdxl-standard)
    step standard sdxl "sdxl-ddim-25-deepcache,sdxl-ddim-25-tome,sdxl-ddim-25-tgate,sdxl-ddim-25-deepcache-tgate" 1
    ;;
  methods)
    all=deepcache,tome,tgate,deepcache_tgate,deepcache_tome,tome_tgate,deepcache_tome_tgate
    for family in ${3//,/ }; do
      step python bench/bench_generate.py --families "$family" --methods "${METHODS:-$all}" --images "${IMAGES:-16}" \
        --warmup 1 --device cuda --work "$work/bench-$family" --out "$results/generate-$family-methods.json"
    done
    ;;
  tasks)
    step standard "${3:?name}" "${4:?task patterns}" 1
    ;;
  audit)
    family=${3:-sd15}
    step python bench/bench_audit.py --device cuda --suite timing --tasks "$family-ddim-25-deepcache" \
      --prompts "$work/prompts.txt" --limit 16 --work "$work/audit-$family" --out "$results/audit-$family.json" \
      ${PROGRAMS:+--programs "$PROGRAMS"}
    cp "$work/audit-$family"/out/runs/*.json "$results/audit-$family-run.json"
    ;;
  quiet)
    step python bench/device_quiet.py --out "$results/device-quiet.json"
    ;;
  repeats)
    family=${3:-sd15}
    tasks="$family-ddim-25-deepcache,$family-ddim-25-tgate"
    python - "$work/gt-copy" "$tasks" <<'PY'
import sys
from pathlib import Path
from accelbench.builder import programs
from accelbench.manifest import load_catalog
folder, catalog = Path(sys.argv[1]), load_catalog()
folder.mkdir(parents=True, exist_ok=True)
for task in sys.argv[2].split(","):
    (folder / f"{task}.py").write_text(programs.render(catalog, catalog.task(task)).source)
PY
    dir="$work/repeats-$family"
    step accelbench generate --suite timing --out "$dir" --weights random --device cuda --tasks "$tasks" \
      --limit 16 --prompts "$work/prompts.txt" --submission "$work/gt-copy" --repeats 3 --no-progress
    step accelbench score "$dir" --device cuda --clip-pretrained random --no-progress
    accelbench compare "$dir" gt gt-copy | tee "$results/repeats-$family-compare.txt"
    step python bench/repeat_variance.py "$dir" --out "$results/repeats-$family.json"
    cp "$dir"/report/summary.csv "$results/repeats-$family-summary.csv"
    ;;
  sd15-control)
    side=${3:?side: generate or control}
    case $side in generate) flag= ;; control) flag=--control ;; *) echo "unknown side $side"; exit 2 ;; esac
    step python bench/bench_generate.py --families sd15 --images 100 --device cuda --work "$work/bench-$side" \
      $flag --out "$results/generate-sd15-paired-$side-$(date -u +%Y%m%dT%H%M%S).json"
    ;;
  targets)
    for setting in ${3//,/ }; do
      steps=${setting##*-} rest=${setting%-*}  # a model id may hold '-', a scheduler id does not
      scheduler=${rest##*-} model=${rest%-*}
      step accelbench targets search --model "$model" --scheduler "$scheduler" --steps "$steps" \
        --methods "${METHODS:-deepcache}" --max-candidates "${MAX:-8}" --limit "${LIMIT:-8}" \
        --prompts "$work/prompts.txt" --out "$work/search-$setting" --results "$results/$setting.json" --no-progress
    done
    ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
