# lib.sh - shared by the CLI suites (source it after setting SUITE, BUILD and ROOT).
# bin NAME: the path of NAME in the build dir $BUILD (absolute, or relative to $ROOT).
bin() { case $BUILD in /*) echo "$BUILD/$1" ;; *) echo "$ROOT/$BUILD/$1" ;; esac; }
# check NAME WANT_RC PATTERN COMMAND...: runs COMMAND, passes when it exits WANT_RC
# and its output (stdout + stderr) matches the extended regex PATTERN.
pass=0; fail=0; skipped=0

# require NAME PATH HOW: a required resource (fixture, tokenizer, model). Missing,
# it counts as a FAILED case named NAME (make test and CI never pass by skipping);
# only NLPD_TEST_ALLOW_SKIP=1 (a partial checkout) makes it a counted skip.
# Returns 0 when PATH exists.
require() {
    local name=$1 path=$2 how=$3
    [[ -e $path ]] && return 0
    if [[ ${NLPD_TEST_ALLOW_SKIP:-0} == 1 ]]; then
        skipped=$((skipped + 1)); echo "SKIP $SUITE $name: required $path missing ($how)"
    else
        fail=$((fail + 1)); echo "FAIL $SUITE $name: required $path missing ($how)"
    fi
    return 1
}

check() {
    local name=$1 want_rc=$2 pattern=$3; shift 3
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [[ $rc -eq $want_rc ]] && grep -qE -- "$pattern" <<<"$out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL $SUITE $name: exit $rc (want $want_rc), output: ${out:0:600}"
    fi
}
