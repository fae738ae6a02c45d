"""`make doctor`: what this machine is, what AUTO would choose on it, and whether the
training paths (precision, torch.compile, fused AdamW, pruning, checkpoints, DDP) work
on each of its devices, checked in a minute or two before a long sweep."""
