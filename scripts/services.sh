#!/usr/bin/env bash
# scripts/services.sh - install whatever is missing and start whatever is not
# running among the local services rota's tests talk to:
#
#   redis      127.0.0.1:6379   (Debian: redis-server)
#   postgres   127.0.0.1:5432   (Debian: postgresql; trust auth; dbs test, postgres, root)
#   etcd       127.0.0.1:2379   (Debian: etcd-server etcd-client, v3.4)
#   zookeeper  127.0.0.1:2181   (Debian: libzookeeper-java, v3.8; run with plain `java`)
#   chromium   (only with --with-chromium or `chromium`: installs chromium chromium-driver)
#
# Runs as root, without systemd. Idempotent: a service that already answers is
# left alone. Prints exactly one status line per service on stdout; details of a
# failure go to stderr. Exits non-zero if any selected service did not come up.
#
# Usage: scripts/services.sh [--with-chromium] [redis|postgres|etcd|zookeeper|chromium ...]
#        (no service names = redis postgres etcd zookeeper)
# Env:   ROTA_SERVICES_TIMEOUT  seconds to wait for each service (default 30)
#        ROTA_SERVICES_DIR      state dir for etcd/zookeeper data, logs, pids
#                               (default /var/lib/rota-services)
set -uo pipefail

TIMEOUT=${ROTA_SERVICES_TIMEOUT:-30}
STATE_DIR=${ROTA_SERVICES_DIR:-/var/lib/rota-services}
APT_LOG=$STATE_DIR/apt.log
export DEBIAN_FRONTEND=noninteractive

usage() {
  sed -n '/^# Usage:/,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
}

# ---------------------------------------------------------------- arguments
declare -A want=()
with_chromium=0
for arg in "$@"; do
  case $arg in
    --with-chromium) with_chromium=1 ;;
    -h | --help) usage; exit 0 ;;
    redis | postgres | etcd | zookeeper | chromium) want[$arg]=1 ;;
    postgresql | pg) want[postgres]=1 ;;
    zk) want[zookeeper]=1 ;;
    *) echo "services.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done
