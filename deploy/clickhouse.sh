#!/usr/bin/env bash
# Local ClickHouse for tests and the demo: Debian's clickhouse-server on
# loopback, data under a folder of our own (default: .run/clickhouse in the
# repository, ignored by git).
#
#   deploy/clickhouse.sh start    install if missing, start, wait until it answers
#   deploy/clickhouse.sh stop     stop the server started by start
#   deploy/clickhouse.sh status   exit 0 when the server answers
#
# Environment: CLICKHOUSE_DIR (data folder), CLICKHOUSE_TCP_PORT (9000),
# CLICKHOUSE_HTTP_PORT (8123). A second start while one runs does nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${CLICKHOUSE_DIR:-$here/.run/clickhouse}"
tcp_port="${CLICKHOUSE_TCP_PORT:-9000}"
http_port="${CLICKHOUSE_HTTP_PORT:-8123}"
pidfile="$dir/clickhouse.pid"

log() { echo "clickhouse.sh: $*" >&2; }

answers() {
	# The HTTP interface answers "Ok." on / once the server is ready.
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --max-time 2 "http://127.0.0.1:$http_port/" 2>/dev/null | grep -q Ok
	else
		clickhouse-client --host 127.0.0.1 --port "$tcp_port" --query 'SELECT 1' >/dev/null 2>&1
	fi
}

install() {
	if command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ]; then
		return
	fi
	log "installing Debian's clickhouse-server"
	export DEBIAN_FRONTEND=noninteractive
	sudo_cmd=""
	if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
	$sudo_cmd apt-get update -q
	# policy-rc.d may forbid starting the packaged service; we start our own.
	$sudo_cmd apt-get install -y -q clickhouse-server clickhouse-client curl
}

write_config() {
	mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
	cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/server.log</log>
        <errorlog>$dir/log/error.log</errorlog>
        <size>50M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$tcp_port</tcp_port>
    <http_port>$http_port</http_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <merge_tree>
        <parts_to_delay_insert>300</parts_to_delay_insert>
        <parts_to_throw_insert>600</parts_to_throw_insert>
    </merge_tree>
</yandex>
XML
	cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

start() {
	if answers; then
		log "already running on 127.0.0.1:$tcp_port"
		return 0
	fi
	install
	write_config
	server=clickhouse-server
	command -v clickhouse-server >/dev/null 2>&1 || server=/usr/sbin/clickhouse-server
	log "starting on 127.0.0.1:$tcp_port (data in $dir)"
	# Detach fully: no descriptor of ours (a caller's pipe) stays open in
	# the server, and the pid file is ours (the server writes one only
	# when it daemonises itself).
	(cd "$dir" && exec nohup "$server" --config-file="$dir/config.xml") \
		</dev/null >"$dir/log/stdout.log" 2>&1 &
	echo $! >"$pidfile"
	for _ in $(seq 1 120); do
		if answers; then
			log "ready"
			return 0
		fi
		sleep 0.5
	done
	log "server did not answer within 60 s; last log lines:"
	tail -n 20 "$dir/log/error.log" "$dir/log/stdout.log" >&2 || true
	return 1
}

stop() {
	if [ ! -f "$pidfile" ]; then
		log "not running (no $pidfile)"
		return 0
	fi
	pid="$(cat "$pidfile")"
	if ! grep -q clickhouse "/proc/$pid/cmdline" 2>/dev/null; then
		log "pid $pid is not a ClickHouse server; nothing to stop"
		rm -f "$pidfile"
		return 0
	fi
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 1 60); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
	log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) answers ;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac
