"""Image preprocessing: loading with validation, conforming, bias correction, skull stripping."""
