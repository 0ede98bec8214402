"""The teacher, offline: annotation runs, the rule CoT (bootstrap), collaborative labelling, SFT and LoRA.

The teacher's runtime (prompt, parser, backends, ``load_teacher``) is the top-level ``teacher``
package, which /explain uses too.
"""
