# GPU image: build TensorRT engines and run the denoising loop on them (python -m tools ... as entrypoint).
# Base: NGC PyTorch 25.01 = Ubuntu 24.04, Python 3.12, CUDA 12.8, cuDNN 9, torch 2.6.0a0 with CUDA, TensorRT 10.8.0.43
# (pinned by tag; requirements-gpu.txt pins the same TensorRT and the last CUDA 12 onnxruntime-gpu, 1.26.0: see the
# reasons there and in docs/gpu.md "Versions"). Driver >= 570. Build: docker build -t qdiff-trt .
FROM nvcr.io/nvidia/pytorch:25.01-py3

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/qdiff-trt

# What the image's torch and TensorRT were built with stays: torch, every tensorrt* distribution and numpy are
# written as constraints (name==installed version, read from the installed metadata), so pip keeps them or fails the
# build instead of replacing them. numpy stays the image's (our CPU pin, numpy 2.x, is left out with torch and the
# CPU onnxruntime): our pins' lowest bound is scipy's numpy>=1.26.4. 25.01 predates NGC's /etc/pip/constraint.txt
# (added in 25.03), so there is no image constraints file to override. The last RUN line fails the build when torch
# lost CUDA, TensorRT is not the pinned one, or onnxruntime-gpu has no CUDA provider.
COPY requirements.txt requirements-gpu.txt ./
RUN python -c "import importlib.metadata as md; \
names = {d.metadata['Name']: d.version for d in md.distributions()}; \
print('\n'.join(f'{n}=={v}' for n, v in sorted(names.items()) \
                 if n.lower() in ('torch', 'numpy') or n.lower().startswith('tensorrt')))" > /tmp/image-pins.txt
RUN grep -v -E '^(torch|onnxruntime|numpy)==' requirements.txt > /tmp/requirements-cpu-part.txt \
    && cat /tmp/image-pins.txt \
    && python -m pip install -c /tmp/image-pins.txt -r /tmp/requirements-cpu-part.txt -r requirements-gpu.txt \
        pytest==9.2.0 \
    && python -c "import numpy, onnxruntime as ort, tensorrt, torch; \
assert torch.version.cuda, torch.__version__; \
assert tensorrt.__version__ == '10.8.0.43', tensorrt.__version__; \
assert 'CUDAExecutionProvider' in ort.get_available_providers(), ort.get_available_providers(); \
print('TensorRT', tensorrt.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__, \
      'onnxruntime', ort.__version__, ort.get_available_providers())" \
    && rm /tmp/requirements-cpu-part.txt

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
