#!/usr/bin/env bash
# scripts/device/gpu_check.sh - nlpd's real-GPU checks in ONE command on a lent GPU
# machine (bench/README.md "GPU checks on a lent machine": the exact call). That machine
# reaches nothing and has CUDA, python3 with torch, but perhaps none of the C libraries
# nlpd links: they come as .debs in .gpu-debs/ (scripts/device/fetch_debs.sh, run before
# on the Debian machine), the ../shared files as .gpu-shared/shared.tar.xz.
#
#   scripts/device/gpu_check.sh [--build-only]
#
# 1. unpacks the .debs with dpkg -x into a private prefix (never into /) and points
#    pkg-config (PKG_CONFIG_LIBDIR + PKG_CONFIG_SYSROOT_DIR: the prefix ONLY), the compiler
#    (C_INCLUDE_PATH), the linker (-L first in LDFLAGS) and the binaries' run-time path
#    (DT_RPATH) at it;
# 2. builds test_unit, bench-encoder and bench-translate with CUDA=1 (-O2, no sanitizer:
#    speed) in build/gpu, the folder bench/gpu builds in (so its own make is a no-op);
#    checks that every library they link (ld --trace) and load (ldd) comes from the
#    prefix, CUDA or the C/C++ runtime and every third-party header from the prefix;
#    starts test_unit on one CPU-safe case;
# --build-only stops here (what the Debian machine, without a GPU, can check);
# 3. with a GPU (nvidia-smi -L): the unit groups that run every registered backend
#    (backend_ops, parity, marian; minilm too when models/all-MiniLM-L6-v2 is there), with
#    NLPD_SHARED at the carried copy, and checks that "cuda" really ran in them;
# 4. bench/gpu --only encoders (PyTorch peer: the machine's python3), short settings.
#
# Bounded: each step has a timeout and all of them fit GPU_CHECK_BUDGET_S (default 420 s);
# a step that no longer fits is skipped and says so. Logs go to $OUT (the device tool's
# result folder; bench/out/gpu-check/ when OUT is unset): gpu_check.log (this output),
# build.log, unit.log, bench.log, bench_results.json, summary.txt. Exit 0: every check
# passed; 1: one failed; 2: a setup problem; 3: no GPU here (nothing ran on a GPU).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
MODE=full
case "${1:-}" in
    "") ;;
    --build-only) MODE=build-only ;;
    *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac
BUDGET=${GPU_CHECK_BUDGET_S:-420}
WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/nlpd-gpucheck}
JOBS=${GPU_CHECK_JOBS:-$(nproc)}
RES=${OUT:-$ROOT/bench/out/gpu-check}
BUILD=$ROOT/build/gpu
P=$WORK/prefix
LIB=$P/usr/lib/x86_64-linux-gnu
mkdir -p "$RES" "$WORK"

