"""Pruned models that leave the tool: export/ in a run directory (docs/export.md).

run_weights reads a finished run (weights, masks, the run's own per-layer counts);
compact stores a pruned state dict as bit masks + surviving values; hf_gpt2 writes a
Hugging Face GPT-2 folder; write puts it all in <run>/export/.
"""
