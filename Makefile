# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt requirements-serve.txt \
	requirements-triton-stub.txt | sha256sum | cut -c1-12)
WORK ?= work/digits-ddpm
MODEL ?= models/digits-ddpm
# The reference model's scheduler clips x0 (clip_sample): step with eps re-derived from the clipped x0, or some
# trajectories leave the UNet's training range even in FP32 (README, "Measured"). DEMO_FLAGS= runs diffusers' default.
DEMO_FLAGS ?= --use-clipped-model-output
# The text-to-image reference model (issue 13): its prompts, one phrasing per digit, FP32 and INT8 UNet side by side.
T2I_MODEL ?= models/digits-t2i
T2I_WORK ?= work/digits-t2i
T2I_FLAGS ?= --samples 64 --num 20

.PHONY: setup demo test test-gpu typecheck lint-docker lint-python chromium bench clean

setup: $(STAMP)

# torch first, pinned to the CPU build that lies on disk, so no dependency can pull a CUDA build.
# Serving (requirements-serve.txt) installs without dependency resolution: nvidia-pytriton 0.7.0 declares numpy<2;
# Triton's Python-backend stub gets numpy 1.x in its own folder, with a hook only the stub honours (serving/stub_env.py).
$(STAMP): requirements.txt requirements-dev.txt requirements-serve.txt requirements-triton-stub.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-serve.txt
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/triton-stub-site -r requirements-triton-stub.txt
	$(PY) -m serving.stub_env
	$(PY) -c "import torch; assert '+cpu' in torch.__version__ or not torch.version.cuda, torch.__version__"
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(PY) -m tools pipeline --model $(MODEL) $(WORK) --force $(DEMO_FLAGS)
	if [ -f $(T2I_MODEL)/model_index.json ]; then mkdir -p $(dir $(T2I_WORK)) && \
		awk 'NR % 6 == 1' $(T2I_MODEL)/prompts.txt > $(T2I_WORK).prompts.txt && \
		$(PY) -m tools pipeline --model $(T2I_MODEL) $(T2I_WORK) --force --prompts $(T2I_WORK).prompts.txt $(T2I_FLAGS); \
	else echo "no $(T2I_MODEL): text-to-image demo skipped"; fi

# The suite: type-check the TensorRT layer, lint the Dockerfile, then the tests (gpu-marked ones skip without CUDA).
test: setup typecheck lint-docker lint-python chromium
	$(PY) -m pytest -q

test-gpu:
	docker build -t qdiff-trt .
	docker run --rm --gpus all -v $(CURDIR):/workspace/qdiff-trt -w /workspace/qdiff-trt --entrypoint python3 \
		qdiff-trt -m pytest -q -m gpu

# Type-check the TensorRT layer without TensorRT: against tensorrt-stubs (installed without its tensorrt dependency,
# then patched so mypy can parse it) and Polygraphy's sources (pyproject.toml: follow_untyped_imports).
TRT_STUBS := tensorrt-stubs==10.13.0.35.1
TYPECHECKED := engines/tensorrt/plan.py engines/tensorrt/build.py engines/tensorrt/session.py engines/tensorrt/graph.py engines/tensorrt/fp16_convert.py \
	pipelines/tensor_runner.py engines/tensorrt/components.py engines/tensorrt/profile_ranges.py engines/tensorrt/groups.py engines/tensorrt/polygraphy_loaders.py \
	engines/backends.py tools/build_cmd.py tools/build_checks.py benchmarks/gpu_bench.py \
	benchmarks/gpu_check.py
typecheck: setup
	$(PY) -m pip install --quiet --no-deps $(TRT_STUBS)
	$(PY) .ci/patch_trt_stubs.py
	$(PY) -m mypy $(TYPECHECKED)

# Headless Chromium renders the HTML report in tests/validation/test_report.py (Debian's package; needs root to install).
chromium:
	command -v chromium || (apt-get update && apt-get install -y chromium)

lint-python: setup
	$(VENV)/bin/ruff check --select F,E9 .

lint-docker: setup
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf work $(VENV)
