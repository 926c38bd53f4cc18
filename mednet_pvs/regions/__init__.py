"""PVS regions: the label set, the bundled MNI atlas, registration, FreeSurfer label mapping."""
