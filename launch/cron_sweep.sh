#!/usr/bin/env bash
# cron_sweep.sh SWEEP_FILE - the cron entry point for `nel sweep` (see crontab.example).
#
# cron starts jobs with an almost empty environment: this script loads the operator's
# environment file (PATH with sbatch and the nel virtualenv, API keys), runs the sweep under a
# lock so that a slow run never overlaps the next one, and appends its output to a log.
#
# Env: NEL_ENV_FILE   sourced first (default $HOME/.config/nel/cron.env); put e.g.
#                       export PATH=/opt/slurm/bin:$HOME/venvs/nel/bin:$PATH
#                       export OPENAI_API_KEY=...        (chmod 600 this file)
#      NEL_SWEEP_LOG  log file (default: <sweep file>.log next to the sweep file)
#      NEL_CMD        the nel command (default: nel)
set -uo pipefail
SWEEP=${1:?usage: cron_sweep.sh SWEEP_FILE}
ENV_FILE=${NEL_ENV_FILE:-$HOME/.config/nel/cron.env}
# shellcheck disable=SC1090
[ -r "$ENV_FILE" ] && . "$ENV_FILE"
LOG=${NEL_SWEEP_LOG:-${SWEEP%.*}.log}
LOCK="${SWEEP%.*}.cron.lock"

{
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) nel sweep $SWEEP"
  # -n: if the previous sweep still runs, skip this turn instead of queueing behind it.
  flock -n "$LOCK" ${NEL_CMD:-nel} sweep "$SWEEP"
  echo "=== exit $? (0 all complete, 5 in progress, 1 some run errored or was given up, 2 bad input)"
} >>"$LOG" 2>&1
