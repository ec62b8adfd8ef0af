#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (deploy/kafka/pom.xml) into .lapverse/kafka/<version>/libs.
# Idempotent: does nothing when that directory is already complete. Prints the libs directory.
# KAFKA_VERSION overrides the version pinned in the pom; KAFKA_HOME_DIR the cache root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/deploy/kafka/pom.xml"
VERSION="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")}"
CACHE="${KAFKA_HOME_DIR:-$ROOT/.lapverse/kafka}"
LIBS="$CACHE/$VERSION/libs"
STAMP="$LIBS/.complete"

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$POM" ]; then
  echo "$LIBS"
  exit 0
fi

missing=()
command -v java >/dev/null 2>&1 || missing+=("java (OpenJDK 17+, e.g. apt-get install openjdk-17-jre-headless)")
command -v mvn >/dev/null 2>&1 || missing+=("mvn (Apache Maven, e.g. apt-get install maven)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "fetch-kafka: cannot fetch Apache Kafka $VERSION; missing on PATH:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi

# Copy into a scratch directory, then move it into place, so an interrupted fetch never
# leaves a libs directory that looks complete.
mkdir -p "$CACHE/$VERSION"
SCRATCH="$(mktemp -d "$CACHE/$VERSION/libs.XXXXXX")"
trap 'rm -rf "$SCRATCH"; rmdir "$CACHE/$VERSION" 2>/dev/null || true' EXIT
echo "fetch-kafka: fetching org.apache.kafka:kafka_2.13:$VERSION from Maven Central" >&2
# Quiet Maven still prints stray colour codes, so show its output only when it fails.
if ! log="$(mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
  -Dkafka.version="$VERSION" -DoutputDirectory="$SCRATCH" 2>&1)"; then
  echo "$log" >&2
  echo "fetch-kafka: Maven could not fetch org.apache.kafka:kafka_2.13:$VERSION" >&2
  exit 1
fi
if ! ls "$SCRATCH"/kafka_2.13-"$VERSION".jar >/dev/null 2>&1; then
  echo "fetch-kafka: kafka_2.13-$VERSION.jar missing after the Maven run" >&2
  exit 1
fi
touch "$SCRATCH/.complete"
rm -rf "$LIBS"
mv "$SCRATCH" "$LIBS"
echo "fetch-kafka: $(ls "$LIBS"/*.jar | wc -l) jars in $LIBS" >&2
echo "$LIBS"
