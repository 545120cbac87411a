#!/bin/bash
# BIOMERO job script: workflow nuclei v1.0.0, runtime singularity.
# Rendered once by `biomero init`; every run passes its own folder:
#   sbatch <this script> <run folder>   (or --export=ALL,BIOMERO_RUN_DIR=<run folder>)
# Parameter values come from <run folder>/params.json only.

#SBATCH --job-name=biomero-nuclei
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

exec singularity run --bind /data,/scratch --pwd /app /home/biomero/images/nuclei/w_nucleisegmentation-watershed_v1.0.0.sif \
    --infolder "$run_dir/data/in" --outfolder "$run_dir/data/out" --gtfolder "$run_dir/data/gt" --local -nmc \
    --params-file "$params_file"
