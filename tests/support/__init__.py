"""What the tests share, one module per concern; imported as ``support.<module>`` (``tests/`` is on
``sys.path``, see ``pythonpath`` in pyproject.toml).

- :mod:`support.emulator`: the emulator's test settings and keys, model ids and route names, request
  bodies, and its control plane (``/_emulator/...``) on loopback.
- :mod:`support.wire`: the Scenario wire protocol through an ``httpx.AsyncClient`` (in-process or on
  loopback): uploads, jobs, and the control plane beside the client's ``/v1``.
- :mod:`support.prefect_api`: a flow run read back from a Prefect API, the session's test server or
  a server of a test's own.
- :mod:`support.files`: files on disk: digests, sizes, outputs and manifests checked against them.
- :mod:`support.s3`: a boto3 client for moto's S3 server.
- :mod:`support.net`: free loopback ports.
"""
