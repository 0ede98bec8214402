"""ELLM-rele's runtime: the prompt, the output parser, the backends and ``load_teacher``.

Both halves use it: /explain (service/explain/) judges one pair on request, and the offline tools
(distill/teacher/: annotate, sft, lora…) judge datasets. It imports without torch: a backend loads its
heavy libraries when it is built. Teacher specs are listed in teacher/specs.py.
"""

from __future__ import annotations

from teacher.runtime import Teacher
from teacher.specs import TeacherSpecError, load_teacher, split_spec_options

__all__ = ["Teacher", "TeacherSpecError", "load_teacher", "split_spec_options"]
