"""Telemetry: metric definitions, the /metrics exposition, structured logs, probes.

The bottom of the house: it imports nothing of ours, so markets, feeds, streaming and
the wiring can all import it (docs/architecture.md, "Telemetry"; docs/operations.md).
"""
