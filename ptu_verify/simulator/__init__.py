"""Simulated PTU deployment: an HTTP server speaking the Bailian APIs with PTU throttling."""
