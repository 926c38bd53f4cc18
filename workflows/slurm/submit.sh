#!/usr/bin/env bash
# Run mednet-pvs on a SLURM cluster from an Apptainer image (docs/hpc.md): one short job validates
# and indexes the dataset, then an array runs one task per participant, then the group level runs
# once every participant succeeded. Everything this submission needs is recorded in a run folder,
# OUTPUT_DIR/logs/slurm/<time>/ (settings, participant list, job logs).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: submit.sh [options] BIDS_DIR OUTPUT_DIR [-- mednet-pvs options]

  -i, --image SIF          Apptainer image (default: $MEDNET_PVS_IMAGE, else ./mednet-pvs.sif)
  -p, --participants FILE  labels to process, one per line, with or without "sub-"
                           (default: participants.tsv, else every sub-* folder)
  -w, --work-root DIR      persistent work folders, one per participant, so that a resubmitted
                           participant resumes (default: ${SCRATCH:-/scratch/$USER}/mednet-pvs-work)
      --local-work         work on the node's local disk ($SLURM_TMPDIR, else $TMPDIR) instead:
                           faster on some clusters, but a resubmission starts again
  -c, --cpus N             CPUs per participant (default 8)
  -m, --mem SIZE           memory per participant, sbatch syntax (default 16G)
  -t, --time TIME          time limit per participant (default 02:00:00)
  -g, --gpus N             GPUs per participant (default 1; 0 runs on CPUs only)
  -j, --max-running N      at most N participants at once
  -s, --sbatch-args ARGS   extra sbatch options for every job, e.g. "--account=lab --partition=gpu"
  -n, --dry-run            write the run folder and print the sbatch commands, submit nothing
  -h, --help               this help
EOF
}

die() {
    echo "submit.sh: $*" >&2
    exit 2
}

# Labels to process, one per line without "sub-": from FILE, else participants.tsv, else sub-*
# folders. Labels without a sub-<label> folder are reported and left out.
participant_labels() {
    local bids_dir=$1 list_file=$2 label
    {
        if [[ -n $list_file ]]; then
            grep -v -e '^[[:space:]]*$' -e '^[[:space:]]*#' "$list_file"
        elif [[ -f $bids_dir/participants.tsv ]]; then
            awk -F '\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "participant_id") column = i; next }
                         column { print $column }' "$bids_dir/participants.tsv"
        else
            find "$bids_dir" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sort
        fi
    } | tr -d '\r' | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e 's/^sub-//' |
        while IFS= read -r label; do
            if [[ ! $label =~ ^[A-Za-z0-9]+$ ]]; then
                echo "submit.sh: skipping invalid participant label '$label'" >&2
            elif [[ ! -d $bids_dir/sub-$label ]]; then
                echo "submit.sh: skipping sub-$label: no such folder in $bids_dir" >&2
            else
                echo "$label"
            fi
        done
}

# Submit one job named mednet-pvs-NAME and print its id (sbatch --parsable prints "id" or "id;cluster").
submit() {
    local name=$1
    shift
    if ((dry_run)); then
        printf '%q ' sbatch "${sbatch_args[@]}" --job-name="mednet-pvs-$name" "$@" >&2
        echo >&2
        echo "dry-run-$name"
    else
        sbatch --parsable "${sbatch_args[@]}" --job-name="mednet-pvs-$name" "$@" | cut -d ';' -f 1
    fi
}

image=${MEDNET_PVS_IMAGE:-$PWD/mednet-pvs.sif}
list_file="" work_root="${SCRATCH:-/scratch/${USER:-$(id -un)}}/mednet-pvs-work" local_work=0
cpus=8 mem=16G time_limit=02:00:00 gpus=1 max_running="" dry_run=0
sbatch_args=()
positional=()
while (($#)); do
    case $1 in
        -i | --image) image=$2; shift ;;
        -p | --participants) list_file=$2; shift ;;
        -w | --work-root) work_root=$2; shift ;;
        --local-work) local_work=1 ;;
        -c | --cpus) cpus=$2; shift ;;
        -m | --mem) mem=$2; shift ;;
        -t | --time) time_limit=$2; shift ;;
        -g | --gpus) gpus=$2; shift ;;
        -j | --max-running) max_running=$2; shift ;;
        -s | --sbatch-args) read -r -a extra <<<"$2"; sbatch_args+=("${extra[@]}"); shift ;;
        -n | --dry-run) dry_run=1 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) positional+=("$1") ;;
    esac
    shift
done
options=("$@")
((${#positional[@]} == 2)) || { usage >&2; die "give BIDS_DIR and OUTPUT_DIR"; }
bids_dir=$(realpath "${positional[0]}")
output_dir=$(realpath -m "${positional[1]}")
[[ -f $bids_dir/dataset_description.json ]] || die "$bids_dir is not a BIDS dataset (no dataset_description.json)"
[[ -f $image ]] || ((dry_run)) || die "Apptainer image $image not found (give -i or set MEDNET_PVS_IMAGE)"
[[ -z $list_file || -f $list_file ]] || die "participant list $list_file not found"
[[ $gpus =~ ^[0-9]+$ && $cpus =~ ^[1-9][0-9]*$ ]] || die "--cpus and --gpus take whole numbers"

mapfile -t labels < <(participant_labels "$bids_dir" "$list_file")
((${#labels[@]})) || die "no participant to process in $bids_dir"

run_dir=$output_dir/logs/slurm/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$run_dir"
printf '%s\n' "${labels[@]}" >"$run_dir/participants.txt"
if ((local_work)); then work_root=""; fi
{
    printf 'IMAGE=%q\nBIDS_DIR=%q\nOUTPUT_DIR=%q\n' "$(realpath -m "$image")" "$bids_dir" "$output_dir"
    printf 'DATABASE_DIR=%q\nPARTICIPANTS_FILE=%q\n' "$run_dir/bids_db" "$run_dir/participants.txt"
    printf 'WORK_ROOT=%q\nGPUS=%q\n' "$work_root" "$gpus"
    printf 'OPTIONS=(%s)\n' "${options[*]@Q}"
} >"$run_dir/run.env"

job_script=$(dirname "$(realpath "${BASH_SOURCE[0]}")")/mednet-pvs.sbatch
gres=()
if ((gpus > 0)); then gres=(--gres="gpu:$gpus"); fi
last=$((${#labels[@]} - 1))

index_job=$(submit index --cpus-per-task=1 --mem=4G --time=01:00:00 \
    --output="$run_dir/index-%j.log" "$job_script" index "$run_dir/run.env")
array_job=$(submit participant --dependency="afterok:$index_job" --kill-on-invalid-dep=yes \
    --array="0-$last${max_running:+%$max_running}" --cpus-per-task="$cpus" --mem="$mem" \
    --time="$time_limit" "${gres[@]}" --output="$run_dir/participant-%A_%a.log" \
    "$job_script" participant "$run_dir/run.env")
group_job=$(submit group --dependency="afterok:$array_job" --kill-on-invalid-dep=yes \
    --cpus-per-task=1 --mem=4G --time=01:00:00 --output="$run_dir/group-%j.log" \
    "$job_script" group "$run_dir/run.env")

echo "run folder: $run_dir"
echo "jobs: index $index_job, participants $array_job (${#labels[@]} tasks), group $group_job"
echo "task i processes line i+1 of $run_dir/participants.txt; failed tasks: sacct -j $array_job --state=FAILED"
