"""The fake Scenario backend: what the emulator knows and does, with no HTTP in it.

* :mod:`.state` — one emulator's records, counters, fault rules, clock, storage and worker threads,
  behind one lock;
* :mod:`.records` — plain records of jobs, assets and uploads, and the validated generation body;
* :mod:`.config`, :mod:`.clock`, :mod:`.faults` — the settings, the movable clock and the fault
  rules the state holds (the control plane changes them);
* :mod:`.lifecycle` — how a custom job moves from queued to done, derived from the clock;
* :mod:`.catalog`, :mod:`.pricing` — the two models' input descriptors, and what a generation costs;
* :mod:`.runner` — runs a job's fake model on the worker pool and files its outputs as assets;
* :mod:`.importer` — assembles and probes a completed multipart upload;
* :mod:`.media` — a stored file's MIME type and properties, measured for real;
* :mod:`.ids`, :mod:`.signing` — ids in the API's form, and signed URLs checked against the clock;
* :mod:`.fakes` — the fake models, which do real video work;
* :mod:`.webhooks` — webhook endpoints, signed deliveries of job events with retries, delivery
  faults, and the thread that sends them.

The service imports neither :mod:`prefect_scenario.emulator.api` nor
:mod:`prefect_scenario.emulator.control`: they call it.
"""
