#!/usr/bin/env bash
# slurm_down.sh - stop what tools/slurm_up.sh started (by PID, from its pid files), cancel the
# jobs left in its queue, drop its accounting database and remove its state directory.
#   --purge: also remove the Debian packages, configs, munge key and MariaDB data.
# Env: SLURM_BASE as for slurm_up.sh (default /tmp/nel-slurm).
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/nel-slurm}

stop_pid() {  # name pidfile
  local pid
  [ -s "$2" ] || { echo "$1: no pid file"; return 0; }
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then echo "$1 ($pid) ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid"; fi
    echo "$1 ($pid) stopped"
  else
    echo "$1 ($pid) not running"
  fi
  rm -f "$2"
}

# cancel remaining jobs first so no job steps are left behind
if [ -s "$BASE/slurmctld.pid" ] && kill -0 "$(cat "$BASE/slurmctld.pid")" 2>/dev/null; then
  scancel --user=root 2>/dev/null; sleep 1
fi
stop_pid slurmd    "$BASE/slurmd.pid"
stop_pid slurmctld "$BASE/slurmctld.pid"
stop_pid slurmdbd  "$BASE/slurmdbd.pid"
# drop the accounting DB: slurmctld -c restarts job ids at 1, old rows would shadow new jobs in sacct
if [ -s "$BASE/mysql/mariadb.pid" ] && kill -0 "$(cat "$BASE/mysql/mariadb.pid")" 2>/dev/null; then
  mariadb --protocol=socket -e "DROP DATABASE IF EXISTS slurm_acct_db" && echo "dropped slurm_acct_db"
fi
stop_pid mariadb   "$BASE/mysql/mariadb.pid"
stop_pid munged    /run/munge/munged.pid
rm -rf "$BASE"
rm -f /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf

if [ "${1:-}" = "--purge" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq slurm-wlm slurmctld slurmd slurm-client \
    slurm-wlm-basic-plugins slurmdbd slurm-wlm-mysql-plugin munge libmunge2 \
    mariadb-server mariadb-server-core mariadb-client mariadb-client-core mariadb-common \
    galera-4 mysql-common >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -qq >/dev/null 2>&1
  rm -rf /etc/munge /var/log/munge /var/lib/munge /run/munge /var/lib/mysql /etc/mysql /run/mysqld
  echo "packages purged"
fi
echo "slurm down"
