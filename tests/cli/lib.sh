# lib.sh - shared by the CLI suites (source it after setting SUITE, BUILD and ROOT).
# bin NAME: the path of NAME in the build dir $BUILD (absolute, or relative to $ROOT).
bin() { case $BUILD in /*) echo "$BUILD/$1" ;; *) echo "$ROOT/$BUILD/$1" ;; esac; }
# check NAME WANT_RC PATTERN COMMAND...: runs COMMAND, passes when it exits WANT_RC
# and its output (stdout + stderr) matches the extended regex PATTERN.
pass=0; fail=0

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
