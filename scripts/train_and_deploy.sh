#!/usr/bin/env bash
# Fetch → train → deploy, per symbol (SPEC §7.5).
#
#   scripts/train_and_deploy.sh [lgbm|nn|mlx] [--symbol S] [--all] [--data-dir D] [--model-dir M]
#                               [--force] [N]
#
#   backend      lgbm (default) | nn | mlx (alias of nn: MLX exists only on Apple hardware)
#   --symbol     one symbol; without it (or with --all) every configured symbol (SYMBOLS)
#   --data-dir   market data root (default $DATA_DIR, else data)
#   --model-dir  models root the bot reads (default $MODEL_DIR, else models)
#   --force      deploy a model whose deploy-gate verdict is fail (it did not beat the no-ML
#                baseline out of sample); without it such a model stops the script, not deployed
#   N            purged walk-forward folds reported before the final model (default 5; 0 skips;
#                a model trained with 0 folds is not validated and fails the gate)
#
# Per symbol:
#   1. data: fetch 365 days (--no-upsert) when data/<sym>/combined_15m.parquet is missing,
#      else 35 days upserted into it;
#   2. train into a fresh staging models root (models/.staging.XXXXXX). The symbol's current
#      training_log.json and active_lgbm_params.json are copied there first, so the tuned
#      parameters apply (SPEC §6.1 precedence) and the log deployed back keeps its history;
#   3. deploy: `perpbot deploy` verifies the staged files (sha256 binding, feature schema, gate) and
#      atomically replaces the live ones (backups kept as *_prev.*); a running bot hot-reloads
#      them on its next candle. No restart.
# The time-weight decay comes from TIME_WEIGHT_DECAY (environment, else .env, else 2.0).
#
# Environment: PERPBOT (perpbot command, default `perpbot`; may be e.g. "python -m perpbot.cli.main"),
# DATA_DIR (default data), MODEL_DIR (default models), PYTHON (for reading `perpbot config --json`,
# default python3). Strict mode: the first failing step stops the script with its exit status.
# Not done here (unlike the design point): the A/B feature comparison, which is indicative only.

set -euo pipefail
IFS=$'\n\t'

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'error: %s\n' "$1" >&2; exit 2; }

IFS=' ' read -r -a PB <<<"${PERPBOT:-perpbot}"
DATA_DIR="${DATA_DIR:-data}"
MODEL_DIR="${MODEL_DIR:-models}"
PYTHON="${PYTHON:-python3}"

backend="lgbm"
symbol=""
all=0
force=()
folds=5
while [ "$#" -gt 0 ]; do
  case "$1" in
    lgbm | nn | mlx) backend="$1" ;;
    --symbol)
      [ "$#" -ge 2 ] || die "--symbol needs a value"
      symbol="$2"
      shift
      ;;
    --symbol=*) symbol="${1#*=}" ;;
    --data-dir | --model-dir)
      [ "$#" -ge 2 ] || die "$1 needs a value"
      if [ "$1" = "--data-dir" ]; then DATA_DIR="$2"; else MODEL_DIR="$2"; fi
      shift
      ;;
    --data-dir=*) DATA_DIR="${1#*=}" ;;
    --model-dir=*) MODEL_DIR="${1#*=}" ;;
    --all) all=1 ;;
    --force) force=(--force) ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      if [[ "$1" =~ ^[0-9]+$ ]]; then folds="$1"; else die "unknown argument: $1 (see --help)"; fi
      ;;
  esac
  shift
done
if [ -n "$symbol" ] && [ "$all" -eq 1 ]; then
  die "--symbol and --all are mutually exclusive: pass one of them"
fi

if [ -n "$symbol" ]; then
  symbols=("$symbol")
else
  mapfile -t symbols < <("${PB[@]}" config --json |
    "$PYTHON" -c 'import json, sys; print("\n".join(json.load(sys.stdin)["symbols"]))')
  [ "${#symbols[@]}" -gt 0 ] || die "no configured symbols"
fi

decay_args=()
if [ -n "${TIME_WEIGHT_DECAY:-}" ]; then
  decay_args=(--decay "$TIME_WEIGHT_DECAY")
fi

mkdir -p "$MODEL_DIR"
staging="$(mktemp -d "$MODEL_DIR/.staging.XXXXXX")"
trap 'rm -rf -- "$staging"' EXIT

for sym in "${symbols[@]}"; do
  lower="$(printf '%s' "$sym" | tr '[:upper:]' '[:lower:]')"
  parquet="$DATA_DIR/$lower/combined_15m.parquet"
  echo "== $sym: data"
  if [ -f "$parquet" ]; then
    "${PB[@]}" fetch --symbol "$sym" --days 35 --data-dir "$DATA_DIR"
  else
    "${PB[@]}" fetch --symbol "$sym" --days 365 --no-upsert --data-dir "$DATA_DIR"
  fi
  # Only now, after `fetch` has validated the symbol: perpbot creates the data and model folders
  # itself, so a malformed --symbol stops the script without leaving folders behind.
  mkdir -p "$staging/$lower"
  for f in training_log.json active_lgbm_params.json; do
    if [ -f "$MODEL_DIR/$lower/$f" ]; then cp -p -- "$MODEL_DIR/$lower/$f" "$staging/$lower/$f"; fi
  done
  echo "== $sym: train ($backend, walk-forward folds: $folds)"
  "${PB[@]}" train --symbol "$sym" --backend "$backend" --wf "$folds" "${decay_args[@]}" \
    --data-dir "$DATA_DIR" --model-dir "$staging"
  echo "== $sym: deploy"
  "${PB[@]}" deploy --symbol "$sym" --from "$staging" --model-dir "$MODEL_DIR" "${force[@]}"
done
echo "done: $(printf '%s ' "${symbols[@]}")"
