#!/bin/sh
# Creates switchboard's topics when missing, with Apache Kafka's own kafka-topics.sh. Used by the
# Helm chart's pre-install/pre-upgrade Job and by docker-compose.yml's topic-init service.
#
# Environment:
#   KAFKA_BOOTSTRAP   bootstrap servers (required)
#   TOPICS            one topic per line: <name> <partitions> <replication factor> [key=value ...]
#                     (configs separated by spaces; values may contain commas: cleanup.policy=compact,delete)
#   KAFKA_CLIENT_PROPERTIES  Java client properties (security.protocol, sasl.mechanism, ssl.*),
#                     optional; with KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD (and
#                     KAFKA_SASL_MECHANISM) set, the JAAS line is added here, so the password only
#                     ever lives in the Secret it comes from.
#   KAFKA_BIN         where kafka-topics.sh lives (default /opt/kafka/bin)
#
# Existing topics are left as they are (partition counts are never changed here: that would move
# keys to other partitions); the script prints their description so the Job log shows them.
set -eu

: "${KAFKA_BOOTSTRAP:?KAFKA_BOOTSTRAP is required}"
: "${TOPICS:?TOPICS is required}"
bin="${KAFKA_BIN:-/opt/kafka/bin}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
props="$work/client.properties"

printf '%s\n' "${KAFKA_CLIENT_PROPERTIES:-}" >"$props"
if [ -n "${KAFKA_SASL_USERNAME:-}" ]; then
  case "${KAFKA_SASL_MECHANISM:-PLAIN}" in
    PLAIN) module=org.apache.kafka.common.security.plain.PlainLoginModule ;;
    SCRAM-SHA-256|SCRAM-SHA-512) module=org.apache.kafka.common.security.scram.ScramLoginModule ;;
    *) echo "create-topics: unsupported SASL mechanism ${KAFKA_SASL_MECHANISM}" >&2; exit 2 ;;
  esac
  # JAAS string values: escape backslashes and double quotes.
  user="$(printf '%s' "$KAFKA_SASL_USERNAME" | sed 's/\\/\\\\/g; s/"/\\"/g')"
  pass="$(printf '%s' "${KAFKA_SASL_PASSWORD:-}" | sed 's/\\/\\\\/g; s/"/\\"/g')"
  printf 'sasl.mechanism=%s\nsasl.jaas.config=%s required username="%s" password="%s";\n' \
    "${KAFKA_SASL_MECHANISM:-PLAIN}" "$module" "$user" "$pass" >>"$props"
fi

echo "create-topics: waiting for Kafka at $KAFKA_BOOTSTRAP" >&2
tries=0
until "$bin/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$props" --list >/dev/null; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then echo "create-topics: Kafka not reachable" >&2; exit 1; fi
  sleep 5
done

printf '%s\n' "$TOPICS" | while read -r name partitions replication configs; do
  [ -n "$name" ] || continue
  case "$name" in \#*) continue ;; esac
  set -- --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$props" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$replication"
  for config in ${configs:-}; do set -- "$@" --config "$config"; done
  "$bin/kafka-topics.sh" "$@"
  "$bin/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$props" --describe --topic "$name" | head -1
done
echo "create-topics: done" >&2
