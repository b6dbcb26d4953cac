"""Rendering of analysis results: HTML verdict, console summary and JUnit XML."""
