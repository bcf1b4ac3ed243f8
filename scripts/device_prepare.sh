#!/usr/bin/env bash
# Prepares .device/ (ignored by git) HERE, on the CPU machine, for one run of
# scripts/device_gpu.sh on the GPU machine lent by the `device` tool, which
# has no network, no libtool and no cffi:
#   1. cffi for its Python 3.12 and .device/setup.sh (../shared/device/prepare.sh);
#   2. a `make dist` tarball of this checkout (from the configured tree
#      build/dev), which builds there without autotools;
#   3. optional: Debian's libjansson, xxhash and libcurl headers as .deb files
#      (.device/debs), for a machine that lacks them (device_gpu.sh unpacks
#      them only then);
#   4. optional: wheels of the benchmark's peers fastsafetensors and
#      runai-model-streamer for Python 3.12 (.device/wheels).
# Steps 3 and 4 are skipped with a message when the download fails.
#
# Run from the repository root, right before the device call (the tarball
# must match the checkout's py/, which travels as it is):
#   bash scripts/device_prepare.sh
# Then make ONE call of the device tool's `run`:
#   carry:     [".device"]
#   command:   source .device/setup.sh && bash scripts/device_gpu.sh
#   timeout_s: 560
# and give_back afterwards.  The log comes back as $OUT/gpu.log.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
build=${DLPX_DEVICE_BUILD:-$root/build/dev}
dev="$root/.device"
mkdir -p "$dev"
git check-ignore -q .device || { echo "device_prepare: .device is not ignored by git" >&2; exit 1; }

# 1. cffi and setup.sh
shared_prepare="$root/../shared/device/prepare.sh"
if [ -f "$shared_prepare" ]; then
  bash "$shared_prepare"
elif [ ! -f "$dev/setup.sh" ]; then
  echo "device_prepare: no $shared_prepare and no .device/setup.sh: cffi will be missing there" >&2
fi

# 2. the dist tarball
[ -f "$build/Makefile" ] || { echo "device_prepare: $build is not a configured build tree" >&2; exit 1; }
rm -f "$build"/dlpx-*.tar.gz
make -s -C "$build" dist >/dev/null
rm -f "$dev"/dlpx-*.tar.gz
cp "$build"/dlpx-*.tar.gz "$dev"/
echo "device_prepare: $(cd "$dev" && ls dlpx-*.tar.gz) ($(du -h "$dev"/dlpx-*.tar.gz | cut -f1))"

# 3. build dependencies as .deb files (used there only if the machine lacks them)
mkdir -p "$dev/debs"
if (cd "$dev/debs" && rm -f ./*.deb &&
    apt-get download libjansson-dev libjansson4 libxxhash-dev libcurl4-openssl-dev \
      >/dev/null 2>&1); then
  echo "device_prepare: build dependencies: $(cd "$dev/debs" && ls ./*.deb | xargs -n1 basename | tr '\n' ' ')"
else
  echo "device_prepare: apt-get download failed: skipped the build dependencies" >&2
fi

# 4. the benchmark's optional peers as wheels for the device's Python 3.12
mkdir -p "$dev/wheels"
plats=()
for n in 17 27 28 31 34; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
for pkg in fastsafetensors==0.5.0 runai-model-streamer==0.17.1; do
  if python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${plats[@]}" --platform manylinux2014_x86_64 -d "$dev/wheels" \
      "$pkg" >/dev/null 2>&1; then
    echo "device_prepare: wheel $pkg"
  else
    echo "device_prepare: pip download $pkg failed: its benchmark rows will say not installed" >&2
  fi
done
# (their other needs, typer, humanize, numpy and torch, are on the GPU machine)

echo "device_prepare: .device holds $(du -sh "$dev" | cut -f1) (the device tool carries 64 MiB at most)"
echo 'device_prepare: now run: carry [".device"], command "source .device/setup.sh && bash scripts/device_gpu.sh", timeout_s 560'
