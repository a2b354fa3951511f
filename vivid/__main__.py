import os
import sys

# torch's idle OpenMP threads sleep instead of spinning (set before torch loads): on a machine
# shared with other work, spinning threads wait for cores that others hold, and a diffusion
# step takes 2-4x longer; on an idle machine sleeping costs a few percent (bench/RESULTS.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .deferred_imports import defer  # noqa: E402

defer()  # plotting and audio modules MediaPipe loads but the command line never uses
from .cli import main  # noqa: E402

sys.exit(main())
