"""Django admin of upload sessions (docs/admin.md).

* "Upload sessions (live, from Redis)" — ``UploadSession`` is an unmanaged model without a
  table; its admin replaces the changelist and change views with pages that read the ledger
  (``admin_views``). Staff only (``admin_site.admin_view``); viewing needs
  ``djust_resumable.view_uploadsession``, the actions ``djust_resumable.change_uploadsession``.
  The list and the detail poll a small JSON endpoint every 1.5 s for live progress.
* "Upload history" — a read-only ModelAdmin over ``UploadHistory`` (finished sessions stay
  visible after Redis forgets them).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from . import admin_views as av
from .ledger import STATES
from .models import UploadHistory, UploadSession

POLL_MS = 1500
_FILTERS = ("state", "slot", "user", "age", "q")


@admin.register(UploadSession)
class UploadSessionAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        n = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name=f"{n}_changelist"),
            path("poll.json", wrap(self.poll_view), name=f"{n}_poll"),
            path("<str:ref>/", wrap(self.detail_view), name=f"{n}_change"),
            path("<str:ref>/poll.json", wrap(self.detail_poll_view),
                 name=f"{n}_detail_poll"),
            path("<str:ref>/action/<str:action>/", wrap(require_POST(self.action_view)),
                 name=f"{n}_action"),
        ]

    # -- helpers ----------------------------------------------------------------------------
    def _require_view(self, request: HttpRequest) -> None:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied

    @staticmethod
    def _filters(request: HttpRequest) -> dict[str, str]:
        return {k: request.GET.get(k, "") for k in _FILTERS if request.GET.get(k)}

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts,
                "app_label": self.opts.app_label, "has_view_permission": True,
                "poll_ms": POLL_MS, **extra}

    # -- list -------------------------------------------------------------------------------
    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self._require_view(request)
        f = self._filters(request)
        every = av.list_sessions({})
        now = av.now_ms()
        rows = [r for r in every if av.matches(r, f, now)]
        ctx = self._context(
            request, title="Upload sessions", rows=rows, filters=f, states=STATES,
            slots=sorted({r["slot"] for r in every if r["slot"]}),
            users=sorted({r["user"] for r in every if r["user"]}),
            ages=[(k, label) for k, label, _ in av.AGE_CHOICES],
            poll_url=reverse("admin:djust_resumable_uploadsession_poll"),
            history_url=reverse("admin:djust_resumable_uploadhistory_changelist"),
            query=request.GET.urlencode())
        return TemplateResponse(request, "djust_resumable/admin/sessions.html", ctx)

    def poll_view(self, request: HttpRequest) -> JsonResponse:
        self._require_view(request)
        rows = av.list_sessions(self._filters(request))
        for r in rows:
            r["url"] = reverse("admin:djust_resumable_uploadsession_change", args=[r["ref"]])
        return JsonResponse({"now": av.now_ms(), "rows": rows})

    # -- detail -----------------------------------------------------------------------------
    def detail_view(self, request: HttpRequest, ref: str) -> HttpResponse:
        self._require_view(request)
        d = av.detail(ref)
        if d is None:
            hist = UploadHistory.objects.filter(ref=ref).first()
            if hist is None:
                raise Http404("no such upload session")
            return HttpResponseRedirect(reverse(
                "admin:djust_resumable_uploadhistory_change", args=[hist.pk]))
        can_change = self.has_change_permission(request)
        ctx = self._context(
            request, title=f"Upload session {ref}", d=d, ref=ref, can_change=can_change,
            poll_url=reverse("admin:djust_resumable_uploadsession_detail_poll", args=[ref]),
            list_url=reverse("admin:djust_resumable_uploadsession_changelist"),
            actions=[(a, reverse("admin:djust_resumable_uploadsession_action", args=[ref, a]))
                     for a in av.ACTIONS])
        return TemplateResponse(request, "djust_resumable/admin/session_detail.html", ctx)

    def detail_poll_view(self, request: HttpRequest, ref: str) -> JsonResponse:
        self._require_view(request)
        d = av.detail(ref)
        if d is None:
            return JsonResponse({"gone": True}, status=404)
        rec = d["rec"]
        return JsonResponse({"state": rec.state, "durable": rec.durable,
                             "received": d["received"], "size": rec.size,
                             "percent": d["percent"], "throughput": d["throughput"],
                             "parts": len(d["parts"]), "events": len(d["events"]),
                             "holder": (f"{d['lease']['worker']} conn={d['lease']['conn'][:8]} "
                                        f"epoch={d['lease']['epoch']}" if d["lease"] else "")})

    def action_view(self, request: HttpRequest, ref: str, action: str) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        if action not in av.ACTIONS:
            raise Http404("no such action")
        try:
            result = av.act(action, ref, request.user.get_username())
        except av.ActionRefused as exc:
            messages.error(request, f"{action.replace('_', ' ')} refused: {exc}")
        except Exception as exc:  # storage or Redis trouble: show it, never a 500 page
            messages.error(request, f"{action.replace('_', ' ')} failed: {exc}")
        else:
            messages.success(request, f"{ref}: {result}")
        return HttpResponseRedirect(reverse("admin:djust_resumable_uploadsession_change",
                                            args=[ref]))


@admin.register(UploadHistory)
class UploadHistoryAdmin(admin.ModelAdmin):
    list_display = ("created", "user", "file_name", "size", "durable", "state", "error",
                    "completed", "ref")
    list_filter = ("state", "slot", "created")
    search_fields = ("file_name", "ref", "user")
    date_hierarchy = "created"
    readonly_fields = [f.name for f in UploadHistory._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
