"""Scenario's webhooks, emulated: endpoints, signed deliveries of job events, retries, delivery faults.

* :mod:`.records` — endpoints and deliveries (the API's "webhook events") with their attempts;
* :mod:`.signing` — the endpoint secret and the pluggable signature schemes;
* :mod:`.faults` — delivery fault rules (drop, duplicate, delay, out of order, bad signature);
* :mod:`.store` — the endpoints and deliveries one emulator holds, what a job's events become, and
  what is due to be sent (no threads, no HTTP);
* :mod:`.dispatcher` — the thread that watches jobs end and sends what is due, with httpx.

This package's ``__init__`` imports nothing: :mod:`..config` reads :mod:`.signing`, and
:mod:`.store` is imported by :mod:`..state`, so an import here would go round in a circle.
"""
