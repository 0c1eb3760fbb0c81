#!/usr/bin/env bash
# build.sh: builds the SageMaker inference images from source and serves the demo. Run ./build.sh --help.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"  # where install puts the dependencies when python3 is Debian's own; used from then on
[[ -x "$VENV/bin/python" ]] && PYTHON="${PYTHON:-$VENV/bin/python}"
PYTHON="${PYTHON:-python3}"
DEFAULT_BASE_IMAGE="python:3.11-slim-bookworm"
LOCAL_BASE_IMAGE="${LOCAL_BASE_IMAGE:-inference-base:bookworm}"
PAT_VARIANT_SET="${PAT_TORCH_VARIANT:+yes}"  # all releases the cuda build unless the variant was chosen
PAT_TORCH_VARIANT="${PAT_TORCH_VARIANT:-cpu}"
WHEELHOUSE="${WHEELHOUSE:-build/wheelhouse}"
IMAGES=(xgboost pat)
DRY_RUN=false

usage() {
    cat <<'EOF'
Usage: ./build.sh [--dry-run] COMMAND [ARGS]

Commands:
  build [xgboost|pat|all]     prepare the wheelhouse from the lock files, then docker build (default: all).
                              Tags IMAGE:latest and IMAGE:VERSION-GITSHA (xgboost-inference, pat-inference;
                              the cuda variant pat-inference:latest-cuda and VERSION-GITSHA-cuda).
  demo                        install what is missing (as install), train the example models, build the xgboost
                              image, serve the risk model in a container on a free port and send it a sample
                              request (a local `serve` process when no Docker engine can be started)
  test [PYTEST_ARGS]          install what is missing (as install, plus docker-registry), start the Docker engine,
                              then run python -m pytest on this tree (no test collected is a failure)
  install [python|engine|registry|all]
                              install what is missing, quickly a no-op when nothing is: the Python dependencies
                              (torch==2.13.0 first, then -e '.[xgboost,pat,test,bench]'), a running Docker engine
                              (docker.io; root), docker-registry (the deployment tests' ECR stand-in; root)
  base [--force]              build the air-gapped base image with debootstrap (containers/base/build-base.sh)
  engine [--install]          start a Docker engine when none answers (--install: apt-get install docker.io first)
  lock [xgboost|pat|pat-cuda|all]
                              regenerate the hashed lock files from containers/**/*.in (needs pip-tools)
  train                       train the example models of the config's families into build/models/ (synthetic data),
                              with each XGBoost model's baseline CSV for monitor (NAME.baseline.csv beside it)
  package                     package each model's source directory as a reproducible model.tar.gz
                              (build/deploy/STAGE/artifacts/NAME/model.tar.gz)
  upload                      package, then upload each artifact SSE-KMS to the model bucket as
                              models/NAME/SHA256/model.tar.gz (skipped when present); register uses those URIs
  push                        create the stage's ECR repositories when missing (immutable tags, scan on push, KMS),
                              log in, push IMAGE:TAG of every family in the config (a tag that already holds this
                              build is reused; one that holds another build gets TAG-IMAGEID), read the digests back
  register                    create the SageMaker models (pinned to the pushed digests) and endpoint configs
                              that do not exist yet; writes build/deploy/STAGE/registration.json and endpoints.env
  deploy                      put each endpoint's CloudWatch alarms, create the endpoint or UpdateEndpoint (blue/green,
                              keeping autoscaled instance counts, rolling back on the 5XX and latency alarms); wait for
                              InService; register target-tracking autoscaling
  smoke                       invoke each deployed endpoint once with a sample made from its model artifact and check
                              the answer's shape
  destroy                     delete the stage's endpoints, endpoint configs, models, alarms and scaling targets
                              (never the bucket, the KMS key, the tables, the log groups or the ECR images)
  batch --model NAME [--input S3] [--output S3] [--wait]
                              start a Batch Transform job on one model of the config (MultiRecord, lines)
  monitor                     Model Monitor data quality for every captured SingleModel endpoint whose family has a
                              data_quality block: upload the model's baseline CSV (train writes it), run the
                              analyzer's baseline job, create the hourly monitoring schedule (reports to the capture
                              bucket, the stage's key and role) and the drift alarms (the stage's topic)
  infra [check]               create or update the stage's platform stack (containers/infra/platform.yaml: KMS key,
                              buckets, tables, log groups, alert topic, execution role, CodeBuild project) through
                              a change set printed before it is executed; writes build/deploy/STAGE/platform.json
                              and platform.env. check: cfn-lint and checkov (installed into build/checkov)
  verify                      the XGBoost guide's HIPAA compliance verification against the stage as deployed: one
                              PASS/FAIL/MANUAL line per check (tables, buckets, key, CloudTrail, log groups,
                              endpoints' VPC and network isolation, the roles by cloudsplaining); fails when one fails
  all                         train, upload, build the config's images, push, register and deploy
                              (the steps also chain: ./build.sh push register; ./build.sh upload register deploy)

Options:
  --dry-run    print the commands that change anything instead of running them
  -h, --help   this text

Settings (environment):
  BASE_IMAGE         base for every image (default: python:3.11-slim-bookworm when it can be pulled,
                     otherwise the local base LOCAL_BASE_IMAGE, built on first use)
  LOCAL_BASE_IMAGE   tag of the air-gapped base (default: inference-base:bookworm)
  DEBIAN_MIRROR      Debian mirror for the air-gapped base (default: http://deb.debian.org/debian)
  PAT_TORCH_VARIANT  cpu (default; what the tests build) or cuda (g4dn/T4: torch's CUDA wheels)
  WHEELHOUSE         where the locked wheels are downloaded (default: build/wheelhouse)
  PYTHON             Python used on the host (default: python3)
  STAGE              deployment stage (default: dev); DEPLOY_CONFIG (default: containers/deploy/STAGE.json)
  DEPLOY_STATE_DIR   where push/register/deploy keep their state and summaries (default: build/deploy)
  IMAGE_TAG          image version tag (default: VERSION-GITSHA; pat images add -PAT_TORCH_VARIANT)
  REGISTRY           push to this registry host instead of the account's ECR (login still uses the ECR token)
  AWS_REGION         region when the config names none; AWS_ENDPOINT_URL points boto3 and the AWS CLI elsewhere
  DEPLOY_CALL_LOG    append every AWS call of the deploy tool (operation, parameters, no bodies) to this file
EOF
}

say() { echo "build.sh: $*" >&2; }
die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

# Prints a command, then runs it unless --dry-run.
run() {
    echo "+ $*" >&2
    [[ "$DRY_RUN" == true ]] || "$@"
}

project_version() {
    "$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'
}

# The commit, with -dirty when the files that go into the images differ from it.
git_revision() {
    local format="$1" revision
    revision="$(git rev-parse "$format" HEAD 2>/dev/null)" || { echo "nogit"; return; }
    if [[ -n "$(git status --porcelain -- pyproject.toml serve models .dockerignore 'containers/*.lock' \
        'containers/*/*.lock' 'containers/*/Dockerfile' 2>/dev/null)" ]]; then
        revision="$revision-dirty"
    fi
    echo "$revision"
}

# --- Docker engine ---------------------------------------------------------------------------------------------

engine_reachable() { docker info >/dev/null 2>&1; }

# Starts dockerd in the background when no engine answers (root only); with "install", installs docker.io first.
start_engine() {
    local install="${1:-}"
    engine_reachable && return 0
    if [[ "$(id -u)" != 0 ]]; then
        say "no Docker engine answers and only root can start one"
        return 1
    fi
    if ! command -v dockerd >/dev/null; then
        [[ "$install" == install ]] || { say "no Docker engine is installed"; return 1; }
        say "installing Docker (apt-get install docker.io)"
        apt_install docker.io || return 1
    fi
    mkdir -p build
    say "starting dockerd in the background (log: build/dockerd.log)"
    setsid dockerd >build/dockerd.log 2>&1 </dev/null &
    local pid=$! deadline=$((SECONDS + 60))
    until engine_reachable; do
        kill -0 "$pid" 2>/dev/null || { say "dockerd exited: $(tail -n 1 build/dockerd.log)"; return 1; }
        ((SECONDS < deadline)) || { say "dockerd did not answer within 60 s; see build/dockerd.log"; return 1; }
        sleep 0.5
    done
    say "Docker engine is up"
}

require_engine() {
    [[ "$DRY_RUN" == true ]] || engine_reachable \
        || die "no Docker engine answers ('docker info' fails): start one, or run './build.sh engine --install' as root"
}

# --- Installing what the demo and the tests need ---------------------------------------------------------------
# Each step checks first and installs only what is missing, so a second run takes a second or two.

PYTHON_EXTRAS="xgboost,pat,test,bench"
TORCH_PIN="torch==2.13.0"  # installed first: pip then keeps the CPU build this machine offers for it

# apt-get install, refreshing the package lists only when the install fails without it.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; } \
        || { say "apt-get install $* failed"; return 1; }
}

# Prints what is missing for pyproject.toml's dependencies and PYTHON_EXTRAS; fails when something is.
python_dependencies_missing() {
    "$PYTHON" - "$PYTHON_EXTRAS" <<'EOF' 2>&1
import sys
import tomllib
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:
    sys.exit("packaging is not installed")
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
try:
    metadata.distribution(project["name"])
except metadata.PackageNotFoundError:
    sys.exit(f"{project['name']} is not installed")
extras = sys.argv[1].split(",")
for line in project["dependencies"] + [line for extra in extras for line in project["optional-dependencies"][extra]]:
    requirement = Requirement(line)
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        sys.exit(f"{requirement.name} is not installed")
    if not requirement.specifier.contains(version, prereleases=True):
        sys.exit(f"{requirement.name} {version} is installed, {requirement} is required")
EOF
}

# Debian's own Python takes no pip installs (PEP 668, EXTERNALLY-MANAGED): a virtual environment instead.
externally_managed() {
    "$PYTHON" -c 'import pathlib, sys, sysconfig
sys.exit(sys.prefix != sys.base_prefix or not pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists())'
}

use_virtual_environment() {
    say "$PYTHON is the system's Python, which pip may not change: installing into a virtual environment, $VENV"
    if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
        [[ "$(id -u)" == 0 ]] \
            || die "creating $VENV needs python3-venv, and only root can install it: apt-get install python3-venv"
        [[ "$DRY_RUN" == true ]] || apt_install python3-venv || die "could not install python3-venv"
    fi
    run "$PYTHON" -m venv "$VENV" || die "could not create the virtual environment $VENV"
    PYTHON="$VENV/bin/python"
    say "from now on build.sh uses $PYTHON; activate it for the README's examples: . .venv/bin/activate"
}

install_python() {
    local missing
    [[ "$PYTHON" == "$VENV/bin/python" ]] || ! externally_managed || use_virtual_environment
    if missing="$(python_dependencies_missing)"; then
        say "the Python dependencies are installed ($PYTHON, extras $PYTHON_EXTRAS)"
        return
    fi
    say "installing the Python dependencies into $PYTHON: $missing"
    run "$PYTHON" -m pip install --progress-bar off "$TORCH_PIN" || die "pip install $TORCH_PIN failed (see above)"
    run "$PYTHON" -m pip install --progress-bar off -e ".[$PYTHON_EXTRAS]" \
        || die "pip install -e '.[$PYTHON_EXTRAS]' failed (see above)"
}

install_engine() {
    [[ "$DRY_RUN" == true ]] || start_engine install \
        || die "no Docker engine could be reached or started (the reason is above); the container tests need one"
}

# Debian's docker-registry is the ECR stand-in of the deployment tests (they start it with their own config).
install_registry() {
    command -v docker-registry >/dev/null && return
    say "installing docker-registry (apt-get install docker-registry), the deployment tests' stand-in for ECR"
    [[ "$DRY_RUN" == false ]] || return 0
    [[ "$(id -u)" == 0 ]] || die "only root can install docker-registry: apt-get install docker-registry"
    apt_install docker-registry || die "could not install docker-registry"
}

cmd_install() {
    (($# <= 1)) || die "install takes one of python, engine, registry or all, got: $*"
    case "${1:-all}" in
        python) install_python ;;
        engine) install_engine ;;
        registry) install_registry ;;
        all) install_python; install_engine; install_registry ;;
        *) die "unknown install target '$1' (expected: python, engine, registry or all)" ;;
    esac
}

