# shellcheck shell=bash
# Finds Postgres and Redis at the configured URLs or brings them up: installs the Debian
# packages when they are missing (as root), then starts the servers. Sourced by
# scripts/run and scripts/test; every step says what it does.
#
# Decisions, written down:
# - A Postgres cluster that Debian set up on the wanted port (pg_lsclusters) is started
#   as it is. Otherwise hotchan makes a cluster of its own in $HOTCHAN_STATE_DIR with
#   trust auth for local connections, owned by and run as `postgres` (Postgres refuses to
#   run as root). Installing the packages does not create Debian's default cluster.
# - Redis is started without persistence, as a cache should be.
# - State (a Postgres cluster of hotchan's own, Redis's log, the list of what was
#   started) lives in $HOTCHAN_STATE_DIR: /var/tmp/hotchan for root, and
#   /var/tmp/hotchan-<user> for anyone else, so a user never trips over root's folder.
# - Package managers and servers write to a log file; it is shown only when they fail.
# - Every server started here is written down in $HOTCHAN_STATE_DIR/started, so that
#   `scripts/run --stop` stops exactly those (servers found running are left alone).

if [[ $(id -u) == 0 ]]; then
  HOTCHAN_STATE_DIR=${HOTCHAN_STATE_DIR:-/var/tmp/hotchan}
else
  HOTCHAN_STATE_DIR=${HOTCHAN_STATE_DIR:-/var/tmp/hotchan-$(id -un)}
fi

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_state_dir: $HOTCHAN_STATE_DIR exists and is ours to write, or a clear error.
ensure_state_dir() {
  mkdir -p "$HOTCHAN_STATE_DIR" 2>/dev/null && [[ -w $HOTCHAN_STATE_DIR ]] \
    || die "cannot write to the state folder $HOTCHAN_STATE_DIR (owned by $(stat -c %U "$HOTCHAN_STATE_DIR" 2>/dev/null || echo '?')): set HOTCHAN_STATE_DIR to a folder of yours"
  # Postgres runs as `postgres` and must reach its data folder inside.
  [[ $(id -u) == 0 ]] && chmod 0755 "$HOTCHAN_STATE_DIR"
  return 0
}

# quietly LOG CMD...: runs CMD with its output in LOG; shows the log's tail if it fails.
quietly() {
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "$1 failed (whole output: $log)"
  fi
}

# started KIND ARGS...: notes a server this script started, for `scripts/run --stop`.
started() { printf '%s\n' "$*" >> "$HOTCHAN_STATE_DIR/started"; }

