#!/usr/bin/env bash
# Build the node image (scripts/cluster/Dockerfile) from the repo root and tag it:
#   REGISTRY/llm-sweep-node:<project version>-<first 12 hex of sha256 of what the image is built
#   from: constraints.txt, the Dockerfile, piece.sh, pyproject.toml>
# so that a change of pins, dependencies or the image's steps gives a new tag.
# Usage: scripts/cluster/build_image.sh REGISTRY [--push] [--use] [--print-tag]
#   --push        push the tag after the build
#   --use         write the tag into the cluster files (scripts/cluster/*.yaml: every
#                 `image: .../llm-sweep-node:...`), which `ray up` and kubectl then run
#   --print-tag   print the tag and build nothing (no docker needed; with --use, still writes it)
#   MAX_JOBS      parallel compile jobs of the CUDA builds (the Dockerfile's default: 4)
#   DOCKER        the docker client (default: docker)
#   CLUSTER_DIR   the folder of the cluster files (default: scripts/cluster)
# Prints the pieces the image built (on stderr) and the tag (the last line of stdout). A piece the
# cluster files advertise (`piece:NAME`) that did not build fails the script before --push and
# --use, naming it: a node would advertise a piece it cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."

registry="" push=0 print_only=0 use=0
for arg in "$@"; do
  case "$arg" in
    --push) push=1 ;;
    --print-tag) print_only=1 ;;
    --use) use=1 ;;
    -*) echo "build_image.sh: unknown option $arg (usage: build_image.sh REGISTRY [--push] [--use] [--print-tag])" >&2; exit 2 ;;
    *) registry=${arg%/} ;;
  esac
done
if [ -z "$registry" ]; then
  echo "build_image.sh: no registry given (usage: build_image.sh REGISTRY [--push] [--use] [--print-tag], e.g. ghcr.io/your-org)" >&2
  exit 2
fi

dockerfile=scripts/cluster/Dockerfile
version=$(awk -F'"' '/^\[/{section=$0} section=="[project]" && /^version *=/{print $2; exit}' pyproject.toml)
if [ -z "$version" ]; then
  echo "build_image.sh: no version in pyproject.toml's [project] table" >&2
  exit 1
fi
inputs=(scripts/cluster/constraints.txt "$dockerfile" scripts/cluster/piece.sh pyproject.toml)
if command -v sha256sum >/dev/null; then
  digest=$(cat "${inputs[@]}" | sha256sum)
else
  digest=$(cat "${inputs[@]}" | shasum -a 256)
fi
tag="$registry/llm-sweep-node:$version-${digest:0:12}"
cluster_dir=${CLUSTER_DIR:-scripts/cluster}

use_tag() {
  local file
  for file in "$cluster_dir"/*.yaml; do
    sed -i.bak -E "s#^([[:space:]]*image:[[:space:]]*)[^[:space:]\"']*llm-sweep-node:[^[:space:]\"']*#\1$tag#" "$file"
    rm -f "$file.bak"
  done
  echo "the cluster files in $cluster_dir now run $tag" >&2
}

if [ "$print_only" = 1 ]; then
  [ "$use" = 1 ] && use_tag
  echo "$tag"
  exit 0
fi

docker=${DOCKER:-docker}
if ! command -v "$docker" >/dev/null; then
  echo "build_image.sh: docker not found ($docker): install Docker with BuildKit, or set DOCKER" >&2
  exit 1
fi
build_args=()
[ -n "${MAX_JOBS:-}" ] && build_args+=(--build-arg "MAX_JOBS=$MAX_JOBS")
# BuildKit sends only what the Dockerfile copies, not the whole checkout (.venv, results).
DOCKER_BUILDKIT=1 "$docker" build -f "$dockerfile" ${build_args[@]+"${build_args[@]}"} -t "$tag" . >&2
built=$("$docker" run --rm --entrypoint ls "$tag" /opt/llm-sweep/pieces | tr '\n' ' ')
echo "pieces built: $built" >&2
missing=""
for piece in $(grep -ohE 'piece:[A-Za-z0-9_.-]+' "$cluster_dir"/*.yaml | sort -u); do
  case " $built " in *" ${piece#piece:} "*) ;; *) missing="$missing ${piece#piece:}" ;; esac
done
if [ -n "$missing" ]; then
  echo "build_image.sh: the cluster files advertise pieces the image did not build:$missing; fix their build (its log above) or remove their piece: resources from $cluster_dir/*.yaml" >&2
  exit 1
fi
if [ "$push" = 1 ]; then
  "$docker" push "$tag" >&2
fi
[ "$use" = 1 ] && use_tag
echo "$tag"
