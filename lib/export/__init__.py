"""Pruned models that leave the tool: export/ in a run directory (docs/export.md).

run_weights reads a finished run (weights, masks, the run's own per-layer counts);
compact stores a pruned state dict as bit masks + surviving values; write puts it all in
<run>/export/, with what the model folder's export.py adds (gpt2/hf_export.py: a Hugging
Face folder).
"""
