# check.sh — what the shell tests share (sourced): check counts one case, status_is tests an exit
# status; each script ends by printing "$passed passed, $failed failed".
passed=0 failed=0
check() { # check "what" command...
    local what=$1; shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what" >&2; fi
}
status_is() { # status_is N command...
    local want=$1; shift
    "$@" >/dev/null 2>&1
    [ $? -eq "$want" ]
}
