#!/usr/bin/env bash
# Build the CPU image of mednet-pvs from the repository's Dockerfile with no network during the
# build, then run it with no network (docs/containers.md). Not part of CI. Steps:
#   1. online, once: debootstrap a minimal Debian root file system with Python 3 (the base image)
#   2. online, once: pip downloads/builds every wheel the image needs into a folder on the host
#   3. offline: buildah builds the Dockerfile in a network namespace without interfaces, pip
#      installing only from that folder (mounted at /wheels)
#   4. offline: "mednet-pvs --version" and a tiny participant run inside the image
# Needs root, buildah, debootstrap, unshare, and a host python3 of the same minor version as the
# suite's (Python 3.11 for bookworm), so that the downloaded wheels fit the image.
#
# usage: scripts/build_offline_image.sh [BUILD_DIR]        (default /var/tmp/mednet-pvs-offline)
# environment: DEBIAN_SUITE (bookworm), DEBIAN_MIRROR, STORAGE_DRIVER (vfs: no overlay needed),
#   TORCH_PIP_SOURCES (where the host finds the torch CPU wheel; default the PyTorch CPU index)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=$(realpath -m "${1:-/var/tmp/mednet-pvs-offline}")
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
torch_sources=${TORCH_PIP_SOURCES:---index-url https://download.pytorch.org/whl/cpu}
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
export BUILDAH_ISOLATION=chroot

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/mednet_pvs/__init__.py")
torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' "$repo/Dockerfile")
base_image=localhost/mednet-pvs-base:$suite
image=localhost/mednet-pvs:$version-cpu-offline
rootfs=$build_dir/rootfs
wheels=$build_dir/wheels
mkdir -p "$build_dir" "$wheels"

step() { echo "== $*"; }

# -------------------------------------------------------------------- 1. base image (online)
if [[ ! -f $rootfs/.complete ]]; then
    step "debootstrap $suite into $rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$rootfs" "$mirror"
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/*
    touch "$rootfs/.complete"
fi
image_python=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
host_python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $image_python == "$host_python" ]] || {
    echo "host python3 is $host_python, the image's is $image_python: the wheels would not fit" >&2
    exit 2
}
if ! buildah inspect --type image "$base_image" >/dev/null 2>&1; then
    step "import $rootfs as $base_image"
    tar -C "$rootfs" --exclude=./.complete -cf "$build_dir/rootfs.tar" .
    container=$(buildah from scratch)
    buildah add "$container" "$build_dir/rootfs.tar" /
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/sh "$container"
    buildah commit --rm "$container" "$base_image"
    rm "$build_dir/rootfs.tar"
fi

# -------------------------------------------------------------------- 2. wheels (online)
step "wheels for torch $torch_version (CPU), mednet-pvs and its dependencies into $wheels"
# shellcheck disable=SC2086  # torch_sources holds several pip options
python3 -m pip download --quiet --no-deps --dest "$wheels" $torch_sources "torch==$torch_version"
torch_wheel=$(find "$wheels" -name "torch-$torch_version*.whl" | head -n 1)
python3 -m pip download --quiet --dest "$wheels" "$torch_wheel" setuptools wheel
# the exact torch build (e.g. 2.13.0+cpu) so that nothing pulls the CUDA build from PyPI
echo "torch==$(basename "$torch_wheel" | cut -d - -f 2)" >"$build_dir/constraints.txt"
python3 -m pip wheel --quiet --wheel-dir "$wheels" --find-links "$wheels" \
    --constraint "$build_dir/constraints.txt" "$repo" "bids-validator-deno>=2"

# -------------------------------------------------------------------- 3. build (offline)
step "build $image with no network"
offline_sources="--no-index --find-links /wheels"
unshare --net buildah build --pull=never --layers=false \
    --volume "$wheels:/wheels:ro" \
    --build-arg BASE_IMAGE="$base_image" --build-arg TORCH_FLAVOUR=cpu \
    --build-arg TORCH_PIP_SOURCES="$offline_sources" --build-arg PIP_SOURCES="$offline_sources" \
    --build-arg VCS_REF="$(git -C "$repo" rev-parse HEAD)" \
    --tag "$image" --file "$repo/Dockerfile" "$repo"

# -------------------------------------------------------------------- 4. run (offline)
step "run $image with no network"
container=$(buildah from --pull=never "$image")
trap 'buildah rm "$container" >/dev/null' EXIT
in_image() { unshare --net buildah run "$container" -- "$@"; }
in_image mednet-pvs --version
# shellcheck disable=SC2016  # expanded by the shell inside the image
in_image sh -c 'set -eu
    scratch=$(mktemp -d)
    mednet-pvs-synth "$scratch/bids" --subjects 1 --contrasts T2w --crop-mm 96 96 96 --voxel-size 2 2 2
    mednet-pvs "$scratch/bids" "$scratch/out" participant -w "$scratch/work" --nprocs 1 \
        --method frangi --skip-n4 --skip-skull-strip --regions none --skip-bids-validation
    ls "$scratch/out/sub-01/anat"
    python -c "import json, sys; print(json.load(open(sys.argv[1]))[\"GeneratedBy\"][0][\"Container\"])" \
        "$scratch/out/dataset_description.json"'
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image"
