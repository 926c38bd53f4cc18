"""Training of MedNeXt PVS models (``mednet-pvs-train``): data, sampling, folds, export, thresholds.

Entry point: :func:`mednet_pvs.train.run.run_training` with a :class:`mednet_pvs.train.config.TrainConfig`.
"""
