#!/bin/sh
# The image's one install command: the Dockerfile runs it, and so does tests/test_image.py.
#
#   ops/docker/install.sh deps VENV [cpu|gpu]   a fresh venv holding the locked third-party packages
#   ops/docker/install.sh project VENV          the project (this checkout) into it, then
#                                               `pip check`
#
# Reproducible: only the pinned, hashed wheels of requirements.lock (plus requirements-gpu.lock, the
# CUDA 13 + cuDNN 9 wheels, for the GPU image) are installed, with --no-deps: nothing is resolved at
# build time and nothing is compiled (--only-binary :all:). The project is built from source by the
# pinned setuptools without build isolation and without an index, so nothing unpinned is fetched;
# `pip check` then fails the build if the lock misses a dependency of pyproject.toml (re-lock with
# `python -m ops.docker.lock`). `wheel` leaves once the project is built; setuptools stays, because
# hdrhistogram and pbr declare it as a runtime dependency. Two steps so that Docker caches the
# dependency layer across code changes. PYTHON picks the interpreter for the venv (default python3).
set -eu

usage="usage: install.sh deps VENV [cpu|gpu] | install.sh project VENV"
step=${1:?$usage}
venv=${2:?$usage}
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=$(CDPATH='' cd -- "$here/../.." && pwd)

pip() {
    "$venv/bin/python" -m pip --disable-pip-version-check --no-input "$@"
}

case $step in
deps)
    variant=${3:-cpu}
    case $variant in
    cpu | gpu) ;;
    *) echo "install.sh: the variant is cpu or gpu, not '$variant'" >&2; exit 2 ;;
    esac
    "${PYTHON:-python3}" -m venv "$venv"
    pip install --quiet --require-hashes --no-deps --only-binary :all: -r "$here/requirements.lock"
    if [ "$variant" = gpu ]; then
        pip install --quiet --require-hashes --no-deps --only-binary :all: -r "$here/requirements-gpu.lock"
    fi
    ;;
project)
    [ -x "$venv/bin/python" ] || { echo "install.sh: no venv at $venv (run the deps step first)" >&2; exit 2; }
    pip install --quiet --no-deps --no-build-isolation --no-index "$root"
    pip uninstall --quiet --yes wheel
    rm -rf "$root/build"
    pip check
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
