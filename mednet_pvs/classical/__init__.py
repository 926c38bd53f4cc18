"""Classical (weight-free) PVS segmentation methods."""
