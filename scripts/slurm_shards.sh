#!/usr/bin/env bash
# One walk split across a Slurm array job, one GPU per part, then joined.
#
#   sbatch --array=1-4 scripts/slurm_shards.sh            # the parts (4 here: N = the array's size)
#   sbatch --dependency=afterok:<array job id> --wrap \
#     "latentwalk concat story.part*of4.mp4 -o story.mp4"  # the join, once every part is done
#
# Every task must see the same folder (a shared filesystem) and run the same latentwalk and
# model: a part is only bit-identical to the whole render's frames on one device type and batch
# size, so the batch size is given rather than left to each GPU's free memory. A task that fails
# or is preempted can simply be run again (sbatch --array=K ...): its finished renders resume.
#SBATCH --job-name=latentwalk-part
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=latentwalk-part-%a.log
set -euo pipefail
N=${SLURM_ARRAY_TASK_COUNT:?run this as an array job: sbatch --array=1-N}
K=${SLURM_ARRAY_TASK_ID}
latentwalk prompt-walk story.txt --audio song.mp3 --preset sdxl --batch-size 4 \
  --shard "${K}/${N}" -o "story.part${K}of${N}.mp4" --json
