"""The contracts both halves share; it imports neither ``service`` nor ``distill`` nor ``teacher``.

* ``bundle``: the bundle folder, its manifest (bundle.json) and the ONNX signature per kind
* ``text_template``: how a query and an item become model input text
* ``tokenization``: how those texts become token ids (training and serving alike)
* ``score_mapping``: model outputs → scores in [0, 1] and grade distributions
* ``grades``: the grade scale and its level values
* ``item``: the one item model, the blank-text rule and the pair id
* ``cot``: the teacher's CoT record, its one file reader and the one "has a distribution" rule
* ``datasets``: dataset names (``bundled:dev``, ``home-depot:train``…) and the split by query
"""
