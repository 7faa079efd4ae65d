"""The control plane: how tests and demos drive the emulator, beside the API rather than in it.

* :mod:`.routes` — ``/_emulator/*`` (no auth, not under ``/v1``): stats, reset, settings, the
  clock, fault rules, and webhook delivery fault rules and deliveries;
* :mod:`.middleware` — the ASGI layer around the whole app that counts every API and file request
  by its route template and carries out the request-level fault rules (error statuses, dropped
  connections, delays, truncated bodies).

What these turn (settings, clock, fault rules, counters) lives in the service's state, so the
service never imports from here.
"""
