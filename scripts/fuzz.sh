#!/usr/bin/env bash
# Runs the cargo fuzz targets (tests/fuzz) for a while each: decoding and mapping of any
# record value against the oracle (tests/mapping/oracle.rs), and loading of any
# field-assignments text.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 60
#
# Needs the nightly toolchain (rustup) and cargo-fuzz, which it installs from crates.io
# when missing. Seeds the corpus with the sample events.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
corpus=tests/fuzz/corpus
mkdir -p "$corpus/decode_and_map" "$corpus/field_assignments"
cp tests/data/events/*.json "$corpus/decode_and_map/"
cp tests/data/field-assignments.toml "$corpus/field_assignments/"
for target in decode_and_map field_assignments; do
  echo "--- fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run --fuzz-dir tests/fuzz "$target" "$corpus/$target" -- \
    -max_total_time="$seconds" -max_len=200000 -timeout=10
done
