#!/usr/bin/env bash
# Integration test of `attnbench slurm` against a real Slurm: a one-node cluster on this machine
# from Debian's slurm-wlm and munge (harness/setup.sh installs them), started here without
# systemd: munged with a freshly generated key, slurmctld and slurmd with a minimal slurm.conf
# (this node, one partition, proctrack/linuxproc and task/affinity: CPU masks through
# sched_setaffinity, no cgroups), every file under one temporary directory.
#   1. an unsharded sweep of CONFIG, run directly;
#   2. `attnbench slurm CONFIG --shards 3 --submit`: the array job and the dependent merge+plot
#      job; the merged results must hold the unsharded sweep's cases with identical accuracy;
#   3. the same array with shard 2 cancelled (scancel) mid-run: merge must refuse, listing
#      exactly the cases shard 2 did not finish; shard 2 resubmitted alone (--resume in the
#      script) completes the set, and the merge equals the unsharded sweep again.
# Every daemon started here is stopped on every exit path (trap). Exit 77 (CTest: skipped) only
# when not root: the daemons run as SlurmUser=root.
#
#   tests/slurm/run.sh ATTNBENCH_EXE SOURCE_DIR [CONFIG]
set -euo pipefail
exe=$(readlink -f "$1")
src=$(readlink -f "$2")
config=$(readlink -f "${3:-$src/configs/quick.ini}")
py=/usr/bin/python3  # Debian's, with json (and matplotlib for the merge job's plots)
timeout_s=${ATTNBENCH_SLURM_TIMEOUT:-1800}  # bound on each wait for the cluster