# --- Base image ------------------------------------------------------------------------------------------------

# The base every image builds FROM: BASE_IMAGE when set; else the public default when present or pullable;
# else the local debootstrapped base (built on first use).
resolve_base_image() {
    if [[ -n "${BASE_IMAGE:-}" ]]; then
        echo "$BASE_IMAGE"
        return
    fi
    if docker image inspect "$DEFAULT_BASE_IMAGE" >/dev/null 2>&1; then
        echo "$DEFAULT_BASE_IMAGE"
        return
    fi
    local reason
    if [[ "$DRY_RUN" == true ]]; then
        reason="dry run: not pulling"
    elif reason="$(docker pull -q "$DEFAULT_BASE_IMAGE" 2>&1)"; then
        echo "$DEFAULT_BASE_IMAGE"
        return
    fi
    say "the default base image $DEFAULT_BASE_IMAGE cannot be pulled (${reason##*$'\n'})"
    say "using the local air-gapped base $LOCAL_BASE_IMAGE instead (containers/base/build-base.sh)"
    if [[ "$DRY_RUN" == true ]]; then
        containers/base/build-base.sh --dry-run >&2
    else
        containers/base/build-base.sh >&2
    fi
    echo "$LOCAL_BASE_IMAGE"
}

# --- Images ----------------------------------------------------------------------------------------------------

