import torch

# On a busy 2-core CPU torch's intra-op threads spin against each other and make the small ops of these
# tests ~100x slower; one thread keeps the in-process tests fast (subprocesses use torch's default).
torch.set_num_threads(1)
