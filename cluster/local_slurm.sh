#!/usr/bin/env bash
# A single-node SLURM on this machine (Debian's slurm-wlm and munge), to try cluster/train.sbatch, preemption and
# requeueing without a cluster. The tests start one for themselves (tests/genforecast/test_slurm.py).
#
#   cluster/local_slurm.sh install      install slurm-wlm and munge with apt-get (as root)
#   cluster/local_slurm.sh start DIR    write DIR/slurm.conf (state, spool and logs under DIR), start munged if it is
#                                       not running, then slurmctld and slurmd; wait until the node is idle
#   cluster/local_slurm.sh stop DIR     stop the slurmctld and slurmd started for DIR
#
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf. It listens on ports 16817 and 16818, away from a
# real SLURM's defaults. Root is needed: the daemons run as root (SlurmUser=root), munged as the munge user.
set -euo pipefail

command="${1:-}"
folder="${2:-}"

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        echo "slurm-wlm and munge are installed"
        return
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge
}

start() {
    [ "$(id -u)" = 0 ] || { echo "local_slurm.sh start needs root" >&2; exit 1; }
    command -v slurmctld >/dev/null || { echo "SLURM is not installed: run make cluster-up" >&2; exit 1; }
    mkdir -p "$folder/state" "$folder/spool" "$folder/log"
    folder="$(cd "$folder" && pwd)"
    local host
    host="$(hostname)"
    cat > "$folder/slurm.conf" <<CONF
ClusterName=genforecast
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$folder/state
SlurmdSpoolDir=$folder/spool
SlurmctldPidFile=$folder/slurmctld.pid
SlurmdPidFile=$folder/slurmd.pid
SlurmctldLogFile=$folder/log/slurmctld.log
SlurmdLogFile=$folder/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
NodeName=$host CPUs=$(nproc) RealMemory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 )) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    if ! pgrep -x munged >/dev/null; then
        [ -s /etc/munge/munge.key ] || {
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
            chown munge:munge /etc/munge/munge.key
            chmod 0400 /etc/munge/munge.key
        }
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
    fi
    /usr/sbin/slurmctld -f "$folder/slurm.conf"
    /usr/sbin/slurmd -f "$folder/slurm.conf"
    for _ in $(seq 60); do
        if SLURM_CONF="$folder/slurm.conf" sinfo -h -o %t 2>/dev/null | grep -q idle; then
            echo "SLURM_CONF=$folder/slurm.conf"
            return
        fi
        sleep 0.5
    done
    echo "the SLURM node did not become idle; see $folder/log" >&2
    exit 1
}

stop() {
    for daemon in slurmd slurmctld; do
        if [ -s "$folder/$daemon.pid" ]; then
            kill "$(cat "$folder/$daemon.pid")" 2>/dev/null || true
        fi
    done
}

case "$command" in
    install) install ;;
    start) [ -n "$folder" ] || { echo "usage: $0 start DIR" >&2; exit 2; }; start ;;
    stop) [ -n "$folder" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
