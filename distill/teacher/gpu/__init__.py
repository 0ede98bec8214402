"""ELLM-rele on one GPU (issue 16; docs/TEACHER.md, "The GPU recipe"): the LoRA SFT of the embedded
SmolLM2-135M-Instruct on all of a dataset's train pairs, then batched labelling with it.

payload.py    what the payload holds and what the run brings back (one definition of both layouts)
prepare.py    `make teacher-gpu-prepare`, on the CPU machine: SFT records, pairs, transfer set, the
              GGUF and the wheels the GPU image lacks, as parts a device call can carry (core/carry.py)
run.py        `python -m distill.teacher.gpu.run`: convert the GGUF, LoRA SFT, score-mode labels of
              dev and the transfer set, CoT records of a sample, the report (`--dry-run` on a CPU)
collect.py    `make teacher-gpu-collect`, back on the CPU machine: records, the adapter merged into
              an hf: checkpoint and its GGUF for llama.cpp's /explain
on_device.sh  the one command every device call runs
"""
