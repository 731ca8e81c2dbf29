"""Operating a running runtime: HTTP probes, Prometheus metrics, the status page.

Above `_lifecycle` and `_flows`, below `_cli`; imported only by `oneiric run --http`.
"""
