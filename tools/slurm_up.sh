#!/usr/bin/env bash
# slurm_up.sh - a single-node SLURM cluster on this machine, for nel's SLURM tests and for
# trying `python -m nel.launch` without a real cluster. Debian 12 (slurm-wlm 22.05), run as
# root; works without systemd (containers, CI runners). Idempotent: installs only missing
# packages and skips daemons that already run, so CI can call it unconditionally:
#
#   sudo tools/slurm_up.sh            # ~20 s on a fresh Debian 12 image (apt included), ~1 s after
#   pytest -m slurm                   # tests/test_slurm.py
#   sudo tools/slurm_down.sh          # stop the daemons, drop the state (--purge: packages too)
#
# What it sets up: munge (auth), MariaDB + slurmdbd (accounting, so `sacct` works: submitit
# and `nel status` read ended jobs' states from it), slurmctld and one slurmd whose node is
# named "localhost" (NodeAddr 127.0.0.1) with this machine's CPUs and 95% of its memory, in
# one partition "debug" (the default). Jobs run as the submitting user on this machine, so
# they reach servers on 127.0.0.1 and the same filesystem as the submitter.
#
# Env: SLURM_BASE       state, logs and pid files (default /tmp/nel-slurm)
#      SLURM_CLUSTER    cluster name (default localcluster)
#      SLURM_ACCOUNTING 1 (default): also run MariaDB + slurmdbd so that `sacct` works.
#                       submitit polls sacct; without it job.state is UNKNOWN and a cancelled
#                       job's result() blocks forever. 0: no accounting (faster, lighter;
#                       tests/test_slurm.py then skips, saying why).
# Daemon logs: $SLURM_BASE/{slurmctld,slurmd,slurmdbd}.log, $SLURM_BASE/mysql/mariadb.log.
set -euo pipefail
BASE=${SLURM_BASE:-/tmp/nel-slurm}
CLUSTER=${SLURM_CLUSTER:-localcluster}
ACCT=${SLURM_ACCOUNTING:-1}
NODE=localhost            # fixed node name, independent of $(hostname)
T0=$EPOCHREALTIME
log() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN{printf "[slurm_up %6.1fs] %s\n", b-a, m}'; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }

# 1. packages (--no-install-recommends: 9 packages for slurm+munge, +24 for slurmdbd+mariadb)
PKGS="slurm-wlm slurmctld slurmd slurm-client munge"
[ "$ACCT" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing:$missing"
  apt-get update -qq
  # /usr/sbin/policy-rc.d (exit 101) on this image stops postinst from starting services;
  # without it (and without systemd) invoke-rc.d would run /etc/init.d/{munge,slurmctld,slurmd,mariadb}.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
log "packages present: $(slurmctld -V)"
mkdir -p "$BASE/ctld" "$BASE/d" /etc/slurm

# 2. munge (key is created by the package postinst; recreate if missing)
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key --force
  chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then log "munged already running"; else
  runuser -u munge -- /usr/sbin/munged          # daemonizes; pid in /run/munge/munged.pid
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null
  log "munged started pid $(cat /run/munge/munged.pid)"
fi

# 3. accounting: MariaDB (unix socket only; root via unix_socket auth) + slurmdbd
if [ "$ACCT" = 1 ]; then
  install -d -o mysql -g mysql -m 755 /run/mysqld "$BASE/mysql"   # mariadbd writes pid/log as user mysql
  if mysqladmin --protocol=socket ping >/dev/null 2>&1; then log "mariadb already running"; else
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
      --pid-file="$BASE/mysql/mariadb.pid" --skip-networking --innodb-buffer-pool-size=64M \
      --log-error="$BASE/mysql/mariadb.log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 150); do mysqladmin --protocol=socket ping >/dev/null 2>&1 && break; sleep 0.2; done
    mysqladmin --protocol=socket ping >/dev/null
    log "mariadb started pid $(cat "$BASE/mysql/mariadb.pid")"
  fi
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$BASE/slurmdbd.pid
LogFile=$BASE/slurmdbd.log
EOF
  chmod 600 /etc/slurm/slurmdbd.conf             # slurmdbd refuses a group/world-readable config
  ACCT_CONF=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nJobAcctGatherType=jobacct_gather/linux'
else
  ACCT_CONF=$'AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none'
fi

# 4. slurm.conf from the real hardware (slurmd -C), node renamed to 'localhost'
HW=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //')      # CPUs=.. Boards=.. RealMemory=..
MEM=$(echo "$HW" | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
HW=$(echo "$HW" | sed -E "s/RealMemory=[0-9]+/RealMemory=$((MEM * 95 / 100))/")  # margin vs 'Low RealMemory' drain
cat > /etc/slurm/slurm.conf <<EOF
# generated by slurm_up.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=600
InactiveLimit=0
DependencyParameters=kill_invalid_depend
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/d
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/slurmctld.log
SlurmdLogFile=$BASE/slurmd.log
$ACCT_CONF
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/jobcomp.txt
NodeName=$NODE NodeAddr=127.0.0.1 $HW State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
log "wrote /etc/slurm/slurm.conf: NodeName=$NODE $HW"

# 5. daemons (all daemonize and write pid files under $BASE)
if [ "$ACCT" = 1 ]; then
  if alive "$BASE/slurmdbd.pid"; then log "slurmdbd already running"; else
    /usr/sbin/slurmdbd
    for _ in $(seq 150); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
    log "slurmdbd started pid $(cat "$BASE/slurmdbd.pid")"
  fi
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if alive "$BASE/slurmctld.pid"; then log "slurmctld already running"; else
  /usr/sbin/slurmctld -c          # -c: start with clean job state
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
  log "slurmctld started pid $(cat "$BASE/slurmctld.pid")"
fi
if alive "$BASE/slurmd.pid"; then log "slurmd already running"; else
  /usr/sbin/slurmd -N "$NODE"
  for _ in $(seq 50); do [ -s "$BASE/slurmd.pid" ] && break; sleep 0.1; done
  log "slurmd started pid $(cat "$BASE/slurmd.pid")"
fi

# 6. wait for the node to be idle
for _ in $(seq 150); do
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$st" in idle*) break;; drain*|down*) scontrol update nodename=$NODE state=resume || true;; esac
  sleep 0.2
done
sinfo
[ "$(sinfo -h -n "$NODE" -o %T)" = idle ] || { echo "node not idle; see $BASE/*.log" >&2; exit 1; }
log "cluster up (sinfo, squeue, sacct ready; stop with tools/slurm_down.sh)"
