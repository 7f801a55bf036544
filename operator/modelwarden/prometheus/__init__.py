"""The operator's Prometheus client side: connections, query plans, collecting what a DriftPolicy evaluation reads."""
