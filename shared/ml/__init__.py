"""Machine-learning core shared by services and node processes.

One job per module: `data` (bundled datasets, splits, normalization), `architecture` (MLP
description and construction), `training` and `convergence` (the training loop and when it
stops), `checkpoint` (safetensors models and resumable training checkpoints), `evaluate`
(quality and latency) and `predictor` (serving a saved model). Import from the modules
directly; this package imports nothing so that `shared.ml.data` does not pull in torch.
"""
