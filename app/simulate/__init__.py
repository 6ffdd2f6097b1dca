"""Simulated annotators and the label-efficiency benchmark.

Everything here drives a running nextlabel service over its REST API (``/api/v1``), the
way a team of annotators would, so what it measures is what a user sees. It never imports
the service's models, services or the worker.
"""
