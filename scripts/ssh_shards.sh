#!/usr/bin/env bash
# One walk split across plain ssh hosts (each with latentwalk, the model and a GPU), then joined.
#
#   scripts/ssh_shards.sh gpu1 gpu2 gpu3
#
# The hosts share this folder at the same path (NFS or the like). Each renders its part with
# --shard K/N; when all are done, concat joins them here. A failed part is reported and the
# others are kept: run the script again and only the missing parts render (the finished ones
# are skipped, an interrupted one resumes from its renders).
set -euo pipefail
HOSTS=("$@")
N=${#HOSTS[@]}
(( N > 0 )) || { echo "usage: $0 HOST..." >&2; exit 2; }
DIR=$(pwd)
WALK='latentwalk prompt-walk story.txt --audio song.mp3 --preset sdxl --batch-size 4'
pids=()
for K in $(seq 1 "$N"); do
  part="story.part${K}of${N}.mp4"
  if [[ -f "$part" ]]; then echo "part $K/$N: done already"; continue; fi
  ssh "${HOSTS[K-1]}" "cd '$DIR' && $WALK --shard $K/$N -o '$part' --quiet" &
  pids+=("$!:$K")
done
failed=0
for entry in ${pids[@]+"${pids[@]}"}; do
  if ! wait "${entry%%:*}"; then echo "part ${entry##*:}/$N failed" >&2; failed=1; fi
done
(( failed == 0 )) || exit 1
latentwalk concat story.part*of"${N}".mp4 -o story.mp4
