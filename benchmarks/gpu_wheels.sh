#!/usr/bin/env bash
# Fetch, into .whl/, the wheels a lent GPU machine lacks for dlsuite's GPU checks (benchmarks/gpu_check.sh).
#
# The GPU image (Python 3.12) has torch, timm, matplotlib, scikit-learn and pyyaml but not MLflow, Optuna,
# mnist1d or pydantic; nothing can be downloaded there. Lightning and torchmetrics are carried too: the
# image's may be older than the callbacks dlsuite uses (EMAWeightAveraging). Versions are those of this
# checkout's .venv, so both machines run the same code. About 38 MB (the device takes 64 MiB a call).
# Run here, in the repository root, after `make .venv` (or `make run`):  bash benchmarks/gpu_wheels.sh
set -euo pipefail
PKGS="alembic annotated-types blinker cachetools cffi cmaes colorlog cryptography databricks-sdk docker
fastapi flask flask-cors gitdb gitpython google-auth graphene graphql-core graphql-relay gunicorn huey
importlib-metadata itsdangerous mako mlflow mlflow-skinny mlflow-tracing mnist1d opentelemetry-api
opentelemetry-proto opentelemetry-sdk opentelemetry-semantic-conventions optuna optuna-integration
prettytable pyasn1 pyasn1-modules pycparser pydantic pydantic-core python-dotenv skops smmap sqlalchemy
sqlparse starlette truststore typing-inspection uvicorn wcwidth lightning lightning-utilities torchmetrics"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude  # never committed
reqs=$(mktemp)
.venv/bin/pip list --format=freeze 2>/dev/null | while IFS='=' read -r name _ version; do
  key=$(echo "$name" | tr 'A-Z_' 'a-z-')
  for p in $PKGS; do
    if [ "$p" = "$key" ]; then echo "$name==$version"; fi
  done
done >"$reqs"
rm -rf .whl && mkdir .whl
platforms=""
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
  -d .whl -r "$reqs" 2>&1 | grep -v "is ignored" || true
echo "$(ls .whl | wc -l) wheels for $(wc -l <"$reqs") packages, $(du -sh .whl | cut -f1)"
rm -f "$reqs"
