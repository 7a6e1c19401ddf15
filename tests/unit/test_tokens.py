import time

import pytest
from django.core import signing

from djust_resumable.errors import BadToken, TokenExpired
from djust_resumable.tokens import SALT, UploadGrant, mint_token, read_token

G = UploadGrant(session="s1", user="42", view="v", slot="files", max_file_size=10)


def test_roundtrip():
    assert read_token(mint_token(G), 60) == G


def test_forged_and_truncated():
    t = mint_token(G)
    with pytest.raises(BadToken):
        read_token(t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1], 60)
    with pytest.raises(BadToken):
        read_token(t[:10], 60)
    with pytest.raises(BadToken):  # signed with another salt (another purpose)
        read_token(signing.dumps({"session": "s"}, salt="other"), 60)
    with pytest.raises(BadToken):  # right salt, wrong shape
        read_token(signing.dumps({"session": "s"}, salt=SALT), 60)


def test_expired(monkeypatch):
    t = mint_token(G)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)
    with pytest.raises(TokenExpired):
        read_token(t, 60)
