"""Pretrained Actigraphy Transformer (PAT; Ruan et al., 2024) in PyTorch.

network: the encoder and task head; weights: Keras H5 / safetensors / .pt loading;
artifact: the model directory served from /opt/ml/model. Import those modules directly.
"""
