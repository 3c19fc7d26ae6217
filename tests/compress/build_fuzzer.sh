#!/bin/sh
# Builds clang/libFuzzer objects for the decoder fuzz targets (called by meson).
#   build_fuzzer.sh lib    OUT.a    CLANG SRCROOT SOURCES...
#   build_fuzzer.sh target OUT      CLANG SRCROOT CODEC_ID LIB.a FUZZ_SOURCE
set -eu
mode=$1 out=$2 clang=$3 root=$4
shift 4
flags="-std=c++20 -O1 -g -D_GNU_SOURCE -I$root -fsanitize=address,undefined -fno-sanitize-recover=undefined"
case $mode in
lib)
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  objs=
  for src in "$@"; do
    obj="$dir/$(basename "$src").o"
    $clang $flags -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
    objs="$objs $obj"
  done
  rm -f "$out"
  ar rcs "$out" $objs
  ;;
target)
  codec=$1 lib=$2 src=$3
  $clang $flags -fsanitize=fuzzer -DLM_FUZZ_CODEC="$codec" "$src" "$lib" -llz4 -lzstd -o "$out"
  ;;
esac
