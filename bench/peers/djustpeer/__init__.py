"""A bench-only Django project serving djust 1.2.6's own upload path (bench/peers.py).

Not project code: one LiveView with one upload slot whose ``writer=`` is an S3 multipart
``UploadWriter`` (``s3writer.py``), served by uvicorn behind djust's ``LiveViewConsumer``.
"""
