"""The tiny recipe the reliability tests train (importable by name from this folder)."""

# 200 users / batch 32 = 7 steps per epoch. Dropout stays on so that an exact resume
# also proves the torch RNG state is restored.
TINY_RECIPE = """
[run]
name = "tiny"
seed = 3
device = "cpu"

[dataset]
name = "synthetic"
users = 200
items = 50
mean_length = 8
seed = 1

[model]
name = "bert4rec"
hidden = 16
layers = 1
heads = 1
max_len = 10
dropout = 0.1

[train]
epochs = 3
batch_size = 32
lr = 3e-3
warmup_steps = 3
checkpoint_every_steps = 2
keep_last = 2
log_every_steps = 1

[eval]
ks = [5, 10]
batch_size = 256
"""
