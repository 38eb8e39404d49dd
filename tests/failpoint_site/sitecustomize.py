"""Installed only in processes a crash test starts: hooks the product's step-boundary audit event."""

import os
import sys

if os.environ.get("APIM_UPGRADE_FAILPOINT"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from failpoints import hook  # tests/failpoints.py

    sys.addaudithook(hook)
