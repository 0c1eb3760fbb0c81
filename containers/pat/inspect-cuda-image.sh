#!/usr/bin/env bash
# Inspects the PAT CUDA image on a host without a GPU (outside CI: the image is several GB):
#   PAT_TORCH_VARIANT=cuda ./build.sh build pat && containers/pat/inspect-cuda-image.sh [IMAGE]
# Prints its size and labels, torch.__version__, torch.version.cuda and the compiled GPU architectures (fails
# without sm_75, the T4); serves the example artifact with SERVE_DEVICE=auto (on the CPU, said once in the log);
# checks that SERVE_DEVICE=cuda stops start-up with one clear line; runs the PAT fidelity tests on the image's torch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
IMAGE="${1:-pat-inference:latest-cuda}"
PYTHON="${PYTHON:-python3}"
FIDELITY_TESTS=(tests/unit/test_pat_network.py tests/unit/test_pat_weights.py tests/unit/test_pat_handler.py)
WORK="$(mktemp -d)"
NAME="inspect-cuda-$$"
trap 'docker rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

say() { echo "inspect-cuda-image: $*"; }
die() { say "FAILED: $*" >&2; exit 1; }

say "$IMAGE: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
say "labels: $(docker image inspect --format '{{json .Config.Labels}}' "$IMAGE")"

# torch.cuda.get_arch_list() is empty without a GPU; the compiled list is torch._C._cuda_getArchFlags().
probe='import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available()); print(torch._C._cuda_getArchFlags())'
read -r -d '' torch_version cuda available arches < <(docker run --rm --network none --entrypoint python "$IMAGE" \
    -c "$probe"; printf '\0') || true
say "torch $torch_version, CUDA $cuda, GPU visible here: $available, compiled for: $arches"
[[ " $arches " == *" sm_75 "* ]] || die "no sm_75 (T4) kernels in $arches"

"$PYTHON" -m models.pat.examples --out "$WORK/model" --subjects 32 --steps 5 >/dev/null
docker run --detach --name "$NAME" --network none --user 1000:1000 --read-only --tmpfs /tmp \
    --env SERVE_DEVICE=auto --volume "$WORK/model:/opt/ml/model:ro" "$IMAGE" serve >/dev/null
ping='import urllib.request; urllib.request.urlopen("http://127.0.0.1:8080/ping", timeout=2)'
for _ in $(seq 120); do
    docker exec "$NAME" python -c "$ping" 2>/dev/null && break
    [[ "$(docker inspect --format '{{.State.Running}}' "$NAME")" == true ]] || die "$(docker logs "$NAME" 2>&1 | tail -n 3)"
    sleep 0.5
done
docker exec "$NAME" python -c "$ping" || die "SERVE_DEVICE=auto: no answer on /ping within 60 s"
loaded="$(docker logs "$NAME" 2>&1 | grep '"model loaded"')"
[[ "$(grep -c . <<<"$loaded")" == 1 && "$loaded" == *'"device":"cpu"'* ]] \
    || die "SERVE_DEVICE=auto: expected one 'model loaded' line on the cpu, got: $loaded"
say "SERVE_DEVICE=auto serves on the CPU: $loaded"
docker rm -f "$NAME" >/dev/null

if docker run --rm --network none --env SERVE_DEVICE=cuda --volume "$WORK/model:/opt/ml/model:ro" "$IMAGE" serve \
        >"$WORK/cuda.log" 2>&1; then
    die "SERVE_DEVICE=cuda started without a GPU"
fi
say "SERVE_DEVICE=cuda stops start-up: $(grep -i 'cuda' "$WORK/cuda.log" | tail -n 1)"

# The fidelity tests (torch vs the numpy reference of the Keras model, the handler against the forward pass) on
# the image's own torch: the repository and pytest mounted read-only, nothing installed in the image.
"$PYTHON" -m pip install --quiet --target "$WORK/pytest" pytest
say "fidelity tests on the image's torch: ${FIDELITY_TESTS[*]}"
docker run --rm --network none --volume "$ROOT:/src:ro" --volume "$WORK/pytest:/pytest:ro" --workdir /src \
    --env PYTHONPATH=/src:/pytest --entrypoint python "$IMAGE" -m pytest -q -p no:cacheprovider \
    "${FIDELITY_TESTS[@]}" | tail -n 3
