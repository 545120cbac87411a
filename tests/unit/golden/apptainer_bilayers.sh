#!/bin/bash
# BIOMERO job script: workflow count v0.0.1, runtime apptainer.
# Rendered once by `biomero init`; every run passes its own folder:
#   sbatch <this script> <run folder>   (or --export=ALL,BIOMERO_RUN_DIR=<run folder>)
# Parameter values come from <run folder>/params.json only.

#SBATCH --job-name=biomero-count
#SBATCH --output=omero-%j.log

set -euo pipefail

run_dir="${1:-${BIOMERO_RUN_DIR:-}}"
if [[ -z "$run_dir" ]]; then
    echo "biomero job: pass the run folder as first argument or in BIOMERO_RUN_DIR" >&2
    exit 2
fi
params_file="$run_dir/params.json"
if [[ ! -f "$params_file" ]]; then
    echo "biomero job: missing $params_file" >&2
    exit 2
fi
mkdir -p -- "$run_dir/data/out" "$run_dir/data/gt"

# params.json -> one argument per --<id> and per value, NUL-separated, never evaluated.
args_file="$(mktemp)"
trap 'rm -f -- "$args_file"' EXIT
python3 - "$params_file" '{"channel":["--channel","joined"],"exclude_edges":["--exclude_edges","joined"],"label":["--label","joined"],"min_size":["--min_size","joined"],"pipeline":["--pipeline","joined"],"save_masks":["--save_masks","switch"],"sigma":["-s","separate"],"threshold_method":["--threshold_method","joined"]}' > "$args_file" <<'BIOMERO_PARAMS_READER'
import json, sys
params = json.load(open(sys.argv[1], encoding="utf-8"))
flags = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
if not isinstance(params, dict):
    sys.exit("params.json must hold a JSON object")
for key, value in params.items():
    if not key.isidentifier() or not isinstance(value, (str, int, float, bool)):
        sys.exit(f"params.json: bad entry {key!r}")
    if flags is None:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args = ["--" + key, text]
    elif key not in flags:
        sys.exit(f"params.json: {key!r} is not a parameter of this workflow")
    else:
        flag, mode = flags[key]
        text = ("True" if value else "False") if isinstance(value, bool) else str(value)
        if mode == "switch":
            args = [flag] if value is True else []
        elif mode == "joined":
            args = [flag + "=" + text]
        elif isinstance(value, str) and value.startswith("-"):
            sys.exit(f"params.json: {key!r} starts with '-', which {flag} would not take")
        else:
            args = [flag, text]
    for arg in args:
        if "\0" in arg:
            sys.exit(f"params.json: NUL in {key!r}")
        sys.stdout.write(arg + "\0")
BIOMERO_PARAMS_READER
args=()
while IFS= read -r -d '' arg; do
    args+=("$arg")
done < "$args_file"
rm -f -- "$args_file"
trap - EXIT

exec apptainer exec --bind /data/my-scratch --pwd /bilayers /home/biomero/images/count/threshold_count_v0.0.1.sif python -m threshold_count --verbose \
    "--folder=$run_dir/data/in" "--save_dir=$run_dir/data/out" \
    --quiet-progress --format=tiff \
    ${args[@]+"${args[@]}"}
