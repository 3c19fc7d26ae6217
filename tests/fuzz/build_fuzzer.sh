#!/bin/sh
# Builds clang/libFuzzer pieces of the fuzz targets (called by meson), with
# ASan+UBSan and coverage instrumentation.
#   build_fuzzer.sh lib    OUT.a CLANG SRCROOT [-FLAGS...] SOURCES...
#     instrumented objects of the code under test, as one archive
#   build_fuzzer.sh target OUT   CLANG SRCROOT [SOURCES.cpp] [-DFLAGS...] [LIBS...]
#     the fuzzer binary; LIBS (archives, -lname) are linked as one group, the
#     instrumented archive first so its objects win over g++-built copies
# --depfile=FILE (either mode) writes the headers the sources include, for
# ninja: without it a changed header left a fuzzer with an old class layout.
set -eu
mode=$1 out=$2 clang=$3 root=$4
shift 4
depfile=
for arg in "$@"; do
  case $arg in --depfile=*) depfile=${arg#--depfile=} ;; esac
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# "OUT: every file the .d files under $dir name", one rule.
write_depfile() {
  [ -n "$depfile" ] || return 0
  { printf '%s:' "$out"; sed -e 's/^[^:]*://' -e 's/\\$//' "$dir"/*.d | tr '\n' ' '; echo; } > "$depfile"
}
flags="-std=c++20 -O1 -g -D_GNU_SOURCE -DLM_LIBFUZZER -I$root -I$root/tests/fuzz -fsanitize=address,undefined -fno-sanitize-recover=undefined"
case $mode in
lib)
  extra= objs=
  for arg in "$@"; do
    case $arg in
    --depfile=*) continue ;;
    -*) extra="$extra $arg"; continue ;;
    esac
    obj="$dir/$(basename "$arg").o"
    $clang $flags $extra -fsanitize=fuzzer-no-link -MD -MF "$obj.d" -c "$arg" -o "$obj"
    objs="$objs $obj"
  done
  rm -f "$out"
  ar rcs "$out" $objs
  write_depfile
  ;;
target)
  srcs= cflags= libs=
  for arg in "$@"; do
    case $arg in
    --depfile=*) ;;
    *.cpp) srcs="$srcs $arg" ;;
    -D*|-I*) cflags="$cflags $arg" ;;
    *) libs="$libs $arg" ;;
    esac
  done
  $clang $flags $cflags -fsanitize=fuzzer $srcs -Wl,--start-group $libs -Wl,--end-group -lpthread -o "$out"
  n=0
  for src in $srcs; do
    n=$((n + 1))
    [ -z "$depfile" ] || $clang $flags $cflags -M "$src" > "$dir/$n.d"
  done
  write_depfile
  ;;
esac