# Sets IMAGE_REPO, DOCKERFILE, LOCKS, WHEELS, BUILD_ARGS and CONTEXT (what the Dockerfile COPYs) for one image.
image_spec() {
    LOCKS=(containers/build-tools.lock)
    BUILD_ARGS=()
    CONTEXT=(pyproject.toml serve models/__init__.py "models/$1")
    case "$1" in
        xgboost)
            IMAGE_REPO=xgboost-inference
            DOCKERFILE=containers/xgboost/Dockerfile
            LOCKS+=(containers/xgboost/requirements.lock)
            WHEELS="$WHEELHOUSE/xgboost"
            ;;
        pat)
            [[ "$PAT_TORCH_VARIANT" == cpu || "$PAT_TORCH_VARIANT" == cuda ]] \
                || die "PAT_TORCH_VARIANT must be cpu or cuda, got '$PAT_TORCH_VARIANT'"
            [[ -d models/pat && -n "$(ls -A models/pat)" ]] || die "models/pat/ is not in this tree yet: nothing to build"
            IMAGE_REPO=pat-inference
            DOCKERFILE=containers/pat/Dockerfile
            LOCKS+=("containers/pat/requirements-$PAT_TORCH_VARIANT.lock")
            WHEELS="$WHEELHOUSE/pat-$PAT_TORCH_VARIANT"
            BUILD_ARGS=(--build-arg "PAT_TORCH_VARIANT=$PAT_TORCH_VARIANT")
            ;;
        *) die "unknown image '$1' (expected: ${IMAGES[*]} or all)" ;;
    esac
    local lock
    for lock in "${LOCKS[@]}"; do
        [[ -f "$lock" ]] || die "$lock is missing: create it with './build.sh lock'"
    done
    CONTEXT+=("$DOCKERFILE" "${LOCKS[@]}" "$WHEELS")
}

