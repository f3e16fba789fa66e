#!/usr/bin/env bash
# scripts/device/fetch_debs.sh - run HERE (Debian 12, Debian's archive reachable), before
# a session's one call on a lent GPU machine (scripts/device/gpu_check.sh; bench/README.md
# "GPU checks on a lent machine" gives the exact call). That machine reaches nothing, and
# only the working tree plus up to 8 ignored `carry` paths travel (64 MiB in all, the tree
# itself about 52 MB), so this puts into two git-ignored folders what the check needs:
#
#   .gpu-debs/    the C libraries nlpd's CUDA build and unit-test binary link (-dev: headers,
#                 .so links, .pc files) with their run-time closure, and pkgconf, as .debs
#                 that gpu_check.sh unpacks with dpkg -x into a private prefix (never /)
#   .gpu-shared/  shared.tar.xz: the ../shared files the GPU checks read (NLPD_SHARED)
#
# The .debs are TRIMMED repacks of Debian 12's (same files, same versions): as downloaded
# they weigh about 22 MB, over the room left. Dropped: static archives (nlpd links
# dynamically), docs/man/info/locale, cmake files, and the libraries nlpd never loads
# (OpenBLAS's LAPACK and reference-BLAS faces, libsentencepiece_train, libssl and
# OpenSSL's engines/modules: nlpd links libcrypto only, whose default provider is built
# in). Everything is repacked with xz -9.
#
#   scripts/device/fetch_debs.sh          env: NLPD_SHARED (default ../shared)
# Prints the size of what will be carried; idempotent (downloads again each run).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=${NLPD_SHARED:-$ROOT/../shared}
DEBS=$ROOT/.gpu-debs
SHCOPY=$ROOT/.gpu-shared
NICE="nice -n 15" # the build machine is shared: compression runs at low priority

# Packages whose headers/.pc/.so links the build needs (Makefile: pkg-config openblas
# libcjson libutf8proc libmicrohttpd libuv libcrypto; -lsentencepiece; -lcmocka).
# Debian 12 names: OpenBLAS's pkg-config file lives in the pthread flavour's -dev.
DEV=(libcjson-dev libutf8proc-dev libopenblas-pthread-dev libmicrohttpd-dev libuv1-dev
     libssl-dev libsentencepiece-dev libcmocka-dev)
# pkg-config itself (the device image may lack it): Debian's pkgconf.
TOOLS=(pkgconf pkgconf-bin)
# Run-time roots; their dependency closure is resolved below with apt-cache.
RUNTIME=(libcjson1 libutf8proc2 libopenblas0-pthread libmicrohttpd12 libuv1 libssl3
         libsentencepiece0 libcmocka0 libpkgconf3)
# Left to the GPU machine's own system (newer there, and backward compatible; carrying
# Debian's copies would shadow them for the CUDA toolchain): glibc, libgcc, libstdc++.
SYSTEM_RE='^(libc6|libgcc-s1|libstdc\+\+6|gcc-12-base)$'

for t in apt-get apt-cache dpkg-deb xz git; do
    command -v "$t" >/dev/null || { echo "fetch_debs: $t is missing" >&2; exit 2; }
done
[[ -d "$SHARED/tokenizers" ]] || { echo "fetch_debs: no $SHARED/tokenizers (set NLPD_SHARED)" >&2; exit 2; }

# Both folders are ignored in this clone (info/exclude is per clone, shared by its worktrees).
EXCL=$(git -C "$ROOT" rev-parse --path-format=absolute --git-path info/exclude)
mkdir -p "$(dirname "$EXCL")"
for p in /.gpu-debs/ /.gpu-shared/; do
    grep -qxF "$p" "$EXCL" 2>/dev/null || echo "$p" >>"$EXCL"
done

# The run-time closure, as this machine's apt resolves it (real package names only).
mapfile -t CLOSURE < <(apt-cache depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "${RUNTIME[@]}" |
    grep -E '^[a-z0-9]' | sort -u | grep -Ev "$SYSTEM_RE")
PKGS=("${DEV[@]}" "${TOOLS[@]}" "${CLOSURE[@]}")
echo "fetch_debs: ${#PKGS[@]} packages: ${PKGS[*]}"

TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/dl" "$TMP/x"
chmod 755 "$TMP"; chmod 777 "$TMP/dl" # apt's _apt user downloads into it (no "unsandboxed" warning)
if ! (cd "$TMP/dl" && apt-get download -q "${PKGS[@]}" >"$TMP/apt.log" 2>&1); then
    echo "fetch_debs: apt-get download failed; refreshing the package lists once" >&2
    apt-get update -qq
    (cd "$TMP/dl" && apt-get download -q "${PKGS[@]}") || { cat "$TMP/apt.log" >&2; exit 1; }
fi
raw=$(du -cb "$TMP"/dl/*.deb | tail -1 | cut -f1)

rm -rf "$DEBS"; mkdir -p "$DEBS"
for f in "$TMP"/dl/*.deb; do
    d=$TMP/x/$(basename "$f" .deb)
    dpkg-deb -R "$f" "$d"
    L=$d/usr/lib/x86_64-linux-gnu
    rm -rf "$d"/usr/share/{doc,man,info,locale,lintian,aclocal,bug} "$L/cmake" \
        "$L/openblas-pthread/cmake" "$L/engines-3" "$L/ossl-modules" \
        "$L"/openblas-pthread/pkgconfig/{blas,lapack}-openblas.pc
    # the dropped libraries, and the links to them (a -dev's .so link to ANOTHER
    # package's library stays: it dangles only until both are unpacked)
    find "$d" \( -name '*.a' -o -name 'liblapack.so*' -o -name 'libblas.so*' \
        -o -name 'libsentencepiece_train.so*' -o -name 'libssl.so*' \) -delete
    find "$d" -type l \( -lname '*.a' -o -lname '*liblapack.so*' -o -lname '*libblas.so*' \
        -o -lname '*libsentencepiece_train.so*' -o -lname '*libssl.so*' \) -delete
    find "$d/DEBIAN" -type f ! -name control -delete # md5sums are stale; no scripts run
    find "$d" -depth -type d -empty -delete 2>/dev/null || true
    $NICE dpkg-deb -Zxz -z9 --root-owner-group -b "$d" "$DEBS/$(basename "$f")" >/dev/null
done
{
    echo "# Debian 12 packages, trimmed (scripts/device/fetch_debs.sh), $(date -u +%F)"
    for f in "$DEBS"/*.deb; do dpkg-deb -f "$f" Package Version | paste -sd' '; done
} >"$DEBS/PACKAGES"

# Shared files the GPU checks read: the OPUS-MT tokenizer (unit group marian, also
# model_load and server_batcher), the bert-base-uncased vocabulary (bench/gpu's random
# BERT-base and MiniLM-shaped encoders) and the SST-2 dev set (unit group minilm, run
# where models/all-MiniLM-L6-v2 is present). Each folder's SOURCE.txt (source, licence)
# goes with it. Packed: 1 MB instead of 4.
FILES=(tokenizers/opus-mt-tc-big-en-pt/{source.spm,target.spm,vocab.json,tokenizer_config.json,special_tokens_map.json,SOURCE.txt}
       tokenizers/bert-base-uncased/{vocab.txt,tokenizer.json,SOURCE.txt}
       data/sst2/{glue_sst2_dev.tsv,SOURCE.txt})
rm -rf "$SHCOPY"; mkdir -p "$SHCOPY"
(cd "$SHARED" && sha256sum "${FILES[@]}") >"$SHCOPY/SHA256SUMS"
$NICE tar -C "$SHARED" -cf - "${FILES[@]}" | $NICE xz -9 >"$SHCOPY/shared.tar.xz"

tree=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
d=$(du -sb "$DEBS" | cut -f1); s=$(du -sb "$SHCOPY" | cut -f1)
mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }
echo "fetch_debs: .gpu-debs $(mb "$d") ($(ls "$DEBS"/*.deb | wc -l) .debs; $(mb "$raw") as downloaded)"
echo "fetch_debs: .gpu-shared $(mb "$s") (${#FILES[@]} files)"
echo "fetch_debs: carried $(mb $((d + s))); with the working tree ($(mb "$tree")): $(mb $((d + s + tree))) of 67.11 MB (64 MiB)"
if ((d + s + tree > 64 * 1024 * 1024)); then
    echo "fetch_debs: OVER the 64 MiB a call may send" >&2; exit 1
fi
