"""Expire stale uploads, abort orphan multipart uploads, delete stray spilled tails.

Safe from cron on every host at once (see ``djust_resumable/sweeper.py``)::

    */10 * * * *  python manage.py resumable_sweep
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from djust_resumable.conf import get_settings
from djust_resumable.sweeper import DEFAULT_GRACE, sweep


class Command(BaseCommand):
    help = ("Expire stale upload ledgers, abort multipart uploads no ledger owns and delete "
            "spilled tails left behind. Safe to run on every host at the same time.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true",
                            help="report what would be done; change nothing")
        parser.add_argument("--grace", type=float, default=DEFAULT_GRACE,
                            help="seconds a multipart upload must exist before it may be "
                                 f"aborted as an orphan (default {DEFAULT_GRACE})")
        parser.add_argument("--older-than", type=float, default=None,
                            help="seconds without activity after which a registered/uploading "
                                 "upload is stale (default: LEDGER_TTL)")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--verbose-items", action="store_true",
                            help="list every item acted on, not only the counts")

    def handle(self, *args: Any, **opts: Any) -> None:
        report = asyncio.run(sweep(get_settings(), dry_run=opts["dry_run"], grace=opts["grace"],
                                   older_than=opts["older_than"]))
        if opts["json"]:
            self.stdout.write(json.dumps(report.to_dict(), indent=2))
            return
        self.stdout.write(report.summary())
        if opts["verbose_items"] or opts["dry_run"]:
            for title, items in (("expired", report.expired),
                                 ("index entry dropped", report.index_dropped),
                                 ("multipart upload aborted", report.uploads_aborted),
                                 ("tail deleted", report.tails_deleted),
                                 ("error", report.errors)):
                for item in items:
                    self.stdout.write(f"  {title}: {item}")
        for err in report.errors if not (opts["verbose_items"] or opts["dry_run"]) else []:
            self.stderr.write(f"error: {err}")