# Stages the build context of one image in build/context/IMAGE and prints its path: its Dockerfile, code, locks and
# its own wheelhouse only (the repository's .dockerignore would send every wheelhouse under build/, the CUDA wheels
# included; the legacy builder, which this engine and CodeBuild's may run, ignores per-Dockerfile ignore files).
# Hard links where possible, so staging copies nothing; the files keep their modes, so the layer cache still hits.
stage_context() {
    local dir="build/context/$1" path target
    rm -rf "$dir"
    mkdir -p "$dir"
    for path in "${CONTEXT[@]}"; do
        target="$dir/$path"
        [[ "$path" == "$WHEELS" ]] && target="$dir/build/wheelhouse/${WHEELS##*/}"
        mkdir -p "$(dirname "$target")"
        cp -al "$path" "$target" 2>/dev/null || cp -a "$path" "$target"
    done
    find "$dir" \( -name __pycache__ -o -name '*.py[co]' \) -prune -exec rm -rf {} +
    echo "$dir"
}

# Downloads the locked wheels for linux x86_64 CPython 3.11 (hash-checked); skipped when the locks are unchanged.
prepare_wheelhouse() {
    local stamp="$WHEELS/.locks.sha256" digest
    digest="$(cat "${LOCKS[@]}" | sha256sum | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
        say "wheelhouse $WHEELS matches the locks; not downloading"
        return
    fi
    local platforms=() minor lock_args=() lock
    for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
    platforms+=(--platform manylinux2014_x86_64)
    for lock in "${LOCKS[@]}"; do lock_args+=(-r "$lock"); done
    run rm -rf "$WHEELS"
    run "$PYTHON" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
        --dest "$WHEELS" "${lock_args[@]}" \
        || die "pip download of ${LOCKS[*]} failed: is the package index reachable?"
    [[ "$DRY_RUN" == true ]] || echo "$digest" >"$stamp"
}

# The version tag of an image: IMAGE_TAG or VERSION-GITSHA, plus the torch variant for pat.
image_tag() {
    local tag="${IMAGE_TAG:-$(project_version)-$(git_revision --short=7)}"
    [[ "${1:-}" == pat ]] && tag="$tag-$PAT_TORCH_VARIANT"
    echo "$tag"
}

# The labels an image built from a lock carries (its torch and CUDA versions), as --label arguments; the deploy
# tool reads them back with docker image inspect (containers/deploy/sagemaker_deploy/gpu_hosts.py).
lock_labels() {
    local labels line
    labels="$(PYTHONPATH="$ROOT/containers/deploy" "$PYTHON" -m sagemaker_deploy.gpu_hosts labels "$1")" \
        || die "could not read the torch and CUDA versions of $1"
    while read -r line; do printf '%s\n' --label "$line"; done <<<"$labels"
}

