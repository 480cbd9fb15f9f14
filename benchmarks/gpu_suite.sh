#!/usr/bin/env bash
# GPU checks and benchmarks in one go: writes logs and JSON into OUTDIR.
#   bash benchmarks/gpu_suite.sh OUTDIR [steps...]
# steps: env tests alltests gputests scan sweep core core_pt core_b1 model model_torch graph graph_train compile compile_graph
#        compile_b1 compile_graph_tiled profile profile_compile profile_compile_tiled profile_infer augment
#        stability recipe (default: env tests scan model profile augment)
set -u
OUTDIR=${1:?usage: gpu_suite.sh OUTDIR [steps...]}
shift
STEPS=${*:-env tests scan model profile augment}
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
run() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  tail -n 25 "$OUTDIR/$name.log"
}
for step in $STEPS; do
  case $step in
    env) run env 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)"' ;;
    tests) run tests 300 python -m pytest tests/ops tests/data/test_augment.py -q -x ;;
    alltests) run alltests 500 python -m pytest tests -q -x -p no:cacheprovider ;;
    gputests) run gputests 300 python -m pytest tests/ops tests/engine/test_gpu.py tests/data/test_augment.py tests/models -q -p no:cacheprovider ;;
    stability) run stability 300 python benchmarks/stability.py --steps 200 --out "$OUTDIR/stability.json" ;;
    scan) run scan 300 python benchmarks/bench_scan.py --out "$OUTDIR/scan.json" ;;
    sweep) run sweep 300 python benchmarks/bench_scan.py --out "$OUTDIR/sweep.json" --sweep ;;
    core) run core 500 python benchmarks/sweep_core.py --out "$OUTDIR/core.json" ;;
    core_pt) run core_pt 500 python benchmarks/sweep_core.py --family per-thread --out "$OUTDIR/core_pt.json" ;;
    core_b1) run core_b1 500 python benchmarks/sweep_core.py --batch 1 --family per-thread --out "$OUTDIR/core_b1.json" ;;
    recipe) run recipe 560 bash benchmarks/phantom_recipe.sh "$OUTDIR/recipe" --num-workers 8 ;;
    model) run model 300 python -m msvmunet benchmark --batch 32 1 --json "$OUTDIR/model.json" ;;
    model_torch) run model_torch 300 python -m msvmunet benchmark --batch 32 --backend torch --json "$OUTDIR/model_torch.json" ;;
    graph) run graph 300 python -m msvmunet benchmark --batch 1 32 --mode infer --cuda-graph --json "$OUTDIR/graph.json" ;;
    graph_train) run graph_train 300 python -m msvmunet benchmark --batch 32 --cuda-graph --json "$OUTDIR/graph_train.json" ;;
    compile) run compile 400 python -m msvmunet benchmark --batch 32 --compile --json "$OUTDIR/compile.json" ;;
    compile_graph) run compile_graph 400 python -m msvmunet benchmark --batch 32 --compile --cuda-graph --json "$OUTDIR/compile_graph.json" ;;
    profile) run profile 300 python benchmarks/gpu_profile.py --out "$OUTDIR/profile_train.txt" ;;
    compile_graph_tiled) run compile_graph_tiled 400 python -m msvmunet benchmark --batch 32 --compile --cuda-graph --scan-tuning per_thread=0 --json "$OUTDIR/compile_graph_tiled.json" ;;
    profile_compile_tiled) run profile_compile_tiled 400 python benchmarks/gpu_profile.py --compile --scan-tuning per_thread=0 --out "$OUTDIR/profile_compile_tiled.txt" ;;
    compile_b1) run compile_b1 400 python -m msvmunet benchmark --batch 1 --mode infer --compile --cuda-graph --json "$OUTDIR/compile_b1.json" ;;
    profile_compile) run profile_compile 400 python benchmarks/gpu_profile.py --compile --out "$OUTDIR/profile_compile.txt" ;;
    profile_infer) run profile_infer 300 python benchmarks/gpu_profile.py --mode infer --batch 1 --out "$OUTDIR/profile_infer.txt" ;;
    augment) run augment 300 python benchmarks/bench_augment.py --device cuda --batch 256 --size 224 --native 512 ;;
    *) echo "unknown step $step" ;;
  esac
done