main() {
T0=$SECONDS
SUMMARY=()
FAILED=0
note() { echo "gpu_check [$((SECONDS - T0))s] $*"; }
sum() { SUMMARY+=("$*"); }
fail() { FAILED=1; sum "FAIL  $*"; note "FAIL: $*"; }
# seconds a step may take: its cap, or what is left of the budget less a reserve for
# the steps after it and the summary; at least 1 (timeout 0 would mean none)
allow() {
    local left=$((BUDGET - (SECONDS - T0) - $2)) t
    t=$(($1 < left ? $1 : left))
    echo $((t < 1 ? 1 : t))
}
tailof() { echo "---- last $2 lines of $1 (cut at 300 characters)"; tail -n "$2" "$1" | cut -c1-300; echo "----"; }
finish() {
    {
        echo "==== gpu_check summary: mode $MODE, $((SECONDS - T0)) s of a $BUDGET s budget"
        printf '%s\n' "${SUMMARY[@]}"
        echo "==== result: $1"
    } | tee "$RES/summary.txt"
    exit "$2"
}

# ------------------------------------------------------------------ 0. what is here
note "mode $MODE, root $ROOT, prefix $P, results $RES, $JOBS jobs"
echo "host: $(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $(ldd --version 2>&1 | head -1)"
echo "cc: $(cc --version 2>&1 | head -1)"
NVCC_BIN=$(command -v nvcc || true)
[[ -z "$NVCC_BIN" && -x /usr/local/cuda/bin/nvcc ]] && NVCC_BIN=/usr/local/cuda/bin/nvcc
echo "nvcc: ${NVCC_BIN:-none} $([[ -n "$NVCC_BIN" ]] && "$NVCC_BIN" --version | tail -2 | paste -sd' ')"
if command -v nvidia-smi >/dev/null; then
    echo "nvidia-smi -L: $(nvidia-smi -L 2>&1 | paste -sd';')"
else
    echo "nvidia-smi -L: no nvidia-smi on this machine"
fi
sum "host  $(uname -m), $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), $(ldd --version 2>&1 | head -1 | grep -oE '[0-9.]+$' | sed 's/^/glibc /')"
for t in make cc c++ ar tar; do
    command -v "$t" >/dev/null || { fail "setup: $t is missing"; finish "FAIL (setup)" 2; }
done
[[ -n "$NVCC_BIN" ]] || { fail "setup: no nvcc: a CUDA build is impossible"; finish "FAIL (setup)" 2; }
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC_BIN")")")} # cuBLAS, cudart
PATH="$(dirname "$NVCC_BIN"):$PATH"; export PATH
sum "nvcc  $("$NVCC_BIN" --version | grep -oE 'release [0-9.]+' | head -1) ($CUDA_HOME)"
if ! ls .gpu-debs/*.deb >/dev/null 2>&1 || [[ ! -f .gpu-shared/shared.tar.xz ]]; then
    fail "setup: .gpu-debs/*.deb or .gpu-shared/shared.tar.xz missing: run scripts/device/fetch_debs.sh on the Debian machine and name .gpu-debs and .gpu-shared in the call's carry"
    finish "FAIL (setup)" 2
fi

# ------------------------------------------------------------------ 1. the prefix
# dpkg -x unpacks files only (no scripts, no database): nothing outside $P changes.
# .tar.xz without the xz tool (not in every minimal image): Python's tarfile.
untar_xz() {
    if command -v xz >/dev/null; then
        tar -xJf "$1" -C "$2"
    else
        python3 -c 'import sys, tarfile
t = tarfile.open(sys.argv[1])
t.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' "$1" "$2"
    fi
}
rm -rf "${P:?}" "${WORK:?}"/{shared,bin,lax,pc}
mkdir -p "$P" "$WORK/shared" "$WORK/bin" "$WORK/lax" "$WORK/pc"
for f in .gpu-debs/*.deb; do
    if command -v dpkg-deb >/dev/null; then
        dpkg-deb -x "$f" "$P"
    else # not a Debian/Ubuntu system: a .deb is an ar archive holding data.tar.xz
        ar p "$f" data.tar.xz >"$WORK/data.tar.xz" && untar_xz "$WORK/data.tar.xz" "$P"
    fi || { fail "setup: unpacking $f"; finish "FAIL (setup)" 2; }
done
untar_xz .gpu-shared/shared.tar.xz "$WORK/shared" &&
    (cd "$WORK/shared" && sha256sum -c --quiet "$ROOT/.gpu-shared/SHA256SUMS") ||
    { fail "setup: the shared copy does not unpack or match SHA256SUMS"; finish "FAIL (setup)" 2; }
# libmicrohttpd.pc names gnutls in Requires.private, and pkg-config --cflags wants every
# such .pc present; nlpd includes no gnutls header and links libmicrohttpd dynamically,
# so an empty gnutls.pc stands in for libgnutls28-dev (and its 10 -dev dependencies).
gnutls_v=$(dpkg-deb -f .gpu-debs/libgnutls30_*.deb Version 2>/dev/null | cut -d- -f1)
printf 'Name: gnutls\nDescription: stub for libmicrohttpd.pc (scripts/device/gpu_check.sh)\nVersion: %s\nLibs:\nCflags:\n' \
    "${gnutls_v:-3.7.9}" >"$WORK/pc/gnutls.pc"
# Debian's pkgconf from the prefix (the machine may have no pkg-config), its library
# found through LD_LIBRARY_PATH for it alone.
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$LIB" "$P/usr/bin/pkgconf" >"$WORK/bin/pkg-config"
chmod +x "$WORK/bin/pkg-config"
export PATH="$WORK/bin:$PATH"
export PKG_CONFIG_LIBDIR="$LIB/pkgconfig:$LIB/openblas-pthread/pkgconfig:$P/usr/share/pkgconfig:$WORK/pc"
export PKG_CONFIG_SYSROOT_DIR="$P" PKG_CONFIG_PATH=""
# the multiarch folder too (openssl/configuration.h lives there), first, as gcc's own order
INC="$P/usr/include/x86_64-linux-gnu:$P/usr/include"
export C_INCLUDE_PATH="$INC" CPLUS_INCLUDE_PATH="$INC"
# -L in LDFLAGS, which the Makefile puts before everything: LIBRARY_PATH would come after
# gcc's own /usr/lib/x86_64-linux-gnu (Debian's multiarch gcc) and link the system's
# copies where they exist. DT_RPATH (not RUNPATH): it also serves the libraries' own
# dependencies (libopenblas -> libgfortran, libmicrohttpd -> libgnutls -> ...), and
# nothing else in the environment (python, nvcc) sees the prefix. --trace lists every
# file each link reads (checked below).
export LDFLAGS="-L$LIB -L$LIB/openblas-pthread -Wl,--disable-new-dtags -Wl,-rpath,$LIB -Wl,-rpath,$LIB/openblas-pthread -Wl,--trace"
unset LIBRARY_PATH
# LD_LIBRARY_PATH stays as the machine set it: the CUDA runtime may find the driver's
# libcuda.so.1 through it (DT_RPATH is searched first anyway).
unset CPATH CFLAGS CXXFLAGS
PCS=(openblas libcjson libutf8proc libmicrohttpd libuv libcrypto)
if ! pc_out=$(pkg-config --cflags --libs "${PCS[@]}" 2>&1); then
    fail "setup: pkg-config over the prefix: $pc_out"; finish "FAIL (setup)" 2
fi
echo "pkg-config (prefix only): $pc_out"
note "prefix ready: $(ls .gpu-debs/*.deb | wc -l) .debs, $(du -sm "$P" | cut -f1) MB unpacked"
sum "ok    prefix: $(ls .gpu-debs/*.deb | wc -l) Debian 12 .debs unpacked, pkg-config over the prefix only"

# ------------------------------------------------------------------ 2. build
TARGETS=("$BUILD/test_unit" "$BUILD/bench-encoder" "$BUILD/bench-translate")
MK=(make -C "$ROOT" -j"$JOBS" CUDA=1 BUILD="$BUILD" CUDA_HOME="$CUDA_HOME")
t=$(allow "${GPU_CHECK_BUILD_S:-240}" 30)
note "build: ${MK[*]} (timeout ${t}s) -> build.log"
b0=$SECONDS
timeout -k 10 "$t" "${MK[@]}" "${TARGETS[@]}" >"$RES/build.log" 2>&1
rc=$?
how=strict
if ((rc != 0 && rc != 124 && rc != 137)); then
    # -Werror is CI's gate (Debian's gcc); another compiler's new warnings must not cost the
    # GPU run: the rest builds with -Wno-error, and the summary says so.
    tailof "$RES/build.log" 30
    note "build: strict build failed (rc $rc); retrying with -Wno-error"
    printf '#!/bin/sh\nexec cc "$@" -Wno-error\n' >"$WORK/lax/cc"
    printf '#!/bin/sh\nexec c++ "$@" -Wno-error\n' >"$WORK/lax/c++"
    cat >"$WORK/lax/nvcc" <<EOF
#!/usr/bin/env bash
# nvcc without "-Werror all-warnings" and without -Werror in -Xcompiler lists
a=(); skip=0
for x in "\$@"; do
    ((skip)) && { skip=0; continue; }
    [[ \$x == -Werror ]] && { skip=1; continue; }
    x=\${x//,-Werror/}; x=\${x//-Werror,/}; a+=("\$x")
done
exec "$NVCC_BIN" "\${a[@]}"
EOF
    chmod +x "$WORK/lax/cc" "$WORK/lax/c++" "$WORK/lax/nvcc"
    echo "==== retry with -Wno-error" >>"$RES/build.log"
    t=$(allow "${GPU_CHECK_BUILD_S:-240}" 30)
    timeout -k 10 "$t" "${MK[@]}" CC="$WORK/lax/cc" CXX="$WORK/lax/c++" NVCC="$WORK/lax/nvcc" \
        "${TARGETS[@]}" >>"$RES/build.log" 2>&1
    rc=$?
    how="with -Wno-error (strict failed: see build.log)"
fi
if ((rc != 0)); then
    tailof "$RES/build.log" 40
    fail "build (CUDA=1) rc $rc$( ((rc == 124 || rc == 137)) && echo ', timed out')"
    finish FAIL 1
fi
note "build: ok in $((SECONDS - b0))s ($how)"
sum "ok    build CUDA=1 -O2 ($how), $((SECONDS - b0)) s, $(grep -c ' warning' "$RES/build.log") warning line(s)"

# Every library the links read (ld --trace) and the binaries load (ldd): the prefix, CUDA,
# nlpd's own archives, or the C/C++ runtime of the machine.
bad=0
CUDA_REAL=$(readlink -f "$CUDA_HOME")
SYSLIB='/(libc|libm|libmvec|libc_nonshared|libpthread|libdl|librt|libstdc\+\+|libgcc|libgcc_s|ld-linux-x86-64)(\.so[.0-9]*|\.a)$'
links=$(grep -E '^/[^ ]+\.(so[.0-9]*|a)$' "$RES/build.log" | sort -u)
while read -r f; do
    [[ -z "$f" ]] && continue
    case "$(readlink -f "$f")" in "$P"/*|"$CUDA_REAL"/*|"$BUILD"/*) continue ;; esac
    grep -qE "$SYSLIB" <<<"$f" || { echo "provenance: linked $f"; bad=1; }
done <<<"$links"
for b in "${TARGETS[@]}"; do
    while read -r name _ path _; do
        case "$name" in linux-vdso.so.*|/*ld-linux*) continue ;; esac
        case "$name" in libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|librt.so.1|libstdc++.so.6|libgcc_s.so.1) continue ;; esac
        case "$(readlink -f "$path")" in "$P"/*|"$CUDA_REAL"/*) ;; *) echo "provenance: $(basename "$b"): $name => $path"; bad=1 ;; esac
    done < <(ldd "$b" | grep '=>')
done
# Every third-party header the sources include: from the prefix.
{
    printf '#include <stdarg.h>\n#include <stddef.h>\n#include <setjmp.h>\n#include <stdint.h>\n'
    printf '#include <%s>\n' cJSON.h cjson/cJSON.h utf8proc.h cblas.h microhttpd.h uv.h \
        openssl/evp.h openssl/pem.h cmocka.h
} >"$WORK/probe.c"
echo '#include <sentencepiece_processor.h>' >"$WORK/probe.cc"
# shellcheck disable=SC2046
deps=$( { cc $(pkg-config --cflags "${PCS[@]}") -M "$WORK/probe.c"; c++ -M "$WORK/probe.cc"; } 2>&1 | tr ' \\' '\n\n' | grep -E '\.h$')
for h in cJSON.h utf8proc.h cblas.h microhttpd.h uv.h openssl/evp.h cmocka.h sentencepiece_processor.h; do
    got=$(grep -E "/$h\$" <<<"$deps" | head -1)
    if [[ "$got" != "$P"/* ]]; then echo "provenance: <$h> from '${got:-nowhere}'"; bad=1; fi
done
# ... and none of the headers those include (openssl/configuration.h, uv/unix.h, ...)
leak=$(grep -vF "$P/" <<<"$deps" | grep -E 'openssl|cjson|cJSON|/uv|utf8proc|blas|microhttpd|cmocka|sentencepiece')
[[ -z "$leak" ]] || { echo "provenance: from outside the prefix: $leak"; bad=1; }
if ((bad)); then
    fail "provenance: a library or header outside the prefix (above)"
else
    note "provenance: libraries and headers from the prefix (CUDA and libc/libstdc++ from the machine)"
    nl=$(grep -c "^$P/" <<<"$links")
    if ((nl)); then nl="$nl linked"; else nl="no link this run"; fi
    sum "ok    provenance: every non-CUDA library ($(ldd "$BUILD/test_unit" | grep -c "=> $P/") loaded, $nl) and header from the prefix"
fi
ldd "$BUILD/test_unit" >>"$RES/build.log"

# The binary starts: backend_ops's summary case (no GPU work; lists every backend kind).
UNIT_ENV=(env NLPD_ROOT="$ROOT" NLPD_SHARED="$WORK/shared" NLPD_TEST_ALLOW_SKIP=0)
: >"$RES/unit.log"
echo "==== start: backend_ops test_summary" >>"$RES/unit.log"
timeout -k 5 "$(allow 60 0)" "${UNIT_ENV[@]}" NLPD_TEST_GROUP=backend_ops NLPD_TEST_FILTER=test_summary \
    "$BUILD/test_unit" >>"$RES/unit.log" 2>&1
rc=$?
grep '^backend_ops:' "$RES/unit.log"
if ((rc == 0)); then
    sum "ok    test_unit starts (backend_ops test_summary): $(grep -c '^backend_ops:' "$RES/unit.log") backend line(s)"
else
    tailof "$RES/unit.log" 30; fail "test_unit does not start (rc $rc)"
fi

if [[ $MODE == build-only ]]; then
    ((FAILED)) && finish "FAIL (build-only)" 1
    finish "PASS (build-only: nothing ran on a GPU)" 0
fi

# ------------------------------------------------------------------ 3. a GPU?
if ! nvidia-smi -L >/dev/null 2>&1; then
    sum "none  no GPU: nvidia-smi -L failed; the unit groups on cuda and bench/gpu did not run"
    note "no GPU here (nvidia-smi -L failed): stopping before the GPU checks"
    ((FAILED)) && finish "FAIL (a build check above); no GPU here: nothing ran on a GPU" 1
    finish "NO GPU (the build checks above ran; nothing ran on a GPU)" 3
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 |
    sed 's/^/gpu: /'
sum "gpu   $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"

# ------------------------------------------------------------------ 4. unit groups on cuda
GROUPS_RUN=(backend_ops parity marian)
if [[ -f models/all-MiniLM-L6-v2/model.safetensors ]]; then
    GROUPS_RUN+=(minilm)
else
    sum "skip  unit group minilm: models/all-MiniLM-L6-v2 is not here (90 MB: it cannot travel)"
fi
for g in "${GROUPS_RUN[@]}"; do
    t=$(allow "${GPU_CHECK_UNIT_S:-150}" 100)
    if ((t < 20)); then fail "unit $g: skipped, out of time"; continue; fi
    echo "==== group $g" >>"$RES/unit.log"
    u0=$SECONDS; mark=$(wc -l <"$RES/unit.log")
    timeout -k 5 "$t" "${UNIT_ENV[@]}" NLPD_TEST_GROUP="$g" "$BUILD/test_unit" >>"$RES/unit.log" 2>&1
    rc=$?
    part=$(tail -n +"$((mark + 1))" "$RES/unit.log")
    line=$(grep -E '^unit: ' <<<"$part" | tail -1)
    # "backend_ops: cuda:0 ...", "  bert_base on cuda", "MiniLM ... on cuda: 64 ..."; never cuda-emu
    on_cuda=$(grep -cE '(^backend_ops: cuda:[0-9]+ | on cuda(:[0-9]+)?([: ]|$))' <<<"$part")
    note "unit $g: ${line:-no result line} (rc $rc, $((SECONDS - u0))s), $on_cuda line(s) naming cuda"
    if ((rc != 0)); then
        grep -E 'FAILED|ERROR|error|Assert' <<<"$part" | head -20
        fail "unit $g on cuda: ${line:-no result line} (rc $rc$( ((rc == 124 || rc == 137)) && echo ', timed out'))"
    elif ((on_cuda == 0)); then
        fail "unit $g: passed, but the cuda backend never ran in it (eng_backend_kinds without cuda?)"
    else
        sum "ok    unit $g: ${line#unit: } ($((SECONDS - u0)) s; cuda ran: $on_cuda line(s))"
    fi
done

# ------------------------------------------------------------------ 5. bench/gpu encoders
PYBIN=${NLPD_REF_PYTHON:-}
if [[ -z "$PYBIN" ]]; then # the machine's torch: /opt/torch/.venv, else python3 on the PATH
    for c in /opt/torch/.venv/bin/python3 "$(command -v python3)"; do
        [[ -x "$c" ]] && "$c" -c 'import torch, transformers' 2>/dev/null && { PYBIN=$c; break; }
    done
fi
BENCH_ARGS=(--only encoders --seconds "${GPU_CHECK_BENCH_SECONDS:-1}" --repeats 3)
[[ -f models/all-MiniLM-L6-v2/model.safetensors ]] || BENCH_ARGS+=(--random-minilm)
t=$(allow "${GPU_CHECK_BENCH_S:-150}" 5)
if [[ -z "$PYBIN" ]]; then
    fail "bench/gpu: no python3 with torch and transformers found (set NLPD_REF_PYTHON)"
elif ((t < 40)); then
    fail "bench/gpu: skipped, out of time (${t}s left)"
else
    note "bench/gpu ${BENCH_ARGS[*]} (python $PYBIN, timeout ${t}s) -> bench.log"
    rm -f bench/out/gpu/results.json
    timeout -k 10 "$t" env NLPD_REF_PYTHON="$PYBIN" NLPD_SHARED="$WORK/shared" PYTHONUNBUFFERED=1 \
        bash bench/gpu "${BENCH_ARGS[@]}" >"$RES/bench.log" 2>&1
    rc=$?
    grep -E 'TFLOP/s| b[0-9]+ +s[0-9]+ ' "$RES/bench.log"
    [[ -f bench/out/gpu/results.json ]] && cp bench/out/gpu/results.json "$RES/bench_results.json"
    if ((rc != 0)); then
        tailof "$RES/bench.log" 25
        fail "bench/gpu rc $rc$( ((rc == 124 || rc == 137)) && echo ', timed out')"
    else
        sum "ok    bench/gpu: $(grep -E 'TFLOP/s' "$RES/bench.log" | head -1)"
        while read -r l; do sum "      $l"; done < <(grep -E ' b[0-9]+ +s[0-9]+ ' "$RES/bench.log")
    fi
fi

((FAILED)) && finish FAIL 1
finish PASS 0
}

# Everything printed also lands in $RES/gpu_check.log (the device tool returns only the
# output's last 12,000 characters).
main 2>&1 | tee "$RES/gpu_check.log"
exit "${PIPESTATUS[0]}"
