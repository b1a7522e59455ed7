#!/usr/bin/env bash
# cjson-source.sh — `make fuzz`: fetches the source of the cJSON this machine links (Debian's
# libcjson1: its exact version, with Debian's patches) into DIR with `apt-get source`, so that the
# fuzzers can be built with an instrumented cJSON. apt works in a private state under DIR, its
# sources the machine's own turned into deb-src lines: the system's apt configuration is never
# touched, and nothing needs root. Prints the directory that holds cJSON.c; a second run reuses
# what the first fetched. cJSON's source stays under DIR (build-fuzz/), never in the repository.
# Usage: tools/cjson-source.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
version=$(dpkg-query -W -f='${source:Package}=${source:Version}' libcjson1 2>/dev/null) ||
    { echo "$0: libcjson1 is not installed (make deps)" >&2; exit 1; }
dir=$(mkdir -p "$1" && cd "$1" && pwd)
stamp="$dir/fetched-${version//[^A-Za-z0-9.+~-]/_}"
found() { find "$dir/src" -mindepth 2 -maxdepth 2 -name cJSON.c -printf '%h\n' 2>/dev/null | head -n 1; }
if [ -f "$stamp" ] && [ -n "$(found)" ]; then found; exit 0; fi
command -v dpkg-source >/dev/null || { echo "$0: dpkg-source is missing (apt-get install dpkg-dev)" >&2; exit 1; }

apt="$dir/apt"
rm -rf "$apt" "$dir/src"
mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$dir/src"
# The machine's sources, as deb-src: one-line .list entries and deb822 .sources files.
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^[[:space:]]*deb[[:space:]]\+/deb-src /p' "$f"
done > "$apt/sources.list"
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:.*$/Types: deb-src/' "$f" > "$apt/parts/$(basename "$f")"
done
opts=(-q -o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts="$apt/parts"
      -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" -o Debug::NoLocking=1)
apt-get "${opts[@]}" update >&2
(cd "$dir/src" && apt-get "${opts[@]}" source "$version" >&2)
[ -n "$(found)" ] || { echo "$0: apt-get source $version gave no cJSON.c" >&2; exit 1; }
: > "$stamp"
found
