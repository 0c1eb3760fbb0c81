#!/usr/bin/env bash
# The CodeBuild pipeline's phases; buildspec.yml runs `containers/codebuild/pipeline.sh PHASE` in each phase.
# Run the whole buildspec here with: python containers/codebuild/local_codebuild.py
#
# Settings (buildspec env.variables; override them per project or per build):
#   PIPELINE_EXTRAS   the project's extras the pipeline installs (default: xgboost,pat,test)
#   TORCH_INDEX_URL   extra index for torch when the extras include pat (the CPU wheels suffice for the tests)
#   UNIT_TESTS        pytest paths for pre_build (default: tests/unit tests/http)
#   IMAGES            build.sh build target (default: all)
#   CONTAINER_TESTS   pytest paths for build (default: tests/container)
#   STAGE             the deployment config post_build uploads, pushes and registers (default: dev); see build.sh --help
#   PAT_TORCH_VARIANT the PAT image build tests (default: cpu)
#   PAT_RELEASE_VARIANT the PAT image post_build pushes and registers, built after the tests when it differs
#                     (default: PAT_TORCH_VARIANT)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PYTHON="${PYTHON:-python3}"
WHEELHOUSE=build/wheelhouse/ci
REPORTS=build/reports

say() { echo "pipeline.sh: $*" >&2; }

# Every wheel the tools and tests need goes into a wheelhouse (CodeBuild caches it between builds); the
# install itself is offline from there.
install() {
    local extras="${PIPELINE_EXTRAS-xgboost,pat,test}" index=()
    [[ ",$extras," == *,pat,* && -n "${TORCH_INDEX_URL:-}" ]] && index=(--extra-index-url "$TORCH_INDEX_URL")
    local project=".${extras:+[$extras]}"
    "$PYTHON" -m pip wheel --quiet --progress-bar off --wheel-dir "$WHEELHOUSE" --find-links "$WHEELHOUSE" \
        "${index[@]}" setuptools "$project"
    "$PYTHON" -m pip install --quiet --progress-bar off --no-index --find-links "$WHEELHOUSE" -e "$project"
    ./build.sh engine  # privileged CodeBuild runs dockerd already; elsewhere this starts one as root
}

run_pytest() {
    local report="$1" paths
    read -ra paths <<<"$2"
    mkdir -p "$REPORTS"
    "$PYTHON" -m pytest -p no:cacheprovider --junitxml "$REPORTS/$report.xml" "${paths[@]}"
}

# Lint (tests/unit/test_lint.py: shellcheck, hadolint), unit and HTTP tests.
pre_build() {
    run_pytest pre_build "${UNIT_TESTS:-tests/unit tests/http}"
}

build() {
    ./build.sh build "${IMAGES:-all}"
    run_pytest build "${CONTAINER_TESTS:-tests/container}"
    if [[ "${IMAGES:-all}" == all || "${IMAGES:-all}" == pat ]] && [[ "$(release_variant)" != "$(tested_variant)" ]]; then
        PAT_TORCH_VARIANT="$(release_variant)" ./build.sh build pat
    fi
}

tested_variant() { echo "${PAT_TORCH_VARIANT:-cpu}"; }
release_variant() { echo "${PAT_RELEASE_VARIANT:-$(tested_variant)}"; }

# Only after a successful build: CodeBuild runs post_build after a failed build too.
post_build() {
    case "${CODEBUILD_BUILD_SUCCEEDING:-}" in
        # register points the models at the uploaded artifacts: train and upload them first (the example models;
        # a real project replaces train with fetching its trained model directories).
        1) PAT_TORCH_VARIANT="$(release_variant)" ./build.sh train upload push register ;;
        0) say "the build failed: nothing is pushed or registered" ;;
        *) say "CODEBUILD_BUILD_SUCCEEDING is not set: post_build runs in CodeBuild (or local_codebuild.py) only"
           return 2 ;;
    esac
}

case "${1:-}" in
    install|pre_build|build|post_build) "$1" ;;
    *) echo "usage: $0 install|pre_build|build|post_build" >&2; exit 2 ;;
esac
