"""The main job: simulator, preflight, Locust subprocess, live progress, analysis and report."""