build_image() {
    local base="$1" name="$2" version revision tag context labels latest=latest
    image_spec "$name"
    prepare_wheelhouse
    version="$(project_version)"
    revision="$(git_revision --verify)"
    tag="$(image_tag "$name")"
    [[ "$name" == pat && "$PAT_TORCH_VARIANT" == cuda ]] && latest="latest-cuda"  # :latest stays the CPU build
    mapfile -t labels < <(lock_labels "${LOCKS[-1]}")
    ((${#labels[@]} > 0)) || die "no labels for ${LOCKS[-1]}"
    say "building $IMAGE_REPO ($IMAGE_REPO:$latest, $IMAGE_REPO:$tag) on $base"
    context="build/context/$name"
    echo "+ stage_context $name: ${CONTEXT[*]} -> $context/" >&2
    [[ "$DRY_RUN" == true ]] || context="$(stage_context "$name")"
    run docker build --file "$DOCKERFILE" \
        --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" --build-arg "GIT_REVISION=$revision" \
        "${BUILD_ARGS[@]}" "${labels[@]}" --tag "$IMAGE_REPO:$latest" --tag "$IMAGE_REPO:$tag" "$context" \
        || die "docker build of $IMAGE_REPO failed (see the output above)"
    if [[ "$DRY_RUN" == false ]]; then
        say "$IMAGE_REPO:$tag is $(docker image inspect --format '{{.Size}}' "$IMAGE_REPO:$tag" \
            | awk '{printf "%.0f MB", $1 / 1e6}')"
    fi
}

images_of() {
    case "${1:-all}" in
        all) echo "${IMAGES[@]}" ;;
        *) echo "$1" ;;
    esac
}

cmd_build() {
    (($# <= 1)) || die "build takes one image name or all, got: $*"
    require_engine
    local base name names
    read -ra names <<<"$(images_of "${1:-all}")"
    for name in "${names[@]}"; do image_spec "$name"; done  # fail before building anything
    base="$(resolve_base_image)"
    for name in "${names[@]}"; do build_image "$base" "$name"; done
}

# --- Lock files ------------------------------------------------------------------------------------------------

compile_lock() {
    local source="$1" output="${1%.in}.lock"
    "$PYTHON" -m piptools compile --version >/dev/null 2>&1 \
        || die "locking needs pip-tools: $PYTHON -m pip install pip-tools"
    run env CUSTOM_COMPILE_COMMAND="./build.sh lock" "$PYTHON" -m piptools compile --quiet --generate-hashes \
        --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --output-file "$output" "$source"
}

# uv, not pip-compile: pip's resolver downloads every wheel it picked (several GB of nvidia-* wheels here), while
# uv reads PEP 658 metadata and the index's hashes. PyPI only, without this machine's pip settings or uv.toml (they
# offer the CPU torch wheel on disk for torch==2.13.0), for the image's platform rather than this machine's.
compile_cuda_lock() {
    command -v "${UV:-uv}" >/dev/null || die "locking pat-cuda needs uv: $PYTHON -m pip install uv (or set UV)"
    run "${UV:-uv}" pip compile --quiet --no-config --index-url https://pypi.org/simple \
        --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --custom-compile-command "./build.sh lock pat-cuda" \
        --output-file containers/pat/requirements-cuda.lock containers/pat/requirements-cuda.in
}

cmd_lock() {
    case "${1:-all}" in
        all) compile_lock containers/build-tools.in
             compile_lock containers/xgboost/requirements.in
             compile_lock containers/pat/requirements-cpu.in ;;
        xgboost) compile_lock containers/xgboost/requirements.in ;;
        pat) compile_lock containers/pat/requirements-cpu.in ;;
        pat-cuda) compile_cuda_lock ;;
        *) die "unknown lock '$1' (expected: xgboost, pat, pat-cuda or all)" ;;
    esac
}

# --- Demo ------------------------------------------------------------------------------------------------------

