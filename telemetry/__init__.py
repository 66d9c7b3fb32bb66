"""Telemetry: metric definitions, the /metrics exposition, structured logs, probes.

The bottom of the house: it imports nothing of ours, so markets, feeds, streaming and
the wiring can all import it (docs/architecture.md, "Telemetry"; docs/operations.md).
"""

import os

# prometheus_client's multiprocess mode opens files in this directory as soon as a metric
# is made, and fails if it is missing: make it (a container's fresh /tmp, say).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
