"""``python -m tritonpatch check``: a self-check of this machine (see tritonpatch.selfcheck)."""
import sys

from .selfcheck import main

sys.exit(main())
