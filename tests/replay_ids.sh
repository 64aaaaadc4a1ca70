#!/usr/bin/env bash
# Replay-id proof for a refactor: `cloudwarden replay` over every file of the public datasets
# (../shared/data/public) must raise the same alerts (id, detector, dedup key) with the working
# tree's build as with BASE_REV's.
#
#   tests/replay_ids.sh [BASE_REV]        (default 2d34622, the commit before issue 10's refactor)
#
# BASE_REV is exported with `git archive` (not `git worktree add`: nothing is registered in the
# shared repository) and both are built in release mode without the Kafka feature (replay does
# not need it) into one target directory under $REPLAY_IDS_DIR (default /tmp/cloudwarden-replay-ids),
# so dependencies are built once and a second run only rebuilds what changed. Each file is
# replayed on its own (as tests/it/stratus.rs and tests/it/invictus.rs do), then each dataset
# folder as one replay, then everything as one replay. Prints "N files, M alert ids, 0 differences"
# and exits 0, or prints the differences and exits 1. Needs git, cargo and jq.
set -euo pipefail

BASE_REV=${1:-2d34622}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$ROOT/../shared/data/public}
WORK=${REPLAY_IDS_DIR:-/tmp/cloudwarden-replay-ids}
started=$(date +%s)

command -v jq >/dev/null || { echo "replay_ids: jq is required" >&2; exit 2; }
[ -d "$DATA" ] || { echo "replay_ids: no dataset folder $DATA" >&2; exit 2; }
base_commit=$(git -C "$ROOT" rev-parse --verify "$BASE_REV^{commit}")
mkdir -p "$WORK/bin" "$WORK/out"
export CARGO_TARGET_DIR="$WORK/target"

base_bin="$WORK/bin/cloudwarden-$base_commit"
if [ ! -x "$base_bin" ]; then
  src="$WORK/src-$base_commit"
  rm -rf "$src" && mkdir -p "$src"
  git -C "$ROOT" archive "$base_commit" | tar -x -C "$src"
  echo "replay_ids: building $BASE_REV ($base_commit) in $src" >&2
  cargo build --quiet --release --no-default-features --manifest-path "$src/Cargo.toml"
  cp "$CARGO_TARGET_DIR/release/cloudwarden" "$base_bin"
fi
echo "replay_ids: building the working tree" >&2
cargo build --quiet --release --no-default-features --manifest-path "$ROOT/Cargo.toml"
head_bin="$WORK/bin/cloudwarden-worktree"
cp "$CARGO_TARGET_DIR/release/cloudwarden" "$head_bin"

# One replay: the sorted (id, detector, dedup key) lines of its alerts.
ids() {
  local bin=$1 out=$2
  shift 2
  "$bin" replay --no-progress -- "$@" 2>"$out.stderr" | jq -r '[.id, .detector, .dedup_key] | @tsv' | LC_ALL=C sort >"$out"
}

mapfile -t files < <(find "$DATA" -type f ! -name 'README*' | LC_ALL=C sort)
[ "${#files[@]}" -gt 0 ] || { echo "replay_ids: no files under $DATA" >&2; exit 2; }
runs=()
for f in "${files[@]}"; do runs+=("${f#"$DATA"/}"); done
mapfile -t folders < <(for f in "${runs[@]}"; do dirname "$f"; done | LC_ALL=C sort -u)

total=0
differences=0
compare() { # name, files...
  local name=$1 tag n
  shift
  tag=$(printf '%s' "$name" | tr '/ ' '__')
  ids "$base_bin" "$WORK/out/$tag.base" "$@"
  ids "$head_bin" "$WORK/out/$tag.head" "$@"
  total=$((total + $(wc -l <"$WORK/out/$tag.head")))
  if ! diff -u --label "$BASE_REV: $name" --label "worktree: $name" \
    "$WORK/out/$tag.base" "$WORK/out/$tag.head"; then
    n=$(diff "$WORK/out/$tag.base" "$WORK/out/$tag.head" | grep -c '^[<>]' || true)
    differences=$((differences + n))
  fi
}

cd "$DATA"
for f in "${runs[@]}"; do compare "$f" "$f"; done
for d in "${folders[@]}"; do
  group=()
  for f in "${runs[@]}"; do [ "$(dirname "$f")" = "$d" ] && group+=("$f"); done
  if [ "${#group[@]}" -gt 1 ]; then compare "$d/ (${#group[@]} files together)" "${group[@]}"; fi
done
compare "all ${#runs[@]} files together" "${runs[@]}"

if [ "$total" -eq 0 ]; then
  echo "replay_ids: no alert at all: nothing was compared" >&2
  exit 1
fi
echo "${#runs[@]} files, $total alert ids, $differences differences ($(($(date +%s) - started)) s)"
[ "$differences" -eq 0 ]