# url_host_port URL DEFAULT_PORT -> prints "host port"
url_host_port() {
  local rest=${1#*://}
  rest=${rest%%/*}
  rest=${rest%%\?*}
  rest=${rest##*@}
  local host=${rest%%:*} port=$2
  [[ $rest == *:* ]] && port=${rest##*:}
  [[ -n $host ]] || host=127.0.0.1
  printf '%s %s\n' "$host" "$port"
}

# url_user URL -> the user name in the URL, else the OS user (as libpq does)
url_user() {
  local rest=${1#*://}
  rest=${rest%%/*}
  if [[ $rest == *@* ]]; then
    rest=${rest%%@*}
    printf '%s\n' "${rest%%:*}"
  else
    id -un
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for_port() { # host port what
  local i
  for i in $(seq 1 100); do
    port_open "$1" "$2" && return 0
    sleep 0.2
  done
  die "$3 did not start listening on $1:$2"
}

APT_UPDATED=
apt_install() {
  [[ $(id -u) == 0 ]] || die "missing $*: install them (Debian: apt-get install $*) or run this as root"
  command -v apt-get >/dev/null || die "missing $* and no apt-get to install them"
  local log
  log=$(mktemp /tmp/hotchan-apt.XXXXXX.log)
  if [[ -z $APT_UPDATED ]]; then
    say "apt-get update"
    quietly "$log" apt-get update -qq
    APT_UPDATED=1
  fi
  say "installing $* (Debian packages; this takes a minute)"
  quietly "$log" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@"
  rm -f "$log"
}

pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -n $dir && -x $dir/initdb ]]; then
    printf '%s\n' "$dir"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  fi
}

# as_postgres CMD...: runs CMD as the `postgres` user when we are root, from /, which
# every user may enter (else Postgres tools say `could not change directory to "/root"`).
as_postgres() {
  if [[ $(id -u) == 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# ensure_postgres URL: Postgres answers on the URL's host and port afterwards.
ensure_postgres() {
  local host port user
  read -r host port < <(url_host_port "$1" 5432)
  user=$(url_user "$1")
  if port_open "$host" "$port"; then
    say "Postgres is up on $host:$port"
    return 0
  fi
  [[ $host == 127.0.0.1 || $host == localhost || $host == ::1 ]] \
    || die "Postgres at $host:$port is unreachable, and only a local one can be started"

  if [[ -z $(pg_bindir) ]]; then
    # Do not let the package create and start Debian's default cluster: we make our own.
    if [[ $(id -u) == 0 ]]; then
      mkdir -p /etc/postgresql-common/createcluster.d
      echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/hotchan.conf
    fi
    apt_install postgresql postgresql-client
  fi

  local cluster
  cluster=$(pg_lsclusters --no-header 2>/dev/null | awk -v p="$port" '$3 == p {print $1, $2; exit}')
  if [[ -n $cluster ]]; then
    say "starting the Postgres cluster $cluster on port $port"
    ensure_state_dir
    # shellcheck disable=SC2086
    (cd / && quietly "$HOTCHAN_STATE_DIR/pg-$port.start.log" \
      pg_ctlcluster --skip-systemctl-redirect $cluster start)
    started pg-cluster "$cluster"
  else
    local bin data log
    bin=$(pg_bindir)
    data=$HOTCHAN_STATE_DIR/pg-$port
    log=$HOTCHAN_STATE_DIR/pg-$port.log
    ensure_state_dir
    if [[ ! -s $data/PG_VERSION ]]; then
      say "creating a Postgres cluster of hotchan's own in $data"
      mkdir -p "$data"
      [[ $(id -u) == 0 ]] && chown postgres:postgres "$data"
      chmod 0700 "$data"
      quietly "$HOTCHAN_STATE_DIR/pg-$port.initdb.log" \
        as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8
    fi
    touch "$log"
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$log"
    say "starting Postgres on port $port (log: $log)"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$log" -w \
      -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null \
      || { tail -n 20 "$log" >&2; die "Postgres did not start (log: $log)"; }
    started pg-own "$bin" "$data"
  fi
  wait_for_port "$host" "$port" Postgres

  # The URL's user must exist: create it as a superuser of this local, trust-auth cluster.
  local psql
  psql=$(pg_bindir)/psql
  [[ -x $psql ]] || psql=psql
  if ! as_postgres "$psql" -h "$host" -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_roles WHERE rolname = '$user'" | grep -q 1; then
    say "creating the Postgres role $user"
    as_postgres "$psql" -h "$host" -p "$port" -U postgres -d postgres -qc \
      "CREATE ROLE \"$user\" SUPERUSER LOGIN" >&2
  fi
}

# ensure_redis URL: Redis answers on the URL's host and port afterwards.
ensure_redis() {
  local host port
  read -r host port < <(url_host_port "$1" 6379)
  if port_open "$host" "$port"; then
    say "Redis is up on $host:$port"
    return 0
  fi
  [[ $host == 127.0.0.1 || $host == localhost || $host == ::1 ]] \
    || die "Redis at $host:$port is unreachable, and only a local one can be started"
  command -v redis-server >/dev/null || apt_install redis-server
  ensure_state_dir
  say "starting Redis on $host:$port (log: $HOTCHAN_STATE_DIR/redis-$port.log)"
  redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
    --dir "$HOTCHAN_STATE_DIR" --logfile "$HOTCHAN_STATE_DIR/redis-$port.log" \
    --pidfile "$HOTCHAN_STATE_DIR/redis-$port.pid" >&2
  wait_for_port "$host" "$port" Redis
  started redis "$HOTCHAN_STATE_DIR/redis-$port.pid"
}

# stop_started: stops every server these scripts started (listed in
# $HOTCHAN_STATE_DIR/started), newest first, and forgets them.
stop_started() {
  local list=$HOTCHAN_STATE_DIR/started kind a b
  if [[ ! -s $list ]]; then
    say "nothing to stop: these scripts started no server (state: $HOTCHAN_STATE_DIR)"
    return 0
  fi
  while read -r kind a b; do
    case $kind in
      redis)
        if [[ -f $a ]] && kill "$(cat "$a")" 2>/dev/null; then
          say "stopped Redis (pid $(cat "$a"))"
        fi ;;
      pg-own)
        say "stopping Postgres in $b"
        as_postgres "$a/pg_ctl" -D "$b" -m fast -w stop >/dev/null 2>&1 || true ;;
      pg-cluster)
        say "stopping the Postgres cluster $a $b"
        (cd / && pg_ctlcluster --skip-systemctl-redirect "$a" "$b" stop) >/dev/null 2>&1 || true ;;
    esac
  done < <(tac "$list")
  rm -f "$list"
}

ensure_cargo() {
  command -v cargo >/dev/null || die "cargo is missing: hotchan builds with a Rust toolchain (rustup, Rust 1.85 or newer)"
  # Rust links with the system's C compiler, and ring (TLS) compiles C and assembly.
  if ! command -v cc >/dev/null; then
    say "no C compiler (cc): installing gcc, which Rust links with"
    apt_install gcc libc6-dev
  fi
  # TLS to Redis or Postgres without a CA file verifies against the system's roots.
  if [[ ! -e /etc/ssl/certs/ca-certificates.crt ]]; then
    say "no system CA bundle: installing ca-certificates"
    apt_install ca-certificates
  fi
}

# free_port -> a TCP port in 20000..32767 that nothing listens on now: below Linux's
# range of ephemeral ports (32768 and up), so no outgoing connection takes it meanwhile.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12768))
    port_open 127.0.0.1 "$port" || { printf '%s\n' "$port"; return 0; }
  done
}

# start_redis_cluster DIR -> prints a redis-cluster:// URL. Starts a private Redis Cluster
# of three primaries (no replicas) on free ports under DIR, splits the slots between
# them, and waits (at most 30 s) until every node says cluster_state:ok.
# stop_redis_cluster DIR stops it.
start_redis_cluster() {
  local dir=$1 ports=() buses=() port bus i
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$dir"
  for i in 0 1 2; do
    port=$(free_port)
    bus=$(free_port)
    ports+=("$port")
    buses+=("$bus")
    # The cluster bus gets a free port of its own (by default it is port + 10000, which
    # may be taken, or past 65535).
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --cluster-enabled yes --cluster-port "$bus" \
      --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000 \
      --dir "$dir" --pidfile "$dir/redis-$port.pid" --logfile "$dir/redis-$port.log" >&2
  done
  for port in "${ports[@]}"; do wait_for_port 127.0.0.1 "$port" "Redis Cluster node"; done
  redis-cli -p "${ports[0]}" cluster addslotsrange 0 5460 >/dev/null
  redis-cli -p "${ports[1]}" cluster addslotsrange 5461 10922 >/dev/null
  redis-cli -p "${ports[2]}" cluster addslotsrange 10923 16383 >/dev/null
  for i in 1 2; do
    redis-cli -p "${ports[0]}" cluster meet 127.0.0.1 "${ports[$i]}" "${buses[$i]}" >/dev/null
  done
  for i in $(seq 1 150); do
    local ok=0
    for port in "${ports[@]}"; do
      redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1))
    done
    if [[ $ok == 3 ]]; then
      printf 'redis-cluster://127.0.0.1:%s?node=127.0.0.1:%s&node=127.0.0.1:%s\n' "${ports[@]}"
      return 0
    fi
    sleep 0.2
  done
  stop_redis_cluster "$dir"
  die "the private Redis Cluster did not reach cluster_state:ok in 30 s (logs: $dir)"
}

stop_redis_cluster() {
  local file pids=() pid i
  for file in "$1"/redis-*.pid; do
    [[ -f $file ]] && pids+=("$(cat "$file")")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Wait (up to 5 s) until they are gone: a node that is still exiting writes into DIR,
  # and removing DIR under it fails.
  for ((i = 0; i < 50; i++)); do
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && { sleep 0.1; continue 2; }
    done
    return 0
  done
}
