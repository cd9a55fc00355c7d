"""Import a module whose import builds TLS contexts, loading their CA store
only when a handshake first needs it.

aiohttp builds two SSL contexts when it is imported (`aiohttp.connector`),
and each loads the system CA store: ~45 ms apiece on this project's
machines (OpenSSL 3, 144 certificates), 90 ms of every `flow run`'s start,
spent even by runs that never open a TLS connection (plain-HTTP APIs, the
loopback mocks).

`import_deferring_ca_store(name)` imports `name` with
`ssl.SSLContext.set_default_verify_paths` (which `create_default_context`
calls through `load_default_certs`; on Windows that also reads the system
stores, which this does not defer) replaced by one that only notes the
context (a context another thread builds meanwhile is loaded as usual).
Once the import is done, or has failed, the method is restored and each
noted context is settled:

- a context that verifies (CERT_REQUIRED or CERT_OPTIONAL) gets the default
  paths loaded right before its first handshake: `wrap_bio` (asyncio's TLS)
  and `wrap_socket` (blocking sockets) are shadowed on that one instance by
  a wrapper that loads them, under a lock, removes itself and hands over.
  SSL_CERT_FILE and SSL_CERT_DIR are read then, at the load, as OpenSSL
  reads them at every load;
- a context that does not verify (CERT_NONE: aiohttp's `ssl=False`)
  consults no CA at all, and loads nothing.

Verification is never weakened: a verifying context reaches its first
handshake with the store loaded, and a failure to load raises from the
handshake as it would have from the import. One used on the importing
thread before the import returns has no CA yet and fails closed (the peer
is refused). The cost moves to the first TLS handshake of the process
(once, ~45 ms, on the event loop).
"""

from __future__ import annotations

import importlib
import ssl
import sys
import threading
import weakref
from types import ModuleType
from typing import Any

__all__ = ["import_deferring_ca_store"]

_lock = threading.RLock()


def import_deferring_ca_store(name: str) -> ModuleType:
    if name in sys.modules:  # imported before (or being imported: this waits for it, as `import` does)
        return importlib.import_module(name)
    noted: list[weakref.ref[ssl.SSLContext]] = []
    importer = threading.get_ident()
    with _lock:  # one patch at a time
        if "set_default_verify_paths" in vars(ssl.SSLContext):  # inside an outer call: it notes for both
            return importlib.import_module(name)
        load = ssl.SSLContext.set_default_verify_paths  # the C method

        def note(context: ssl.SSLContext) -> None:
            if threading.get_ident() != importer:  # another thread's context, maybe used at once
                load(context)
            else:
                noted.append(weakref.ref(context))

        ssl.SSLContext.set_default_verify_paths = note  # type: ignore[method-assign]
        try:
            return importlib.import_module(name)
        finally:
            del ssl.SSLContext.set_default_verify_paths  # the C method shows through again
            # Also when the import failed: a submodule that got as far as
            # building a context stays in sys.modules with it.
            for ref in noted:
                context = ref()
                if context is not None and context.verify_mode != ssl.CERT_NONE:
                    _load_before_first_handshake(context)


def _load_before_first_handshake(context: ssl.SSLContext) -> None:
    def loaded(method: str) -> Any:
        def first(*args: Any, **kwargs: Any) -> Any:
            with _lock:
                if "wrap_bio" in vars(context):  # not yet loaded by another thread
                    context.set_default_verify_paths()
                    del context.wrap_bio, context.wrap_socket  # the class's methods from now on
            return getattr(context, method)(*args, **kwargs)

        return first

    context.wrap_bio = loaded("wrap_bio")  # type: ignore[method-assign]
    context.wrap_socket = loaded("wrap_socket")  # type: ignore[method-assign]
