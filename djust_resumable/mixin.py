"""``UploadMixin``: djust's ``UploadMixin`` with ``resumable=True`` served by this app.

Same signatures as ``djust.uploads.UploadMixin``. Slots with ``resumable=False`` are
djust's own, untouched (every call is delegated). For a resumable slot:

* the config djust ships to the browser at mount (``get_upload_state()[name]["config"]``,
  ``upload_configs`` of the mount message) also carries ``endpoint`` (``ENDPOINT_PATH``) and
  ``token`` (a signed ``UploadGrant`` for this session, user, view and slot);
* bytes go to the upload endpoint, never through the LiveView socket (djust's own
  registration of such a slot is refused);
* ``consume_uploaded_entries`` yields each completed upload exactly once, across workers;
  ``get_uploads`` shows live progress from the ledger; ``cancel_upload`` aborts it.

Sync handlers (djust runs them in a thread) use the plain methods; async handlers use the
``a``-prefixed ones (``aconsume_uploaded_entries``, ``aget_uploads``, ``acancel_upload``):
the plain ones refuse to block a running event loop.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from djust.uploads import UploadConfig, UploadManager, UploadWriter
from djust.uploads import UploadMixin as DjustUploadMixin

from . import bridge
from .conf import ResumableSettings, get_settings
from .entries import ResumableUploadEntry
from .ledger import UploadRecord
from .tokens import UploadGrant, mint_token, session_digest
from .validation import grant_accept

log = logging.getLogger("djust_resumable")

#: Records ``get_uploads`` lists (in progress, complete, failed); consumed/aborted are gone.
_LISTED = ("registered", "uploading", "completing", "complete", "failed")


class ResumableUploadManager(UploadManager):
    """djust's manager, plus the grants of the resumable slots."""

    def __init__(self, temp_dir: str | None = None) -> None:
        super().__init__(temp_dir)
        self.grants: dict[str, UploadGrant] = {}

    def get_upload_state(self) -> dict[str, Any]:
        """djust's state; each resumable slot's ``config`` gains ``resumable: true``,
        ``endpoint`` and a freshly minted ``token`` (CPU only: djust calls this on the event
        loop when it builds the mount message)."""
        state = super().get_upload_state()
        endpoint = get_settings().ENDPOINT_PATH
        for name, grant in self.grants.items():
            info = state.get(name)
            if info is not None:
                info["config"].update(resumable=True, endpoint=endpoint,
                                      token=mint_token(grant))
        return state

    def register_entry(self, upload_name: str, *args: Any, **kwargs: Any) -> Any:
        # Bytes of a resumable slot go to the upload endpoint (our browser client), never
        # through the LiveView socket, whose limits are those of djust's own path.
        if upload_name in self.grants:
            log.warning("upload slot %r is resumable: djust's own upload path refused "
                        "(is djust_resumable's script loaded in the page?)", upload_name)
            return None
        return super().register_entry(upload_name, *args, **kwargs)


