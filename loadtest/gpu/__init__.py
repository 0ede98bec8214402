"""The one-shot GPU check of issue 15 (docs/BENCHMARKS.md, "GPU (prepared, not yet run)").

core/carry.py (shared with the teacher recipe, distill/teacher/gpu/) carries the payload: one tar
            split into parts under the per-call limit, a sha256 manifest; on the GPU machine the parts
            carried over consecutive calls are appended, checked and the wheels installed
payload.py  what the payload holds (fp16 bundles, their CPU fp32 reference scores, the cross student's
            Hugging Face config for the sentence-transformers peer) and how it is built
prepare.py  `make gpu-prepare`, on the CPU machine: train + export, download wheels, tar, split
run.py      `make gpu-check`, `python -m loadtest.gpu.run --out DIR [--dry-run]`: parity, the service
            under load, the batch sweep, raw session, the CrossEncoder peer, nvidia-smi dmon, bf16 peak
on_device.sh  the one command every device call runs
"""
