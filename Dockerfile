# GPU image: build TensorRT engines and run the denoising loop on them (python -m tools ... as entrypoint).
# Base: NGC PyTorch 25.01 = Ubuntu 24.04, Python 3.12, CUDA 12.8, torch with CUDA, TensorRT 10.8.0.43 (pinned by tag;
# requirements-gpu.txt pins the same TensorRT). Build: docker build -t qdiff-trt .   Use: see README "TensorRT (GPU)".
FROM nvcr.io/nvidia/pytorch:25.01-py3

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/qdiff-trt

# The CPU set minus torch (the container's CUDA build stays) and minus the CPU onnxruntime (onnxruntime-gpu replaces
# it), then the GPU set and pytest for `make test-gpu`. The container's pip constraints file pins older versions of
# some of our dependencies; our pins win (PIP_CONSTRAINT emptied for this install only).
COPY requirements.txt requirements-gpu.txt ./
RUN grep -v -E '^(torch|onnxruntime)==' requirements.txt > /tmp/requirements-cpu-part.txt \
    && PIP_CONSTRAINT="" python -m pip install -r /tmp/requirements-cpu-part.txt -r requirements-gpu.txt pytest==9.2.0 \
    && rm /tmp/requirements-cpu-part.txt \
    && python -c "import tensorrt, torch; print('TensorRT', tensorrt.__version__, 'torch', torch.__version__)"

# Serving (python -m tools serve): PyTriton and its dependencies without resolution (it declares numpy<2), numpy 1.x
# for Triton's Python-backend stub in <prefix>/triton-stub-site; the stub's hook is written after the code is copied.
COPY requirements-serve.txt requirements-triton-stub.txt ./
RUN PIP_CONSTRAINT="" python -m pip install --no-deps -r requirements-serve.txt \
    && PIP_CONSTRAINT="" python -m pip install --no-deps --target "$(python -c 'import sys; print(sys.prefix)')/triton-stub-site" \
       -r requirements-triton-stub.txt

# Non-root user (uid 10001: the base image already has uid 1000, "ubuntu").
RUN groupadd --gid 10001 qdiff \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash qdiff
COPY --chown=10001:10001 . .
RUN python -m serving.stub_env
USER 10001:10001

ENTRYPOINT ["python", "-m", "tools"]
CMD ["--help"]
