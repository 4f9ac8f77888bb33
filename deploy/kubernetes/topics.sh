#!/usr/bin/env bash
# Creates citywatch's Kafka topics before any citywatch process starts, with
# the partitions, replication and retention production needs (the processes
# themselves would create missing topics with kafka.partitions and
# kafka.replication_factor, and the broker's default retention). Idempotent:
# existing topics keep their partitions; their retention is set again.
#
# Runs in the apache/kafka image (compose service "topics", Kubernetes Job
# "citywatch-topics"). Environment:
#   KAFKA_BOOTSTRAP            bootstrap brokers, host:port[,host:port…]
#   CITYWATCH_TOPIC_PREFIX     topic prefix (default citywatch.)
#   REPLICATION_FACTOR         default 3
#   MIN_INSYNC_REPLICAS        default 2 (citywatch writes with acks=all)
#   RULES_SHARDS               partitions of the rules' repartition topic: rules.shards
#   KAFKA_COMMAND_CONFIG       optional client properties file (TLS/SASL)
#
# deploy/kubernetes/topics.sh is a copy of this file (deploy_test.go checks).
set -euo pipefail

bootstrap="${KAFKA_BOOTSTRAP:?set KAFKA_BOOTSTRAP}"
prefix="${CITYWATCH_TOPIC_PREFIX:-citywatch.}"
rf="${REPLICATION_FACTOR:-3}"
min_isr="${MIN_INSYNC_REPLICAS:-2}"
shards="${RULES_SHARDS:-16}"
bin=/opt/kafka/bin
client=()
if [ -n "${KAFKA_COMMAND_CONFIG:-}" ]; then
	client=(--command-config "$KAFKA_COMMAND_CONFIG")
fi

hour=3600000
day=$((24 * hour))

for i in $(seq 1 90); do
	if "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" "${client[@]}" --list >/dev/null 2>&1; then
		break
	fi
	if [ "$i" = 90 ]; then
		echo "topics.sh: Kafka at $bootstrap did not answer" >&2
		exit 1
	fi
	sleep 2
done

# topic NAME PARTITIONS RETENTION_MS
topic() {
	local name="$prefix$1" partitions="$2" retention="$3"
	"$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" "${client[@]}" --create --if-not-exists \
		--topic "$name" --partitions "$partitions" --replication-factor "$rf" \
		--config "retention.ms=$retention" --config "min.insync.replicas=$min_isr"
	"$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" "${client[@]}" --alter \
		--entity-type topics --entity-name "$name" \
		--add-config "retention.ms=$retention,min.insync.replicas=$min_isr" >/dev/null
	echo "topics.sh: $name: $partitions partitions, replication $rf, retention $((retention / hour)) h"
}

# Raw input, keyed by device_id (CONTRACT.md section 1).
topic camera 12 $((3 * day))
topic checkpoint 12 $((3 * day))
topic fuel 12 $((1 * day)) # real-name purchases, raw ID numbers and names: kept shortest
topic drone 4 $((3 * day))
topic patrol 6 $((3 * day))
# ingest → rules, dispatch, sink, web; the rules replay up to 7 h of it on start
# (25 h until internal.events.fuel reaches back a day).
topic internal.events 12 $((2 * day))
# The fuel purchases again, keyed by buyer pseudonym: the rules replay the
# fuel rules' day from it on start (pseudonyms only, like internal.events).
topic internal.events.fuel 6 $((2 * day))
# Output.
topic alerts 6 $((30 * day))
topic dispatches 6 $((30 * day))
topic dlq 3 $((7 * day))
# The rules' repartition topic (rules.shards > 0): the events again, by
# shard of their keys; a shard's new owner replays its 25 h (pseudonyms
# only, like internal.events).
topic internal.rules.bykey "$shards" $((2 * day))
# A coordination topic (no messages): one partition per district of the
# city (Xiangyang: 9).
topic internal.dispatch.districts 9 $((1 * day))
