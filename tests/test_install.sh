#!/usr/bin/env bash
# test_install.sh — `make install PREFIX=...` into a temporary prefix: the programs run from there
# and find the vocab without --vocab (from another directory), the man pages are help2man's,
# DESTDIR stages, and `make uninstall` takes everything away. Ends with "N passed, N failed".
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${SL_BIN:-bin}" && pwd)
fixtures=$(cd "${SL_FIXTURES:-../shared/fixtures}" && pwd)
tmp=$(mktemp -d /tmp/sl-test-install-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"
# The build the suite runs (bin, or build-san/bin under make sanitize): install what it built.
case $bin in
*/build-*/bin) build=${bin%/bin} ;;
*) build=$root/build ;;
esac
install_to() { # install_to TARGET [VAR=VALUE...]: make TARGET from the tree, quietly
    local target=$1; shift
    make --no-print-directory -C "$root" "$target" BIN="$bin" BUILD="$build" "$@" >"$tmp/make.log" 2>&1
}

prefix=$tmp/prefix
install_to install PREFIX="$prefix"
check "make install PREFIX=... succeeds" test $? -eq 0
programs=$(cd "$bin" && ls zmq-splitlearn-*)
missing=$(for p in $programs; do [ -x "$prefix/bin/$p" ] || echo "$p"; done | tr '\n' ' ')
check "every program is in PREFIX/bin (missing: $missing)" test -z "$missing"
missing=$(for p in $programs; do grep -q '^\.TH' "$prefix/share/man/man1/$p.1" 2>/dev/null || echo "$p"; done | tr '\n' ' ')
check "every program has a man page from help2man (missing: $missing)" test -z "$missing"
check "... with its --help in it" grep -q -- 'max\\-new\\-tokens' "$prefix/share/man/man1/zmq-splitlearn-run.1"
check "the vocab is in PREFIX/share/zmq-splitlearn" test -f "$prefix/share/zmq-splitlearn/gpt2-vocab/vocab.json"

# From a directory without models/: the installed program finds the installed vocab.
mkdir -p "$tmp/elsewhere"
cd "$tmp/elsewhere" || exit 1
ids=$("$prefix/bin/zmq-splitlearn-tokenize" "Hello world!" 2>"$tmp/err")
check "the installed tokenize finds its vocab without --vocab ($ids)" test "$ids" = "15496 995 0"
"$prefix/bin/zmq-splitlearn-run" "$fixtures/tiny-a" "Hello" --max-new-tokens 2 >/dev/null 2>"$tmp/err"
check "the installed run names the installed vocab it uses" \
    grep -q "using the bundled GPT-2 vocab ($prefix/bin/../share/zmq-splitlearn/gpt2-vocab)" "$tmp/err"
check "the installed programs answer --version" bash -c "'$prefix/bin/zmq-splitlearn-info' --version >/dev/null"
cd "$root" || exit 1

install_to uninstall PREFIX="$prefix"
check "make uninstall succeeds" test $? -eq 0
left=$(find "$prefix" -type f | tr '\n' ' ')
check "... and leaves no file behind ($left)" test -z "$left"

install_to install-files PREFIX=/usr/local DESTDIR="$tmp/stage"
check "DESTDIR stages an install under it" test -x "$tmp/stage/usr/local/bin/zmq-splitlearn-run" -a \
    -f "$tmp/stage/usr/local/share/zmq-splitlearn/gpt2-vocab/merges.txt"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