# Polls a URL until it answers 200, at most $2 seconds.
wait_for_ping() {
    local url="$1" deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

send_sample() {
    local port="$1" sample="$2"
    say "POST /invocations with $sample (text/csv):"
    curl -fsS -X POST -H "Content-Type: text/csv" -H "Accept: application/json" --data-binary "@$sample" \
        "http://127.0.0.1:$port/invocations"
    echo
}

demo_in_docker() {
    local models="$1" name="xgboost-demo-$$" port started
    cmd_build xgboost
    started=$SECONDS
    run docker run --detach --rm --name "$name" --publish 127.0.0.1::8080 \
        --volume "$ROOT/$models/risk:/opt/ml/model:ro" xgboost-inference:latest serve >/dev/null
    [[ "$DRY_RUN" == false ]] || return 0
    # shellcheck disable=SC2064  # expand now: $name is local to this function
    trap "docker rm -f '$name' >/dev/null 2>&1 || true" EXIT
    port="$(docker port "$name" 8080/tcp | head -n 1)"
    port="${port##*:}"
    wait_for_ping "http://127.0.0.1:$port/ping" 60 \
        || { docker logs "$name" >&2; die "the container did not answer /ping within 60 s (its log is above)"; }
    say "container $name serves the risk model on 127.0.0.1:$port (ready in $((SECONDS - started)) s)"
    send_sample "$port" "$models/risk.sample.csv"
    run docker stop "$name" >/dev/null
}

demo_local() {
    local models="$1" port pid
    port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    echo "+ SERVE_HANDLER=xgboost SM_MODEL_DIR=$models/risk SAGEMAKER_BIND_TO_PORT=$port $PYTHON -m serve" >&2
    [[ "$DRY_RUN" == false ]] || return 0
    SERVE_HANDLER=xgboost SM_MODEL_DIR="$models/risk" SAGEMAKER_BIND_TO_PORT="$port" "$PYTHON" -m serve &
    pid=$!
    # shellcheck disable=SC2064  # expand now: $pid is local to this function
    trap "kill '$pid' 2>/dev/null || true" EXIT
    wait_for_ping "http://127.0.0.1:$port/ping" 60 || die "the local server did not answer /ping within 60 s"
    say "local serve process $pid serves the risk model on 127.0.0.1:$port"
    send_sample "$port" "$models/risk.sample.csv"
    kill -TERM "$pid"
    wait "$pid" || true
}

cmd_demo() {
    (($# == 0)) || die "demo takes no arguments"
    local models=build/models/xgboost
    install_python
    say "training the example models into $models (synthetic data, no patient records)"
    run "$PYTHON" -m models.xgboost.examples --out "$models" >/dev/null
    if [[ "$DRY_RUN" == true ]] || start_engine install; then
        demo_in_docker "$models"
    else
        say "NO DOCKER ENGINE could be reached or started, so the demo runs without a container:"
        say "serving the risk model with a local 'serve' process (the same runtime the image runs)"
        demo_local "$models"
    fi
    say "the example models and their sample requests are in $models/ (the README's examples use them)"
}

# --- Tests -----------------------------------------------------------------------------------------------------

# Installs what the tests need, then runs pytest on this tree; no test collected (pytest's exit 5) is a failure.
cmd_test() {
    install_python
    install_engine
    install_registry
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this tree, also in the processes the tests start
    local status=0
    run "$PYTHON" -m pytest "$@" || status=$?
    ((status != 5)) || say "pytest collected no tests: that is a failure"
    return "$status"
}

# --- Deployment: push, register, deploy, batch, all ------------------------------------------------------------
# The AWS work that needs JSON and idempotency is containers/deploy/sagemaker_deploy (boto3); this section runs
# it and the docker commands. Its state is under build/deploy/STAGE/ (DEPLOY_STATE_DIR).

deploy_config() { echo "${DEPLOY_CONFIG:-containers/deploy/${STAGE:-dev}.json}"; }

# python -m sagemaker_deploy with the stage's config and the settings; --dry-run prints the AWS calls instead.
# Each build target's local tag and lock let it read (or, in a dry run, foresee) the images' labels.
deploy_py() {
    local options=(--config "$(deploy_config)" --state-dir "${DEPLOY_STATE_DIR:-build/deploy}" --version "$(image_tag)"
                   --region "${AWS_REGION:-${AWS_DEFAULT_REGION:-}}") target lock
    for target in "${IMAGES[@]}"; do
        lock="$(image_spec "$target" && echo "${LOCKS[-1]}")" || exit 1
        options+=(--local-tag "$target=$(image_tag "$target")" --lock "$target=$lock")
    done
    [[ -n "${REGISTRY:-}" ]] && options+=(--registry "$REGISTRY")
    [[ "$DRY_RUN" == true ]] && options+=(--dry-run)
    [[ -n "${DEPLOY_CALL_LOG:-}" ]] && options+=(--call-log "$DEPLOY_CALL_LOG")
    PYTHONPATH="$ROOT/containers/deploy${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m sagemaker_deploy "${options[@]}" "$@"
}

require_aws_cli() {
    command -v aws >/dev/null || die "the AWS CLI (aws) is missing: $PYTHON -m pip install awscli"
}

registry_login() {
    local host="$1" region="$2"
    echo "+ aws ecr get-login-password --region $region | docker login --username AWS --password-stdin $host" >&2
    [[ "$DRY_RUN" == true ]] && return
    aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$host" >&2 \
        || die "docker login to $host failed: check the AWS credentials ('aws ecr get-login-password') and that $host answers"
}

cmd_push() {
    require_engine
    require_aws_cli
    local plan kind family local_repo repository target host="" region tag tags=() image_id labels decision action push_tag
    deploy_py check-images || die "an image cannot run where the config deploys it (the reason is above); nothing was pushed"
    plan="$(deploy_py push-plan)" || die "could not prepare the ECR repositories (the reason is above)"
    read -r kind host region <<<"$(head -n 1 <<<"$plan")"
    [[ "$kind" == registry ]] || die "unexpected output from sagemaker_deploy push-plan: $plan"
    registry_login "$host" "$region"
    while read -r kind family local_repo repository target; do
        [[ "$kind" == image ]] || continue
        [[ "$target" == - ]] && target=""
        tag="$(image_tag "$target")"
        image_id="sha256:<image-id>" labels="{}"
        if [[ "$DRY_RUN" == false ]]; then
            image_id="$(docker image inspect --format '{{.Id}}' "$local_repo:$tag" 2>/dev/null)" \
                || die "there is no local image $local_repo:$tag to push: run './build.sh build ${target:-IMAGE}' first (or set IMAGE_TAG)"
            labels="$(docker image inspect --format '{{json .Config.Labels}}' "$local_repo:$tag")"
        fi
        # The repositories' tags are immutable: a tag that holds this build is reused, another build gets its own.
        decision="$(deploy_py --tag "$family=$tag" --image-id "$image_id" --labels "$labels" push-tag)" \
            || die "could not check whether $host/$repository:$tag exists (the reason is above)"
        read -r action push_tag <<<"$decision"
        if [[ "$action" == push ]]; then
            run docker tag "$local_repo:$tag" "$host/$repository:$push_tag"
            run docker push --quiet "$host/$repository:$push_tag" >&2 \
                || die "docker push of $host/$repository:$push_tag failed: is the registry $host reachable? (nothing was registered)"
        fi
        tags+=(--tag "$family=$push_tag")
    done <<<"$plan"
    deploy_py "${tags[@]}" record-push >/dev/null || die "could not read back the pushed digests (the reason is above)"
}

# The example models (synthetic data) of the families whose models have a "source" directory, into build/models/,
# where the configs' "source" entries point. Real models: put their directories there (or point "source" at them)
# and skip this step.
cmd_train() {
    local target
    for target in $(deploy_py trainable); do
        case "$target" in
            xgboost) run "$PYTHON" -m models.xgboost.examples --out build/models/xgboost >&2 ;;
            pat) run "$PYTHON" -m models.pat.examples --out build/models/pat >&2 ;;
        esac || die "training the $target example models failed (the reason is above)"
    done
}

cmd_register() {
    deploy_py register || die "registration failed (the reason is above)"
}

cmd_deploy() {
    deploy_py deploy || die "deployment failed (the reason is above); endpoints not yet updated keep serving their previous config"
}

# The deployment steps run in the order given: ./build.sh push register (CodeBuild's post_build).
STEPS=(train package upload push register deploy smoke destroy)
cmd_steps() {
    local step
    for step in "$@"; do
        case "$step" in
            train) cmd_train ;;
            package) deploy_py package >/dev/null || die "packaging the models failed (the reason is above)" ;;
            upload) deploy_py upload >/dev/null || die "uploading the model artifacts failed (the reason is above)" ;;
            push) cmd_push ;;
            register) cmd_register ;;
            deploy) cmd_deploy ;;
            smoke) deploy_py smoke || die "the smoke test failed (the reason is above)" ;;
            destroy) deploy_py destroy || die "destroy stopped (the reason is above); run it again to finish" ;;
            *) die "'$step' is not a step (steps: ${STEPS[*]})" ;;
        esac
    done
}

