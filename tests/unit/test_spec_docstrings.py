"""The spec models read their field docstrings with hactl.spec.docstrings (one parse of the
source) instead of pydantic's use_attribute_docstrings: same descriptions, in model_fields and
in the JSON schema."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic._internal._docs_extraction import extract_docstrings_from_cls

from hactl.spec import models
from hactl.spec.docstrings import attribute_docstrings

MODELS = sorted(
    (c for c in vars(models).values() if isinstance(c, type) and issubclass(c, models.Model)),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("model", MODELS, ids=lambda c: c.__name__)
def test_same_docstrings_as_pydantic(model: type[models.Model]) -> None:
    assert attribute_docstrings(model) == extract_docstrings_from_cls(model, use_inspect=True)


def test_same_fields_and_schemas_as_with_use_attribute_docstrings(tmp_path: Path) -> None:
    """The models as they were (pydantic reads the docstrings, schemas built at once), imported
    from a copy of the source: same descriptions and the same JSON schemas."""
    source = Path(models.__file__).read_text(encoding="utf-8")
    for old, new in (
        ("defer_build=True,", "use_attribute_docstrings=True,"),
        ("docs = attribute_docstrings(cls)", "docs: dict[str, str] = {}"),
    ):
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    path = tmp_path / "hactl_spec_models_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    before = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = before
    try:
        spec.loader.exec_module(before)
    finally:
        del sys.modules[path.stem]
    for model in MODELS:
        twin = getattr(before, model.__name__)
        assert twin.model_config.get("use_attribute_docstrings") is True
        ours = {k: v.description for k, v in model.model_fields.items()}
        assert ours == {k: v.description for k, v in twin.model_fields.items()}
        assert all(ours.values()), model
        for mode in ("validation", "serialization"):
            assert model.model_json_schema(mode=mode) == twin.model_json_schema(mode=mode)


def test_a_class_without_source_gets_no_descriptions() -> None:
    local = type("Local", (BaseModel,), {"__annotations__": {"x": int}, "__module__": "nowhere"})
    assert attribute_docstrings(local) == {}
