"""Inference engine: nnU-Net-equivalent preprocessing, Gaussian sliding window, TTA, fold ensembles."""
