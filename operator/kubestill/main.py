"""Everything the operator reacts to, one thin decorator each; the work lives in handlers/.

Run with `kopf run -m kubestill.main` (or `kubestill operator`).
"""

from __future__ import annotations

import kopf  # noqa: F401  (decorators are added per kind below)

# --- DistillationJob ------------------------------------------------------------------------------------

# --- StudentModel ---------------------------------------------------------------------------------------

# --- CanaryRollout --------------------------------------------------------------------------------------
