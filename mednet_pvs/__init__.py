"""mednet-pvs: perivascular space segmentation and statistics as a BIDS App."""

import os as _os

# Nipype checks for new releases over the network when imported; mednet-pvs never goes online.
_os.environ.setdefault("NIPYPE_NO_ET", "1")

__version__ = "0.1.0"
__all__ = ["__version__"]