cmd_batch() {
    deploy_py batch "$@" || die "the batch transform job could not be started or did not complete (the reason is above)"
}

cmd_all() {
    (($# == 0)) || die "all takes no arguments"
    if [[ -z "$PAT_VARIANT_SET" ]]; then  # the stages' PAT endpoints run on g4dn: release what they can run
        PAT_TORCH_VARIANT=cuda
        say "all: the PAT image is the cuda build (PAT_TORCH_VARIANT=cpu chooses the CPU one)"
    fi
    deploy_py check
    IMAGE_TAG="$(image_tag)"  # one tag for the whole release, even if the tree changes meanwhile
    export IMAGE_TAG
    cmd_steps train upload
    local target
    for target in $(deploy_py targets); do cmd_build "$target"; done
    cmd_steps push register deploy
}

# --- Platform stack: infra ------------------------------------------------------------------------------------
# CloudFormation does the provisioning; sagemaker_deploy/stack.py builds the change set, prints it and waits.

CHECKOV_VENV="${CHECKOV_VENV:-build/checkov}"

# checkov in its own venv under build/: its pins (boto3, networkx, packaging) conflict with the project's.
checkov_bin() {
    local lock=containers/infra/checkov.lock stamp
    stamp="$(sha256sum "$lock" | cut -d' ' -f1)"
    if [[ ! -x "$CHECKOV_VENV/bin/checkov" || "$(cat "$CHECKOV_VENV/.lock.sha256" 2>/dev/null)" != "$stamp" ]]; then
        say "installing checkov into $CHECKOV_VENV from $lock (takes minutes the first time)"
        rm -rf "$CHECKOV_VENV"
        { "$PYTHON" -m venv "$CHECKOV_VENV" && "$CHECKOV_VENV/bin/pip" install --quiet --progress-bar off \
            --no-deps --require-hashes -r "$lock" >&2; } || die "could not install checkov from $lock: is PyPI reachable?"
        echo "$stamp" >"$CHECKOV_VENV/.lock.sha256"
    fi
    echo "$CHECKOV_VENV/bin/checkov"
}

cfn_lint() {
    echo "+ cfn-lint $*" >&2
    "$PYTHON" -c 'import sys; from cfnlint.runner import main; sys.argv[0] = "cfn-lint"; sys.exit(main())' "$@"
}

# cfn-lint on the template as written and as CloudFormation expands it for the stage; checkov on the expansion
# (it does not expand Fn::ForEach itself). Skipped checkov rules are justified in the template.
infra_check() {
    local rendered checkov
    "$PYTHON" -c 'import cfnlint' 2>/dev/null || die "cfn-lint is missing: $PYTHON -m pip install -e '.[test]'"
    rendered="$(deploy_py infra-render)" || die "could not expand the template for the stage (the reason is above)"
    # The expansion uses up the loops' list parameters (W2001, unused parameter, there only).
    cfn_lint containers/infra/platform.yaml || die "cfn-lint found problems in the platform template"
    cfn_lint --ignore-checks W2001 -- "$rendered" || die "cfn-lint found problems in the expanded platform template"
    checkov="$(checkov_bin)"
    run "$checkov" --quiet --compact --skip-download --framework cloudformation \
        --external-checks-dir containers/infra/policies --file "$rendered" \
        || die "checkov found problems in the platform template (fix them, or skip a rule with its reason in the template)"
    say "the platform template passes cfn-lint and checkov"
}

cmd_infra() {
    case "${1:-}" in
        "") deploy_py infra || die "the platform stack was not created or updated (the reason is above)" ;;
        check) infra_check ;;
        *) die "infra takes nothing or check, got: $*" ;;
    esac
}