say() { printf '[slurm test %4ds] %s\n' "$SECONDS" "$*"; }
die() { echo "slurm test: FAIL: $*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
  echo "slurm test: skipped: needs root (slurmctld, slurmd and munged run as root here)"
  exit 77
fi
for b in munged munge unmunge slurmctld slurmd sbatch squeue scancel scontrol sinfo; do
  command -v "$b" >/dev/null || die "$b not found: run harness/setup.sh (it installs slurm-wlm and munge)"
done

t=$(mktemp -d /tmp/attnbench-slurm.XXXXXX)
chmod 755 "$t"
pids=()
cleanup() {
  local rc=$?
  set +e
  if [[ -S $t/munge/socket && -f $t/slurm.conf ]]; then
    SLURM_CONF=$t/slurm.conf scancel --full --quiet --partition=attnbench 2>/dev/null
    for _ in $(seq 100); do
      [[ -z $(SLURM_CONF=$t/slurm.conf squeue -h 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  # slurmstepd and job processes that outlived the daemons: ours carry this cluster's
  # SLURM_CONF in their environment (slurmd passes its own on, sbatch the submitter's).
  for proc in /proc/[0-9]*; do
    [[ ${proc#/proc/} != "$$" ]] && tr '\0' '\n' <"$proc/environ" 2>/dev/null |
      grep -qxF "SLURM_CONF=$t/slurm.conf" && kill -9 "${proc#/proc/}" 2>/dev/null
  done
  if [[ $rc -ne 0 && $rc -ne 77 ]]; then
    for log in slurmctld.log slurmd.log munge/munged.log res/slurm/merge.log; do
      [[ -f $t/$log ]] && { echo "---- $log (last 25 lines)"; tail -25 "$t/$log"; }
    done >&2
  fi
  rm -rf "$t"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- munge: a private key and socket ---------------------------------------------------------------
mkdir -m 700 "$t/munge"
dd if=/dev/urandom of="$t/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$t/munge/munge.key"
munged --foreground --force --key-file="$t/munge/munge.key" --socket="$t/munge/socket" \
  --pid-file="$t/munge/munged.pid" --log-file="$t/munge/munged.log" \
  --seed-file="$t/munge/seed" >"$t/munge/stdout" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S $t/munge/socket ]] && break; sleep 0.1; done
munge --socket="$t/munge/socket" -n | unmunge --socket="$t/munge/socket" >/dev/null ||
  die "munged did not start: $(cat "$t/munge/stdout" "$t/munge/munged.log" 2>/dev/null | tail -3)"

# --- slurm.conf: this node, one partition, no cgroups ---------------------------------------------
# task/affinity gives each task only its CPUs, so the scripts' OMP_PLACES=cores pins two shards
# to two different cores (with task/none both would bind to CPU 0).
host=$(hostname -s)
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ctl_port=$(free_port)
node_port=$(free_port)
[[ $node_port != "$ctl_port" ]] || node_port=$((ctl_port + 1))
cpus=$(nproc)
mkdir -p "$t/state" "$t/spool"
cat >"$t/slurm.conf" <<EOF
# A one-node test cluster of tests/slurm/run.sh; every path is under $t.
ClusterName=attnbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$node_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$t/munge/socket
CredType=cred/munge
StateSaveLocation=$t/state
SlurmdSpoolDir=$t/spool
SlurmctldPidFile=$t/slurmctld.pid
SlurmdPidFile=$t/slurmd.pid
SlurmctldLogFile=$t/slurmctld.log
SlurmdLogFile=$t/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=attnbench Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$t/slurm.conf

say "starting slurmctld and slurmd ($host, $cpus CPUs, ports $ctl_port/$node_port)"
slurmctld -D -i -f "$SLURM_CONF" >"$t/slurmctld.stdout" 2>&1 &
pids+=($!)
slurmd -D -N "$host" -f "$SLURM_CONF" >"$t/slurmd.stdout" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 300); do
  state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
  [[ $state == idle ]] && break
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "a daemon exited: $(tail -3 "$t"/*.stdout)"; done
  sleep 0.2
done
[[ $state == idle ]] || die "the node did not become idle within 60 s (state '$state')"

# Waits (bounded) until job $1 has left the queue; prints its final state.
wait_job() {
  local deadline=$((SECONDS + timeout_s))
  while [[ -n $(squeue -h -j "$1" 2>/dev/null) ]]; do
    ((SECONDS < deadline)) || die "job $1 still queued or running after ${timeout_s} s"
    sleep 1
  done
  scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | sort -u | tr '\n' ' '
}

# Cases and accuracy of two results.json: identical, or the differences on stderr.
same_cases_and_accuracy() {
  "$py" - "$1" "$2" <<'EOF'
import json, sys
def rows(path):
    with open(path) as f:
        return {r["key"]: r for r in json.load(f)["rows"]}
a, b = rows(sys.argv[1]), rows(sys.argv[2])
if a.keys() != b.keys():
    sys.exit(f"case sets differ: only in {sys.argv[1]}: {sorted(a.keys() - b.keys())[:5]}, "
             f"only in {sys.argv[2]}: {sorted(b.keys() - a.keys())[:5]}")
fields = ("status", "rel_err", "max_abs_err", "cosine", "coverage", "ref_rows", "reference")
bad = [(k, f, a[k].get(f), b[k].get(f)) for k in a for f in fields if a[k].get(f) != b[k].get(f)]
if bad:
    sys.exit(f"{len(bad)} accuracy values differ, e.g. {bad[:3]}")
print(f"{len(a)} cases, identical accuracy")
EOF
}

# Beside the array job (its times do not matter here, only cases and accuracy).
say "unsharded sweep of $config, in the background"
"$exe" sweep "$config" --out "$t/whole" --quiet >"$t/whole.log" 2>&1 &
whole=$!
pids+=($whole)

# --- 2. array job + dependent merge -------------------------------------------------------------
say "attnbench slurm --shards 3 --submit"
out=$("$exe" slurm "$config" --shards 3 --cpus-per-task 1 --time 0:30:00 --out "$t/res" --submit)
echo "$out"
array=$(sed -n 's/.*submitted array job \([0-9]*\).*/\1/p' <<<"$out")
merge=$(sed -n 's/.* merge job \([0-9]*\).*/\1/p' <<<"$out")
[[ -n $array && -n $merge ]] || die "could not read the job ids from: $out"
say "array $array: $(wait_job "$array")"
# Each task's wall time: how evenly the cost-balanced partition split the work.
scontrol show job "$array" | grep -o 'ArrayTaskId=[0-9]*\|RunTime=[0-9:-]*' | paste -d' ' - - |
  sed 's/^/[slurm test] shard /'
final=$(wait_job "$merge")
say "merge job $merge: $final"
[[ $final == "JobState=COMPLETED " ]] || die "merge job $merge ended $final: $(tail -5 "$t/res/slurm/merge.log")"
wait "$whole" || die "the unsharded sweep failed: $(tail -3 "$t/whole.log")"
say "unsharded sweep done"
same_cases_and_accuracy "$t/whole/results.json" "$t/res/results.json" || die "merged != unsharded"
for f in results.csv shards.json time_vs_n.png error_vs_n.png; do
  [[ -s $t/res/$f ]] || die "the merge job did not write $t/res/$f"
done

# --- 3. a shard cancelled mid-run, refused, resubmitted with --resume ---------------------------
say "array with shard 2 cancelled mid-run"
"$exe" slurm "$config" --shards 3 --cpus-per-task 1 --time 0:30:00 --out "$t/cut" >/dev/null
array=$(sbatch --parsable "$t/cut/slurm/sweep.sbatch")
array=${array%%;*}
rows_of() { "$py" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["rows"]))' "$1" 2>/dev/null || echo 0; }
deadline=$((SECONDS + timeout_s))
until [[ $(rows_of "$t/cut/shards/2/results.json") -ge 1 ]]; do
  ((SECONDS < deadline)) || die "shard 2 wrote no row within ${timeout_s} s"
  sleep 0.1
done
scancel "${array}_2"
say "cancelled ${array}_2 after $(rows_of "$t/cut/shards/2/results.json") rows; array: $(wait_job "$array")"
total=$("$py" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["cases"]))' "$t/cut/shards/2/shard.json")
done_rows=$(rows_of "$t/cut/shards/2/results.json")
((done_rows < total)) || die "shard 2 finished all $total cases before it could be cancelled"
set +e
refusal=$("$exe" merge "$t/cut" "$t/cut/shards/"{1..3} 2>&1)
code=$?
set -e
echo "$refusal" | cut -c1-400
[[ $code -eq 2 ]] || die "merge of the incomplete set exited $code, not 2"
"$py" - "$t/cut/shards/2" "$refusal" <<'EOF' || die "merge did not list exactly shard 2's missing cases"
import json, sys
d, message = sys.argv[1], sys.argv[2]
cases = json.load(open(f"{d}/shard.json"))["cases"]
done = {r["key"] for r in json.load(open(f"{d}/results.json"))["rows"]}
missing = [k for k in cases if k not in done]
assert f": {len(missing)} of " in message, message[:200]
assert f"shard 2/3 ({d}): {len(missing)}]" in message, message[:300]
for k in missing[:20]:
    assert k in message, k
assert not any(k in message for k in done), "a finished case was listed"
EOF
say "merge refused, listing the $((total - done_rows)) missing cases; resubmitting shard 2"
again=$(sbatch --parsable --array=2 "$t/cut/slurm/sweep.sbatch")
final=$(wait_job "${again%%;*}")
[[ $final == "JobState=COMPLETED " ]] || die "resubmitted shard 2 ended $final"
"$exe" merge "$t/cut" "$t/cut/shards/"{1..3} || die "merge failed after the resubmission"
same_cases_and_accuracy "$t/whole/results.json" "$t/cut/results.json" || die "resumed merge != unsharded"
say "passed"
