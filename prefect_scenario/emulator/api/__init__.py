"""The public REST surface the emulator serves: what a Scenario client sees on the wire.

* :mod:`.routes` — one router per resource under ``/v1`` (uploads, assets, generate, jobs,
  models, webhook endpoints), and the file server outside it (``/files``, the CDN's signed
  downloads, and ``/parts``, S3's presigned part uploads);
* :mod:`.auth` — ``Basic`` / ``Bearer`` authentication of ``/v1``;
* :mod:`.validation` — a generation body checked against its model's inputs, each refusal naming
  its field;
* :mod:`.wire` — jobs, assets and uploads in the API's JSON shape, built from the service's records;
* :mod:`.webhook_wire` — webhook endpoints and deliveries in the API's JSON shape, and their bodies' checks;
* :mod:`.paging` — the cursor pagination of ``GET /v1/jobs`` and webhook events, short pages included;
* :mod:`.errors` — error answers in the API's ``{"reason", "traceId", "details"?}`` shape;
* :mod:`.deps` — how a route finds the state of the app serving it;
* :mod:`.paths` — every URL template the app serves, control plane included.

Routes turn HTTP into calls on :mod:`prefect_scenario.emulator.service` and its records into the
wire form; the service never imports from here.
"""