class UploadMixin(DjustUploadMixin):
    """Drop-in for ``djust.uploads.UploadMixin``; add ``resumable=True`` to a slot."""

    def _ensure_upload_manager(self) -> UploadManager:
        mgr = self._upload_manager
        if mgr is None or not isinstance(mgr, ResumableUploadManager):
            fresh = ResumableUploadManager()
            if mgr is not None:  # keep slots configured before (not expected in practice)
                fresh._configs, fresh._name_to_refs = mgr._configs, mgr._name_to_refs
            self._upload_manager = mgr = fresh
        return mgr

    # -- configuration -------------------------------------------------------------------------
    def allow_upload(
        self,
        name: str,
        accept: str = "",
        max_entries: int = 1,
        max_file_size: int = 10_000_000,
        chunk_size: int = 64 * 1024,
        auto_upload: bool = True,
        writer: type[UploadWriter] | None = None,
        resumable: bool = False,
        allow_active_content: bool = False,
    ) -> UploadConfig:
        """djust's ``allow_upload``. With ``resumable=True`` the slot is served by
        djust_resumable (``writer`` and ``chunk_size`` do not apply: storage is the configured
        sink, frames are sized by the upload endpoint)."""
        cfg = super().allow_upload(
            name, accept=accept, max_entries=max_entries, max_file_size=max_file_size,
            chunk_size=chunk_size, auto_upload=auto_upload, writer=writer, resumable=resumable,
            allow_active_content=allow_active_content)
        mgr = self._ensure_upload_manager()
        assert isinstance(mgr, ResumableUploadManager)
        if not resumable:
            mgr.grants.pop(name, None)
            return cfg
        if writer is not None:
            log.warning("upload slot %r: writer= is ignored for resumable slots (bytes go to "
                        "the %s sink)", name, get_settings().SINK)
        mgr.grants[name] = UploadGrant(
            session=self._resumable_session(), user=self._resumable_user(),
            view=f"{type(self).__module__}.{type(self).__qualname__}", slot=name,
            max_file_size=int(max_file_size),
            accept=grant_accept(accept, allow_active_content), max_entries=int(max_entries))
        return cfg

    def _resumable_session(self) -> str:
        """Digest of the Django session key; a session is created (saved) when the request
        has none yet. djust sets ``self.request`` before ``mount`` on every path (HTTP GET,
        WebSocket mount, state restore), with ``request.session`` from the session middleware
        or, over the socket, from the scope's session. Without sessions at all, a random id:
        uploads work but cannot be resumed from another page load."""
        request = getattr(self, "request", None)
        session = getattr(request, "session", None)
        if session is not None:
            try:
                if not session.session_key:
                    session.save()  # creates the key; SessionMiddleware sends the cookie
                if session.session_key:
                    return session_digest(session.session_key)
            except Exception as exc:  # e.g. sessions table missing
                log.warning("djust_resumable: could not create a session (%s)", exc)
        fallback = getattr(self, "_djr_session_fallback", None)
        if fallback is None:
            fallback = self._djr_session_fallback = "nosession-" + uuid.uuid4().hex
            log.warning("djust_resumable: no Django session on %s; its uploads cannot be "
                        "resumed after a page load", type(self).__qualname__)
        return fallback

    def _resumable_user(self) -> str:
        user = getattr(getattr(self, "request", None), "user", None)
        pk = getattr(user, "pk", None) if user is not None else None
        return "" if pk is None else str(pk)

    def _resumable_grant(self, name: str) -> UploadGrant | None:
        mgr = self._upload_manager
        if isinstance(mgr, ResumableUploadManager):
            return mgr.grants.get(name)
        return None

    # -- consume -------------------------------------------------------------------------------
    def consume_uploaded_entries(self, name: str) -> Iterator[Any]:
        """Yield each completed upload of this slot exactly once (djust's semantics for a
        non-resumable slot). Each entry is claimed in the ledger (``complete`` ->
        ``consumed``, one atomic script) just before it is yielded: of any number of
        concurrent consumers, on any workers, exactly one gets it; one that stops iterating
        early leaves the rest unclaimed. The stored object is not deleted: copy it with
        ``entry.save(name)`` (then ``entry.delete()``), or keep ``entry.storage_name``."""
        grant = self._resumable_grant(name)
        if grant is None:
            yield from super().consume_uploaded_entries(name)
            return
        settings = get_settings()
        recs = bridge.run(_owner_records, settings, grant, what="consume_uploaded_entries()")
        for rec in recs:
            if rec.state == "complete" and bridge.run(_claim, settings, grant, rec.ref):
                rec.state = "consumed"
                yield ResumableUploadEntry(rec, settings)

    async def aconsume_uploaded_entries(self, name: str) -> AsyncIterator[Any]:
        """``consume_uploaded_entries`` for async handlers."""
        grant = self._resumable_grant(name)
        if grant is None:
            for entry in super().consume_uploaded_entries(name):
                yield entry
            return
        settings = get_settings()
        for rec in await bridge.arun(_owner_records, settings, grant):
            if rec.state == "complete" and await bridge.arun(_claim, settings, grant, rec.ref):
                rec.state = "consumed"
                yield ResumableUploadEntry(rec, settings)

    # -- list / cancel -------------------------------------------------------------------------
    def get_uploads(self, name: str) -> list[Any]:
        """Entries of this slot (in progress with live progress from the ledger, complete and
        not yet consumed, failed with their error), oldest first."""
        grant = self._resumable_grant(name)
        if grant is None:
            return super().get_uploads(name)
        settings = get_settings()
        recs = bridge.run(_owner_records, settings, grant, what="get_uploads()")
        return [ResumableUploadEntry(r, settings) for r in recs if r.state in _LISTED]

    async def aget_uploads(self, name: str) -> list[Any]:
        grant = self._resumable_grant(name)
        if grant is None:
            return super().get_uploads(name)
        settings = get_settings()
        recs = await bridge.arun(_owner_records, settings, grant)
        return [ResumableUploadEntry(r, settings) for r in recs if r.state in _LISTED]

    def cancel_upload(self, name: str, ref: str) -> None:
        """Abort the upload ``ref`` of this slot (its multipart upload and the ledger record;
        a completed, unconsumed one is discarded). Refs of other owners or slots are ignored,
        as djust ignores unknown refs."""
        grant = self._resumable_grant(name)
        if grant is None:
            super().cancel_upload(name, ref)
            return
        bridge.run(_cancel, get_settings(), grant, ref, what="cancel_upload()")

    async def acancel_upload(self, name: str, ref: str) -> None:
        grant = self._resumable_grant(name)
        if grant is None:
            super().cancel_upload(name, ref)
            return
        await bridge.arun(_cancel, get_settings(), grant, ref)


# --------------------------------------------------------------------------- on the bridge loop


def _mine(rec: UploadRecord | None, grant: UploadGrant) -> bool:
    return (rec is not None and rec.owner == grant.owner and rec.slot == grant.slot
            and (not rec.view or rec.view == grant.view))


async def _owner_records(settings: ResumableSettings, grant: UploadGrant) -> list[UploadRecord]:
    svc = bridge.service(settings)
    recs = await svc.ledger.owner_records(grant.owner, grant.slot)
    return [r for r in recs if _mine(r, grant)]


async def _claim(settings: ResumableSettings, grant: UploadGrant, ref: str) -> bool:
    svc = bridge.service(settings)
    if not await svc.ledger.claim_consumed(ref):
        return False
    await svc.ledger.unindex_owner(grant.owner, grant.slot, ref)
    await svc.ledger.event(ref, "consumed", view=grant.view)
    return True


async def _cancel(settings: ResumableSettings, grant: UploadGrant, ref: str) -> None:
    svc = bridge.service(settings)
    rec = await svc.ledger.get(ref)
    if not _mine(rec, grant):
        return
    assert rec is not None
    if rec.state == "complete":
        # Same atomic transition as a claim, so a cancel and a consume never both win.
        status, _ = await svc.ledger.transition(ref, "aborted", ("complete",),
                                                error="cancelled")
        if status == "ok":
            await svc.sink.delete(rec.key)
            await svc.ledger.event(ref, "aborted", reason="cancelled")
    elif rec.state in ("registered", "uploading", "completing", "failed"):
        await svc.abort_record(rec, reason="cancelled")
    await svc.ledger.unindex_owner(grant.owner, grant.slot, ref)
