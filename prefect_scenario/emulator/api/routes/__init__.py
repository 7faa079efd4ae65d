"""The routers of the public surface, one module per resource.

``/v1`` (authenticated): :mod:`.uploads`, :mod:`.assets`, :mod:`.generate`, :mod:`.jobs`,
:mod:`.models`. Outside ``/v1``, signed instead of authenticated: :mod:`.files`, which stands for
the API's CDN (asset downloads) and S3 (presigned part uploads). ``create_app`` mounts them all.
"""