# --- Dispatch --------------------------------------------------------------------------------------------------

main() {
    local args=() arg
    for arg in "$@"; do
        case "$arg" in
            --dry-run) DRY_RUN=true ;;
            -h|--help) usage; exit 0 ;;
            *) args+=("$arg") ;;
        esac
    done
    ((${#args[@]} > 0)) || { usage >&2; exit 2; }
    local command="${args[0]}"
    args=("${args[@]:1}")
    case "$command" in
        build) cmd_build "${args[@]}" ;;
        demo) cmd_demo "${args[@]}" ;;
        test) cmd_test "${args[@]}" ;;
        install) cmd_install "${args[@]}" ;;
        base) require_engine; run containers/base/build-base.sh "${args[@]}" ;;
        engine) ((${#args[@]} == 0)) || [[ "${args[*]}" == --install ]] || die "engine takes only --install"
                [[ "$DRY_RUN" == true ]] || start_engine "${args[*]/--install/install}" ;;
        lock) cmd_lock "${args[@]}" ;;
        train|package|upload|push|register|deploy|smoke|destroy) cmd_steps "$command" "${args[@]}" ;;
        batch) cmd_batch "${args[@]}" ;;
        monitor) ((${#args[@]} == 0)) || die "monitor takes no arguments, got: ${args[*]}"
                 deploy_py monitor >/dev/null || die "monitoring was not set up (the reason is above)" ;;
        infra) cmd_infra "${args[@]}" ;;
        verify) ((${#args[@]} == 0)) || die "verify takes no arguments, got: ${args[*]}"
                deploy_py verify ;;  # its one error line says whether checks failed or the stage could not be read
        all) cmd_all "${args[@]}" ;;
        *) usage >&2; die "unknown command '$command'" ;;
    esac
}

main "$@"
