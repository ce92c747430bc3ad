#!/bin/sh
# Builds twilight-reader once per transport compression: twilight-gateway 0.18 picks the
# compression at compile time (its `zlib` and `zstd` features; zstd wins if both are on),
# so `shardkeeper bench compare` runs three binaries, target/release/twilight-reader-none,
# -zlib-stream and -zstd-stream. Dependencies are built once; a feature switch recompiles
# only twilight-gateway and the reader.
set -eu
cd "$(dirname "$0")"
for build in none: zlib-stream:zlib zstd-stream:zstd; do
    name=${build%%:*}
    features=${build#*:}
    if [ -n "$features" ]; then
        cargo build --release --locked --features "$features"
    else
        cargo build --release --locked
    fi
    cp target/release/twilight-reader "target/release/twilight-reader-$name"
done
