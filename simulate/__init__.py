"""Simulated annotators and the label-efficiency benchmark.

Everything here drives a running nextlabel service over its REST API (``/api/v1``), the
way a team of annotators would, so what it measures is what a user sees. It imports nothing
from app/, core/ or worker/: it reaches the service over HTTP, or starts one as a process
(``nextlabel create-user``, ``nextlabel serve``; see :mod:`simulate.service`).
"""
