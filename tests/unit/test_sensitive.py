"""Sensitive values never render, except through reveal() (the transport's wire)."""

from __future__ import annotations

import json
import logging
import pickle

import pytest

from hactl.sensitive import MASK, Sensitive, mask_text

SECRET = "abcdef.0123456789abcdef"


def test_every_rendering_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    value = Sensitive(SECRET)
    renderings = [str(value), repr(value), f"{value}", f"{value:>40}", "%s" % value]  # noqa: UP031
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("token %s in %r", value, [value])
    renderings.append(caplog.text)
    renderings.append(json.dumps({"token": str(value)}))
    for text in renderings:
        assert SECRET not in text
        assert "sensitive" in text
    assert value.reveal() == SECRET


def test_cannot_be_pickled_or_dumped_raw() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Sensitive(SECRET))
    with pytest.raises(TypeError):
        json.dumps({"token": Sensitive(SECRET)})


def test_equality_without_revealing() -> None:
    assert Sensitive(SECRET) == Sensitive(SECRET)
    assert Sensitive(SECRET) != Sensitive("other")
    assert len({Sensitive(SECRET), Sensitive(SECRET)}) == 1


def test_mask_text_replaces_every_occurrence() -> None:
    stderr = f"error: token {SECRET} rejected; retry with {SECRET}"
    masked = mask_text(stderr, [Sensitive(SECRET), Sensitive("")])
    assert SECRET not in masked
    assert masked.count(MASK) == 2