if (( ${#want[@]} == 0 )); then
  want=([redis]=1 [postgres]=1 [etcd]=1 [zookeeper]=1)
fi
(( with_chromium )) && want[chromium]=1

if (( EUID != 0 )); then
  echo "services.sh: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi
mkdir -p "$STATE_DIR"

# ---------------------------------------------------------------- helpers
now() { local t=$EPOCHREALTIME; echo "${t/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

SVC='' ADDR=''
status() { printf '%-10s %-15s %s\n' "$SVC" "$ADDR" "$*"; }
# fail MESSAGE [LOGFILE]: status line on stdout, log tail on stderr
fail() {
  status "FAILED: $1"
  if [[ -n ${2:-} && -f $2 ]]; then
    echo "---- last lines of $2 ----" >&2
    tail -n 25 "$2" >&2
    echo "----" >&2
  fi
  return 1
}

apt_updated=0
INSTALLED=  # note for the status line, set by ensure_pkgs
# ensure_pkgs PATH_OR_CMD:PACKAGE ... - install the packages whose file/command is missing
ensure_pkgs() {
  local pair bin pkg missing=() t0
  INSTALLED=
  for pair in "$@"; do
    bin=${pair%%:*} pkg=${pair#*:}
    if [[ $bin == /* ]]; then [[ -e $bin ]] && continue
    else command -v "$bin" >/dev/null 2>&1 && continue
    fi
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  done
  (( ${#missing[@]} )) || return 0
  t0=$(now)
  if (( ! apt_updated )); then
    if ! apt-get -q -o DPkg::Lock::Timeout=300 update >>"$APT_LOG" 2>&1; then
      fail "apt-get update failed" "$APT_LOG"; return 1
    fi
    apt_updated=1
  fi
  if ! apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends \
      "${missing[@]}" >>"$APT_LOG" 2>&1; then
    fail "apt-get install ${missing[*]} failed" "$APT_LOG"; return 1
  fi
  INSTALLED="installed ${missing[*]} in $(since "$t0"); "
}

# wait_ready PROBE_FN PID LOG - poll PROBE_FN until it succeeds, the process
# PID (if given) dies, or TIMEOUT seconds pass.
wait_ready() {
  local probe=$1 pid=$2 log=$3 deadline=$((SECONDS + TIMEOUT))
  until "$probe" >/dev/null 2>&1; do
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      fail "process $pid exited before answering (log: $log)" "$log"; return 1
    fi
    if (( SECONDS >= deadline )); then
      fail "not answering after ${TIMEOUT}s (log: $log)" "$log"; return 1
    fi
    sleep 0.2
  done
}

# port_open PORT - something accepts TCP connections on 127.0.0.1:PORT
# shellcheck disable=SC2016  # $1 is expanded by the inner bash
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# launch LOG PIDFILE CMD... - start CMD detached (own session, no tty, stdio to LOG)
LAUNCHED_PID=
launch() {
  local log=$1 pidfile=$2; shift 2
  printf '\n==== %s services.sh starting: %s\n' "$(date -Is)" "$*" >>"$log"
  setsid nohup "$@" </dev/null >>"$log" 2>&1 &
  LAUNCHED_PID=$!
  echo "$LAUNCHED_PID" >"$pidfile"
}

# alive_from PIDFILE WORD - the pid in PIDFILE if that process is alive and its
# command line contains WORD (a start still in progress from an earlier run)
alive_from() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

# ---------------------------------------------------------------- redis
redis_ready() { [[ $(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]; }

svc_redis() {
  SVC=redis ADDR=127.0.0.1:6379
  local t0 log=/var/log/redis/ci.log
  redis_ready && { status "already running"; return 0; }
  ensure_pkgs redis-server:redis-server redis-cli:redis-tools || return 1
  redis_ready && { status "${INSTALLED}already running"; return 0; }
  mkdir -p /var/lib/redis /var/log/redis
  t0=$(now)
  if ! redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile "$log" >>"$STATE_DIR/redis-start.out" 2>&1; then
    fail "redis-server did not start (see $STATE_DIR/redis-start.out)" "$log"; return 1
  fi
  wait_ready redis_ready "" "$log" || return 1
  status "${INSTALLED}started in $(since "$t0")"
}

# ---------------------------------------------------------------- postgres
pg_ready() { timeout 5 pg_isready -q -h 127.0.0.1 -p 5432; }
# psql as the postgres superuser over the unix socket (peer or trust both work)
pg_admin() { (cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -p 5432 -d template1 "$@"); }

hba_is_trust() {
  grep -Eq '^[[:space:]]*local[[:space:]]+all[[:space:]]+all[[:space:]]+trust' "$1" &&
    grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$1"
}
write_trust_hba() {
  [[ -f $1 && ! -f $1.rota-orig ]] && cp -p "$1" "$1.rota-orig"
  cat >"$1" <<'EOF'
# Written by rota's scripts/services.sh: trust auth, for local test use only.
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
host    all   all   ::1/128        trust
EOF
  chown postgres:postgres "$1" 2>/dev/null
}

svc_postgres() {
  SVC=postgres ADDR=127.0.0.1:5432
  local t0 ver hba log srv notes=() state created=()
  if pg_ready; then
    state="already running"
    hba=$(pg_admin -c 'SHOW hba_file' 2>/dev/null)
    if [[ -n $hba && -f $hba ]] && ! hba_is_trust "$hba"; then
      write_trust_hba "$hba"
      pg_admin -c 'SELECT pg_reload_conf()' >/dev/null
      notes+=("pg_hba.conf set to trust")
    fi
  else
    srv=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | head -n 1)
    ensure_pkgs pg_isready:postgresql-client pg_ctlcluster:postgresql \
      "${srv:-/usr/lib/postgresql/NONE/bin/postgres}:postgresql" || return 1
    # shellcheck disable=SC2012  # version directories: plain names
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [[ -z $ver || ! -f /etc/postgresql/$ver/main/postgresql.conf ]]; then
      # no cluster yet: create one (pg_createcluster runs initdb as user postgres)
      # shellcheck disable=SC2012
      ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
      if ! pg_createcluster --port 5432 "$ver" main >>"$STATE_DIR/postgres-start.out" 2>&1; then
        fail "pg_createcluster $ver main failed" "$STATE_DIR/postgres-start.out"; return 1
      fi
      notes+=("created cluster $ver/main")
    fi
    log=/var/log/postgresql/postgresql-$ver-main.log
    hba=/etc/postgresql/$ver/main/pg_hba.conf
    if ! hba_is_trust "$hba"; then write_trust_hba "$hba"; notes+=("pg_hba.conf set to trust"); fi
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    t0=$(now)
    if ! pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
        >>"$STATE_DIR/postgres-start.out" 2>&1 && ! pg_ready; then
      fail "pg_ctlcluster $ver main start failed (see $STATE_DIR/postgres-start.out)" "$log"
      return 1
    fi
    wait_ready pg_ready "" "$log" || return 1
    state="${INSTALLED}started in $(since "$t0")"
  fi
  # role root (superuser) and databases test, postgres, root
  if [[ -z $(pg_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'root'") ]]; then
    pg_admin -c 'CREATE ROLE root SUPERUSER LOGIN' || { fail "could not create role root"; return 1; }
    created+=("role root")
  fi
  for db in test postgres root; do
    if [[ -z $(pg_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
      pg_admin -c "CREATE DATABASE \"$db\" OWNER root" || { fail "could not create database $db"; return 1; }
      created+=("database $db")
    fi
  done
  if (( ${#created[@]} )); then
    local joined; joined=$(printf '%s, ' "${created[@]}")
    notes+=("created ${joined%, }")
  fi
  if (( ${#notes[@]} )); then
    state+="; $(printf '%s; ' "${notes[@]}")"
    state=${state%; }
  fi
  status "$state"
}

# ---------------------------------------------------------------- etcd
ETCD_DIR=$STATE_DIR/etcd
etcd_ready() {
  port_open 2379 || return 1  # fail fast instead of waiting out etcdctl's dial timeout
  ETCDCTL_API=3 timeout 5 etcdctl --endpoints=127.0.0.1:2379 \
    --dial-timeout=2s --command-timeout=3s endpoint health
}

svc_etcd() {
  SVC=etcd ADDR=127.0.0.1:2379
  local t0 pid log=$ETCD_DIR/etcd.log pidfile=$ETCD_DIR/etcd.pid
  etcd_ready >/dev/null 2>&1 && { status "already running"; return 0; }
  ensure_pkgs etcd:etcd-server etcdctl:etcd-client || return 1
  etcd_ready >/dev/null 2>&1 && { status "${INSTALLED}already running"; return 0; }
  mkdir -p "$ETCD_DIR/data" && chmod 700 "$ETCD_DIR/data"
  t0=$(now)
  if pid=$(alive_from "$pidfile" etcd); then
    :  # an earlier run's etcd is still coming up: wait for it
  else
    launch "$log" "$pidfile" etcd --logger=zap --name n0 --data-dir "$ETCD_DIR/data" \
      --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster n0=http://127.0.0.1:2380
    pid=$LAUNCHED_PID
  fi
  wait_ready etcd_ready "$pid" "$log" || return 1
  status "${INSTALLED}started in $(since "$t0") (pid $pid)"
}

# ---------------------------------------------------------------- zookeeper
ZK_DIR=$STATE_DIR/zookeeper
JAVA_DIR=/usr/share/java
# shellcheck disable=SC2016  # $1 is expanded by the inner bash
zk_4lw() {  # send a four-letter word to 127.0.0.1:2181 and print the answer
  timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2181 && printf %s "$1" >&3 && cat <&3' _ "$1" 2>/dev/null
}
zk_ready() { zk_4lw srvr | grep -q 'Mode: standalone'; }

# zookeeper.jar's manifest Class-Path already names zookeeper-jute, netty,
# slf4j-api, jackson, ... in /usr/share/java; we add jute and slf4j-api anyway
# plus an slf4j binding so the log says something.
zk_classpath() {
  local cp=$JAVA_DIR/zookeeper.jar f
  [[ -f $cp ]] || return 1
  for f in zookeeper-jute.jar slf4j-api.jar; do
    [[ -f $JAVA_DIR/$f ]] && cp+=:$JAVA_DIR/$f
  done
  if [[ -f $JAVA_DIR/slf4j-simple.jar ]]; then
    cp+=:$JAVA_DIR/slf4j-simple.jar
  elif [[ -f $JAVA_DIR/slf4j-log4j12.jar && -f $JAVA_DIR/log4j-1.2.jar ]]; then
    cp+=:$JAVA_DIR/slf4j-log4j12.jar:$JAVA_DIR/log4j-1.2.jar
  fi
  echo "$cp"
}

svc_zookeeper() {
  SVC=zookeeper ADDR=127.0.0.1:2181
  local t0 pid cp log=$ZK_DIR/zookeeper.log pidfile=$ZK_DIR/zookeeper.pid cfg=$ZK_DIR/zoo.cfg
  zk_ready && { status "already running"; return 0; }
  # libzookeeper-java has the jars (and pulls libslf4j-java); the `zookeeper`
  # package would only add init scripts and a dependency on a full default-jre.
  ensure_pkgs java:default-jre-headless "$JAVA_DIR/zookeeper.jar:libzookeeper-java" \
    "$JAVA_DIR/slf4j-simple.jar:libslf4j-java" || return 1
  zk_ready && { status "${INSTALLED}already running"; return 0; }
  cp=$(zk_classpath) || { fail "$JAVA_DIR/zookeeper.jar missing after install"; return 1; }
  mkdir -p "$ZK_DIR/data"
  # tickTime=500: tests may use short sessions (min session timeout = 2*tickTime = 1s);
  # maxSessionTimeout raised from the default 20*tickTime = 10s so longer ones aren't capped.
  cat >"$cfg" <<EOF
# Generated by rota's scripts/services.sh - rewritten on every start.
tickTime=500
maxSessionTimeout=60000
dataDir=$ZK_DIR/data
clientPort=2181
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok,stat
EOF
  t0=$(now)
  if pid=$(alive_from "$pidfile" QuorumPeerMain); then
    :  # an earlier run's ZooKeeper is still coming up: wait for it
  else
    launch "$log" "$pidfile" java -Xmx256m -XX:+UseSerialGC -cp "$cp" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg"
    pid=$LAUNCHED_PID
  fi
  wait_ready zk_ready "$pid" "$log" || return 1
  status "${INSTALLED}started in $(since "$t0") (pid $pid)"
}

# ---------------------------------------------------------------- chromium
svc_chromium() {
  SVC=chromium ADDR=-
  ensure_pkgs chromium:chromium chromedriver:chromium-driver || return 1
  if [[ -n $INSTALLED ]]; then status "${INSTALLED%; }"; else status "already installed"; fi
}

# ---------------------------------------------------------------- main
failed=()
for s in redis postgres etcd zookeeper chromium; do
  [[ -n ${want[$s]:-} ]] || continue
  "svc_$s" || failed+=("$s")
done
if (( ${#failed[@]} )); then
  echo "services.sh: not up: ${failed[*]}" >&2
  exit 1
fi
